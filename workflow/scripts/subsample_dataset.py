"""Rule subsample_dataset: the seeded, stratified training tier, selection set and confirmation rows."""

from pathlib import Path

from finetune_hpo.draws import prepare_task_data
from finetune_hpo.jobs import workflow_job
from finetune_hpo.tasks import resolve_task

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    prepare_task_data(
        resolve_task(smk.wildcards.task, smk.config["tasks"][smk.wildcards.task]),
        # Local data files are the rule's inputs (none: the hub).
        {split: smk.input[split] for split in ("train", "validation")} if smk.input else None,
        Path(smk.output.summary).parent,
        train_size=smk.params.train_size,
        validation_fraction=smk.params.validation_fraction,
        seed=smk.params.seed,
        confirmation_max_rows=smk.params.confirmation_max_rows,
        group_column=smk.params.group_column,
    )
