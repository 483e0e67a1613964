"""Snakemake script of rule export_best_config: export a study's best configuration."""

from finetune_hpo.workflow import export_best_config

export_best_config(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
