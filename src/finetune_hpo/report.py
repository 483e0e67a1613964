"""The Phase 1 review in one table: are all optimal configs there and valid, did each study find a clear
winner, did TPE beat its random start-up trials, and which hyperparameters mattered.

Criteria (from the protocol): every expected ``analysis/<task>_<method>_optimal.yaml`` exists and is valid
(FAIL otherwise); best vs worst COMPLETE trial differ by more than 5 points; the best model-guided trial
beats the best random start-up trial; importances could be computed. The last three are PASS/WARN.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from finetune_hpo.export import ExportError, load_optimal
from finetune_hpo.io import write_text_atomic

logger = logging.getLogger(__name__)

MIN_GAP_POINTS = 5.0
# Fewer COMPLETE trials than this give importances that are noise; we say so instead of reporting them.
MIN_TRIALS_FOR_IMPORTANCE = 5


@dataclass
class StudyReview:
    """One row of the review table.

    Args:
        study_name: ``<task>_<method>``.
        status: ``OK``, ``MISSING`` or ``INVALID`` (the optimal YAML).
        problem: Why the YAML is missing or invalid.
        metric: The objective.
        n_trials: COMPLETE trials.
        best_value: Best objective.
        worst_value: Worst COMPLETE objective.
        gap: ``best_value - worst_value`` in points.
        best_random: Best of the sampler's random start-up trials.
        best_guided: Best of the trials TPE chose.
        baseline: Score of a trivial predictor on the validation set (majority class / always no answer).
        importances: Hyperparameter -> importance (fANOVA), empty when too few trials.
        importance_note: Why importances are missing.
        mean_train_seconds: Mean training time of the COMPLETE trials.
        trainable_parameters: Trainable parameters of the best trial.
        criteria: Criterion -> ``PASS``/``WARN``/``FAIL``.
    """

    study_name: str
    status: str = "OK"
    problem: str = ""
    metric: str = ""
    n_trials: int = 0
    best_value: float | None = None
    worst_value: float | None = None
    gap: float | None = None
    best_random: float | None = None
    best_guided: float | None = None
    baseline: float | None = None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""
    mean_train_seconds: float | None = None
    trainable_parameters: int | None = None
    criteria: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return "FAIL" in self.criteria.values()


def majority_baseline(metric: str, validation_strata: Mapping[str, int]) -> float | None:
    """The best score a constant prediction gets on the validation set, in percent.

    Classification strata are label counts ("0", "1"); QA strata are answerable counts ("True", "False").
    """
    total = sum(validation_strata.values())
    if total == 0:
        return None
    if set(validation_strata) <= {"True", "False"}:  # QA: always answering "no answer"
        return 100.0 * validation_strata.get("False", 0) / total
    if metric == "accuracy":
        return 100.0 * max(validation_strata.values()) / total
    if metric == "f1":  # F1 of the positive class: predicting all positive is the best constant
        share = validation_strata.get("1", 0) / total
        return 100.0 * 2 * share / (1 + share) if share else 0.0
    return None


def review_study(
    study_name: str,
    optimal_path: Path,
    study: optuna.Study | None,
    *,
    expected_trials: int,
    n_startup_trials: int,
    validation_strata: Mapping[str, int] | None = None,
) -> StudyReview:
    """Review one study from its optimal YAML and, when given, its stored trials."""
    review = StudyReview(study_name)
    if not optimal_path.is_file():
        review.status, review.problem = "MISSING", f"{optimal_path} does not exist"
        review.criteria["optimal_yaml"] = "FAIL"
        return review
    try:
        document = load_optimal(optimal_path)
    except ExportError as err:
        review.status, review.problem = "INVALID", str(err)
        review.criteria["optimal_yaml"] = "FAIL"
        return review
    review.metric = document["metric"]
    review.n_trials = document["n_trials"]
    review.best_value = document["best_value"]
    if document["n_trials"] != expected_trials or document["study_name"] != study_name:
        review.status = "INVALID"
        review.problem = (
            f"{optimal_path}: study {document['study_name']} with {document['n_trials']} trials, "
            f"expected {study_name} with {expected_trials}"
        )
        review.criteria["optimal_yaml"] = "FAIL"
        return review
    review.criteria["optimal_yaml"] = "PASS"
    if validation_strata:
        review.baseline = majority_baseline(review.metric, validation_strata)
    if study is None:
        return review
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    values = [float(t.value) for t in complete]
    review.worst_value = min(values)
    review.gap = max(values) - min(values)
    review.criteria["gap_gt_5"] = "PASS" if review.gap > MIN_GAP_POINTS else "WARN"
    # The first n_startup_trials trials (by number, any state) are TPE's random start-up trials.
    startup = [float(t.value) for t in complete if t.number < n_startup_trials]
    guided = [float(t.value) for t in complete if t.number >= n_startup_trials]
    review.best_random = max(startup) if startup else None
    review.best_guided = max(guided) if guided else None
    if review.best_random is not None and review.best_guided is not None:
        review.criteria["tpe_beats_random"] = "PASS" if review.best_guided > review.best_random else "WARN"
    else:
        review.criteria["tpe_beats_random"] = "WARN"
    review.importances, review.importance_note = parameter_importances(study)
    review.criteria["importances"] = "PASS" if review.importances else "WARN"
    seconds = [t.user_attrs["train_seconds"] for t in complete if "train_seconds" in t.user_attrs]
    review.mean_train_seconds = sum(seconds) / len(seconds) if seconds else None
    review.trainable_parameters = study.best_trial.user_attrs.get("trainable_parameters")
    return review


def parameter_importances(study: optuna.Study) -> tuple[dict[str, float], str]:
    """fANOVA importances (Optuna's default evaluator, seeded), or an empty dict and the reason."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"too few COMPLETE trials ({len(complete)} < {MIN_TRIALS_FOR_IMPORTANCE})"
    if len({t.value for t in complete}) == 1:
        return {}, "every trial scored the same"
    try:
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
        )
    except (ValueError, RuntimeError) as err:
        return {}, f"not computable ({err})"
    return {name: float(value) for name, value in importances.items()}, ""


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _top(importances: Mapping[str, float], note: str, k: int = 3) -> str:
    if not importances:
        return note or "-"
    return ", ".join(f"{name} {value:.2f}" for name, value in list(importances.items())[:k])


