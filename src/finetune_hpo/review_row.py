"""One row of the Phase 1 review (:class:`StudyReview`), and the numbers its criteria are held against: which
trials TPE drew at random, and the chance that the best guided trial wins if TPE were pure random search."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

MIN_GAP_POINTS = 5.0


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
        selection_value: The best trial's value on the selection set (``best_value``): optimistic, a maximum.
        selection_size: Examples in the selection set.
        selection_standard_error: Standard error of ``selection_value`` in points (binomial unless exported).
        gap_noise: ``2*sqrt(2)*selection_standard_error``, a rough 2-sigma of a difference of two scores.
        confirmation_value: The exported model (one seed) re-scored on held-out rows not used for selection.
        confirmation_size: Examples in the confirmation set.
        confirmation_standard_error: Standard error of ``confirmation_value`` in points (rows only).
        expected_value: What a retraining of the exported configuration should score: the export's
            ``expected_when_retrained``, the figure to plan Phase 2 with.
        expected_standard_error: Its standard error (seeds and rows with a confirmation stage, rows without).
        expected_seeds: Seeds behind ``expected_value`` (1: seed variance not included).
        expected_optimism: Best-of-k optimism of ``expected_value``, in points, when stated.
        retrained_gap: When the winner's model had to be retrained: retrained value - study value.
        retrained_gap_noise: The noise to hold that gap against.
        transferred: Trials of the study's portfolio (started from other studies' best trials).
        best_transferred: The best of them.
        best_sampled: The best trial the sampler chose.
        winner_from: Where the exported configuration came from: a source study's trial, the config's
            ``optuna.enqueue``, or the sampler.
        range_edges: Parameters of the exported (and the single best) configuration at an edge of their range,
            each with which way to widen it.
        range_edges_short: The same per trial in a few words (``exported trial 4: learning_rate high``), for the
            terminal.
        best_random: Best of the sampler's random start-up trials.
        best_guided: Best of the trials TPE chose.
        p_tpe_beats_random_by_chance: Chance that best guided > best random if TPE were random search.
        startup_note: Set when start-up trials were labelled by counting, not by their ``startup_trial`` attribute.
        baseline: Score of a trivial predictor on the validation set (majority class / always no answer).
        importances: Hyperparameter -> importance (fANOVA), empty when the trials cannot rank parameters
            (too few, or more than half of them tied).
        importance_note: Why importances are missing.
        mean_train_seconds: Mean training time of the COMPLETE trials.
        trainable_parameters: Trainable parameters of the best trial.
        confirmed_trial: With a confirmation stage, the trial whose configuration won.
        confirmed_mean: The winner's mean over seeds on the set that ranked the candidates.
        confirmed_sd: Its sample standard deviation over seeds.
        confirmed_seeds: Seeds per candidate.
        winner_changed: Whether confirmation picked another configuration than the single best trial.
        separable_from_runner_up: Whether the winner beats the runner-up beyond seed noise.
        runner_up_p_value: The paired test's p-value.
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
    selection_value: float | None = None
    selection_size: int | None = None
    selection_standard_error: float | None = None
    gap_noise: float | None = None
    confirmation_value: float | None = None
    confirmation_size: int | None = None
    confirmation_standard_error: float | None = None
    expected_value: float | None = None
    expected_standard_error: float | None = None
    expected_seeds: int | None = None
    expected_optimism: float | None = None
    retrained_gap: float | None = None
    retrained_gap_noise: float | None = None
    transferred: int = 0
    best_transferred: float | None = None
    best_sampled: float | None = None
    winner_from: str | None = None
    range_edges: list[str] = field(default_factory=list)
    range_edges_short: list[str] = field(default_factory=list)
    best_random: float | None = None
    best_guided: float | None = None
    p_tpe_beats_random_by_chance: float | None = None
    startup_note: str = ""
    baseline: float | None = None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""
    mean_train_seconds: float | None = None
    trainable_parameters: int | None = None
    confirmed_trial: int | None = None
    confirmed_mean: float | None = None
    confirmed_sd: float | None = None
    confirmed_seeds: int | None = None
    winner_changed: bool | None = None
    separable_from_runner_up: bool | None = None
    runner_up_p_value: float | None = None
    criteria: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return "FAIL" in self.criteria.values()


def chance_best_guided_wins(n_guided: int, n_random: int) -> float | None:
    """P(best of ``n_guided`` beats best of ``n_random``) when all are exchangeable continuous draws: k/(k+m).

    The overall maximum is equally likely to be any of the k+m trials; this is what "TPE beats its random
    start" means for a sampler that learned nothing.
    """
    if n_guided == 0 or n_random == 0:
        return None
    return n_guided / (n_guided + n_random)


def split_startup_trials(
    trials: Sequence[FrozenTrial], n_startup_trials: int
) -> tuple[list[FrozenTrial], list[FrozenTrial], int]:
    """Split ``trials`` into TPE's random start-up trials and the trials it chose (enqueued warm-start
    trials are in neither).

    The ``startup_trial`` user attribute, recorded at suggestion time, decides. Trials stored before it existed
    fall back to counting (trial number < ``n_startup_trials``), which is off when a FAIL trial sits among
    them: TPE counts only COMPLETE/PRUNED trials, so its start-up runs past that number.

    Returns:
        The start-up trials, the guided trials, and how many trials were labelled by counting.
    """
    startup, guided, n_counted = [], [], 0
    for trial in trials:
        if trial.user_attrs.get("enqueued"):
            continue  # a warm-start configuration: neither random nor TPE's choice
        recorded = trial.user_attrs.get("startup_trial")
        if recorded is None:
            n_counted += 1
            is_startup = trial.number < n_startup_trials
        else:
            is_startup = bool(recorded)
        (startup if is_startup else guided).append(trial)
    return startup, guided, n_counted


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
