"""Rule generate_demo_data: synthetic rows in the task's hub schema (the embedded demo)."""

from pathlib import Path

from finetune_hpo.demo import generate_task_data
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    generate_task_data(
        smk.wildcards.task,
        Path(smk.output.train).parent,
        smk.params.examples["train"],
        smk.params.examples["validation"],
        smk.params.seed,
    )
