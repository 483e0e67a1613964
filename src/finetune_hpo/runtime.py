"""The hardware a process trains on: which precision it really computes in, and how its memory is handed back.

Shared by the study's trials and the confirmation's retraining, so both resolve ``training.precision`` and
free memory the same way.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)


def effective_precision(precision: str) -> str:
    """The precision a trial really trains in: ``auto`` takes bf16 where the GPU computes it natively
    (Ampere and newer), fp32 elsewhere.

    ``torch.cuda.is_bf16_supported()`` also answers yes for GPUs that only emulate bf16 (a V100, a T4), where
    it is slower than fp32; only native support counts here. A study records the resolved value in its
    definition, so resuming it on other hardware is refused rather than mixing precisions.
    """
    cuda = torch.cuda.is_available()
    native_bf16 = cuda and torch.cuda.is_bf16_supported(including_emulation=False)
    if precision == "auto":
        precision = "bf16" if native_bf16 else "fp32"
    if precision in ("bf16", "fp16") and not cuda:
        logger.warning("precision %s needs a GPU; training in fp32 on the CPU", precision)
        precision = "fp32"
    if precision == "bf16" and not native_bf16:
        logger.warning("training.precision is bf16, which this GPU only emulates (slower than fp32); as asked")
    return precision


def resolve_precision(precision: str) -> dict[str, bool]:
    """TrainingArguments flags for ``precision`` (see :func:`effective_precision`)."""
    cuda = torch.cuda.is_available()
    precision = effective_precision(precision)
    flags = {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    if cuda and torch.cuda.get_device_capability()[0] >= 8:
        flags["tf32"] = True  # Ampere and newer: TF32 matmuls for whatever stays in fp32
    return flags


@contextlib.contextmanager
def frozen_for_garbage_collection() -> Iterator[None]:
    """Keep every object alive at entry (imported modules, loaded data, the base model) out of the collector's
    scans while the block runs, e.g. a study's trials.

    Each trial's Trainer calls ``gc.collect()`` (accelerate's ``free_memory`` at the start of ``train``), and
    CPython's collector walks every tracked object: with torch, transformers and peft imported that took
    0.22 s per trial on the demo's CPU, about 7% of a small trial. Objects made inside the block (each
    trial's model and Trainer) are collected as before; frozen ones are still freed when their reference
    count drops. The freeze is undone on exit, so a process that goes on (a test, a benchmark) is not left
    with a collector that skips its objects.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def free_accelerator_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver (a no-op on a CPU)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
