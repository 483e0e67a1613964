"""Snakemake script of rule check_phase1: review every study and write the summary table."""

from finetune_hpo.workflow import check_phase1

check_phase1(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
