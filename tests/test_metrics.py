"""Metrics against cases worked out by hand (official SQuAD v2 normalization and scoring)."""

from __future__ import annotations

import numpy as np
import pytest

from finetune_hpo.metrics import classification_metrics, normalize_answer, squad_v2_metrics, token_f1


def test_classification_metrics_in_percent() -> None:
    metrics = classification_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    assert metrics["accuracy"] == pytest.approx(75.0)
    # precision 1/2, recall 1/1 -> F1 2/3
    assert metrics["f1"] == pytest.approx(200 / 3)


@pytest.mark.parametrize("seed", range(20))
def test_classification_metrics_are_scikit_learns(seed: int) -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 60))
    # Every case, from mostly positive to no positives at all on either side (F1's zero division).
    labels = (rng.random(size) < rng.random()).astype(int)
    predictions = (rng.random(size) < (rng.random() if seed % 5 else 0.0)).astype(int)
    ours = classification_metrics(predictions, labels)
    assert ours["accuracy"] == pytest.approx(100 * accuracy_score(labels, predictions), abs=1e-12)
    assert ours["f1"] == pytest.approx(
        100 * f1_score(labels, predictions, pos_label=1, average="binary", zero_division=0), abs=1e-12
    )


def test_classification_metrics_refuse_mismatched_or_empty_inputs() -> None:
    with pytest.raises(ValueError, match="at least one"):
        classification_metrics(np.array([], dtype=int), np.array([], dtype=int))
    with pytest.raises(ValueError, match="as many"):
        classification_metrics(np.array([0, 1]), np.array([1]))


def test_normalization_drops_case_punctuation_articles_and_extra_space() -> None:
    assert normalize_answer("  The  Eiffel-Tower, in   PARIS! ") == "eiffeltower in paris"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("theater") == "theater"  # only whole-word articles go


def test_partial_overlap_f1() -> None:
    # prediction "the big red barn" -> [big, red, barn]; gold "red barn" -> [red, barn]:
    # precision 2/3, recall 1 -> 0.8
    assert token_f1("the big red barn", "red barn") == pytest.approx(0.8)


def test_max_over_gold_answers_and_duplicates() -> None:
    metrics = squad_v2_metrics({"q": "Denver Broncos"}, {"q": ["Broncos", "Denver Broncos", "Denver Broncos"]})
    assert metrics["exact"] == 100.0
    assert metrics["f1"] == 100.0


def test_unanswerable_scores_only_for_an_empty_prediction() -> None:
    metrics = squad_v2_metrics({"a": "", "b": "something"}, {"a": [], "b": []})
    assert metrics["exact"] == 50.0
    assert metrics["f1"] == 50.0
    assert metrics["NoAns_f1"] == 50.0
    assert "HasAns_f1" not in metrics


def test_empty_prediction_on_answerable_question_scores_zero() -> None:
    metrics = squad_v2_metrics({"a": "", "b": "the Normans."}, {"a": ["France"], "b": ["Normans"]})
    assert metrics["exact"] == 50.0  # "the Normans." normalizes to "normans"
    assert metrics["HasAns_exact"] == 50.0
    assert metrics["HasAns_total"] == 2.0


def test_gold_answers_that_normalize_to_nothing_count_as_unanswerable() -> None:
    # The official script drops gold answers that normalize to "" (e.g. "the").
    assert squad_v2_metrics({"q": ""}, {"q": ["The"]})["f1"] == 100.0


def test_breakdown_averages() -> None:
    predictions = {"h1": "red barn", "h2": "blue", "n1": "", "n2": "x"}
    golds = {"h1": ["the big red barn"], "h2": ["green"], "n1": [], "n2": []}
    metrics = squad_v2_metrics(predictions, golds)
    assert metrics["HasAns_f1"] == pytest.approx(100 * (0.8 + 0.0) / 2)
    assert metrics["NoAns_f1"] == pytest.approx(50.0)
    assert metrics["f1"] == pytest.approx(100 * (0.8 + 0 + 1 + 0) / 4)


def test_missing_prediction_is_an_error() -> None:
    with pytest.raises(ValueError, match="no prediction"):
        squad_v2_metrics({}, {"q": ["a"]})


def test_standard_errors_of_grouped_rows_resample_groups() -> None:
    from finetune_hpo.metrics import classification_standard_error, mean_standard_error

    rng = np.random.default_rng(0)
    # 50 paragraphs of 6 questions each; a paragraph's questions succeed or fail together.
    per_paragraph = rng.integers(0, 2, size=50).astype(float)
    scores = np.repeat(per_paragraph, 6)
    groups = np.repeat(np.arange(50), 6).tolist()
    by_row = mean_standard_error(scores)
    by_group = mean_standard_error(scores, groups)
    # Resampling questions one by one counts 300 independent draws where there are 50: sqrt(6) too small.
    assert by_group == pytest.approx(by_row * 6**0.5, rel=0.15)
    # Independent rows (one per group) agree with the closed form.
    single = rng.integers(0, 2, size=300).astype(float)
    assert mean_standard_error(single, list(range(300))) == pytest.approx(mean_standard_error(single), rel=0.1)
    labels = np.repeat(rng.integers(0, 2, size=50), 6)
    predictions = np.where(scores == 1, labels, 1 - labels)
    assert classification_standard_error("f1", predictions, labels, groups) > classification_standard_error(
        "f1", predictions, labels
    )
