"""The Phase 1 review in one table: are all optimal configs there and valid, did each study find a clear
winner, did TPE beat its random start-up trials, and which hyperparameters mattered.

Criteria (from the protocol): every expected ``analysis/<task>_<method>_optimal.yaml`` exists and is valid
(FAIL otherwise); best vs worst COMPLETE trial differ by more than 5 points; the best model-guided trial
beats the best random start-up trial; the trials can rank the parameters (enough of them, and not more than half
tied: :func:`finetune_hpo.importances.too_tied_to_rank`). The last three are PASS/WARN, the first two shown with
their noise: the binomial standard error behind the gap, and the chance TPE would "win" as pure random search.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import best_complete_trial
from finetune_hpo.config import study_settings
from finetune_hpo.export import ExportError, load_optimal
from finetune_hpo.importances import parameter_importances
from finetune_hpo.metrics import binomial_standard_error, constant_prediction_baseline
from finetune_hpo.ranges import range_edges
from finetune_hpo.review_row import (
    MIN_GAP_POINTS,
    StudyReview,
    _optional_float,
    chance_best_guided_wins,
    split_startup_trials,
)
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyError, load_stored_study
from finetune_hpo.transfer import transfer_outcome

logger = logging.getLogger(__name__)


def review_study(
    study_name: str,
    optimal_path: Path,
    study: optuna.Study | None,
    *,
    expected_trials: int,
    n_startup_trials: int,
    validation_strata: Mapping[str, int] | None = None,
    problem_type: str = "classification",
) -> StudyReview:
    """Review one study from its optimal YAML and, when given, its stored trials."""
    review = StudyReview(study_name)
    document = _load_export(review, optimal_path, study_name, expected_trials)
    if document is None:
        return review
    _review_independent_check(review, document)
    _review_estimates(review, document)
    _review_confirmation(review, document.get("confirmation"))
    if validation_strata:
        # The best constant prediction's score, as the metric registry computes it for this metric.
        review.baseline = constant_prediction_baseline(problem_type, review.metric, validation_strata)
    if study is not None:
        _review_trials(review, study, document, n_startup_trials)
    return review


def _load_export(
    review: StudyReview, optimal_path: Path, study_name: str, expected_trials: int
) -> Mapping[str, Any] | None:
    """The study's export, or ``None`` with the review marked MISSING or INVALID (a FAIL)."""
    if not optimal_path.is_file():
        review.status, review.problem = "MISSING", f"{optimal_path} does not exist"
        review.criteria["optimal_yaml"] = "FAIL"
        return None
    try:
        document = load_optimal(optimal_path)
    except ExportError as err:
        review.status, review.problem = "INVALID", str(err)
        review.criteria["optimal_yaml"] = "FAIL"
        return None
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
        return None
    review.criteria["optimal_yaml"] = "PASS"
    return document


def _review_independent_check(review: StudyReview, document: Mapping[str, Any]) -> None:
    """FAIL when the saved model does not back the export's claim; WARN when a retrained winner lies beyond
    the seeds' noise from the study's run."""
    best_model = document.get("best_model")
    if best_model is not None and not best_model["reproduced"]:
        # The exported score is a claim the saved model does not back: Phase 2 must not plan on it.
        review.criteria["best_model_reproduced"] = "FAIL"
        agreement = best_model.get("prediction_agreement")
        review.problem = (
            f"the saved best model scores {best_model['reloaded_selection_value']:.4f} on the selection set, "
            f"the study exported {document['best_value']:.4f}"
            + ("" if agreement is None else f", and predicts {100 * agreement:.1f}% of its rows as the study did")
            + f" (see {best_model['path']})"
        )
    if best_model is not None and best_model.get("retrained_gap") is not None:
        # The confirmed winner's model is a retraining with the study's seed: on a GPU it may differ from the
        # study's run within seed noise; beyond it, the retraining did not train what the study did.
        review.retrained_gap = float(best_model["retrained_gap"])
        review.retrained_gap_noise = _optional_float(best_model.get("retrained_gap_noise"))
        within = best_model.get("retrained_gap_within_noise")
        review.criteria["retrained_gap"] = "WARN" if within is False else "PASS"


