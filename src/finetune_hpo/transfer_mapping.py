"""Mapping a configuration into another study's search space, for transfer: a number clipped to a range's
bound (rounded to its step), a categorical value moved to the nearest choice, a parameter the target lacks
dropped; each change said in one line, so a portfolio shows what it altered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


def map_params(
    params: Mapping[str, Any], target_space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], list[str]]:
    """A source configuration in the target space, and what was changed, one line per parameter.

    A number outside a range is clipped to its bound (ints rounded, ``step`` respected); a categorical value
    not among the choices goes to the nearest choice; a parameter the target lacks is dropped; one the
    source lacks, or whose value cannot be mapped, is left out for the sampler to draw.

    Args:
        params: The source trial's parameters.
        target_space: The target study's space.
    """
    mapped: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in params.items():
        if name not in target_space:
            notes.append(f"{name}: not in the target space, dropped")
            continue
        new_value, note = map_value(value, target_space[name])
        if note is not None:
            notes.append(f"{name}: {note}")
        if new_value is not None:
            mapped[name] = new_value
    # In the target space's order, so equal configurations compare and print alike.
    ordered = {name: mapped[name] for name in target_space if name in mapped}
    for name in target_space:
        if name not in params:
            notes.append(f"{name}: not in the source, drawn by the sampler")
    return ordered, notes


def map_value(value: Any, distribution: BaseDistribution) -> tuple[Any, str | None]:
    """One value in a target distribution: ``(mapped value, note)``; the note is ``None`` when the value
    fits as it is, and the value is ``None`` when it cannot be mapped (the sampler then draws it)."""
    if isinstance(distribution, CategoricalDistribution):
        return _map_categorical(value, distribution.choices)
    if not isinstance(distribution, FloatDistribution | IntDistribution):
        raise TypeError(f"unsupported distribution {distribution!r}")
    if not _is_number(value) or not math.isfinite(value):
        return None, f"{value!r} is not a finite number, drawn by the sampler"
    low, high, step = distribution.low, distribution.high, distribution.step
    number = float(value)
    if number < low:
        new, why = low, f"clipped to {_show(low)} (the range's low end)"
    elif number > high:
        new, why = high, f"clipped to {_show(high)} (the range's high end)"
    else:
        new, why = number, None
    if step is not None:
        on_grid = low + round((new - low) / step) * step
        on_grid = min(on_grid, high)
        if not math.isclose(on_grid, new, rel_tol=0, abs_tol=1e-12 * max(1.0, abs(new))):
            # An int's step of 1 goes without saying.
            step_note = "" if isinstance(distribution, IntDistribution) and step == 1 else f" (step {_show(step)})"
            why = why or f"rounded to {_show(on_grid)}{step_note}"
        new = on_grid
    if isinstance(distribution, IntDistribution):
        integer = round(new)
        return integer, None if why is None else f"{_show(value)} {why}"
    return float(new), None if why is None else f"{_show(value)} {why}"


def _map_categorical(value: Any, choices: Sequence[Any]) -> tuple[Any, str | None]:
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return choice, None
    for choice in choices:  # 4 and 4.0 are the same batch size
        if _is_number(choice) and _is_number(value) and choice == value:
            return choice, None
    numbers = [choice for choice in choices if _is_number(choice) and math.isfinite(choice)]
    if not _is_number(value) or not math.isfinite(value) or not numbers:
        return None, f"{value!r} is not among the choices {list(choices)}, drawn by the sampler"
    # Choices such as ranks and batch sizes are spread geometrically: compare ratios, not differences.
    log_scale = value > 0 and all(_is_number(choice) and choice > 0 for choice in choices)

    def distance(choice: Any) -> float:
        return abs(math.log(choice) - math.log(value)) if log_scale else abs(choice - value)

    nearest = min(numbers, key=distance)  # on a tie, the choice listed first
    scale = "on a log scale" if log_scale else "numerically"
    return nearest, f"{_show(value)} not among the choices {list(choices)}, nearest {scale}: {_show(nearest)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
