"""Rule run_study_worker: one of a shared study's workers runs trials until the study holds n_trials
COMPLETE ones; rule run_study finalizes the study once every worker is done."""

import json
from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    # As for rule run_study: its own GPU, claimed before torch initialises CUDA.
    claim_gpu(concurrent_jobs=smk.resources.get("host_gpus") or None, step="run_study_worker")
    from finetune_hpo.study import run_study_worker  # imports torch: only after the claim

    run_study_worker(
        study_settings(smk.config, smk.wildcards.task, smk.wildcards.method),
        Path(smk.input.tokenized),
        json.loads(Path(smk.input.summary).read_text()),
        Path(smk.params.study_dir),
        threads=smk.threads,
        wandb_dir=Path(smk.params.wandb_dir),
        transfer_sources=[Path(path) for path in smk.input.sources],
    )
