"""Rule plot_study: a study's optimization history, importances and slice plot."""

from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.jobs import workflow_job
from finetune_hpo.plots import plot_study
from finetune_hpo.storage import load_stored_study

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    settings = study_settings(smk.config, smk.wildcards.task, smk.wildcards.method)
    study = load_stored_study(settings.storage, settings.study_name, Path(smk.params.study_dir))
    plot_study(study, Path(smk.output.history), Path(smk.output.importances), Path(smk.output.slice))
