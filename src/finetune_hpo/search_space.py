"""Search spaces: config entries -> Optuna distributions, and trial parameters -> training settings.

The protocol's names (learning rate, batch size, ...) are the keys; each maps to exactly one knob of the
HF ``TrainingArguments`` or of peft's ``LoraConfig``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

# Hyperparameter name -> what it sets. Anything else in a search space is a typo and is refused.
TRAINING_PARAMETERS: dict[str, str] = {
    "learning_rate": "TrainingArguments.learning_rate",
    "batch_size": "TrainingArguments.per_device_train_batch_size",
    "warmup_ratio": "TrainingArguments.warmup_steps (a float in [0, 1) is a ratio of total steps)",
    "weight_decay": "TrainingArguments.weight_decay",
    "num_train_epochs": "TrainingArguments.num_train_epochs",
}
LORA_PARAMETERS: dict[str, str] = {
    "lora_rank": "LoraConfig.r",
    "lora_alpha": "LoraConfig.lora_alpha",
    "lora_dropout": "LoraConfig.lora_dropout",
}
ALLOWED_PARAMETERS: dict[str, dict[str, str]] = {
    "full_finetune": TRAINING_PARAMETERS,
    "lora": {**TRAINING_PARAMETERS, **LORA_PARAMETERS},
}
# A trial cannot run without these; a search space may fix them with a one-value categorical.
REQUIRED_PARAMETERS: tuple[str, ...] = ("learning_rate", "batch_size", "num_train_epochs")


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
        lora_rank: LoRA rank ``r`` (LoRA only).
        lora_alpha: LoRA scaling ``alpha`` (LoRA only).
        lora_dropout: Dropout on the LoRA branch (LoRA only).
    """

    learning_rate: float
    batch_size: int
    num_train_epochs: int
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lora_rank: int | None = None
    lora_alpha: int | None = None
    lora_dropout: float | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HyperParameters:
        return cls(
            learning_rate=float(params["learning_rate"]),
            batch_size=int(params["batch_size"]),
            num_train_epochs=int(params["num_train_epochs"]),
            warmup_ratio=float(params.get("warmup_ratio", 0.0)),
            weight_decay=float(params.get("weight_decay", 0.0)),
            lora_rank=_optional_int(params.get("lora_rank")),
            lora_alpha=_optional_int(params.get("lora_alpha")),
            lora_dropout=_optional_float(params.get("lora_dropout")),
        )


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


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
    """Validate a method's search space and return name -> distribution, in a stable order."""
    allowed = ALLOWED_PARAMETERS.get(method)
    if allowed is None:
        raise SearchSpaceError(f"{where}: unknown method {method!r}; known: {', '.join(ALLOWED_PARAMETERS)}")
    unknown = sorted(set(space) - set(allowed))
    if unknown:
        raise SearchSpaceError(
            f"{where}: unknown hyperparameter(s) {', '.join(unknown)} for method {method!r}; "
            f"allowed: {', '.join(allowed)}"
        )
    missing = [name for name in REQUIRED_PARAMETERS if name not in space]
    if method == "lora":
        missing += [name for name in LORA_PARAMETERS if name not in space]
    if missing:
        raise SearchSpaceError(f"{where}: missing hyperparameter(s) {', '.join(missing)}")
    distributions = {name: build_distribution(name, space[name], where) for name in allowed if name in space}
    _check_values(distributions, where)
    return distributions


def _check_values(distributions: Mapping[str, BaseDistribution], where: str) -> None:
    """Refuse values no trial could train with (batch size 0, negative epochs, dropout >= 1)."""
    positive = ("learning_rate", "batch_size", "num_train_epochs", "lora_rank", "lora_alpha")
    unit_interval = ("warmup_ratio", "lora_dropout")
    for name, dist in distributions.items():
        values = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for value in values:
            if not isinstance(value, int | float):
                raise SearchSpaceError(f"{where}.{name}: value {value!r} is not a number")
            if name in positive and value <= 0:
                raise SearchSpaceError(f"{where}.{name}: values must be > 0, got {value}")
            if name in unit_interval and not 0 <= value < 1:
                raise SearchSpaceError(f"{where}.{name}: values must lie in [0, 1), got {value}")
            if name == "weight_decay" and value < 0:
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
