"""Search spaces: config entries -> Optuna distributions, and trial parameters -> training settings.

The protocol's names (learning rate, batch size, ...) are the keys; each maps to exactly one knob of the
HF ``TrainingArguments`` or of the method's peft config, as the method registry (:mod:`finetune_hpo.methods`)
lists them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from finetune_hpo.methods import METHODS_BY_NAME, TRAINING_PARAMETERS, Parameter, method_spec


class SearchSpaceError(ValueError):
    """A search space entry that cannot be sampled; the message names the key."""


@dataclass(frozen=True)
class HyperParameters:
    """One trial's settings, with the protocol's names.

    Args:
        learning_rate: Peak learning rate of the linear schedule.
        batch_size: Per-device training batch size.
        num_train_epochs: Passes over the training set.
        warmup_ratio: Fraction of steps spent warming up.
        weight_decay: AdamW weight decay.
        method_parameters: The method's own hyperparameters (LoRA's and DoRA's ``lora_rank``,
            ``lora_alpha``, ``lora_dropout``; none for full fine-tuning), see :mod:`finetune_hpo.methods`.
    """

    learning_rate: float
    batch_size: int
    num_train_epochs: int
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    method_parameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HyperParameters:
        """A trial's parameters (Optuna's ``trial.params``): the training ones typed, the rest the method's."""
        return cls(
            learning_rate=float(params["learning_rate"]),
            batch_size=int(params["batch_size"]),
            num_train_epochs=int(params["num_train_epochs"]),
            warmup_ratio=float(params.get("warmup_ratio", 0.0)),
            weight_decay=float(params.get("weight_decay", 0.0)),
            method_parameters={name: value for name, value in params.items() if name not in TRAINING_PARAMETERS},
        )


def build_distribution(name: str, spec: Mapping[str, Any], where: str) -> BaseDistribution:
    """Turn one config entry into an Optuna distribution, refusing ranges Optuna would reject later.

    Args:
        name: Hyperparameter name (for messages).
        spec: The config entry: ``{type, low, high, log}`` or ``{type: categorical, choices}``.
        where: Config path of the entry, named in errors (``search_spaces.lora``).
    """
    key = f"{where}.{name}"
    kind = spec.get("type", "float")
    if kind == "categorical":
        choices = spec.get("choices")
        if not choices:
            raise SearchSpaceError(f"{key}: a categorical parameter needs a non-empty 'choices' list")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"{key}: 'choices' has duplicates: {choices}")
        return CategoricalDistribution(tuple(choices))
    if kind not in ("float", "int"):
        raise SearchSpaceError(f"{key}: unknown type {kind!r}; use float, int or categorical")
    if "low" not in spec or "high" not in spec:
        raise SearchSpaceError(f"{key}: a {kind} parameter needs 'low' and 'high'")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (low, high)):
        raise SearchSpaceError(f"{key}: 'low' and 'high' must be finite numbers, got {low!r}, {high!r}")
    if low > high:
        raise SearchSpaceError(f"{key}: low ({low}) is greater than high ({high})")
    if log and low <= 0:
        raise SearchSpaceError(f"{key}: a log-scale range needs low > 0, got low={low}")
    if kind == "int":
        if int(low) != low or int(high) != high:
            raise SearchSpaceError(f"{key}: an int parameter needs whole bounds, got {low}, {high}")
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def build_search_space(method: str, space: Mapping[str, Mapping[str, Any]], where: str) -> dict[str, BaseDistribution]:
    """Validate a method's search space against its registry entry and return name -> distribution, in a
    stable order."""
    if method not in METHODS_BY_NAME:
        raise SearchSpaceError(f"{where}: unknown method {method!r}; known: {', '.join(METHODS_BY_NAME)}")
    spec = method_spec(method)
    allowed = spec.allowed_parameters
    unknown = sorted(set(space) - set(allowed))
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown hyperparameter(s) {', '.join(unknown)} for method {method!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    missing = [name for name in spec.required_parameters if name not in space]
    if missing:
        raise SearchSpaceError(f"{where}: missing hyperparameter(s) {', '.join(missing)}")
    distributions = {name: build_distribution(name, space[name], where) for name in allowed if name in space}
    _check_values(distributions, allowed, where)
    return distributions


def _check_values(distributions: Mapping[str, BaseDistribution], allowed: Mapping[str, Parameter], where: str) -> None:
    """Refuse values no trial could train with (batch size 0, negative epochs, dropout >= 1)."""
    for name, dist in distributions.items():
        domain = allowed[name].domain
        values = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for value in values:
            if not isinstance(value, int | float):
                raise SearchSpaceError(f"{where}.{name}: value {value!r} is not a number")
            if domain == "positive" and value <= 0:
                raise SearchSpaceError(f"{where}.{name}: values must be > 0, got {value}")
            if domain == "unit_interval" and not 0 <= value < 1:
                raise SearchSpaceError(f"{where}.{name}: values must lie in [0, 1), got {value}")
            if domain == "non_negative" and value < 0:
                raise SearchSpaceError(f"{where}.{name}: values must be >= 0, got {value}")


def suggest(trial: optuna.Trial, distributions: Mapping[str, BaseDistribution]) -> HyperParameters:
    """Sample every parameter of the space for ``trial``."""
    params: dict[str, Any] = {}
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        else:
            assert isinstance(dist, FloatDistribution)
            params[name] = trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return HyperParameters.from_params(params)
