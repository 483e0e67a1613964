"""Rule score_best_model: the saved best model, reloaded with plain transformers/peft, scored on the selection
set (it must reproduce the study's best value) and on the held-out confirmation rows."""

from pathlib import Path

from finetune_hpo.evaluation import write_scores
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    claim_gpu()  # before write_scores imports torch, as for the studies
    write_scores(
        Path(smk.params.model),
        {"validation": Path(smk.input.selection), "confirmation": Path(smk.input.confirmation)},
        Path(smk.output.scores),
        task_name=smk.wildcards.task,
        batch_size=smk.params.batch_size,
    )
