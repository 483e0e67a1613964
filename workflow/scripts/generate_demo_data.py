"""Snakemake script of rule generate_demo_data: write one task's synthetic demo data."""

from finetune_hpo.workflow import generate_demo_data

generate_demo_data(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
