"""Snakemake script of rule plot_lora_vs_full: draw LoRA vs full fine-tuning across tasks."""

from finetune_hpo.workflow import plot_lora_vs_full

plot_lora_vs_full(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
