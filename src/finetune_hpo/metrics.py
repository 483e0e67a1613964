"""The metric registry, and the metrics: GLUE's accuracy, binary F1 and Matthews correlation, and the official
SQuAD v2 scoring rewritten here; per metric its unit, its constant-prediction baseline and its standard error.

The ``evaluate`` package fetches its metric scripts from the hub, so it cannot run offline; SQuAD v2's
exact match and F1 are short enough to carry, following the official evaluate-v2.0.py normalization.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, num_labels: int = 2) -> dict[str, float]:
    """Accuracy, Matthews correlation and (with two labels) F1 of the positive class (label 1), in points.

    The same numbers as scikit-learn's ``accuracy_score``, ``matthews_corrcoef`` (x 100, as GLUE reports
    CoLA) and ``f1_score(pos_label=1, average="binary", zero_division=0)``, which GLUE's metric wraps
    (``test_metrics.py`` checks them against it), computed with numpy: importing scikit-learn took 1.0 s in
    each study and scoring job, and the bootstrap standard error of F1 calls this 1,000 times (1.7 s with
    scikit-learn for 200 rows, 0.02 s with numpy).

    Args:
        predictions: Predicted label ids.
        labels: Gold label ids.
        num_labels: Classes of the task; F1 of "the positive class" exists for two only.
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or labels.size == 0:
        raise ValueError(f"{predictions.shape} predictions for {labels.shape} labels: need as many, at least one")
    metrics = {
        "accuracy": 100.0 * float(np.mean(predictions == labels)),
        "matthews_correlation": 100.0 * matthews_correlation(predictions, labels),
    }
    if num_labels == 2:
        true_positives = int(np.sum((predictions == 1) & (labels == 1)))
        # 2TP + FP + FN: every row predicted or labelled positive, the true positives twice.
        denominator = int(np.sum(predictions == 1)) + int(np.sum(labels == 1))
        metrics["f1"] = 100.0 * 2 * true_positives / denominator if denominator else 0.0
    return metrics


def matthews_correlation(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient of any number of classes (Gorodkin's R_K, scikit-learn's formula),
    in [-1, 1]; 0 when either side is constant."""
    classes = np.union1d(predictions, labels)
    predicted = np.array([np.sum(predictions == k) for k in classes], dtype=float)
    true = np.array([np.sum(labels == k) for k in classes], dtype=float)
    correct, total = float(np.sum(predictions == labels)), float(labels.size)
    covariance = correct * total - float(predicted @ true)
    spread = (total**2 - float(predicted @ predicted)) * (total**2 - float(true @ true))
    return covariance / np.sqrt(spread) if spread > 0 else 0.0


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, fold whitespace (official SQuAD)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of two answers; two empty answers score 1, one empty scores 0."""
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_v2_question_scores(
    predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]
) -> tuple[dict[str, float], dict[str, float], dict[str, bool]]:
    """Per question: exact match, F1 (both 0..1) and whether it is answerable, as the official script.

    A question's score is the maximum over its gold answers; an unanswerable question scores 1 only for
    an empty prediction. Every gold id must have a prediction.
    """
    missing = [qid for qid in golds if qid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} question(s) have no prediction, e.g. {missing[0]!r}")
    exact_scores, f1_scores, has_answer = {}, {}, {}
    for qid, answers in golds.items():
        answers = [answer for answer in answers if normalize_answer(answer)] or [""]
        prediction = predictions[qid]
        exact_scores[qid] = max(exact_match(prediction, answer) for answer in answers)
        f1_scores[qid] = max(token_f1(prediction, answer) for answer in answers)
        has_answer[qid] = answers != [""]
    return exact_scores, f1_scores, has_answer


