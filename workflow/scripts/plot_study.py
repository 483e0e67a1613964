"""Rule plot_study: a study's optimization history (the exported trial marked), importances and slice plot."""

from pathlib import Path

from finetune_hpo.config import study_settings
from finetune_hpo.export import load_optimal
from finetune_hpo.jobs import workflow_job
from finetune_hpo.plots import HistoryMarks, plot_study
from finetune_hpo.storage import load_stored_study

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    settings = study_settings(smk.config, smk.wildcards.task, smk.wildcards.method)
    study = load_stored_study(settings.storage, settings.study_name, Path(smk.params.study_dir))
    marks = HistoryMarks.from_export(load_optimal(Path(smk.input.optimal)))
    plot_study(study, marks, Path(smk.output.history), Path(smk.output.importances), Path(smk.output.slice))