def _review_estimates(review: StudyReview, document: Mapping[str, Any]) -> None:
    """The figure to plan with, the selection value and the held-out value, each with its standard error."""
    expected = document.get("expected_when_retrained") or {}
    review.expected_value = _optional_float(expected.get("value"))
    review.expected_standard_error = _optional_float(expected.get("standard_error"))
    review.expected_seeds = expected.get("seeds") or None
    review.expected_optimism = _optional_float(expected.get("best_of_k_optimism"))
    # Files exported before the selection/confirmation split lack these keys: the selection set was the
    # whole validation subsample then, and there is no confirmation value.
    review.selection_value = float(document.get("selection_value", document["best_value"]))
    review.selection_size = document.get("selection_size", document["dataset"]["validation_size"])
    review.selection_standard_error = _optional_float(document.get("selection_standard_error"))
    if review.selection_standard_error is None:
        review.selection_standard_error = binomial_standard_error(review.selection_value, review.selection_size)
    if review.selection_standard_error is not None:
        review.gap_noise = 2 * math.sqrt(2) * review.selection_standard_error
    review.confirmation_value = _optional_float(document.get("confirmation_value"))
    if review.confirmation_value is not None:
        review.confirmation_size = document.get("confirmation_size")
        review.confirmation_standard_error = _optional_float(document.get("confirmation_standard_error"))
        if review.confirmation_standard_error is None:
            review.confirmation_standard_error = binomial_standard_error(
                review.confirmation_value, review.confirmation_size
            )


def _review_trials(
    review: StudyReview, study: optuna.Study, document: Mapping[str, Any], n_startup_trials: int
) -> None:
    """What the stored trials show: the gap, TPE against its random start, importances, cost, transfer and
    range edges."""
    complete = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    values = [float(t.value) for t in complete]
    review.worst_value = min(values)
    review.gap = max(values) - min(values)
    review.criteria["gap_gt_5"] = "PASS" if review.gap > MIN_GAP_POINTS else "WARN"
    startup, guided, n_counted = split_startup_trials(complete, n_startup_trials)
    if n_counted:
        review.startup_note = (
            f"{n_counted} of {len(complete)} COMPLETE trials predate the startup_trial attribute: labelled "
            f"start-up by trial number < {n_startup_trials}, which a FAIL trial among them would shift"
        )
    review.best_random = max(float(t.value) for t in startup) if startup else None
    review.best_guided = max(float(t.value) for t in guided) if guided else None
    review.p_tpe_beats_random_by_chance = chance_best_guided_wins(len(guided), len(startup))
    if review.best_random is not None and review.best_guided is not None:
        review.criteria["tpe_beats_random"] = "PASS" if review.best_guided > review.best_random else "WARN"
    else:
        review.criteria["tpe_beats_random"] = "WARN"
    review.importances, review.importance_note = parameter_importances(study)
    review.criteria["importances"] = "PASS" if review.importances else "WARN"
    seconds = [t.user_attrs["train_seconds"] for t in complete if "train_seconds" in t.user_attrs]
    review.mean_train_seconds = sum(seconds) / len(seconds) if seconds else None
    # The exported trial's (the confirmed winner's, where confirmation ran), as everything else in the row.
    exported = next((t for t in complete if t.number == document["best_trial"]), None)
    review.trainable_parameters = None if exported is None else exported.user_attrs.get("trainable_parameters")
    outcome = transfer_outcome(complete, document["best_trial"])
    review.transferred, review.winner_from = outcome["transferred"], outcome["winner_from"]
    review.best_transferred, review.best_sampled = outcome["best_transferred"], outcome["best_sampled"]
    _review_range_edges(review, exported, best_complete_trial(complete))


def _review_range_edges(review: StudyReview, exported: FrozenTrial | None, single_best: FrozenTrial | None) -> None:
    """WARN when the exported configuration, or the single best trial where confirmation chose another, sits at
    an edge of its range: the best may lie beyond it."""
    for trial, label in ((exported, "exported"), (single_best, "single best")):
        if trial is None or (label == "single best" and exported is not None and trial.number == exported.number):
            continue
        edges = range_edges(trial.params, trial.distributions)
        review.range_edges += [f"{label} trial {trial.number}: {edge.describe()}" for edge in edges]
        if edges:
            short = ", ".join(edge.short() for edge in edges)
            review.range_edges_short.append(f"{label} trial {trial.number}: {short}")
    review.criteria["range_edges"] = "WARN" if review.range_edges else "PASS"


