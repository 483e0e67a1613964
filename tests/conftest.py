"""Shared fixtures: the repository paths, the real-data samples and a tiny pretrained model built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Real SST-2, RTE and SQuAD v2 rows shipped with the tests (tests/data/README.md): every clone has them.
SAMPLES = REPO / "tests" / "data"
# The larger copies (all four tasks, protocol-size splits) beside the checkout, when present: they add
# the checks that need them (defined only then, so a clone without them runs no skipped test).
FULL_REALDATA = Path(os.environ.get("FINETUNE_HPO_REALDATA", REPO.parent / "shared" / "realdata"))
HAS_FULL_REALDATA = (FULL_REALDATA / "mrpc" / "train.jsonl").is_file()


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The shipped real rows: ``<task>/{train,validation}.jsonl`` for sst2, rte and squad_v2."""
    return SAMPLES


@pytest.fixture(scope="session")
def full_realdata() -> Path:
    """The larger real rows of all four tasks (only tests defined when ``HAS_FULL_REALDATA`` use it)."""
    return FULL_REALDATA


# The demo model's pretraining (rule build_demo_model): with it, trials on the synthetic RTE and MRPC rows
# and LoRA on SST-2 learn within two epochs, so trials differ and beat the constant prediction. After 20
# masked-LM steps every classification trial scored the majority class, and a test comparing two of its
# scores compared constants: a zeroed classifier head passed the reproduction tests.
TINY_MODEL_CORPUS_SENTENCES = 20000
TINY_MODEL_PRETRAIN_STEPS = 600


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT pretrained like the demo's (WordPiece vocabulary of the demo corpus, masked-LM), built
    once per session (about 20 s on 2 cores)."""
    from finetune_hpo.demo_model import build_tiny_model, write_corpus

    root = tmp_path_factory.mktemp("tiny_model")
    write_corpus(root / "corpus.txt", n_sentences=TINY_MODEL_CORPUS_SENTENCES, seed=0)
    build_tiny_model(
        root / "corpus.txt",
        root / "model",
        seed=0,
        pretrain_steps=TINY_MODEL_PRETRAIN_STEPS,
        hidden_size=64,
        threads=2,
    )
    return root / "model"


def demo_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "demo" / "config" / "config.yaml").read_text())


def real_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI (``FINETUNE_HPO_REQUIRE_SERVICES``) a skipped test fails the run: CI has every service and
    every data file, so a skip there means a test silently stopped testing."""
    if not os.environ.get("FINETUNE_HPO_REQUIRE_SERVICES") or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(report.nodeid for report in skipped)
        reporter.write_line(f"FAILED: {len(skipped)} test(s) skipped in CI, where nothing may be: {names}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
