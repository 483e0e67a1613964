"""Export a finished study's best configuration to ``analysis/<task>_<method>_optimal.yaml`` for Phase 2.

The file is built only from what the study stored, so re-exporting a finished study is byte-identical;
it is validated against ``src/finetune_hpo/schemas/optimal.schema.yaml`` before it replaces anything.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jsonschema
import optuna
import yaml
from optuna.trial import TrialState

from finetune_hpo.best_model import best_complete_trial
from finetune_hpo.config_schema import OPTIMAL_SCHEMA
from finetune_hpo.estimates import retrain_expectation
from finetune_hpo.independent_check import ExportError, selection_and_confirmation
from finetune_hpo.io import write_text_atomic
from finetune_hpo.metrics import metric_spec
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyPaths, describe_storage, load_stored_study

logger = logging.getLogger(__name__)


def objective_definition(settings: StudySettings) -> str:
    """In words: what the exported value measures."""
    metric = metric_spec(settings.task.problem_type, settings.task.metric)
    if settings.task.is_classification:
        return (
            f"{metric.description} ({metric.unit}) of the trial's model on the selection set, evaluated after "
            "the last training epoch"
        )
    qa = settings.model.qa
    return (
        "SQuAD v2 F1 (percent, official answer normalization) on the selection set after the last training epoch; "
        f"a question is answered empty when its null score minus its best span score exceeds "
        f"null_score_threshold={qa.null_score_threshold} (best span over {qa.n_best} start/end candidates per "
        f"window, at most {qa.max_answer_length} tokens)"
    )


def best_config(
    study: optuna.Study,
    settings: StudySettings,
    data_summary: Mapping[str, Any],
    storage_label: str,
    best_model_scores: Mapping[str, Any] | None = None,
    confirmation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The optimal-config document of ``study``.

    Args:
        best_model_scores: The independent scores of the saved best model (``finetune-hpo evaluate``
            output): ``scores.validation`` (the selection set) and ``scores.confirmation``.
        confirmation: The confirmation stage's summary (``confirmation.json``); its winner is exported
            instead of the single best trial, and the summary becomes the ``confirmation`` block.

    Raises:
        ExportError: the study holds fewer COMPLETE trials than configured, or the scores are of
            another trial's model.
    """
    # Over 60 lines for one reason: the document is one literal in the schema's order, each part computed
    # by its own function, so that a reader sees the whole export in one place.
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < settings.n_trials:
        raise ExportError(
            f"study {settings.study_name} has {len(complete)} COMPLETE trial(s), fewer than optuna.n_trials="
            f"{settings.n_trials}; run the study to the end before exporting"
        )
    best = exported_trial(study, confirmation)
    attrs = best.user_attrs
    training_keys = (
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "oom_retries",
        "train_seconds",
        "trainable_parameters",
        "total_parameters",
    )
    document = {
        "study_name": settings.study_name,
        "task": settings.task.name,
        "method": settings.method,
        "metric": settings.task.metric,
        "metric_unit": metric_spec(settings.task.problem_type, settings.task.metric).unit,
        "direction": "maximize",
        "objective": objective_definition(settings),
        "best_value": float(best.value),
        "best_trial": best.number,
        "best_hyperparameters": {name: _plain(value) for name, value in best.params.items()},
        "best_trial_metrics": {k: float(v) for k, v in sorted(attrs.get("metrics", {}).items())},
        "best_trial_training": {k: attrs[k] for k in training_keys if k in attrs},
        **selection_and_confirmation(
            best,
            data_summary["splits"],
            best_model_scores,
            settings.task.metric,
            study.user_attrs.get("fingerprint"),
            confirmation,
        ),
        "n_trials": len(complete),
        "n_failed_trials": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        "n_pruned_trials": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        "model": settings.model_name_or_path,
        **_provenance(study, best, settings, data_summary),
        "storage": storage_label,
        "fingerprint": study.user_attrs.get("fingerprint", ""),
        "confirmation": _confirmation_block(confirmation),
    }
    # The figure to plan Phase 2 with: what a retraining of this configuration scores, seeds' noise included.
    document["expected_when_retrained"] = retrain_expectation(
        settings.task.metric,
        confirmation=confirmation,
        held_out_value=document["confirmation_value"],
        held_out_standard_error=document["confirmation_standard_error"],
        held_out_size=document["confirmation_size"],
        selection_size=document["selection_size"],
    )
    return document


