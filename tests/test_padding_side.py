"""Extractive QA with a tokenizer that pads on the left (LLaMA-style): training targets and predictions stay
aligned with the tokens, through a trial and the saved model's independent rescoring.

Start and end targets are token positions inside a window; a collator that pads a shorter window on the left
shifts its tokens past both, and logits read from a window's front then belong to padding. The bug trained
and scored silently wrong, so these tests compare positions and answers, not only that something ran.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.evaluation import write_scores
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.storage import StudyPaths
from finetune_hpo.study import run_study
from finetune_hpo.tasks import TASKS
from finetune_hpo.trainer import make_trainer
from finetune_hpo.training import TrainingSetup, trial_arguments
from tests.helpers import assert_trials_learned, prepare_task, small_config


@pytest.fixture(scope="module")
def left_padding_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' tiny model with a tokenizer that pads on the left, saved so every process reloads it so."""
    model = tmp_path_factory.mktemp("left_padding") / "model"
    shutil.copytree(tiny_model, model)
    # As LLaMA-style checkpoints on the hub declare it (transformers does not save the attribute itself).
    config_file = model / "tokenizer_config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"padding_side": "left"}))
    assert load_tokenizer(str(model)).padding_side == "left"
    return model


@pytest.fixture(scope="module")
def prepared(left_padding_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    workdir = tmp_path_factory.mktemp("left_padding_study")
    config = small_config(workdir, left_padding_model, tasks=("squad_v2",), n_trials=3, train_size=80)
    summary = prepare_task(workdir, config, "squad_v2")
    return workdir, config, summary


def test_collated_training_targets_point_at_the_answer_tokens(left_padding_model: Path, prepared) -> None:
    workdir, _, _ = prepared
    tokenizer = load_tokenizer(str(left_padding_model))
    data = load_tokenized(workdir / "results/tokenized/squad_v2")
    setup = TrainingSetup(task=TASKS["squad_v2"], method="full_finetune", seed=0, scratch_dir=workdir / "scratch")
    trainer, _ = make_trainer(setup.task, torch.nn.Linear(1, 1), tokenizer, data, trial_arguments(setup, "out"))
    rows = [data.train[k] for k in range(len(data.train))]
    lengths = {len(row["input_ids"]) for row in rows}
    assert len(lengths) > 1  # windows of several lengths: a batch pads some of them
    batch = trainer.data_collator([{key: row[key] for key in row if key != "length"} for row in rows[:32]])
    answered = 0
    for ids, start, end, row in zip(
        batch["input_ids"], batch["start_positions"], batch["end_positions"], rows[:32], strict=True
    ):
        expected = tokenizer.decode(row["input_ids"][int(start) : int(end) + 1])
        assert tokenizer.decode(ids[int(start) : int(end) + 1]) == expected  # the same tokens, padded or not
        answered += int(start) != 0
    assert answered > 5


def test_a_left_padding_study_learns_and_its_saved_model_reproduces(left_padding_model: Path, prepared) -> None:
    workdir, config, summary = prepared
    settings = study_settings(check_config(config), "squad_v2", "lora")
    study_dir = workdir / "results/studies" / settings.study_name
    study = run_study(settings, workdir / "results/tokenized/squad_v2", summary, study_dir)
    assert_trials_learned([trial.value for trial in study.trials], summary, "f1")
    paths = StudyPaths(study_dir)
    scores = write_scores(
        paths.best_model,
        {"validation": workdir / "results/data/squad_v2/validation.jsonl"},
        None,
        task_name="squad_v2",
        batch_size=3,
        reference_predictions={"validation": paths.trial_predictions(study.best_trial.number)},
    )["scores"]["validation"]
    assert scores["value"] == pytest.approx(study.best_value, abs=0.01)
    assert scores["prediction_agreement"] == 1.0 and scores["predictions_compared"] == 40