def squad_v2_metrics(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """SQuAD v2 exact match and F1 in percent, with HasAns/NoAns breakdowns.

    Args:
        predictions: Question id -> predicted answer ("" for no answer).
        golds: Question id -> gold answer texts (empty for an unanswerable question).
    """
    exact_scores, f1_scores, has_answer = squad_v2_question_scores(predictions, golds)

    def mean(scores: Mapping[str, float], ids: Sequence[str]) -> float:
        return 100.0 * sum(scores[qid] for qid in ids) / len(ids) if ids else 0.0

    all_ids = list(golds)
    has_ids = [qid for qid in all_ids if has_answer[qid]]
    no_ids = [qid for qid in all_ids if not has_answer[qid]]
    metrics = {"exact": mean(exact_scores, all_ids), "f1": mean(f1_scores, all_ids), "total": float(len(all_ids))}
    if has_ids:
        metrics |= {"HasAns_exact": mean(exact_scores, has_ids), "HasAns_f1": mean(f1_scores, has_ids)}
        metrics["HasAns_total"] = float(len(has_ids))
    if no_ids:
        metrics |= {"NoAns_exact": mean(exact_scores, no_ids), "NoAns_f1": mean(f1_scores, no_ids)}
        metrics["NoAns_total"] = float(len(no_ids))
    return metrics


def binomial_standard_error(value: float | None, size: int | None) -> float | None:
    """Standard error in points of a percent score on ``size`` examples, ``100 * sqrt(p (1 - p) / n)``: exact
    for accuracy, and the usual rough noise scale for other percent scores when no per-example scores exist."""
    if value is None or not size or size < 2:
        return None
    share = min(max(value / 100.0, 0.0), 1.0)
    return 100.0 * float(np.sqrt(share * (1.0 - share) / size))


def standard_error_of_mean(per_example: Sequence[float]) -> float | None:
    """Standard error, in points, of a metric that is the mean of per-example scores in [0, 1].

    For 0/1 scores (accuracy, exact match) this is the binomial 100 * sqrt(p (1 - p) / n).
    """
    scores = np.asarray(per_example, dtype=float)
    if scores.size < 2:
        return None
    return 100.0 * float(np.std(scores) / np.sqrt(scores.size))


def bootstrap_standard_error(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    groups: Sequence[Any] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> float | None:
    """Standard error of ``statistic`` (given row indices, returns points) by a seeded bootstrap over rows, or
    over ``groups`` (one label per row) when rows come in groups: SQuAD v2's questions about one paragraph
    succeed and fail together, so resampling them one by one would understate the noise.

    For metrics that are no mean of per-example scores, such as F1 of the positive class, and for any metric
    whose rows are grouped.
    """
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    if groups is None:
        values = [statistic(rng.integers(0, n, size=n)) for _ in range(resamples)]
        return float(np.std(values, ddof=1))
    members: dict[Any, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    clusters = [np.asarray(rows) for _, rows in sorted(members.items(), key=lambda item: repr(item[0]))]
    if len(clusters) < 2:
        return None
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, len(clusters), size=len(clusters))
        values.append(statistic(np.concatenate([clusters[k] for k in picked])))
    return float(np.std(values, ddof=1))


def mean_standard_error(per_example: Sequence[float], groups: Sequence[Any] | None = None) -> float | None:
    """Standard error, in points, of a metric that is the mean of per-example scores in [0, 1]: the closed form
    for independent rows (:func:`standard_error_of_mean`), a bootstrap over groups when rows are grouped."""
    if groups is None:
        return standard_error_of_mean(per_example)
    scores = np.asarray(per_example, dtype=float)
    return bootstrap_standard_error(lambda rows: 100.0 * float(np.mean(scores[rows])), len(scores), groups=groups)


def classification_standard_error(
    metric: str, predictions: np.ndarray, labels: np.ndarray, groups: Sequence[Any] | None = None, num_labels: int = 2
) -> float | None:
    """Standard error, in points, of a classification ``metric`` on these predictions (resampling ``groups``
    when the rows come in groups): the closed form for a mean of per-row scores (accuracy), a bootstrap for
    the rest (F1, Matthews correlation)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if METRICS["classification"][metric].per_row:
        return mean_standard_error((predictions == labels).astype(float), groups)
    return bootstrap_standard_error(
        lambda rows: classification_metrics(predictions[rows], labels[rows], num_labels)[metric],
        len(labels),
        groups=groups,
    )


@dataclass(frozen=True)
class MetricSpec:
    """One metric a task can be scored by: what produces it, its unit, and the numbers a review needs.

    Args:
        name: Its key in the scorer's results (``accuracy``, ``f1``, ``matthews_correlation``).
        problem_type: The scorer that produces it: ``classification`` (:func:`classification_metrics`) or
            ``extractive_qa`` (:func:`squad_v2_metrics`).
        unit: ``percent``, or ``x100`` for a correlation reported x 100 (-100..100), as GLUE reports CoLA.
        description: In words, for exports and reports.
        constant_baseline: The best score of a constant prediction, from the selection set's strata (label
            counts; for QA, answerable counts): what a model that learned nothing scores.
        per_row: A mean of per-row scores (its standard error has a closed form); else it is bootstrapped.
        binary_only: Defined for two labels only (F1 of the positive class).
    """

    name: str
    problem_type: str
    unit: str
    description: str
    constant_baseline: Callable[[Mapping[str, int]], float | None]
    per_row: bool = False
    binary_only: bool = False


def _majority_share(strata: Mapping[str, int]) -> float | None:
    total = sum(strata.values())
    return 100.0 * max(strata.values()) / total if total else None


def _all_positive_f1(strata: Mapping[str, int]) -> float | None:
    # Predicting every row positive is the best constant for F1 of the positive class: 2p / (1 + p).
    total = sum(strata.values())
    share = strata.get("1", 0) / total if total else 0.0
    return 100.0 * 2 * share / (1 + share) if total else None


def _no_answer_share(strata: Mapping[str, int]) -> float | None:
    # Always answering "no answer" scores 1 on every unanswerable question and 0 elsewhere.
    total = sum(strata.values())
    return 100.0 * strata.get("False", 0) / total if total else None


METRICS: dict[str, dict[str, MetricSpec]] = {
    "classification": {
        spec.name: spec
        for spec in (
            MetricSpec("accuracy", "classification", "percent", "accuracy", _majority_share, per_row=True),
            MetricSpec(
                "f1",
                "classification",
                "percent",
                "F1 of the positive class (label 1)",
                _all_positive_f1,
                binary_only=True,
            ),
            MetricSpec(
                "matthews_correlation",
                "classification",
                "x100",
                "Matthews correlation x 100 (-100..100), GLUE's metric for CoLA",
                lambda strata: 0.0 if strata else None,  # a constant prediction correlates with nothing
            ),
        )
    },
    "extractive_qa": {
        spec.name: spec
        for spec in (
            MetricSpec(
                "f1", "extractive_qa", "percent", "SQuAD v2 token F1 (official normalization)", _no_answer_share, True
            ),
            MetricSpec("exact", "extractive_qa", "percent", "SQuAD v2 exact match", _no_answer_share, per_row=True),
        )
    },
}


def metric_spec(problem_type: str, name: str) -> MetricSpec:
    """The registry entry of metric ``name`` of a ``problem_type`` scorer.

    Raises:
        KeyError: the scorer produces no such metric; the message lists those it does.
    """
    known = METRICS.get(problem_type, {})
    if name not in known:
        raise KeyError(f"the {problem_type} scorer produces no metric {name!r}; it produces {', '.join(known)}")
    return known[name]


def constant_prediction_baseline(problem_type: str, metric: str, strata: Mapping[str, int]) -> float | None:
    """The best score a constant prediction gets on a set with these strata, in the metric's unit."""
    return metric_spec(problem_type, metric).constant_baseline(strata)
