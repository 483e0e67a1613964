"""The best trial's model, kept: ``results/studies/<study>/best_model/`` with its tokenizer and a model card.

It is written to a folder of its own and then swapped in by replacing a symlink, so a reader (or a kill)
never sees half a model; it is replaced only when a later trial scores strictly higher. It reloads with
plain ``AutoModelFor...`` / ``peft.PeftModel.from_pretrained`` (see :mod:`finetune_hpo.evaluation`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune_hpo.io import write_text_atomic

logger = logging.getLogger(__name__)

BEST_MODEL_DIR = "best_model"
# What the workflow knows about the saved model (task, metric, value, parameters, data, settings).
INFO_FILE = "finetune_hpo.json"


def read_best_model_info(directory: Path) -> dict[str, Any] | None:
    """The info of the saved best model at ``directory``; ``None`` when there is none."""
    info = Path(directory) / INFO_FILE
    if not info.is_file():
        return None
    return json.loads(info.read_text())


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise compare-and-swap between workers of one study that share a filesystem."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_if_best(model: Any, tokenizer: Any, directory: Path, info: Mapping[str, Any]) -> bool:
    """Save ``model`` as the study's best when ``info["value"]`` beats the saved one (ties keep the earlier).

    Args:
        model: The trained model: a transformers model (full fine-tuning) or a peft model (LoRA: the
            adapter and the modules trained in full, the head included, are what is saved).
        tokenizer: The model's tokenizer, saved beside it.
        directory: ``results/studies/<study>/best_model`` (a symlink to the current winner's folder).
        info: Task, method, metric, value, trial, parameters, data hashes and settings of the trial.

    Returns:
        Whether the model was saved.
    """
    directory = Path(directory)
    with _locked(directory):
        current = read_best_model_info(directory)
        if current is not None and float(info["value"]) <= float(current["value"]):
            return False
        target = directory.with_name(f"{directory.name}.trial-{info['trial']}")
        staging = directory.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        write_text_atomic(staging / INFO_FILE, json.dumps(dict(info), indent=2, sort_keys=True) + "\n")
        write_text_atomic(staging / "README.md", model_card(info))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        previous = directory.resolve() if directory.is_symlink() else None
        if directory.exists() and not directory.is_symlink():
            shutil.rmtree(directory)  # a plain folder from a copy: the symlink takes its place
        link = directory.with_name(f".{directory.name}.link-{os.getpid()}")
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        os.replace(link, directory)  # atomic: readers see the old model or the new one, never neither
        if previous is not None and previous != target.resolve():
            shutil.rmtree(previous, ignore_errors=True)
    logger.info(
        "trial %s is the best so far (%s=%.2f): saved to %s", info["trial"], info["metric"], info["value"], target
    )
    return True


def model_card(info: Mapping[str, Any]) -> str:
    """A short Hugging Face model card: what the model is, how it scored, and on which data."""
    is_lora = info["method"] == "lora"
    params = "\n".join(f"| `{name}` | {value} |" for name, value in sorted(info["params"].items()))
    data = info.get("data", {})
    return f"""---
library_name: {"peft" if is_lora else "transformers"}
base_model: {info["base_model"]}
tags: [finetune-hpo, {info["task"]}, {info["method"]}]
---

# {info["study_name"]}: best trial {info["trial"]}

{"A LoRA adapter with its trained head" if is_lora else "A fully fine-tuned model"} for **{info["task"]}**,
the best of the Phase 1 study `{info["study_name"]}` (trial {info["trial"]}).

**Selection score:** {info["metric"]} = {info["value"]:.2f} % on the {data.get("selection_size", "?")}-row selection
set. It is the maximum over the study's trials on the set that chose it, so it is optimistic: see the
confirmation score in `analysis/{info["study_name"]}_optimal.yaml`.

| hyperparameter | value |
|---|---|
{params}

Data: training tier sha256 `{data.get("train_sha256")}`, selection set sha256 `{data.get("selection_sha256")}`.

Reload and score it with plain transformers/peft code:

```bash
finetune-hpo evaluate --model {BEST_MODEL_DIR} --task {info["task"]} --data results/data/{info["task"]}/validation.jsonl
```
"""
