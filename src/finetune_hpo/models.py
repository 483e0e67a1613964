"""The models a trial trains: the pretrained model with its task head (seeded, float32), and its adapter
(LoRA, DoRA) with target modules detected per architecture family."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import torch

from finetune_hpo.methods import method_spec
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.tasks import TaskSpec

# Attention projections LoRA adapts by default, per architecture family (first match wins).
LORA_TARGETS_BY_FAMILY: tuple[tuple[str, ...], ...] = (
    ("query", "value"),  # BERT, RoBERTa, ELECTRA, DeBERTa (v1)
    ("query_proj", "value_proj"),  # DeBERTa-v2/v3
    ("q_proj", "v_proj"),  # LLaMA, Mistral, Qwen, OPT, BART
    ("q_lin", "v_lin"),  # DistilBERT
    ("q", "v"),  # T5
    ("c_attn",),  # GPT-2
)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trial's result depends on (recorded so Phase 2 can rerun it)."""
    versions = {}
    for package in ("torch", "transformers", "peft", "optuna", "datasets", "finetune-hpo"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) before anything random is built.

    The Trainer seeds only in its constructor, after a model we built ourselves: without this, a LoRA
    adapter's initial A matrix (and a freshly initialised head) would depend on what ran before.
    """
    from transformers import set_seed

    set_seed(seed)


def load_base_model(task: TaskSpec, model_name_or_path: str, seed: int = 42) -> torch.nn.Module:
    """Load the pretrained model with the task's head (randomly initialised from ``seed``, the same for
    every trial and every process).

    Weights are loaded in float32 whatever the checkpoint stores: transformers 5 defaults to
    ``dtype="auto"``, so a bf16 checkpoint would otherwise train in bf16 weights, where updates of a
    1e-6 learning rate vanish. Mixed precision, when asked for, is the Trainer's autocast on top.
    """
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    seed_everything(seed)
    if task.is_classification:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path,
            num_labels=task.num_labels,
            id2label=dict(enumerate(task.label_names)),
            label2id={name: index for index, name in enumerate(task.label_names)},
            dtype=torch.float32,
        )
    else:
        model = AutoModelForQuestionAnswering.from_pretrained(model_name_or_path, dtype=torch.float32)
    if getattr(model.config, "pad_token_id", None) is None and getattr(model.config, "eos_token_id", None) is not None:
        model.config.pad_token_id = model.config.eos_token_id  # decoder-only models have no pad token
    return model


def detect_lora_target_modules(model: torch.nn.Module) -> list[str]:
    """The attention projections LoRA should adapt in ``model``, by architecture family."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if not list(module.children())}
    for family in LORA_TARGETS_BY_FAMILY:
        if all(name in leaf_names for name in family):
            return list(family)
    raise ValueError(
        f"cannot detect LoRA target modules of {type(model).__name__}; set model.lora_target_modules in the config"
    )


def detect_modules_to_save(model: torch.nn.Module) -> list[str]:
    """Modules that masked-LM pretraining leaves untrained and a sentence task needs (BERT's pooler)."""
    return ["pooler"] if any(name.endswith("pooler") for name, _ in model.named_modules()) else []


def resolve_lora_modules(
    model: torch.nn.Module,
    target_modules: str | Sequence[str] | None = None,
    modules_to_save: Sequence[str] | None = None,
) -> tuple[str | list[str], list[str]]:
    """The LoRA target modules and the extra fully trained modules, as configured or else detected."""
    # A string is a regular expression over full module names (peft's convention); a list matches suffixes.
    targets = target_modules or detect_lora_target_modules(model)
    resolved_targets = targets if isinstance(targets, str) else list(targets)
    to_save = list(modules_to_save if modules_to_save is not None else detect_modules_to_save(model))
    return resolved_targets, to_save


def build_trial_model(
    base_model: torch.nn.Module,
    task: TaskSpec,
    method: str,
    params: HyperParameters,
    lora_target_modules: str | Sequence[str] | None = None,
    lora_modules_to_save: Sequence[str] | None = None,
) -> torch.nn.Module:
    """A fresh copy of the base model, wrapped in the method's peft adapter when it has one (LoRA, DoRA).

    Call :func:`seed_everything` first: an adapter's initialisation draws from the global RNG.
    """
    model = copy.deepcopy(base_model)
    spec = method_spec(method)
    if spec.adapter_config is None:
        return model
    from peft import TaskType, get_peft_model

    target_modules, modules_to_save = resolve_lora_modules(model, lora_target_modules, lora_modules_to_save)
    task_type = TaskType.SEQ_CLS if task.is_classification else TaskType.QUESTION_ANS
    return get_peft_model(
        model, spec.adapter_config(params.method_parameters, target_modules, modules_to_save, task_type)
    )


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
