"""Snakemake script of rule write_demo_corpus: write the demo's pretraining corpus."""

from finetune_hpo.workflow import write_demo_corpus

write_demo_corpus(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
