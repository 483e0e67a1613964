"""Snakemake script of rule subsample_dataset: draw a task's seeded, stratified tier."""

from finetune_hpo.workflow import subsample_dataset

subsample_dataset(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
