"""The demo's tiny model is a function of its corpus and seed: the same files in every process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from finetune_hpo.demo_model import corpus_sentences, corpus_vocabulary, write_corpus
from tests.conftest import REPO

BUILD = """
import sys
from pathlib import Path
from finetune_hpo.demo_model import build_tiny_model
build_tiny_model(Path(sys.argv[1]), Path(sys.argv[2]), seed=3, pretrain_steps=8, hidden_size=64, threads=2)
"""


def _digests(model_dir: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(model_dir.iterdir())}


def test_the_demo_model_is_byte_identical_across_processes(tmp_path: Path) -> None:
    # tokenizers' WordPiece trainer gave another vocabulary in each process (huggingface/tokenizers#1794),
    # hence another model and other demo scores; two processes with different hash seeds must agree.
    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, n_sentences=1500, seed=0)
    builds = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"model-{hash_seed}"
        subprocess.run(
            [sys.executable, "-c", BUILD, str(corpus), str(out)],
            cwd=REPO,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            check=True,
            capture_output=True,
            timeout=300,
        )
        builds.append(_digests(out))
    assert builds[0] == builds[1]
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(builds[0])


def test_every_word_the_generators_use_is_one_token_and_no_task_text_is_unknown() -> None:
    import random

    from transformers import BertTokenizer

    from finetune_hpo import demo

    vocabulary = corpus_vocabulary(corpus_sentences(20000, seed=42))  # the demo's corpus
    assert len(vocabulary) == len(set(vocabulary))
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocabulary)}, do_lower_case=True)
    word_lists = (demo.NAMES, demo.PLACES, demo.OBJECTS, demo.COLORS, demo.DAYS, demo.POSITIVE, demo.NEGATIVE)
    for word in {word for words in word_lists for phrase in words for word in phrase.lower().split()}:
        assert tokenizer.tokenize(word) == [word], word
    # Rows the corpus was not written from (another seed, every task): nothing becomes [UNK].
    for task, generator in demo.GENERATORS.items():
        rng = random.Random(f"unseen-{task}")
        for index in range(200):
            row = generator(rng, index)
            for text in (value for key, value in row.items() if isinstance(value, str) and key not in ("id", "title")):
                assert tokenizer.unk_token not in tokenizer.tokenize(text), (task, text)
    # A word outside the corpus falls back to WordPiece's ## characters, not [UNK].
    assert tokenizer.tokenize("lampsa")[0] != "[UNK]"


def test_pretraining_logs_its_first_step_and_then_by_the_clock(tmp_path: Path, caplog) -> None:
    # A line per 100 steps left the terminal silent for over a minute on a busy 2-core machine: the first
    # step is logged at once, then a line at least every progress_seconds, with the speed and time left.
    import logging

    from finetune_hpo.demo_model import build_tiny_model

    corpus = tmp_path / "corpus.txt"
    write_corpus(corpus, n_sentences=300, seed=0)
    with caplog.at_level(logging.INFO, logger="finetune_hpo.demo_model"):
        build_tiny_model(corpus, tmp_path / "model", seed=3, pretrain_steps=4, hidden_size=64, progress_seconds=0)
    lines = [record.getMessage() for record in caplog.records if record.name == "finetune_hpo.demo_model"]
    assert lines[0].startswith("masked-LM pretraining of a 64-wide, 2-layer BERT") and "4 steps" in lines[0]
    steps = [line.split()[2] for line in lines[1:]]
    assert steps == ["1/4", "2/4", "3/4", "4/4"]
    assert "steps/s, about" in lines[1] and "done in" in lines[-1]
