"""Snakemake script of rule build_demo_model: build and pretrain the demo's tiny BERT."""

from finetune_hpo.workflow import build_demo_model

build_demo_model(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