TABLE_COLUMNS = (
    "study",
    "metric",
    "best",
    "worst",
    "gap",
    "baseline",
    "best random",
    "best TPE",
    "top hyperparameters (importance)",
    "gap > 5",
    "TPE > random",
    "importances",
)


def table_rows(reviews: Sequence[StudyReview]) -> list[list[str]]:
    rows = []
    for review in reviews:
        if review.status != "OK":
            rows.append([review.study_name, review.status, *["-"] * 7, review.problem, "FAIL", "FAIL"][:12])
            continue
        rows.append(
            [
                review.study_name,
                review.metric,
                _fmt(review.best_value),
                _fmt(review.worst_value),
                _fmt(review.gap),
                _fmt(review.baseline),
                _fmt(review.best_random),
                _fmt(review.best_guided),
                _top(review.importances, review.importance_note),
                review.criteria.get("gap_gt_5", "-"),
                review.criteria.get("tpe_beats_random", "-"),
                review.criteria.get("importances", "-"),
            ]
        )
    return rows


def render_markdown(reviews: Sequence[StudyReview]) -> str:
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(reviews)]
    n_ok = sum(1 for review in reviews if review.status == "OK")
    verdict = "all present and valid" if n_ok == len(reviews) else f"{len(reviews) - n_ok} missing or invalid"
    return (
        "# Phase 1 review\n\n"
        f"{n_ok}/{len(reviews)} optimal configs: {verdict}. Values in percent; baseline = the best constant "
        "prediction on the validation set; best random / best TPE = best of the sampler's random start-up "
        "trials / of the trials TPE chose.\n\n" + "\n".join(lines) + "\n"
    )


def render_terminal(reviews: Sequence[StudyReview]) -> str:
    rows = [list(TABLE_COLUMNS), *table_rows(reviews)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def render_csv(reviews: Sequence[StudyReview]) -> str:
    buffer = io.StringIO()
    fields = [key for key in asdict(StudyReview("x")) if key not in ("importances", "criteria")]
    writer = csv.DictWriter(buffer, fieldnames=[*fields, "importances", "criteria"], lineterminator="\n")
    writer.writeheader()
    for review in reviews:
        row: dict[str, Any] = {key: getattr(review, key) for key in fields}
        row["importances"] = ";".join(f"{k}={v:.4f}" for k, v in review.importances.items())
        row["criteria"] = ";".join(f"{k}={v}" for k, v in review.criteria.items())
        writer.writerow(row)
    return buffer.getvalue()


def write_summary(reviews: Sequence[StudyReview], markdown_path: Path, csv_path: Path) -> None:
    write_text_atomic(markdown_path, render_markdown(reviews))
    write_text_atomic(csv_path, render_csv(reviews))


def review_phase1(config: Mapping[str, Any], tasks: Sequence[str], results: Path, analysis: Path) -> list[StudyReview]:
    """Review every study of ``tasks`` x the configured methods (their YAMLs, storages and data)."""
    import json

    from finetune_hpo.study import StudyError, StudyPaths, open_storage

    reviews = []
    for task in tasks:
        summary_path = results / "data" / task / "summary.json"
        strata = (
            json.loads(summary_path.read_text())["splits"]["validation"]["strata"] if summary_path.is_file() else None
        )
        for method in config["methods"]:
            study_name = f"{task}_{method}"
            paths = StudyPaths(results / "studies" / study_name)
            study = None
            if config["optuna"]["storage"] is not None or paths.journal.is_file():
                try:
                    study = optuna.load_study(
                        study_name=study_name, storage=open_storage(config["optuna"]["storage"], paths)
                    )
                except (KeyError, StudyError) as err:
                    logger.warning("%s: no stored trials to review (%s)", study_name, err)
            reviews.append(
                review_study(
                    study_name,
                    analysis / f"{study_name}_optimal.yaml",
                    study,
                    expected_trials=config["optuna"]["n_trials"],
                    n_startup_trials=config["optuna"]["sampler"]["n_startup_trials"],
                    validation_strata=strata,
                )
            )
    return reviews
