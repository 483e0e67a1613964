"""Extractive QA (SQuAD v2) pre- and postprocessing, after HF ``run_qa.py`` / ``utils_qa.py``.

Long contexts are split into overlapping windows; the answer is labelled in the window that holds all of
it, every other window (and every unanswerable question) at the CLS position. Postprocessing picks, per
question, the best span over all its windows and compares it with the null (CLS) score.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from finetune_hpo.data import DataError


@dataclass(frozen=True)
class QAWindowing:
    """How questions and contexts are cut into model inputs.

    Args:
        max_seq_length: Tokens per window, question and special tokens included.
        doc_stride: Tokens shared by consecutive windows.
    """

    max_seq_length: int = 384
    doc_stride: int = 128

    def __post_init__(self) -> None:
        if self.doc_stride >= self.max_seq_length:
            raise ValueError(
                f"model.qa.doc_stride ({self.doc_stride}) must be smaller than "
                f"model.qa.max_seq_length ({self.max_seq_length})"
            )


class WindowingError(DataError):
    """A question too long for the configured windows; the message names it and the setting to change."""


def _tokenize_windows(examples: Mapping[str, list], tokenizer: Any, windowing: QAWindowing) -> Any:
    pad_on_right = tokenizer.padding_side == "right"
    # Leading spaces in questions waste window room and confuse some tokenizers (as in run_qa.py).
    questions = [question.lstrip() for question in examples["question"]]
    contexts = examples["context"]
    # Every window repeats the question; the context part must still exceed the stride, or the fast
    # tokenizer panics (a Rust PanicException that names nothing).
    room = windowing.max_seq_length - windowing.doc_stride - tokenizer.num_special_tokens_to_add(pair=True)
    lengths = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
    if lengths and max(lengths) >= room:
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        raise WindowingError(
            f"a question of {lengths[longest]} tokens ({questions[longest][:60]!r}...) leaves no context room in "
            f"{windowing.max_seq_length}-token windows with stride {windowing.doc_stride}; raise "
            "model.qa.max_seq_length or lower model.qa.doc_stride"
        )
    return tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=windowing.max_seq_length,
        stride=windowing.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )


def _context_index(tokenizer: Any) -> int:
    return 1 if tokenizer.padding_side == "right" else 0


def prepare_train_features(examples: Mapping[str, list], tokenizer: Any, windowing: QAWindowing) -> dict:
    """Tokenize a batch of SQuAD rows into windows labelled with ``start_positions``/``end_positions``.

    A window that does not hold the whole answer, and every window of an unanswerable question, is
    labelled at its CLS token (index 0), which is how the model learns the null answer.
    """
    tokenized = _tokenize_windows(examples, tokenizer, windowing)
    sample_map = tokenized.pop("overflow_to_sample_mapping")
    offsets_all = tokenized.pop("offset_mapping")
    context_index = _context_index(tokenizer)
    starts, ends = [], []
    for window, offsets in enumerate(offsets_all):
        input_ids = tokenized["input_ids"][window]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(window)
        answers = examples["answers"][sample_map[window]]
        if not answers["answer_start"]:
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = sequence_ids.index(context_index)
        token_end = len(sequence_ids) - 1 - sequence_ids[::-1].index(context_index)
        if offsets[token_start][0] > start_char or offsets[token_end][1] < end_char:
            # The answer is (partly) outside this window.
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        while token_start <= token_end and offsets[token_start][0] <= start_char:
            token_start += 1
        while token_end >= token_start - 1 and offsets[token_end][1] >= end_char:
            token_end -= 1
        starts.append(token_start - 1)
        ends.append(token_end + 1)
    tokenized["start_positions"] = starts
    tokenized["end_positions"] = ends
    tokenized["length"] = [len(ids) for ids in tokenized["input_ids"]]
    return dict(tokenized)


def prepare_validation_features(
    examples: Mapping[str, list], tokenizer: Any, windowing: QAWindowing, id_column: str = "id"
) -> dict:
    """Tokenize a batch of SQuAD rows into windows that keep ``example_id`` and context-only offsets.

    Offsets of question and special tokens are set to ``None`` so postprocessing can only pick spans
    inside the context.
    """
    tokenized = _tokenize_windows(examples, tokenizer, windowing)
    sample_map = tokenized.pop("overflow_to_sample_mapping")
    context_index = _context_index(tokenizer)
    example_ids, offset_mapping = [], []
    for window, offsets in enumerate(tokenized["offset_mapping"]):
        sequence_ids = tokenized.sequence_ids(window)
        example_ids.append(examples[id_column][sample_map[window]])
        offset_mapping.append(
            [offset if sequence_ids[k] == context_index else None for k, offset in enumerate(offsets)]
        )
    tokenized["example_id"] = example_ids
    tokenized["offset_mapping"] = offset_mapping
    return dict(tokenized)


@dataclass(frozen=True)
class QAPrediction:
    """The answer chosen for one question.

    Args:
        id: The question's id.
        prediction_text: The answer, empty when the null answer wins.
        null_score: CLS start + end logit, lowest over the question's windows.
        best_span_score: Start + end logit of the best span (``-inf`` when no valid span exists).
    """

    id: str
    prediction_text: str
    null_score: float
    best_span_score: float


def postprocess_predictions(
    examples: Sequence[Mapping[str, Any]],
    features: Sequence[Mapping[str, Any]],
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    *,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_score_threshold: float = 0.0,
    id_column: str = "id",
) -> list[QAPrediction]:
    """Pick each question's answer from its windows' start/end logits.

    Args:
        examples: Raw rows with ``id_column`` and ``context``.
        features: Windows with ``example_id`` and ``offset_mapping`` (``None`` outside the context).
        start_logits: ``[n_windows, seq_len]`` start logits, in the order of ``features``.
        end_logits: Same for end logits.
        n_best: Start and end candidates considered per window.
        max_answer_length: Longest span, in tokens.
        null_score_threshold: The answer is empty when ``null_score - best_span_score`` exceeds this.
        id_column: Name of the id column of ``examples``.
    """
    windows_of: dict[Any, list[int]] = collections.defaultdict(list)
    for index, feature in enumerate(features):
        windows_of[feature["example_id"]].append(index)
    predictions = []
    for example in examples:
        context = example["context"]
        null_score = float("inf")
        best_score, best_text = float("-inf"), ""
        for window in windows_of.get(example[id_column], []):
            offsets = features[window]["offset_mapping"]
            # Only the window's own tokens: positions past it are batch padding, whose logits depend on
            # how the window was batched and could crowd every real span out of the n-best candidates.
            starts, ends = start_logits[window][: len(offsets)], end_logits[window][: len(offsets)]
            # The lowest null score over windows, as in the official SQuAD v2 postprocessing of run_qa.
            null_score = min(null_score, float(starts[0] + ends[0]))
            start_candidates = np.argsort(starts)[-1 : -n_best - 1 : -1]
            end_candidates = np.argsort(ends)[-1 : -n_best - 1 : -1]
            for start in start_candidates:
                for end in end_candidates:
                    if offsets[start] is None or offsets[end] is None:
                        continue
                    if end < start or end - start + 1 > max_answer_length:
                        continue
                    score = float(starts[start] + ends[end])
                    if score > best_score:
                        best_score = score
                        best_text = context[offsets[start][0] : offsets[end][1]]
        if null_score == float("inf"):
            null_score = 0.0  # a question without windows: no evidence either way
        answer = "" if null_score - best_score > null_score_threshold else best_text
        predictions.append(QAPrediction(example[id_column], answer, null_score, best_score))
    return predictions
