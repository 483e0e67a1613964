"""Files the workflow writes honour the umask: a colleague on a shared machine can read the handoffs (the
optimal configs, the review, the trials table, the saved model) when the umask lets them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from finetune_hpo.io import write_json_atomic, write_text_atomic


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of every file and folder under ``root`` (the root included), symlinks skipped."""
    paths = [root, *root.rglob("*")]
    return {str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode) for path in paths if not path.is_symlink()}


def expected_modes(root: Path, mask: int) -> dict[str, int]:
    """What ``open`` and ``mkdir`` create under ``mask``: 0o666 and 0o777 minus the umask."""
    return {
        str(path.relative_to(root)): (0o777 if path.is_dir() else 0o666) & ~mask
        for path in [root, *root.rglob("*")]
        if not path.is_symlink()
    }


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    target = tmp_path / "analysis" / "sst2_lora_optimal.yaml"
    with umask(mask):
        write_text_atomic(target, "study_name: sst2_lora\n")
        assert stat.S_IMODE(target.stat().st_mode) == mode
        write_json_atomic(target, {"replaced": True})  # replacing a file creates a new one: same mode
    assert stat.S_IMODE(target.stat().st_mode) == mode
    assert [path.name for path in target.parent.iterdir()] == [target.name]  # no temporary file left


@pytest.mark.parametrize("mask", [0o022, 0o077])
@pytest.mark.parametrize("method", ["full_finetune", "lora"])
def test_saved_best_model_files_honour_the_umask(tmp_path: Path, tiny_model: Path, mask: int, method: str) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from finetune_hpo.best_model import INFO_FILE, save_trial_model

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model), num_labels=2)
    if method == "lora":
        model = get_peft_model(
            model, LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"])
        )
    info = {
        "trial": 3,
        "task": "sst2",
        "method": method,
        "study_name": f"sst2_{method}",
        "base_model": str(tiny_model),
        "metric": "accuracy",
        "value": 50.0,
        "params": {"learning_rate": 1e-3},
    }
    study_dir = tmp_path / "studies" / f"sst2_{method}"
    with umask(mask):
        saved = save_trial_model(model, AutoTokenizer.from_pretrained(str(tiny_model)), study_dir / "best_model", info)
    weights = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    assert {weights, INFO_FILE, "README.md"} <= {path.name for path in saved.iterdir()}
    assert modes_under(saved) == expected_modes(saved, mask)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o777 & ~mask
