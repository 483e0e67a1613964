"""Rule confirm_top_trials: retrain a finished study's top configurations with more seeds; name the winner."""

import json
from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    # One free GPU of the host, before torch initialises CUDA; refused when fewer are visible than the
    # profile's gpu=N (jobs would share one).
    claim_gpu(concurrent_jobs=smk.resources.get("host_gpus") or None, step="confirm_top_trials")
    from finetune_hpo.confirmation import run_confirmation  # imports torch: only after the claim

    run_confirmation(
        study_settings(smk.config, smk.wildcards.task, smk.wildcards.method),
        Path(smk.input.tokenized),
        json.loads(Path(smk.input.summary).read_text()),
        Path(smk.params.study_dir),
        output=Path(smk.output.confirmation),
        threads=smk.threads,
        wandb_dir=Path(smk.params.wandb_dir),
    )
