"""Paired statistics over replicate studies: win rates, mean differences and ratios of mean regret, with
percentile-bootstrap intervals stratified by dataset (benchmarks/README.md, "Statistics")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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


def ratio_bootstrap(
    numerators: Sequence[np.ndarray], denominators: Sequence[np.ndarray], n_boot: int, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Ratio of pooled means (numerator / denominator, paired replicates) and its 95% percentile interval,
    resampling replicates within each group with the same indices for both, as :func:`pooled_bootstrap`."""
    rng = np.random.default_rng(seed)
    numerator_sums, denominator_sums = np.zeros(n_boot), np.zeros(n_boot)
    for numerator, denominator in zip(numerators, denominators, strict=True):
        index = rng.integers(len(numerator), size=(n_boot, len(numerator)))
        numerator_sums += numerator[index].sum(axis=1)
        denominator_sums += denominator[index].sum(axis=1)
    ratio = float(np.concatenate(numerators).sum() / np.concatenate(denominators).sum())
    lo, hi = np.percentile(numerator_sums / denominator_sums, [2.5, 97.5])
    return ratio, (float(lo), float(hi))