def _review_confirmation(review: StudyReview, confirmation: Mapping[str, Any] | None) -> None:
    """The confirmed winner's mean ± sd over seeds, and whether it changed or stands out from the runner-up."""
    if not confirmation:
        return
    winner = next(row for row in confirmation["candidates"] if row["trial"] == confirmation["winner_trial"])
    ranked = winner[confirmation["ranked_on"]]
    review.confirmed_trial = confirmation["winner_trial"]
    review.confirmed_mean = _optional_float(ranked["mean"])
    review.confirmed_sd = _optional_float(ranked["sd"])
    review.confirmed_seeds = sum(value is not None for value in ranked["values"])  # seeds that finished
    review.winner_changed = bool(confirmation["winner_changed"])
    review.separable_from_runner_up = confirmation.get("separable_from_runner_up")
    test = confirmation.get("paired_test") or {}
    review.runner_up_p_value = _optional_float(test.get("p_value"))


@dataclass(frozen=True)
class StudyFiles:
    """What the review of one study reads, as the rule declares it (or the CLI finds it).

    Args:
        settings: The study's settings.
        optimal: ``analysis/<study>_optimal.yaml``.
        trials_table: ``results/studies/<study>/trials.csv``; the study's storage is beside it.
        data_summary: ``results/data/<task>/summary.json`` (the selection set's label counts).
    """

    settings: StudySettings
    optimal: Path
    trials_table: Path
    data_summary: Path


def study_files(
    config: Mapping[str, Any],
    studies: Sequence[Sequence[str]],
    optimal: Sequence[str],
    trials: Sequence[str],
    summaries: Sequence[str],
) -> list[StudyFiles]:
    """:class:`StudyFiles` from a rule's parallel lists: ``studies`` holds ``(task, method)`` pairs in the
    order of the declared inputs."""
    return [
        StudyFiles(study_settings(config, task, method), Path(optimal_path), Path(trials_path), Path(summary))
        for (task, method), optimal_path, trials_path, summary in zip(studies, optimal, trials, summaries, strict=True)
    ]


def review_phase1(studies: Sequence[StudyFiles]) -> list[StudyReview]:
    """Review every study: its exported YAML, its stored trials and its selection set."""
    reviews = []
    for files in studies:
        settings = files.settings
        strata = (
            json.loads(files.data_summary.read_text())["splits"]["validation"]["strata"]
            if files.data_summary.is_file()
            else None
        )
        study = None
        try:
            study = load_stored_study(settings.storage, settings.study_name, files.trials_table.parent)
        except StudyError as err:
            logger.warning("%s: no stored trials to review (%s)", settings.study_name, err)
        reviews.append(
            review_study(
                settings.study_name,
                files.optimal,
                study,
                expected_trials=settings.n_trials,
                n_startup_trials=settings.sampler.n_startup_trials,
                validation_strata=strata,
                problem_type=settings.task.problem_type,
            )
        )
    return reviews


class ReviewFailed(RuntimeError):
    """An expected export is missing or invalid, or a saved model does not reproduce its export."""


def check_phase1(
    studies: Sequence[StudyFiles],
    markdown: Path,
    csv_path: Path,
    text: Path | None = None,
    *,
    show: Callable[[str], None] = print,
) -> list[StudyReview]:
    """Rule check_phase1 and ``finetune-hpo check``: review every study, write the summary (Markdown, CSV and,
    given ``text``, the terminal table), show the terminal table, and fail when a study fails.

    Raises:
        ReviewFailed: naming each failed study and its problem (after everything above is written).
    """
    from finetune_hpo.report import render_terminal, write_summary

    reviews = review_phase1(studies)
    write_summary(reviews, markdown, csv_path, text)
    show(render_terminal(reviews))
    failed = [review for review in reviews if review.failed]
    if failed:
        # One line per study: the job's log shows each on its own line, after the table above.
        raise ReviewFailed("\n".join([*(f"{r.study_name}: {r.problem}" for r in failed), "Phase 1 check failed"]))
    return reviews
