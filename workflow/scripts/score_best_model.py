"""Rule score_best_model: the exported trial's saved model, reloaded with plain transformers/peft, scored on
the selection set (it must reproduce the exported value) and on the held-out confirmation rows."""

import json
from pathlib import Path

from finetune_hpo.best_model import select_saved_model
from finetune_hpo.config import study_settings
from finetune_hpo.evaluation import write_scores
from finetune_hpo.export import exported_trial
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job
from finetune_hpo.storage import load_stored_study

smk = snakemake  # noqa: F821 - the object Snakemake injects into scripts
with workflow_job(smk.log[0]):
    claim_gpu()  # before write_scores imports torch, as for the studies
    settings = study_settings(smk.config, smk.wildcards.task, smk.wildcards.method)
    confirmed = smk.input.get("confirmed")
    trial = exported_trial(
        load_stored_study(settings.storage, settings.study_name, Path(smk.input.trials).parent),
        json.loads(Path(confirmed).read_text()) if confirmed else None,
    )
    write_scores(
        # best_model is pointed at the exported trial's model: the confirmed winner, or the best trial.
        select_saved_model(Path(smk.params.model), trial.number),
        {"validation": Path(smk.input.selection), "confirmation": Path(smk.input.confirmation)},
        Path(smk.output.scores),
        task_name=smk.wildcards.task,
        batch_size=smk.params.batch_size,
    )
