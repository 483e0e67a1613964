"""Snakemake script of rule plot_study: draw one study's figures."""

from finetune_hpo.workflow import plot_study

plot_study(snakemake)  # noqa: F821 - the object Snakemake injects into scripts
