"""QA windows and postprocessing: labels at the right tokens, answers mapped back through offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finetune_hpo.qa import QAWindowing, postprocess_predictions, prepare_train_features, prepare_validation_features

CONTEXT = (
    "Alice lives in Paris. Bruno works in London. Carla studies in Rome. Dmitri teaches in Berlin. "
    "Elena paints in Madrid. Farid sings in Vienna. Greta lives in Oslo. Hiro works in Lisbon."
)


def _batch(question: str, answer: str | None) -> dict:
    answers = {"text": [], "answer_start": []}
    if answer is not None:
        answers = {"text": [answer], "answer_start": [CONTEXT.index(answer)]}
    return {"id": ["q1"], "question": [question], "context": [CONTEXT], "answers": [answers]}


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _decode(tokenizer, features: dict, window: int) -> str:
    ids = features["input_ids"][window]
    start, end = features["start_positions"][window], features["end_positions"][window]
    return tokenizer.decode(ids[start : end + 1])


def test_answer_in_the_second_window_is_labelled_there_only(tokenizer) -> None:
    windowing = QAWindowing(max_seq_length=32, doc_stride=8)
    features = prepare_train_features(_batch("Where does Hiro work?", "Lisbon"), tokenizer, windowing)
    n_windows = len(features["input_ids"])
    assert n_windows >= 2
    labelled = [w for w in range(n_windows) if features["start_positions"][w] != 0]
    assert labelled, "the answer must be labelled in some window"
    assert labelled[0] > 0, "Lisbon is at the end of the context: not in the first window"
    for window in labelled:
        assert _decode(tokenizer, features, window) == "lisbon"
    for window in set(range(n_windows)) - set(labelled):
        assert features["start_positions"][window] == features["end_positions"][window] == 0


def test_answer_cut_by_a_window_boundary_is_labelled_at_cls(tokenizer) -> None:
    windowing = QAWindowing(max_seq_length=32, doc_stride=8)
    answer = "Carla studies in Rome. Dmitri teaches in Berlin"  # long span: no window of 32 tokens holds it
    features = prepare_train_features(_batch("What?", answer), tokenizer, windowing)
    for window in range(len(features["input_ids"])):
        start, end = features["start_positions"][window], features["end_positions"][window]
        if start != 0:
            assert _decode(tokenizer, features, window).replace(" .", ".") == answer.lower()
        else:
            assert end == 0
    # Windows that cut the answer are not labelled with a partial span.
    assert all(
        features["start_positions"][w] == 0 or _decode(tokenizer, features, w).startswith("carla")
        for w in range(len(features["input_ids"]))
    )


def test_unanswerable_question_is_labelled_at_cls_in_every_window(tokenizer) -> None:
    features = prepare_train_features(_batch("Where does Zoe live?", None), tokenizer, QAWindowing(32, 8))
    assert set(features["start_positions"]) == {0}
    assert set(features["end_positions"]) == {0}


def test_validation_offsets_cover_the_context_only(tokenizer) -> None:
    batch = _batch("Where does Hiro work?", "Lisbon")
    features = prepare_validation_features(batch, tokenizer, QAWindowing(32, 8))
    for window, offsets in enumerate(features["offset_mapping"]):
        assert features["example_id"][window] == "q1"
        ids = features["input_ids"][window]
        assert offsets[0] is None  # [CLS]
        question_tokens = len(tokenizer("Where does Hiro work?")["input_ids"]) - 1  # [CLS] .. [SEP]
        assert all(offset is None for offset in offsets[:question_tokens])
        assert offsets[len(ids) - 1] is None  # final [SEP]


def _features(offsets_per_window: list[list]) -> list[dict]:
    return [{"example_id": "q", "offset_mapping": offsets} for offsets in offsets_per_window]


EXAMPLE = [{"id": "q", "context": "Bruno works in London."}]
# token 0 = CLS (no offset), tokens 1..4 = "Bruno", "works", "in", "London"
OFFSETS = [None, (0, 5), (6, 11), (12, 14), (15, 21)]


def test_span_wins_when_its_score_beats_the_null_score() -> None:
    start = np.array([[1.0, 0.0, 0.0, 0.0, 5.0]])
    end = np.array([[1.0, 0.0, 0.0, 0.0, 5.0]])
    (prediction,) = postprocess_predictions(EXAMPLE, _features([OFFSETS]), start, end)
    assert prediction.prediction_text == "London"
    assert prediction.null_score == 2.0
    assert prediction.best_span_score == 10.0


def test_null_wins_when_cls_scores_higher() -> None:
    start = np.array([[6.0, 0.0, 0.0, 0.0, 2.0]])
    end = np.array([[6.0, 0.0, 0.0, 0.0, 2.0]])
    (prediction,) = postprocess_predictions(EXAMPLE, _features([OFFSETS]), start, end)
    assert prediction.prediction_text == ""


def test_threshold_moves_the_decision() -> None:
    start = np.array([[3.0, 0.0, 0.0, 0.0, 2.0]])
    end = np.array([[3.0, 0.0, 0.0, 0.0, 2.0]])  # null 6 vs span 4: null wins by 2
    (default,) = postprocess_predictions(EXAMPLE, _features([OFFSETS]), start, end, null_score_threshold=0.0)
    (lenient,) = postprocess_predictions(EXAMPLE, _features([OFFSETS]), start, end, null_score_threshold=2.5)
    assert default.prediction_text == ""
    assert lenient.prediction_text == "London"


def test_spans_outside_the_context_and_too_long_are_skipped() -> None:
    # The best raw logits point at CLS..token 4 (invalid start) and a span longer than allowed.
    start = np.array([[0.0, 4.0, 0.0, 0.0, 3.0]])
    end = np.array([[0.0, 0.0, 0.0, 0.0, 4.0]])
    (prediction,) = postprocess_predictions(EXAMPLE, _features([OFFSETS]), start, end, max_answer_length=2)
    assert prediction.prediction_text == "London"  # "Bruno works in London" is 4 tokens > 2


def test_best_span_over_several_windows() -> None:
    weak = np.array([[0.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 3.0]])
    (prediction,) = postprocess_predictions(EXAMPLE, _features([OFFSETS, OFFSETS]), weak, weak)
    assert prediction.prediction_text == "London"


def test_a_question_longer_than_the_window_room_is_a_clear_error(tiny_model) -> None:
    from finetune_hpo.data import DataError
    from finetune_hpo.preprocess import load_tokenizer
    from finetune_hpo.qa import QAWindowing, prepare_validation_features

    tokenizer = load_tokenizer(str(tiny_model))
    rows = {"id": ["q1"], "question": ["where " * 40], "context": ["the house is in the city ."]}
    with pytest.raises(DataError, match=r"a question of \d+ tokens .* raise model.qa.max_seq_length"):
        prepare_validation_features(rows, tokenizer, QAWindowing(max_seq_length=48, doc_stride=16))
