"""The embedded demo's data: synthetic rows in each task's real schema, for a tiny BERT it pretrains itself.

Everything is generated deterministically from a seed, offline, in seconds. The tasks carry a learnable
signal (sentiment words, contradiction markers, names that link a question to a sentence) plus harder
cases (negation, changed details, unanswerable questions), so good and bad hyperparameters really differ.
The tiny BERT, its corpus and its pretraining are in :mod:`finetune_hpo.demo_model`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from finetune_hpo.io import write_jsonl_atomic

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
