"""Replicate studies on a table: the seed noise each trial sees, the ask/tell loop, the samplers compared
(benchmarks/README.md, "Seed noise" and "Sampling noise")."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from benchmarks.tabular.tables import Table

N_TRIALS = 10  # the workflow's study size
# Length of a replicate's noise stream: the confirmation section's equal budget (16 trials). Every section
# slices this one stream, so trial t of replicate r sees the same seed in every section.
NOISE_STREAM = 16


def noise_draws(table: Table, replicate: int, n: int = NOISE_STREAM) -> np.ndarray:
    """Seed index seen by trial number t, shared by every procedure run on (table, replicate)."""
    return np.random.default_rng([replicate, table.uid]).integers(table.n_seeds, size=n)


Scorer = Callable[[int, int], float]  # (trial number, configuration index) -> observed raw score


def selection_scorer(table: Table, replicate: int, draws: np.ndarray, rows: int | None = None) -> Scorer:
    """A trial's observed score: its seed's table value, or Binomial(rows, that accuracy) / rows.

    The binomial draw of trial t has its own stream, so it depends only on (replicate, t, configuration):
    any study that proposes the same configuration as trial t sees the same score.
    """
    if rows is None:
        return lambda t, config: float(table.raw[config, draws[t]])

    def score(t: int, config: int) -> float:
        rng = np.random.default_rng([replicate, table.uid, 2, t])
        return float(rng.binomial(rows, table.raw[config, draws[t]]) / rows)

    return score


def new_study(table: Table, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    return optuna.create_study(direction=table.direction, sampler=sampler)


def run_trials(study: optuna.Study, table: Table, n_trials: int, score: Scorer) -> tuple[np.ndarray, np.ndarray]:
    """``n_trials`` ask/tell trials in ``study`` (enqueued ones first), numbered from 0 for the noise stream;
    returns the configuration index and observed raw score of each."""
    dists = table.distributions
    configs = np.empty(n_trials, dtype=np.int64)
    observed = np.empty(n_trials, dtype=float)
    for t in range(n_trials):
        trial = study.ask(dists)
        configs[t] = table.config_index(trial.params)
        observed[t] = score(t, int(configs[t]))
        study.tell(trial, float(observed[t]))
    return configs, observed


def run_study(
    table: Table,
    sampler: optuna.samplers.BaseSampler,
    n_trials: int,
    score: Scorer,
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """A fresh study on the table, ``enqueue``'s configurations first; see :func:`run_trials`."""
    study = new_study(table, sampler)
    for params in enqueue:
        study.enqueue_trial(dict(params))
    return run_trials(study, table, n_trials, score)


def best_observed(table: Table, configs: np.ndarray, observed: np.ndarray) -> int:
    """The configuration a study exports: the best observed score, the earlier trial on a tie."""
    utility = observed if table.direction == "maximize" else -observed
    return int(configs[int(np.argmax(utility))])


SamplerFactory = Callable[[int], optuna.samplers.BaseSampler]


def tpe(n_startup: int, multivariate: bool, **kwargs: Any) -> SamplerFactory:
    # constant_liar=True as in the workflow's definition.py; with sequential ask/tell it has no effect.
    return lambda seed: optuna.samplers.TPESampler(
        n_startup_trials=n_startup, multivariate=multivariate, constant_liar=True, seed=seed, **kwargs
    )


def random_sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def gp(n_startup: int) -> SamplerFactory:
    return lambda seed: optuna.samplers.GPSampler(n_startup_trials=n_startup, seed=seed)


# The workflow's sampler (config/config.yaml, optuna.sampler): independent TPE, 4 start-up trials.
WORKFLOW_TPE = tpe(4, False)
# 'TPE workflow' of the samplers and confirmation sections: the default when they were first run.
EARLIER_WORKFLOW_TPE = tpe(4, True)
