"""The embedded demo's tiny BERT: a corpus written from the demo's task generators, a vocabulary in which each
of its words is one token, and a masked-LM pretraining, all seeded, so the same corpus, seed and thread count
give the same model files.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_hpo.demo import GENERATORS, NEGATIVE, POSITIVE, WORKS
from finetune_hpo.io import write_text_atomic

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, BertTokenizer

logger = logging.getLogger(__name__)


def corpus_sentences(n_sentences: int, seed: int) -> Iterator[str]:
    """Pretraining text: every task's sentences, plus sentences where sentiment words keep telling company."""
    rng = random.Random(f"{seed}-corpus")
    tasks = list(GENERATORS)
    for index in range(n_sentences):
        kind = index % (len(tasks) + 1)
        if kind == len(tasks):
            positive = rng.random() < 0.5
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            feeling = rng.choice(("loved", "enjoyed", "adored") if positive else ("hated", "regretted", "disliked"))
            yield f"i {feeling} this {rng.choice(WORKS)} , it was {word} ."
            continue
        row = GENERATORS[tasks[kind]](rng, index)
        # Same order as the model reads them (question before context), so masked-LM sees names repeated.
        yield " ".join(str(row[k]) for k in ("sentence", "sentence1", "sentence2", "question", "context") if k in row)
        if "answers" in row:
            # Questions beside what answers them: "where" with a place, "when" with "nobody knows".
            answer = row["answers"]["text"][0] if row["answers"]["text"] else "nobody knows"
            yield f"{row['question']} {answer} ."


def write_corpus(path: Path, n_sentences: int, seed: int) -> None:
    write_text_atomic(path, "".join(sentence + "\n" for sentence in corpus_sentences(n_sentences, seed)))


def corpus_vocabulary(lines: Iterable[str]) -> list[str]:
    """A WordPiece vocabulary in which every word of the corpus is one token, in a fixed order.

    BERT's special tokens come first, then the corpus's words, single characters and ``##`` characters
    (the fallback for a word the corpus lacks), each sorted. The words are split by BERT's own normalizer
    and pre-tokenizer, so the tokenizer built on this vocabulary sees exactly these words.

    Why not ``tokenizers``' WordPiece trainer: its vocabulary changes from one run to the next on the same
    corpus (huggingface/tokenizers#1794: ids come from hash-map iteration order and break ties between
    merges), and with it the pretrained model and every demo score. On the demo's 168-word corpus the
    trainer made each word one token anyway.
    """
    from tokenizers.normalizers import BertNormalizer
    from tokenizers.pre_tokenizers import BertPreTokenizer

    normalizer = BertNormalizer(lowercase=True)
    pre_tokenizer = BertPreTokenizer()
    words = {word for line in lines for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))}
    characters = sorted({character for word in words for character in word})
    return [
        *("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"),
        *sorted(words - set(characters)),
        *characters,
        *(f"##{character}" for character in characters),
    ]


# A progress line at least this often: on a 2-core machine busy with other work, torch's two threads wait on
# each other and pretraining slows several-fold; a line per 100 steps then left the terminal silent for over
# a minute.
PROGRESS_SECONDS = 10.0


class _Progress:
    """Logs the pretraining's step, loss, speed and time left: after the first and the last step, and at
    least every ``every_seconds`` in between."""

    def __init__(self, total_steps: int, every_seconds: float) -> None:
        self.total_steps = total_steps
        self.every_seconds = every_seconds
        self.started = self.logged = time.perf_counter()

    def step(self, done: int, loss: float) -> None:
        now = time.perf_counter()
        if done not in (1, self.total_steps) and now - self.logged < self.every_seconds:
            return
        self.logged = now
        rate = done / max(now - self.started, 1e-9)
        left = (self.total_steps - done) / rate
        logger.info(
            "masked-LM step %d/%d loss %.3f, %.1f steps/s, %s",
            done,
            self.total_steps,
            loss,
            rate,
            f"about {left:.0f} s left" if done < self.total_steps else f"done in {now - self.started:.0f} s",
        )


def build_tiny_model(
    corpus_path: Path,
    out_dir: Path,
    *,
    seed: int,
    pretrain_steps: int,
    hidden_size: int = 128,
    num_layers: int = 2,
    max_length: int = 128,
    threads: int = 1,
    progress_seconds: float = PROGRESS_SECONDS,
) -> dict[str, Any]:
    """Build a word-level WordPiece tokenizer from the corpus, pretrain a tiny BERT on it by masked-LM,
    and save both. The same corpus, seed and thread count give the same files.

    Args:
        corpus_path: One sentence per line.
        out_dir: Model directory, loadable with ``from_pretrained``.
        seed: Seed of initialisation and masking.
        pretrain_steps: Masked-LM optimizer steps (fixed, so the model is the same on every machine).
        hidden_size: Width of the tiny BERT.
        num_layers: Transformer layers.
        max_length: Position embeddings (longest input).
        threads: CPU threads for torch.
        progress_seconds: Log a progress line at least this often (and after the first and last step).
    """
    import torch
    from transformers import set_seed

    torch.set_num_threads(max(1, threads))
    set_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = corpus_path.read_text().splitlines()
    vocabulary = corpus_vocabulary(lines)
    tokenizer = _word_tokenizer(vocabulary, max_length)
    model = _tiny_bert(len(tokenizer), hidden_size, num_layers, max_length)
    logger.info(
        "masked-LM pretraining of a %d-wide, %d-layer BERT (%d words, %d corpus sentences): %d steps on %d "
        "thread(s), a progress line every %.0f s",
        hidden_size,
        num_layers,
        len(vocabulary),
        len(lines),
        pretrain_steps,
        max(1, threads),
        progress_seconds,
    )
    losses = _pretrain(model, tokenizer, lines, seed=seed, steps=pretrain_steps, progress_seconds=progress_seconds)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-50:]) / min(50, len(losses)),
    }


def _word_tokenizer(vocabulary: list[str], max_length: int) -> BertTokenizer:
    from transformers import BertTokenizer

    # transformers 5: BertTokenizer is the fast (tokenizers-backed) one and takes the vocabulary directly.
    return BertTokenizer(
        vocab={token: index for index, token in enumerate(vocabulary)}, do_lower_case=True, model_max_length=max_length
    )


def _tiny_bert(vocab_size: int, hidden_size: int, num_layers: int, max_length: int) -> BertForMaskedLM:
    """A freshly initialised masked-LM BERT (from torch's seeded generator), heads of 64 dimensions."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 64),
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max_length,
        type_vocab_size=2,
    )
    return BertForMaskedLM(config)


def _pretrain(
    model: BertForMaskedLM,
    tokenizer: BertTokenizer,
    lines: list[str],
    *,
    seed: int,
    steps: int,
    progress_seconds: float,
) -> list[float]:
    """Masked-LM steps on batches of 64 corpus lines drawn with ``seed``; each step's loss."""
    import torch
    from transformers import DataCollatorForLanguageModeling

    encoded = tokenizer(lines, truncation=True, max_length=64)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    rng = random.Random(seed)
    model.train()
    losses = []
    progress = _Progress(steps, progress_seconds)
    for step in range(steps):
        batch = collator([{"input_ids": encoded[rng.randrange(len(encoded))]} for _ in range(64)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        progress.step(step + 1, sum(losses[-100:]) / len(losses[-100:]))
    return losses
