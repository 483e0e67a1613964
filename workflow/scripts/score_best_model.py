"""Snakemake script of rule score_best_model: rescore the saved best model with plain transformers/peft."""

from finetune_hpo.workflow import score_best_model

score_best_model(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