def _provenance(
    study: optuna.Study, best: optuna.trial.FrozenTrial, settings: StudySettings, data_summary: Mapping[str, Any]
) -> dict[str, Any]:
    """What Phase 2 needs to rerun the exported trial: how it trained, with which libraries, on which data,
    from which sampler seeds and space (the schema requires each of them)."""
    attrs, model, splits = best.user_attrs, settings.model, data_summary["splits"]
    seeds_used = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        seed = trial.user_attrs.get("sampler_seed")
        if seed is not None and seed not in seeds_used:
            seeds_used.append(seed)
    return {
        "training_setup": {
            "precision": attrs.get("precision"),
            "per_device_batch_size": attrs.get("per_device_batch_size"),
            "gradient_accumulation_steps": attrs.get("gradient_accumulation_steps"),
            "n_gpu": attrs.get("n_gpu"),
            "gpu_name": attrs.get("gpu_name"),
            # per-device x accumulation x GPUs: what the learning rate was tuned for.
            "effective_batch_size": attrs.get("effective_batch_size"),
            "max_seq_length": model.max_seq_length,
            "qa": asdict(model.qa) if not settings.task.is_classification else None,
            "lora_target_modules": attrs.get("lora_target_modules"),
            "lora_modules_to_save": attrs.get("lora_modules_to_save"),
        },
        "versions": attrs.get("versions", {}),
        "dataset": {
            "source": settings.data_source,
            "train_size": splits["train"]["size"],
            "validation_size": splits["validation"]["size"],
            "train_sha256": splits["train"]["sha256"],
            "validation_sha256": splits["validation"]["sha256"],
            "selection_ids_sha256": splits["validation"].get("ids_sha256"),
        },
        "seed": settings.seed,
        "sampler": {
            "name": "TPESampler",
            "n_startup_trials": settings.sampler.n_startup_trials,
            "multivariate": settings.sampler.multivariate,
            "seed": settings.sampler_seed,
            # A resumed study re-seeds its sampler past the stored trials; these are the seeds used.
            "seeds_used": seeds_used,
        },
        "search_space": study.user_attrs.get("definition", {}).get("search_space", {}),
    }


def exported_trial(study: optuna.Study, confirmation: Mapping[str, Any] | None = None) -> optuna.trial.FrozenTrial:
    """The trial a study exports: the confirmed winner when a confirmation stage ran, else the best
    COMPLETE trial (rule score_best_model scores its model)."""
    if confirmation is None:
        best = best_complete_trial(study.get_trials(deepcopy=False))
        if best is None:
            raise ExportError(f"study {study.study_name} has no COMPLETE trial")
        return best
    number = int(confirmation["winner_trial"])
    trials = study.get_trials(deepcopy=False)
    if number >= len(trials) or trials[number].state != TrialState.COMPLETE:
        raise ExportError(f"the confirmation names trial {number}, which is not a COMPLETE trial of this study")
    winner = trials[number]
    if {k: _plain(v) for k, v in winner.params.items()} != dict(confirmation["winner_params"]):
        raise ExportError(
            f"the confirmation's winner parameters differ from trial {number}'s; rerun rule confirm_top_trials"
        )
    return winner


def _confirmation_block(confirmation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the export keeps of the confirmation stage's summary (everything but its study name)."""
    if confirmation is None:
        return None
    return {key: value for key, value in confirmation.items() if key not in ("study_name", "metric")}


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def validate_optimal(document: Mapping[str, Any], where: str = "optimal config") -> None:
    """Raise :class:`ExportError` naming the first schema violation of ``document``."""
    schema = yaml.safe_load(OPTIMAL_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        problems = [
            f"{'.'.join(str(part) for part in error.path) or '(top level)'}: {error.message}" for error in errors
        ]
        raise ExportError(f"{where}: " + "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))


def render_yaml(document: Mapping[str, Any]) -> str:
    header = (
        f"# Phase 1 optimum of study {document['study_name']} ({document['n_trials']} COMPLETE trials).\n"
        "# Written by finetune-hpo; schema: src/finetune_hpo/schemas/optimal.schema.yaml.\n"
    )
    # A JSON round trip turns tuples into lists so the YAML holds plain types only.
    return header + yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False, allow_unicode=True)


def write_optimal_config(
    study: optuna.Study,
    settings: StudySettings,
    data_summary: Mapping[str, Any],
    out_path: Path,
    storage_label: str,
    best_model_scores: Mapping[str, Any] | None = None,
    confirmation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate and atomically write the optimal config; returns the document."""
    document = best_config(study, settings, data_summary, storage_label, best_model_scores, confirmation)
    validate_optimal(document, where=str(out_path))
    write_text_atomic(out_path, render_yaml(document))
    confirmation = document["confirmation_value"]
    logger.info(
        "%s: best %s %.2f (trial %d; confirmation %s) -> %s",
        settings.study_name,
        document["metric"],
        document["best_value"],
        document["best_trial"],
        "-" if confirmation is None else f"{confirmation:.2f} on {document['confirmation_size']} held-out rows",
        out_path,
    )
    return document


def export_study(
    settings: StudySettings,
    study_dir: Path,
    data_summary_path: Path,
    out_path: Path,
    best_model_scores_path: Path | None = None,
    confirmation_path: Path | None = None,
) -> dict[str, Any]:
    """Load a finished study from its storage and export its best configuration (rule export_best_config).

    Args:
        settings: The study's settings.
        study_dir: The study's folder (its journal, or beside the trials table for an RDB).
        data_summary_path: ``summary.json`` of the task's data.
        out_path: ``analysis/<study>_optimal.yaml``.
        best_model_scores_path: The saved best model's independent scores, when one was kept.
        confirmation_path: The confirmation stage's summary, when the study has one.
    """
    study = load_stored_study(settings.storage, settings.study_name, study_dir)
    scores = json.loads(best_model_scores_path.read_text()) if best_model_scores_path is not None else None
    confirmation = json.loads(confirmation_path.read_text()) if confirmation_path is not None else None
    return write_optimal_config(
        study,
        settings,
        json.loads(Path(data_summary_path).read_text()),
        out_path,
        describe_storage(settings.storage, StudyPaths(study_dir)),
        scores,
        confirmation,
    )


def load_optimal(path: Path) -> dict[str, Any]:
    """Read and validate an exported optimal config (what Phase 2 does)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ExportError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(document, dict):
        raise ExportError(f"{path}: expected a mapping at the top level")
    validate_optimal(document, where=str(path))
    return document
