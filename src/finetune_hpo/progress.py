"""One log line per finished trial: k/n COMPLETE, parameters, value, best so far, elapsed and time left."""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)


def count_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class ProgressLogger:
    """One line per finished trial: k/n, parameters, value, best so far, elapsed and time left."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials
        self.started = time.monotonic()
        self.trials_this_run = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.trials_this_run += 1
        complete = count_complete(study)
        elapsed = time.monotonic() - self.started
        remaining = max(0, self.n_trials - complete)
        eta = elapsed / self.trials_this_run * remaining
        best = _best_value(study)
        value = "-" if trial.value is None else f"{trial.value:.2f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        logger.info(
            "trial %d/%d (#%d) %s value=%s best=%s | %s | elapsed %s, ~%s left",
            complete,
            self.n_trials,
            trial.number,
            trial.state.name,
            value,
            "-" if best is None else f"{best:.2f}",
            params,
            _duration(elapsed),
            _duration(eta),
        )


def _best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
