"""Evaluation sees rows in dataset order: scores do not depend on the eval batch size or the row order.

The trials train with ``group_by_length``, which in transformers 5 also length-groups evaluation batches;
QA postprocessing pairs logits with windows by position, so a permuted evaluation scores each window
with another window's logits. These tests run the real Trainer evaluation path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers.modeling_outputs import QuestionAnsweringModelOutput

from finetune_hpo.demo import generate_task_data
from finetune_hpo.models import load_base_model
from finetune_hpo.preprocess import TokenizedTask, load_tokenized, load_tokenizer
from finetune_hpo.qa import QAWindowing, prepare_train_features
from finetune_hpo.tasks import TASKS
from finetune_hpo.training import TrainingSetup, evaluate_with_trainer
from tests.helpers import prepare_task, small_config

SCORE_KEYS = {"accuracy", "f1", "exact", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "total"}
QA_OPTIONS = {"n_best": 10, "max_answer_length": 8, "null_score_threshold": 0.0}


def _reversed(data: TokenizedTask) -> TokenizedTask:
    def flip(rows):
        return None if rows is None else rows.select(range(len(rows) - 1, -1, -1))

    return TokenizedTask(
        train=data.train,
        validation=flip(data.validation),
        validation_examples=flip(data.validation_examples),
        validation_windows=flip(data.validation_windows),
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> dict[str, TokenizedTask]:
    workdir = tmp_path_factory.mktemp("eval_order")
    config = small_config(workdir, tiny_model, tasks=("sst2", "squad_v2"), train_size=120)
    out = {}
    for task in ("sst2", "squad_v2"):  # both tasks' files exist before the config is checked
        generate_task_data(task, workdir / "synthetic" / task, 300, 200, seed=0)
    for task in ("sst2", "squad_v2"):
        prepare_task(workdir, config, task)
        out[task] = load_tokenized(workdir / "results" / "tokenized" / task)
    return out


@pytest.mark.parametrize("task_name", ["sst2", "squad_v2"])
def test_scores_do_not_depend_on_eval_batch_size_or_row_order(
    prepared: dict[str, TokenizedTask], tiny_model: Path, tmp_path: Path, task_name: str
) -> None:
    task = TASKS[task_name]
    data = prepared[task_name]
    # An untrained head gives every window its own arbitrary logits: any mis-pairing changes the answers.
    model = load_base_model(task, str(tiny_model), seed=3).eval()
    tokenizer = load_tokenizer(str(tiny_model))
    scores, labels = [], []
    for batch_size, rows in ((1, data), (7, data), (64, data), (16, _reversed(data))):
        setup = TrainingSetup(
            task=task,
            method="full_finetune",
            seed=0,
            eval_batch_size=batch_size,
            qa_postprocessing=QA_OPTIONS,
            scratch_dir=tmp_path,
        )
        metrics, predictions = evaluate_with_trainer(setup, model, tokenizer, rows)
        if task.is_classification:
            labels.append(predictions if rows is data else predictions[::-1])
        # The task's scores; timings and the batch-averaged loss are not scores.
        scores.append({key: value for key, value in metrics.items() if key in SCORE_KEYS})
    for other in scores[1:]:
        assert other.keys() == scores[0].keys() and scores[0]
        for key in scores[0]:
            assert other[key] == pytest.approx(scores[0][key], abs=1e-6), key
    # and each row's label, which accuracy alone cannot show (a reordering keeps it): the trial's predictions
    # file pairs predictions with rows by position.
    if task.is_classification:
        assert all(other == labels[0] for other in labels[1:]) and len(set(labels[0])) > 1


class GoldSpanOracle(torch.nn.Module):
    """A "model" whose logits point at each window's gold span, or at CLS when the window has none.

    It recognises a window by its token ids, so it answers correctly whatever order the batches come in;
    only an evaluation that pairs logits with the wrong windows can score it below 100.
    """

    def __init__(self, gold: dict[tuple[int, ...], tuple[int, int]]) -> None:
        super().__init__()
        self.gold = gold
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the Trainer wants a device to put inputs on

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: object
    ) -> QuestionAnsweringModelOutput:
        start = torch.full(input_ids.shape, -10.0)
        end = torch.full(input_ids.shape, -10.0)
        for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist(), strict=True)):
            tokens = tuple(token for token, keep in zip(ids, mask, strict=True) if keep)
            gold_start, gold_end = self.gold[tokens]
            start[row, gold_start] = 10.0
            end[row, gold_end] = 10.0
        return QuestionAnsweringModelOutput(start_logits=start + 0 * self.anchor, end_logits=end + 0 * self.anchor)


def test_gold_span_logits_score_f1_100_through_the_trainer(
    prepared: dict[str, TokenizedTask], tiny_model: Path, tmp_path: Path
) -> None:
    data = prepared["squad_v2"]
    tokenizer = load_tokenizer(str(tiny_model))
    config = small_config(tmp_path, tiny_model)
    windowing = QAWindowing(config["model"]["qa"]["max_seq_length"], config["model"]["qa"]["doc_stride"])
    # The training labels of the validation rows: the gold span per window, CLS where it is not inside.
    labelled = prepare_train_features(data.validation_examples.to_dict(), tokenizer, windowing)
    gold = {
        tuple(ids): (start, end)
        for ids, start, end in zip(
            labelled["input_ids"], labelled["start_positions"], labelled["end_positions"], strict=True
        )
    }
    assert len(labelled["input_ids"]) == len(data.validation)
    setup = TrainingSetup(
        task=TASKS["squad_v2"],
        method="full_finetune",
        seed=0,
        eval_batch_size=5,
        qa_postprocessing=QA_OPTIONS,
        scratch_dir=tmp_path,
    )
    metrics, predictions = evaluate_with_trainer(setup, GoldSpanOracle(gold), tokenizer, data)
    assert metrics["NoAns_total"] > 0 and metrics["HasAns_total"] > 0  # both kinds of question are covered
    assert metrics["f1"] == pytest.approx(100.0)
    assert metrics["exact"] == pytest.approx(100.0)
    assert len(predictions) == len(data.validation_examples)
    # And the same windows in another order still score 100.
    reversed_metrics, _ = evaluate_with_trainer(
        dataclasses.replace(setup, eval_batch_size=3), GoldSpanOracle(gold), tokenizer, _reversed(data)
    )
    assert reversed_metrics["f1"] == pytest.approx(100.0)
