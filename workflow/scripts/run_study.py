"""Snakemake script of rule run_study: run or resume one Optuna study."""

from finetune_hpo.workflow import run_study

run_study(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
