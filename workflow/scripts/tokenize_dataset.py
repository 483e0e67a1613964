"""Rule tokenize_dataset: a task's tier, selection and confirmation sets, tokenized once per model (Arrow)."""

import json
import logging
from pathlib import Path

from finetune_hpo.jobs import workflow_job
from finetune_hpo.preprocess import load_tokenizer, tokenize_task
from finetune_hpo.qa import QAWindowing
from finetune_hpo.tasks import TASKS

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    task = TASKS[smk.wildcards.task]
    summary = tokenize_task(
        task,
        Path(smk.input.train).parent,
        load_tokenizer(smk.params.model_name_or_path),
        Path(smk.output.tokenized),
        max_seq_length=smk.params.max_seq_length,
        qa_windowing=QAWindowing(smk.params.qa["max_seq_length"], smk.params.qa["doc_stride"]),
    )
    logging.getLogger("finetune_hpo").info("%s: %s", task.name, json.dumps(summary["splits"]))
