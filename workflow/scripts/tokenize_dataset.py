"""Rule tokenize_dataset: a task's tier, selection and confirmation sets, tokenized once per model (Arrow)."""

from pathlib import Path

from finetune_hpo.jobs import workflow_job
from finetune_hpo.preprocess import prepare_tokenized_task
from finetune_hpo.tasks import resolve_task

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    prepare_tokenized_task(
        resolve_task(smk.wildcards.task, smk.config["tasks"][smk.wildcards.task]),
        Path(smk.input.train).parent,
        smk.params.model_name_or_path,
        Path(smk.output.tokenized),
        max_seq_length=smk.params.max_seq_length,
        qa=smk.params.qa,
        threads=smk.threads,
    )
