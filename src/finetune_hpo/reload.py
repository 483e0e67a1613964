"""A saved model reloaded for its independent check: with plain ``AutoModelFor...`` for full weights or
``peft.PeftModel`` for an adapter, in float32, and run batch by batch in the given order, padded as the
study padded (extractive QA on the right)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from finetune_hpo.best_model import read_best_model_info, resolve_saved_model
from finetune_hpo.tasks import task_from_record

logger = logging.getLogger(__name__)

# Features in, model outputs out (batched, in order).
Forward = Callable[[list[dict[str, Any]]], list[Any]]


class EvaluationError(RuntimeError):
    """A saved model or data file that cannot be scored; the message names it."""


def load_saved_model(model_dir: Path, base_model: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Load a model saved by the workflow: ``AutoModelFor...`` for full weights, ``PeftModel`` for an adapter.

    Args:
        model_dir: A ``best_model`` folder (or link; it is resolved once, so a concurrent swap cannot
            mix two trials' files).
        base_model: LoRA only: the base model to put the adapter on (default: the one it was trained on).

    Returns:
        The model (in eval mode, float32, on the GPU when there is one), its tokenizer and the
        workflow's info about it.
    """
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    model_dir = resolve_saved_model(Path(model_dir))
    info = read_best_model_info(model_dir)
    if info is None:
        raise EvaluationError(f"{model_dir} holds no model saved by finetune-hpo (no finetune_hpo.json)")
    task = task_from_record(info)
    auto_class = AutoModelForSequenceClassification if task.is_classification else AutoModelForQuestionAnswering
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        # As the study built it: a module the checkpoint lacks and LoRA does not train (e.g. a pooler
        # left out of modules_to_save) keeps the initialisation drawn from the study's seed.
        set_seed(int(info["seed"]))
        head = {"num_labels": task.num_labels} if task.is_classification else {}
        base_name = base_model or info["base_model"]
        # transformers' load report would call the head MISSING: it is, in the base checkpoint, and the
        # adapter's trained copy replaces it next. Said in one line below instead.
        with _without_load_report():
            base, loading = auto_class.from_pretrained(base_name, dtype=torch.float32, output_loading_info=True, **head)
        if (
            getattr(base.config, "pad_token_id", None) is None
            and getattr(base.config, "eos_token_id", None) is not None
        ):
            base.config.pad_token_id = base.config.eos_token_id  # decoder-only models have no pad token
        model = PeftModel.from_pretrained(base, str(model_dir))
        _log_head_source(model_dir, base_name, sorted(loading["missing_keys"]))
    else:
        model = auto_class.from_pretrained(str(model_dir), dtype=torch.float32)
    if torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval(), tokenizer, info


def _is_not_load_report(record: logging.LogRecord) -> bool:
    return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _without_load_report() -> Iterator[None]:
    """Drop transformers' LOAD REPORT (a warning of ``transformers.modeling_utils``) during one load; its
    other warnings and errors still show. A filter, not a higher level: transformers logs its
    tensor-parallel plan whenever that logger's level is above WARNING."""
    report_logger = logging.getLogger("transformers.modeling_utils")
    report_logger.addFilter(_is_not_load_report)
    try:
        yield
    finally:
        report_logger.removeFilter(_is_not_load_report)


def _log_head_source(model_dir: Path, base_name: str, missing: list[str]) -> None:
    """One line on where the weights the base checkpoint lacks came from: the adapter (its trained head),
    or, for any it does not hold either, the study's seeded initialisation."""
    adapter_file = Path(model_dir) / "adapter_model.safetensors"
    if not missing or not adapter_file.is_file():
        return
    from safetensors import safe_open

    with safe_open(str(adapter_file), "pt") as weights:
        saved = {key.removeprefix("base_model.model.") for key in weights.keys()}  # noqa: SIM118
    from_adapter = [key for key in missing if key in saved]
    if from_adapter:
        logger.info(
            "%s: the base model %s has no trained %s; loaded from the adapter",
            model_dir,
            base_name,
            ", ".join(sorted({key.rsplit(".", 1)[0] for key in from_adapter})),
        )
    elsewhere = [key for key in missing if key not in saved]
    if elsewhere:
        logger.warning(
            "%s: %s in neither the base model nor the adapter: initialised from the study's seed, as in training",
            model_dir,
            ", ".join(elsewhere),
        )


def forward_in_order(model: Any, tokenizer: Any, precision: str, batch_size: int, padding_side: str | None) -> Forward:
    """``features -> outputs``: the model run batch by batch in the given order, on the model's device."""
    return functools.partial(
        _run_batches, model, tokenizer, precision=precision, batch_size=batch_size, padding_side=padding_side
    )


def _run_batches(
    model: Any,
    tokenizer: Any,
    features: list[dict[str, Any]],
    *,
    precision: str,
    batch_size: int,
    padding_side: str | None = None,
) -> list[Any]:
    """The model's outputs for ``features``, ``batch_size`` at a time, padded on ``padding_side`` (``None``:
    the tokenizer's; extractive QA pads on the right, as the study's collator does, so token positions stay
    those of the windowing).

    On a GPU, a trial that trained in bf16/fp16 also evaluated under the Trainer's autocast (and with
    TF32 matmuls); the reload scores the same way, or one flipped prediction would move the score.
    """
    import torch

    device = next(model.parameters()).device
    forward = model.get_base_model().forward if hasattr(model, "get_base_model") else model.forward
    accepted = set(inspect.signature(forward).parameters)
    autocast: Any = contextlib.nullcontext()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.cuda.get_device_capability()[0] >= 8
        if precision in ("bf16", "fp16"):
            autocast = torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    outputs = []
    with torch.inference_mode(), autocast:
        for begin in range(0, len(features), batch_size):
            batch = tokenizer.pad(features[begin : begin + batch_size], padding_side=padding_side, return_tensors="pt")
            # Like the Trainer, pass only what the model's forward takes.
            outputs.append(model(**{key: value.to(device) for key, value in batch.items() if key in accepted}))
    return outputs
