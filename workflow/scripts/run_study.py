"""Rule run_study: run or resume one Optuna study to exactly n_trials COMPLETE trials, then finalize it."""

import json
from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    # One free GPU of the host, before torch initialises CUDA; refused when fewer are visible than the
    # profile's gpu=N (jobs would share one).
    claim_gpu(concurrent_jobs=smk.resources.get("host_gpus") or None, step="run_study")
    from finetune_hpo.study import run_study  # imports torch: only after the claim

    run_study(
        study_settings(smk.config, smk.wildcards.task, smk.wildcards.method),
        Path(smk.input.tokenized),
        json.loads(Path(smk.input.summary).read_text()),
        Path(smk.params.study_dir),
        threads=smk.threads,
        wandb_dir=Path(smk.params.wandb_dir),
        transfer_sources=[Path(path) for path in smk.input.sources],
        trials_table=Path(smk.output.trials),
    )
