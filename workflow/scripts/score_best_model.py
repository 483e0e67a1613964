"""Rule score_best_model: the exported trial's saved model, reloaded with plain transformers/peft, scored on
the selection set (it must reproduce the exported value, row by row) and on the held-out confirmation rows."""

from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    # One free GPU of the host, before torch initialises CUDA; refused when fewer are visible than the
    # profile's gpu=N (jobs would share one).
    claim_gpu(concurrent_jobs=smk.resources.get("host_gpus") or None, step="score_best_model")
    from finetune_hpo.evaluation import score_exported_model

    score_exported_model(
        study_settings(smk.config, smk.wildcards.task, smk.wildcards.method),
        Path(smk.input.trials).parent,
        {"validation": Path(smk.input.selection), "confirmation": Path(smk.input.confirmation)},
        Path(smk.output.scores),
        confirmation_summary=Path(smk.input.confirmed) if smk.input.get("confirmed") else None,
        batch_size=smk.params.batch_size,
        threads=smk.threads,
    )
