"""Rule subsample_dataset: the seeded, stratified training tier, selection set and confirmation rows."""

import json
import logging
from pathlib import Path

from finetune_hpo.data import load_splits, subsample, write_subsample
from finetune_hpo.jobs import workflow_job
from finetune_hpo.tasks import TASKS

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    task = TASKS[smk.wildcards.task]
    drawn = subsample(
        task,
        # Local data files are the rule's inputs (none: the hub).
        load_splits(task, {split: smk.input[split] for split in ("train", "validation")} if smk.input else None),
        smk.params.train_size,
        smk.params.validation_fraction,
        smk.params.seed,
        confirmation_max_rows=smk.params.confirmation_max_rows,
    )
    summary = write_subsample(task, drawn, Path(smk.output.summary).parent, smk.params.seed)
    logging.getLogger("finetune_hpo").info("%s: %s", task.name, json.dumps(summary["splits"]))
