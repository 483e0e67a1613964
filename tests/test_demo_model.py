"""The demo's tiny model is a function of its corpus and seed: the same files in every process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from finetune_hpo.demo import corpus_vocabulary, write_corpus
from tests.conftest import REPO

BUILD = """
import sys
from pathlib import Path
from finetune_hpo.demo import build_tiny_model
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


def test_every_corpus_word_is_one_token_and_no_task_text_is_unknown(tmp_path: Path) -> None:
    from transformers import BertTokenizer

    from finetune_hpo.demo import corpus_sentences

    lines = list(corpus_sentences(1500, seed=0))
    vocabulary = corpus_vocabulary(lines)
    assert len(vocabulary) == len(set(vocabulary))
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(vocabulary)}, do_lower_case=True)
    words = {word for line in lines for word in line.lower().split()}
    assert all(len(tokenizer.tokenize(word)) == 1 for word in words if word.isalpha())
    # A word the corpus lacks falls back to its characters (WordPiece's ## pieces), not [UNK].
    assert tokenizer.tokenize("lampsa") != ["[UNK]"]
    assert "[UNK]" not in tokenizer.tokenize(" ".join(lines[:200]))
