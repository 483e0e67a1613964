"""The method registry: one entry per fine-tuning method, with everything the workflow needs to know about it.

A method is data, not an ``if`` chain: its hyperparameters (and which are required), how its model is built
(full weights, or a peft adapter config), whether it saves an adapter, its model card's wording and its place
in the plots. Adding a method is one :class:`MethodSpec` in ``METHODS`` plus its search space in the config.
No torch here: peft is imported only when an adapter is configured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Domain = Literal["positive", "non_negative", "unit_interval"]


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter: what it sets, and the values a trial can train with.

    Args:
        sets: The knob it turns (``TrainingArguments.learning_rate``, ``LoraConfig.r``).
        domain: ``positive`` (> 0), ``non_negative`` (>= 0) or ``unit_interval`` ([0, 1)).
        integer: Whether it takes whole values (a rank, a batch size).
    """

    sets: str
    domain: Domain = "positive"
    integer: bool = False


# The training hyperparameters every method has, with the protocol's names.
TRAINING_PARAMETERS: dict[str, Parameter] = {
    "learning_rate": Parameter("TrainingArguments.learning_rate"),
    "batch_size": Parameter("TrainingArguments.per_device_train_batch_size", integer=True),
    "warmup_ratio": Parameter(
        "TrainingArguments.warmup_steps (a float in [0, 1) is a ratio of total steps)", "unit_interval"
    ),
    "weight_decay": Parameter("TrainingArguments.weight_decay", "non_negative"),
    "num_train_epochs": Parameter("TrainingArguments.num_train_epochs", integer=True),
}
# A trial cannot run without these; a search space may fix them with a one-value categorical.
REQUIRED_TRAINING_PARAMETERS: tuple[str, ...] = ("learning_rate", "batch_size", "num_train_epochs")

LORA_PARAMETERS: dict[str, Parameter] = {
    "lora_rank": Parameter("LoraConfig.r", integer=True),
    "lora_alpha": Parameter("LoraConfig.lora_alpha", integer=True),
    "lora_dropout": Parameter("LoraConfig.lora_dropout", "unit_interval"),
}

# (method parameters, target modules, extra fully trained modules, peft TaskType) -> a peft config.
AdapterConfig = Callable[[Mapping[str, Any], "str | list[str]", list[str], Any], Any]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the workflow needs to know about one fine-tuning method.

    Args:
        name: Short name used in config keys, paths and study names (``lora``).
        title: How reports and figures call it (``LoRA``).
        parameters: Its own hyperparameters, beyond the training ones every method has.
        required: Of those, the ones a search space must define.
        adapter_config: Builds the peft config a trial wraps the base model with; ``None``: the whole model
            trains and is saved. An adapter method trains the modules its config targets (``model.
            lora_target_modules``, detected per architecture when unset), the task head and the modules
            pretraining left untrained (``model.lora_modules_to_save``), and saves them alone.
        card: The saved model's description in its model card.
        colour: Its colour in the figures, the same in every figure.
        reference: Where the method comes from.
    """

    name: str
    title: str
    parameters: Mapping[str, Parameter] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    adapter_config: AdapterConfig | None = None
    card: str = ""
    colour: str = "tab:gray"
    reference: str = ""

    @property
    def is_adapter(self) -> bool:
        """Whether a trial trains and saves a peft adapter (with the head) rather than the whole model."""
        return self.adapter_config is not None

    @property
    def allowed_parameters(self) -> dict[str, Parameter]:
        """Every hyperparameter its search space may hold."""
        return {**TRAINING_PARAMETERS, **self.parameters}

    @property
    def required_parameters(self) -> tuple[str, ...]:
        """The hyperparameters its search space must hold."""
        return (*REQUIRED_TRAINING_PARAMETERS, *self.required)


def _lora_config(use_dora: bool) -> AdapterConfig:
    def build(params: Mapping[str, Any], targets: str | list[str], to_save: list[str], task_type: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            task_type=task_type,
            r=int(params["lora_rank"]),
            lora_alpha=int(params["lora_alpha"]),
            lora_dropout=float(params.get("lora_dropout", 0.0)),
            target_modules=targets,
            # peft adds the task head (classifier / qa_outputs) for these task types; we add the rest.
            modules_to_save=to_save or None,
            use_dora=use_dora,
        )

    return build


METHODS_BY_NAME: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            name="full_finetune",
            title="full fine-tuning",
            card="A fully fine-tuned model",
            colour="tab:blue",
        ),
        MethodSpec(
            name="lora",
            title="LoRA",
            parameters=LORA_PARAMETERS,
            required=("lora_rank", "lora_alpha", "lora_dropout"),
            adapter_config=_lora_config(use_dora=False),
            card="A LoRA adapter with its trained head",
            colour="tab:orange",
            reference="Hu et al. 2022, LoRA: Low-Rank Adaptation of Large Language Models",
        ),
        # DoRA splits each adapted weight into a magnitude and a direction and adapts the direction by LoRA:
        # the most used successor of LoRA, with LoRA's hyperparameters, so a study of it compares like for
        # like with the LoRA study of the same task (Liu et al. 2024; peft's LoraConfig(use_dora=True)).
        MethodSpec(
            name="dora",
            title="DoRA",
            parameters=LORA_PARAMETERS,
            required=("lora_rank", "lora_alpha", "lora_dropout"),
            adapter_config=_lora_config(use_dora=True),
            card="A DoRA adapter (weight-decomposed LoRA) with its trained head",
            colour="tab:green",
            reference="Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation",
        ),
    )
}
METHODS: tuple[str, ...] = tuple(METHODS_BY_NAME)


def method_spec(name: str) -> MethodSpec:
    """The registry entry of method ``name``.

    Raises:
        KeyError: an unknown method, naming the known ones (the config check turns it into a config error).
    """
    try:
        return METHODS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(METHODS)}") from None
