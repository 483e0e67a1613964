"""What a study's trials leave in files: the trials table (one row per trial, with what each recorded),
every trial's selection-set predictions and the exported trial's copy of them."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from finetune_hpo.io import write_text_atomic
from finetune_hpo.storage import StudyPaths
from finetune_hpo.tasks import TaskSpec

if TYPE_CHECKING:
    from finetune_hpo.preprocess import TokenizedTask

TRIALS_TABLE_COLUMNS = (
    "number",
    "state",
    "value",
    "params",
    "duration_s",
    "wandb_run_id",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "oom_retries",
    "effective_batch_size",
    "n_gpu",
    "precision",
    "startup_trial",
    "trainable_parameters",
    "error",
)


def trials_table_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, params, duration and what the trial recorded."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": "" if trial.value is None else repr(float(trial.value)),
                "params": json.dumps(trial.params, sort_keys=True),
                "duration_s": "" if trial.duration is None else f"{trial.duration.total_seconds():.3f}",
                "wandb_run_id": attrs.get("wandb_run_id") or "",
                "per_device_batch_size": attrs.get("per_device_batch_size", ""),
                "gradient_accumulation_steps": attrs.get("gradient_accumulation_steps", ""),
                "oom_retries": attrs.get("oom_retries", ""),
                "effective_batch_size": attrs.get("effective_batch_size", ""),
                "n_gpu": attrs.get("n_gpu", ""),
                "precision": attrs.get("precision", ""),
                "startup_trial": attrs.get("startup_trial", ""),
                "trainable_parameters": attrs.get("trainable_parameters", ""),
                "error": attrs.get("error", ""),
            }
        )
    return rows


def write_trials_table(study: optuna.Study, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIALS_TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(trials_table_rows(study))
    write_text_atomic(path, buffer.getvalue())


def write_best_predictions(paths: StudyPaths, trial_number: int | None) -> None:
    """Keep the exported trial's selection-set predictions beside the trials table, for error analysis: the
    best trial's after the study, the confirmed winner's after a confirmation stage."""
    if trial_number is None:
        return
    source = paths.trial_predictions(trial_number)
    if source.is_file():
        write_text_atomic(paths.best_predictions, source.read_text())


def prediction_rows(task: TaskSpec, data: TokenizedTask, predictions: list[Any]) -> list[dict[str, Any]]:
    """A trial's selection-set predictions as rows: ``row`` (position in the selection set), the predicted
    and gold label (classification); ``id``, answer, gold answers and scores (extractive QA)."""
    if task.is_classification:
        labels = data.validation["labels"]
        return [
            {"row": row, "prediction": int(prediction), "label": int(label)}
            for row, (prediction, label) in enumerate(zip(predictions, labels, strict=True))
        ]
    golds = {row[task.id_column]: row[task.label_column]["text"] for row in data.validation_examples}
    return [
        {
            "id": p.id,
            "prediction": p.prediction_text,
            "gold": golds.get(p.id, []),
            "null_score": p.null_score,
            "best_span_score": p.best_span_score if math.isfinite(p.best_span_score) else None,
        }
        for p in predictions
    ]
