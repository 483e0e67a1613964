"""Whether a chosen configuration sits at the edge of its search range: then the best value may lie beyond it,
and the review says which parameter and which way to widen (the LoRA paper's RoBERTa-base recipes, for one,
use learning rates of 4e-4 to 5e-4, above the protocol's 1e-4 ceiling)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

# The outer share of a range (on the log scale for a log range) that counts as its edge.
EDGE_SHARE = 0.1
# A categorical is ordered when its choices are numbers; with two choices both are ends, which says nothing.
MIN_ORDERED_CHOICES = 3


@dataclass(frozen=True)
class RangeEdge:
    """One parameter of a configuration at an edge of its range.

    Args:
        parameter: The hyperparameter.
        value: Its value in the configuration.
        side: ``low`` or ``high``.
        bounds: The range, in words (``1e-06 to 0.0001, log scale``; ``choices 4, 8, 16, 32, 64``).
    """

    parameter: str
    value: Any
    side: str
    bounds: str

    def describe(self) -> str:
        """``learning_rate 9.1e-05 is in the top tenth of 1e-06 to 0.0001, log scale: widen the high end``."""
        high = self.side == "high"
        if self.bounds.startswith("choices"):
            return (
                f"{self.parameter} {_show(self.value)} is the {'largest' if high else 'smallest'} of {self.bounds}: "
                f"add a {'larger' if high else 'smaller'} choice"
            )
        return (
            f"{self.parameter} {_show(self.value)} is in the {'top' if high else 'bottom'} tenth of {self.bounds}: "
            f"widen the {'high' if high else 'low'} end"
        )

    def short(self) -> str:
        """``learning_rate high``: the terminal's form; :meth:`describe` says how to widen."""
        return f"{self.parameter} {self.side}"


def range_edges(params: Mapping[str, Any], distributions: Mapping[str, BaseDistribution]) -> list[RangeEdge]:
    """The parameters of ``params`` that lie in the outer tenth of their range (on the log scale for a log
    range), or at an end of an ordered categorical of at least three numeric choices. A parameter its space
    fixes to one value is never at an edge, and neither is the low end of a range that starts at 0."""
    edges = []
    for name, distribution in distributions.items():
        if name not in params or distribution.single():
            continue
        value = params[name]
        if isinstance(distribution, CategoricalDistribution):
            edge = _categorical_edge(name, value, distribution.choices)
        elif isinstance(distribution, FloatDistribution | IntDistribution):
            edge = _range_edge(name, float(value), distribution)
        else:
            edge = None
        if edge is not None:
            edges.append(edge)
    return edges


def _range_edge(name: str, value: float, distribution: FloatDistribution | IntDistribution) -> RangeEdge | None:
    low, high = float(distribution.low), float(distribution.high)
    if distribution.log:
        position = (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    else:
        position = (value - low) / (high - low)
    bounds = f"{_show(low)} to {_show(high)}" + (", log scale" if distribution.log else "")
    if position >= 1 - EDGE_SHARE:
        return RangeEdge(name, value, "high", bounds)
    # A range that starts at 0 (warmup, weight decay, dropout) cannot be widened below it.
    if position <= EDGE_SHARE and low > 0:
        return RangeEdge(name, value, "low", bounds)
    return None


def _categorical_edge(name: str, value: Any, choices: tuple[Any, ...]) -> RangeEdge | None:
    numbers = [choice for choice in choices if isinstance(choice, int | float) and not isinstance(choice, bool)]
    if len(numbers) != len(choices) or len(choices) < MIN_ORDERED_CHOICES:
        return None  # unordered, or two choices (both ends)
    bounds = "choices " + ", ".join(_show(choice) for choice in sorted(numbers))
    if value == max(numbers):
        return RangeEdge(name, value, "high", bounds)
    if value == min(numbers):
        return RangeEdge(name, value, "low", bounds)
    return None


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
