"""Snakemake script of rule tokenize_dataset: tokenize a task's tier once per model."""

from finetune_hpo.workflow import tokenize_dataset

tokenize_dataset(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
