"""Rule export_best_config: analysis/<task>_<method>_optimal.yaml, what Phase 2 reads."""

from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.export import export_study
from finetune_hpo.jobs import workflow_job

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    export_study(
        study_settings(smk.config, smk.wildcards.task, smk.wildcards.method),
        Path(smk.params.study_dir),
        Path(smk.input.summary),
        Path(smk.output.optimal),
        Path(smk.input.scores) if smk.input.get("scores") else None,
        Path(smk.input.confirmation) if smk.input.get("confirmation") else None,
    )
