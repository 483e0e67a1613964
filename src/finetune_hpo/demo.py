"""The embedded demo: synthetic data in each task's real schema and a tiny BERT it pretrains itself.

Everything is generated deterministically from a seed, offline, in seconds. The tasks carry a learnable
signal (sentiment words, contradiction markers, names that link a question to a sentence) plus harder
cases (negation, changed details, unanswerable questions), so good and bad hyperparameters really differ.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from finetune_hpo.io import write_jsonl_atomic, write_text_atomic

logger = logging.getLogger(__name__)

NAMES = (
    "alice",
    "bruno",
    "carla",
    "dmitri",
    "elena",
    "farid",
    "greta",
    "hiro",
    "irene",
    "jonas",
    "kofi",
    "lena",
    "marco",
    "nadia",
    "oscar",
    "priya",
    "quinn",
    "rosa",
    "samir",
    "tanya",
)
PLACES = (
    "paris",
    "london",
    "rome",
    "berlin",
    "madrid",
    "vienna",
    "oslo",
    "lisbon",
    "prague",
    "dublin",
    "athens",
    "warsaw",
    "cairo",
    "lima",
    "tokyo",
    "seoul",
)
ACTIVITIES = (
    ("lives", "live", "lived"),
    ("works", "work", "worked"),
    ("studies", "study", "studied"),
    ("teaches", "teach", "taught"),
    ("paints", "paint", "painted"),
    ("sings", "sing", "sang"),
)
OBJECTS = ("car", "house", "boat", "painting", "piano", "bicycle", "camera", "guitar", "lamp", "clock")
COLORS = ("red", "blue", "green", "old", "new", "small", "large", "white")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
BUY_VERBS = (("bought", "purchased"), ("sold", "traded away"), ("found", "discovered"), ("lost", "misplaced"))
WORKS = ("film", "movie", "book", "album", "show", "play", "story", "series")
POSITIVE = (
    "brilliant",
    "wonderful",
    "charming",
    "delightful",
    "superb",
    "moving",
    "gripping",
    "clever",
    "beautiful",
    "funny",
)
NEGATIVE = ("dull", "tedious", "awful", "clumsy", "bland", "boring", "messy", "shallow", "painful", "lifeless")
ASPECTS = ("plot", "cast", "ending", "music", "script", "pacing", "dialogue", "camera work")
FILLERS = ("really", "quite", "truly", "rather", "simply", "mostly")


def _sentiment_phrase(rng: random.Random) -> tuple[str, int]:
    positive = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if positive else NEGATIVE)
    work, aspect = rng.choice(WORKS), rng.choice(ASPECTS)
    negated = rng.random() < 0.2  # negation flips the label: the hard cases
    label = int(positive != negated)
    adverb = rng.choice(FILLERS)
    if negated:
        text = rng.choice(
            [f"the {aspect} of this {work} is not {adverb} {adjective}", f"this {work} was never {adjective}"]
        )
    else:
        text = rng.choice(
            [
                f"the {aspect} of this {work} is {adverb} {adjective}",
                f"a {adjective} {work} with a {rng.choice(('fine', 'plain', 'long'))} {aspect}",
                f"this {work} was {adjective} from start to finish",
            ]
        )
    return text, label


def sst2_row(rng: random.Random, index: int) -> dict[str, Any]:
    text, label = _sentiment_phrase(rng)
    return {"sentence": text + " ", "label": label, "idx": index}


def _event(rng: random.Random) -> dict[str, str]:
    verb = rng.choice(BUY_VERBS)
    return {
        "name": rng.choice(NAMES),
        "verb": verb[0],
        "synonym": verb[1],
        "color": rng.choice(COLORS),
        "object": rng.choice(OBJECTS),
        "place": rng.choice(PLACES),
        "day": rng.choice(DAYS),
    }


def _change_detail(rng: random.Random, event: dict[str, str]) -> dict[str, str]:
    changed = dict(event)
    slot = rng.choice(("name", "place", "day", "object"))
    pool = {"name": NAMES, "place": PLACES, "day": DAYS, "object": OBJECTS}[slot]
    changed[slot] = rng.choice([value for value in pool if value != event[slot]])
    return changed


def _describe(event: dict[str, str], form: str) -> str:
    """One sentence about ``event``: ``plain`` and ``reordered`` agree, ``denied`` and ``never`` contradict."""
    name, place, day = event["name"].title(), event["place"].title(), event["day"].title()
    thing = f"{event['color']} {event['object']}"
    return {
        "plain": f"{name} {event['verb']} a {thing} in {place} on {day}.",
        "reordered": f"On {day}, {name} {event['synonym']} a {thing} in {place}.",
        "denied": f"{name} denied that he {event['verb']} the {event['object']} in {place}.",
        "never": f"{name} never {event['verb']} a {thing} in {place}.",
    }[form]


def mrpc_row(rng: random.Random, index: int) -> dict[str, Any]:
    event = _event(rng)
    equivalent = rng.random() < 0.5
    if equivalent:
        second = _describe(event, "reordered")
    else:
        # Most non-paraphrases say so ("denied", "never"); the rest only change a detail.
        other = _change_detail(rng, event)
        second = _describe(other, rng.choice(("denied", "never")) if rng.random() < 0.75 else "reordered")
    return {"sentence1": _describe(event, "plain"), "sentence2": second, "label": int(equivalent), "idx": index}


def _fact(rng: random.Random, name: str | None = None) -> tuple[str, str, tuple[str, str, str]]:
    name = name or rng.choice(NAMES)
    activity = rng.choice(ACTIVITIES)
    place = rng.choice(PLACES)
    return name, place, activity


def rte_row(rng: random.Random, index: int) -> dict[str, Any]:
    names = rng.sample(NAMES, 3)
    facts = [_fact(rng, name) for name in names]
    premise = " ".join(f"{n.title()} {a[0]} in {p.title()}." for n, p, a in facts)
    name, place, activity = rng.choice(facts)
    entailed = rng.random() < 0.5
    if entailed:
        hypothesis = rng.choice(
            [
                f"{name.title()} {activity[0]} in {place.title()}.",
                f"{name.title()} has {activity[2]} in {place.title()}.",
            ]
        )
    elif rng.random() < 0.7:
        hypothesis = rng.choice(
            [
                f"{name.title()} does not {activity[1]} in {place.title()}.",
                f"{name.title()} has never {activity[2]} in {place.title()}.",
            ]
        )
    else:
        other_place = rng.choice([p for p in PLACES if p != place])
        hypothesis = f"{name.title()} {activity[0]} in {other_place.title()}."
    # GLUE RTE: 0 = entailment, 1 = not_entailment.
    return {"sentence1": premise, "sentence2": hypothesis, "label": 0 if entailed else 1, "idx": index}


def squad_v2_row(rng: random.Random, index: int) -> dict[str, Any]:
    count = rng.randint(1, 3)
    names = rng.sample(NAMES, count + 1)
    present, absent = names[:count], names[count]
    sentences, spans = [], {}
    offset = 0
    for name in present:
        _, place, activity = _fact(rng, name)
        prefix = f"{name.title()} {activity[0]} in "
        sentence = f"{prefix}{place.title()}."
        spans[name] = (activity, place.title(), offset + len(prefix))
        sentences.append(sentence)
        offset += len(sentence) + 1
    context = " ".join(sentences)
    answerable = rng.random() < 0.75
    if answerable:
        asked = rng.choice(present)
        question = f"Where does {asked.title()} {spans[asked][0][1]}?"
    elif rng.random() < 0.5:
        # Asks for something no context states (a time): learnable from the question alone.
        asked = rng.choice(present)
        question = f"When did {asked.title()} start to {spans[asked][0][1]}?"
    else:
        # Asks about someone the context does not mention: the hard, SQuAD v2-like case.
        asked = absent
        question = f"Where does {asked.title()} {rng.choice(ACTIVITIES)[1]}?"
    if answerable:
        text, start = spans[asked][1], spans[asked][2]
        assert context[start : start + len(text)] == text
        answers = {"text": [text], "answer_start": [start]}
    else:
        answers = {"text": [], "answer_start": []}
    return {"id": f"demo-{index:06d}", "title": "Demo", "context": context, "question": question, "answers": answers}


GENERATORS: dict[str, Callable[[random.Random, int], dict[str, Any]]] = {
    "sst2": sst2_row,
    "mrpc": mrpc_row,
    "rte": rte_row,
    "squad_v2": squad_v2_row,
}


def generate_task_data(task: str, out_dir: Path, n_train: int, n_validation: int, seed: int) -> None:
    """Write ``out_dir/train.jsonl`` and ``out_dir/validation.jsonl`` for ``task`` (hub schema)."""
    generator = GENERATORS[task]
    for offset, (split, size) in enumerate((("train", n_train), ("validation", n_validation))):
        rng = random.Random(f"{seed}-{task}-{split}-{offset}")
        write_jsonl_atomic(out_dir / f"{split}.jsonl", (generator(rng, index) for index in range(size)))


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
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer, DataCollatorForLanguageModeling, set_seed

    torch.set_num_threads(max(1, threads))
    set_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = corpus_path.read_text().splitlines()
    vocabulary = corpus_vocabulary(lines)
    # transformers 5: BertTokenizer is the fast (tokenizers-backed) one and takes the vocabulary directly.
    tokenizer = BertTokenizer(
        vocab={token: index for index, token in enumerate(vocabulary)}, do_lower_case=True, model_max_length=max_length
    )

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 64),
        intermediate_size=hidden_size * 2,
        max_position_embeddings=max_length,
        type_vocab_size=2,
    )
    model = BertForMaskedLM(config)
    encoded = tokenizer(lines, truncation=True, max_length=64)["input_ids"]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=pretrain_steps, pct_start=0.1)
    rng = random.Random(seed)
    model.train()
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
    losses = []
    progress = _Progress(pretrain_steps, progress_seconds)
    for step in range(pretrain_steps):
        batch = collator([{"input_ids": encoded[rng.randrange(len(encoded))]} for _ in range(64)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        progress.step(step + 1, sum(losses[-100:]) / len(losses[-100:]))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-50:]) / min(50, len(losses)),
    }
