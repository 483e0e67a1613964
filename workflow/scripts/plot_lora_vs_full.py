"""Rule plot_lora_vs_full: LoRA against full fine-tuning per task (best value, trainable parameters, time)."""

from pathlib import Path

from finetune_hpo.jobs import workflow_job
from finetune_hpo.plots import plot_lora_vs_full
from finetune_hpo.review import review_phase1, study_files

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    studies = study_files(smk.config, smk.params.studies, smk.input.optimal, smk.input.trials, smk.input.summaries)
    plot_lora_vs_full(review_phase1(studies), Path(smk.output.figure))
