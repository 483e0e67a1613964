"""An independent check of an exported score: reload a saved model with plain transformers/peft code and
score it on a data file, one batch after another in file order, without the Trainer.

``finetune-hpo evaluate`` and rule ``score_best_model`` run this on the selection set (it must reproduce
the study's best value) and on the held-out confirmation rows (an unbiased estimate of the winner).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune_hpo.best_model import read_best_model_info, resolve_saved_model, select_saved_model
from finetune_hpo.data import SUPPORTED_DATA_SUFFIXES, DataError, check_columns
from finetune_hpo.export import exported_trial
from finetune_hpo.io import write_json_atomic
from finetune_hpo.metrics import (
    classification_metrics,
    classification_standard_error,
    mean_standard_error,
    squad_v2_metrics,
    squad_v2_question_scores,
)
from finetune_hpo.qa import QAWindowing, postprocess_predictions, prepare_validation_features
from finetune_hpo.reload import EvaluationError, Forward, forward_in_order, load_saved_model
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyPaths, load_stored_study
from finetune_hpo.tasks import TaskSpec, task_from_record

logger = logging.getLogger(__name__)

Rows = list[dict[str, Any]]
Info = Mapping[str, Any]
# Every metric, the standard error of the objective, and the predictions: a label id per row
# (classification) or question id -> answer (extractive QA).
Scores = tuple[dict[str, float], float | None, list[int] | dict[str, str]]


@dataclass
class Evaluation:
    """The score of a saved model on one data file.

    Args:
        model_dir: The saved model's folder.
        data_file: The scored file.
        data_sha256: Hash of the scored file.
        task: The task.
        metric: The objective's metric.
        value: The metric in percent (``None`` for an empty file).
        standard_error: Its standard error in points (binomial, per-question or bootstrap).
        size: Rows (questions for QA) scored.
        metrics: Every metric.
        trial: The study trial the model came from.
        prediction_agreement: With reference predictions (the study's own, of the same rows): the share of
            rows (questions) where this reload predicts what the study's model predicted; ``None`` without.
        predictions_compared: Rows (questions) compared for ``prediction_agreement``.
    """

    model_dir: str
    data_file: str
    data_sha256: str
    task: str
    metric: str
    value: float | None
    standard_error: float | None
    size: int
    metrics: dict[str, float] = field(default_factory=dict)
    trial: int | None = None
    prediction_agreement: float | None = None
    predictions_compared: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_rows(data_file: Path, task: TaskSpec) -> list[dict[str, Any]]:
    """The rows of a data file in the task's hub schema (json/jsonl/csv/parquet), in file order."""
    import datasets

    data_file = Path(data_file)
    if not data_file.is_file():
        raise DataError(f"data file {data_file} does not exist")
    if data_file.suffix not in SUPPORTED_DATA_SUFFIXES:
        raise DataError(f"{data_file}: unsupported suffix; use one of {', '.join(SUPPORTED_DATA_SUFFIXES)}")
    if data_file.stat().st_size == 0:
        return []
    check_columns(data_file, task, where="--data")
    rows = datasets.load_dataset(SUPPORTED_DATA_SUFFIXES[data_file.suffix], data_files=str(data_file))["train"]
    return rows.to_list()


def score_saved_model(
    model_dir: Path, data_file: Path, *, batch_size: int = 32, base_model: str | None = None
) -> Evaluation:
    """Score the saved model at ``model_dir`` on ``data_file`` with the settings it was trained with.

    Raises:
        EvaluationError: the folder holds no saved model.
        DataError: the file is missing or lacks the task's columns.
    """
    model, tokenizer, info = load_saved_model(model_dir, base_model)
    return score_loaded_model(model, tokenizer, info, Path(model_dir), Path(data_file), batch_size=batch_size)


def score_loaded_model(
    model: Any,
    tokenizer: Any,
    info: Mapping[str, Any],
    model_dir: Path,
    data_file: Path,
    *,
    batch_size: int = 32,
    reference_predictions: Path | None = None,
) -> Evaluation:
    """:func:`score_saved_model` for a model already loaded by :func:`load_saved_model`.

    Args:
        reference_predictions: The study's predictions file of this model's trial on these same rows
            (``predictions/trial-<n>.jsonl``): each row's prediction is compared with it.
    """
    task = task_from_record(info)
    rows = read_rows(Path(data_file), task)
    digest = hashlib.sha256(Path(data_file).read_bytes()).hexdigest()
    result = Evaluation(
        model_dir=str(model_dir),
        data_file=str(data_file),
        data_sha256=digest,
        task=task.name,
        metric=task.metric,
        value=None,
        standard_error=None,
        size=len(rows),
        trial=info.get("trial"),
    )
    if not rows:
        return result
    score_rows = _score_classification if task.is_classification else _score_qa
    forward = forward_in_order(
        model, tokenizer, info.get("precision", "fp32"), batch_size, None if task.is_classification else "right"
    )
    result.metrics, result.standard_error, predictions = score_rows(forward, tokenizer, rows, task, info)
    result.value = result.metrics[task.metric]
    if reference_predictions is not None:
        result.prediction_agreement, result.predictions_compared = prediction_agreement(
            predictions, Path(reference_predictions)
        )
    logger.info(
        "%s on %s: %s=%.2f ± %.2f (n=%d)",
        model_dir,
        data_file,
        task.metric,
        result.value,
        result.standard_error or float("nan"),
        result.size,
    )
    return result


def _score_classification(forward: Forward, tokenizer: Any, rows: Rows, task: TaskSpec, info: Info) -> Scores:
    """Metrics and the objective's standard error of a classifier on ``rows``."""
    texts = [[row[column] for row in rows] for column in task.text_columns]
    encoded = tokenizer(*texts, truncation=True, max_length=int(info["max_seq_length"]), padding=False)
    features = [{key: encoded[key][index] for key in encoded} for index in range(len(rows))]
    logits = np.concatenate([out.logits.float().cpu().numpy() for out in forward(features)])
    predictions = logits.argmax(axis=-1)
    labels = np.asarray([row[task.label_column] for row in rows])
    metrics = classification_metrics(predictions, labels, task.num_labels)
    standard_error = classification_standard_error(
        task.metric, predictions, labels, _groups(rows, info), task.num_labels
    )
    return metrics, standard_error, [int(p) for p in predictions]


def _groups(rows: Rows, info: Info) -> list[Any] | None:
    """Each row's group, when the study drew its held-out rows by groups (the standard error resamples them)."""
    column = (info.get("data") or {}).get("group_column")
    if not column or not rows or column not in rows[0]:
        return None
    return [row[column] for row in rows]


def _score_qa(forward: Forward, tokenizer: Any, rows: Rows, task: TaskSpec, info: Info) -> Scores:
    """SQuAD v2 metrics and the objective's per-question standard error on ``rows``."""
    qa = info["qa"]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    windows = prepare_validation_features(
        columns, tokenizer, QAWindowing(int(qa["max_seq_length"]), int(qa["doc_stride"])), task.id_column
    )
    inputs = [key for key in ("input_ids", "attention_mask", "token_type_ids") if key in windows]
    features = [{key: windows[key][index] for key in inputs} for index in range(len(windows["input_ids"]))]
    starts, ends = [], []
    for out in forward(features):
        starts.extend(out.start_logits.float().cpu().numpy())
        ends.extend(out.end_logits.float().cpu().numpy())
    window_rows = [
        {"example_id": example_id, "offset_mapping": offsets}
        for example_id, offsets in zip(windows["example_id"], windows["offset_mapping"], strict=True)
    ]
    predictions = postprocess_predictions(
        rows,
        window_rows,
        starts,
        ends,
        id_column=task.id_column,
        n_best=int(qa["n_best"]),
        max_answer_length=int(qa["max_answer_length"]),
        null_score_threshold=float(qa["null_score_threshold"]),
    )
    answers = {prediction.id: prediction.prediction_text for prediction in predictions}
    golds = {row[task.id_column]: row[task.label_column]["text"] for row in rows}
    exact, f1, _ = squad_v2_question_scores(answers, golds)
    per_question = f1 if task.metric == "f1" else exact
    standard_error = mean_standard_error([per_question[row[task.id_column]] for row in rows], _groups(rows, info))
    return squad_v2_metrics(answers, golds), standard_error, answers


def prediction_agreement(predictions: list[int] | Mapping[str, str], reference: Path) -> tuple[float | None, int]:
    """The share of rows where ``predictions`` equal the study's own predictions in ``reference`` (a trial's
    ``predictions/trial-<n>.jsonl``), and how many rows were compared.

    Classification rows are matched by position (both evaluations run in dataset order), QA questions by id.
    A score can coincide by chance; the same answer on every row cannot, so this is the row-by-row half of
    the saved model's independent check.
    """
    if not Path(reference).is_file():
        return None, 0
    rows = [json.loads(line) for line in Path(reference).read_text().splitlines() if line.strip()]
    if isinstance(predictions, Mapping):
        expected = {row["id"]: row["prediction"] for row in rows}
        compared = [predictions.get(qid) == answer for qid, answer in expected.items()]
    else:
        expected_labels = [row["prediction"] for row in sorted(rows, key=lambda row: row["row"])]
        if len(expected_labels) != len(predictions):
            return 0.0, len(expected_labels)
        compared = [int(a) == int(b) for a, b in zip(predictions, expected_labels, strict=True)]
    return (sum(compared) / len(compared) if compared else None), len(compared)


def write_scores(
    model_dir: Path,
    data_files: Mapping[str, Path],
    out_path: Path | None,
    *,
    task_name: str | None = None,
    batch_size: int = 32,
    base_model: str | None = None,
    reference_predictions: Mapping[str, Path] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Score the saved model on each named file; write ``{"model": ..., "scores": {<name>: ...}}`` to ``out_path``.

    The export reads the names ``validation`` (the selection set) and ``confirmation``.

    Args:
        reference_predictions: Per name, the study's predictions of this model's trial on that file's rows;
            those scores then carry ``prediction_agreement``.
        threads: CPU threads for torch (a Snakemake job's ``threads``); ``None`` leaves torch's default.

    Raises:
        EvaluationError: no saved model, or one of another task than ``task_name``.
    """
    if read_best_model_info(Path(model_dir)) is None:
        raise EvaluationError(
            f"{model_dir} holds no model saved by finetune-hpo; was the study run with selection.save_best_model?"
        )
    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    model, tokenizer, info = load_saved_model(Path(model_dir), base_model)
    if task_name is not None and info["task"] != task_name:
        raise EvaluationError(f"{model_dir} holds a {info['task']} model, not a {task_name} one")
    scores = {
        name: score_loaded_model(
            model,
            tokenizer,
            info,
            Path(model_dir),
            Path(data_file),
            batch_size=batch_size,
            reference_predictions=(reference_predictions or {}).get(name),
        ).to_dict()
        for name, data_file in data_files.items()
    }
    document = {
        "model": str(model_dir),
        "resolved_model": str(resolve_saved_model(Path(model_dir))),
        "task": info["task"],
        "trial": info["trial"],
        "params": info.get("params", {}),
        "fingerprint": info.get("fingerprint"),
        "scores": scores,
    }
    if out_path is not None:
        write_json_atomic(out_path, document)
    return document


def score_exported_model(
    settings: StudySettings,
    study_dir: Path,
    data_files: Mapping[str, Path],
    out_path: Path,
    *,
    confirmation_summary: Path | None = None,
    batch_size: int = 32,
    threads: int = 1,
) -> dict[str, Any]:
    """The independent check of a study's export (rule score_best_model): point ``best_model`` at the
    exported trial's model (the confirmed winner, or the best trial), reload it with plain transformers/peft
    and score it on ``data_files``, comparing its selection-set predictions row by row with the study's.

    Args:
        settings: The study's settings.
        study_dir: The study's folder (storage, saved models, predictions).
        data_files: ``validation`` (the selection set) and ``confirmation`` (held-out rows).
        out_path: The scores JSON the export reads.
        confirmation_summary: The confirmation stage's summary, when the study has one.
        threads: CPU threads for torch (the Snakemake job's ``threads``).
    """
    paths = StudyPaths(study_dir)
    summary = json.loads(confirmation_summary.read_text()) if confirmation_summary is not None else None
    trial = exported_trial(load_stored_study(settings.storage, settings.study_name, study_dir), summary)
    # A winner the study had not kept was retrained by the confirmation stage: its predictions are the saved
    # model's, the study trial's are not.
    retrained = bool(summary and summary.get("best_model", {}).get("retrained"))
    return write_scores(
        select_saved_model(paths.best_model, trial.number),
        data_files,
        out_path,
        task_name=settings.task.name,
        batch_size=batch_size,
        reference_predictions={"validation": paths.trial_predictions(trial.number, retrained=retrained)},
        threads=threads,
    )
