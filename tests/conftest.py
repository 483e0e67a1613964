"""Shared fixtures: the repository paths, the real-data samples and a tiny pretrained model built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("FINETUNE_HPO_REALDATA", REPO.parent / "shared" / "realdata"))


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not (REALDATA / "sst2" / "train.jsonl").is_file():
        pytest.skip(f"real task samples not found at {REALDATA} (set FINETUNE_HPO_REALDATA)")
    return REALDATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT with a WordPiece vocabulary from the demo corpus (a short pretraining: tests need a
    real model, not a good one)."""
    from finetune_hpo.demo import build_tiny_model, write_corpus

    root = tmp_path_factory.mktemp("tiny_model")
    write_corpus(root / "corpus.txt", n_sentences=2000, seed=0)
    build_tiny_model(root / "corpus.txt", root / "model", seed=0, pretrain_steps=20, hidden_size=64, threads=2)
    return root / "model"


def demo_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "demo" / "config" / "config.yaml").read_text())


def real_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())
