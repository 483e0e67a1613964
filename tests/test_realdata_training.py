"""Real GLUE and SQuAD v2 rows through the whole trial path: load, subsample, tokenize, train, score."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_hpo.data import load_splits
from finetune_hpo.draws import subsample, write_subsample
from finetune_hpo.models import load_base_model
from finetune_hpo.preprocess import load_tokenized, load_tokenizer, tokenize_task
from finetune_hpo.qa import QAWindowing
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.tasks import TASKS
from finetune_hpo.training import TrainingSetup, train_and_evaluate
from tests.conftest import HAS_FULL_REALDATA


def _prepare(realdata: Path, tmp_path: Path, tiny_model: Path, task_name: str, train_size: int) -> Path:
    task = TASKS[task_name]
    files = {split: str(realdata / task_name / f"{split}.jsonl") for split in ("train", "validation")}
    drawn = subsample(task, load_splits(task, files), train_size, 0.5, seed=0)
    write_subsample(task, drawn, tmp_path / "data", seed=0)
    tokenize_task(
        task,
        tmp_path / "data",
        load_tokenizer(str(tiny_model)),
        tmp_path / "tokenized",
        max_seq_length=64,
        # Real questions run to ~60 tokens of the tiny vocabulary: a window holds one plus the stride.
        qa_windowing=QAWindowing(max_seq_length=128, doc_stride=32),
    )
    return tmp_path / "tokenized"


def test_squad_v2_real_rows_train_and_score(realdata: Path, tmp_path: Path, tiny_model: Path) -> None:
    tokenized = load_tokenized(_prepare(realdata, tmp_path, tiny_model, "squad_v2", train_size=40))
    assert len(tokenized.validation_examples) == 20
    # Real contexts are longer than one 128-token window.
    assert len(tokenized.validation) > len(tokenized.validation_examples)
    assert len(tokenized.validation) == len(tokenized.validation_windows)
    task = TASKS["squad_v2"]
    setup = TrainingSetup(
        task=task,
        method="lora",
        seed=0,
        eval_batch_size=16,
        qa_postprocessing={"n_best": 5, "max_answer_length": 30, "null_score_threshold": 0.0},
        scratch_dir=tmp_path / "scratch",
    )
    params = HyperParameters.from_params(
        {"learning_rate": 1e-3, "batch_size": 8, "num_train_epochs": 1, "lora_rank": 4, "lora_alpha": 8}
    )
    outcome = train_and_evaluate(
        setup, load_base_model(task, str(tiny_model)), load_tokenizer(str(tiny_model)), tokenized, params
    )
    assert 0.0 <= outcome.value <= 100.0
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "total"} <= set(outcome.metrics)
    assert outcome.metrics["total"] == 20
    assert len(outcome.predictions) == 20
    contexts = {row["id"]: row["context"] for row in tokenized.validation_examples}
    for prediction in outcome.predictions:  # every answer is a span of its own context
        assert prediction.prediction_text in contexts[prediction.id]
    assert outcome.trainable_parameters < outcome.total_parameters


def _train_glue(data: Path, tmp_path: Path, tiny_model: Path, task_name: str) -> None:
    tokenized = load_tokenized(_prepare(data, tmp_path, tiny_model, task_name, train_size=40))
    task = TASKS[task_name]
    setup = TrainingSetup(task=task, method="full_finetune", seed=0, scratch_dir=tmp_path / "scratch")
    outcome = train_and_evaluate(
        setup,
        load_base_model(task, str(tiny_model)),
        load_tokenizer(str(tiny_model)),
        tokenized,
        HyperParameters(learning_rate=1e-4, batch_size=8, num_train_epochs=1),
    )
    assert outcome.metrics.keys() >= {"accuracy", "f1"}
    assert outcome.value == outcome.metrics[task.metric]
    assert len(outcome.history) == 1


@pytest.mark.parametrize("task_name", ["rte", "sst2"])
def test_glue_real_rows_train_and_score(realdata: Path, tmp_path: Path, tiny_model: Path, task_name: str) -> None:
    _train_glue(realdata, tmp_path, tiny_model, task_name)


if HAS_FULL_REALDATA:  # MRPC is never in the repository (non-commercial licence): only beside it

    def test_mrpc_real_rows_train_and_score(full_realdata: Path, tmp_path: Path, tiny_model: Path) -> None:
        _train_glue(full_realdata, tmp_path, tiny_model, "mrpc")


@pytest.mark.parametrize(("task_name", "method"), [("rte", "full_finetune"), ("squad_v2", "lora")])
def test_real_rows_saved_best_model_reproduces_the_study_value(
    realdata: Path, tmp_path: Path, tiny_model: Path, task_name: str, method: str
) -> None:
    """The independent check on real GLUE/SQuAD rows: a study's saved best model, reloaded with plain
    transformers/peft, scores the study's best value on the selection set to 0.01 points."""
    import copy

    from finetune_hpo.config import check_config, study_settings
    from finetune_hpo.evaluation import write_scores
    from finetune_hpo.storage import StudyPaths
    from finetune_hpo.study import run_study
    from tests.conftest import demo_config

    config = copy.deepcopy(demo_config())
    files = {split: str(realdata / task_name / f"{split}.jsonl") for split in ("train", "validation")}
    config["tasks"] = {task_name: {"train_size": 40, "validation_fraction": 0.5, "data_files": files}}
    config["vms"], config["demo"] = {}, {"synthetic_data": False, "build_model": False}
    config["model"]["name_or_path"] = str(tiny_model)
    # Real questions run to ~60 tokens: a window must hold one plus the stride.
    config["model"]["qa"] |= {"max_seq_length": 128, "doc_stride": 32}
    config["optuna"]["n_trials"] = 2
    config["wandb"]["mode"] = "disabled"
    config["selection"]["confirmation_max_rows"] = 15
    config["search_spaces"][method]["num_train_epochs"] = {"type": "int", "low": 1, "high": 1}
    settings = study_settings(check_config(config), task_name, method)
    task = TASKS[task_name]
    drawn = subsample(task, load_splits(task, files), 40, 0.5, seed=0, confirmation_max_rows=15)
    summary = write_subsample(task, drawn, tmp_path / "data", seed=0)
    tokenize_task(
        task,
        tmp_path / "data",
        load_tokenizer(str(tiny_model)),
        tmp_path / "tokenized",
        max_seq_length=config["model"]["max_seq_length"],
        qa_windowing=QAWindowing(128, 32),
    )
    study = run_study(settings, tmp_path / "tokenized", summary, tmp_path / "study")
    scores = write_scores(
        StudyPaths(tmp_path / "study").best_model,
        {
            "validation": tmp_path / "data" / "validation.jsonl",
            "confirmation": tmp_path / "data" / "confirmation.jsonl",
        },
        None,
        task_name=task_name,
        batch_size=5,
        reference_predictions={"validation": StudyPaths(tmp_path / "study").best_predictions},
    )["scores"]
    assert scores["validation"]["value"] == pytest.approx(study.best_value, abs=0.01)
    # Row by row: real RTE rows at this size train a constant prediction, which a broken head can tie in score.
    assert scores["validation"]["prediction_agreement"] == 1.0
    assert scores["confirmation"]["size"] == 15


if HAS_FULL_REALDATA:

    def test_real_rows_a_study_fed_by_another_reproduces_its_value(
        full_realdata: Path, tmp_path: Path, tiny_model: Path
    ) -> None:
        """Transfer on real rows: SST-2's finished study feeds RTE's; the portfolio runs first and RTE's saved
        best model still reproduces its study value."""
        import copy

        from finetune_hpo.config import check_config, study_settings
        from finetune_hpo.evaluation import write_scores
        from finetune_hpo.storage import StudyPaths
        from finetune_hpo.study import run_study
        from tests.conftest import demo_config

        config = copy.deepcopy(demo_config())
        config["tasks"] = {
            task: {
                "train_size": 40,
                "validation_fraction": 0.5,
                "data_files": {
                    split: str(full_realdata / task / f"{split}.jsonl") for split in ("train", "validation")
                },
            }
            for task in ("sst2", "rte")
        }
        config["vms"], config["demo"] = {}, {"synthetic_data": False, "build_model": False}
        config["model"]["name_or_path"] = str(tiny_model)
        config["optuna"]["n_trials"] = 2
        config["wandb"]["mode"] = "disabled"
        config["selection"]["confirmation_max_rows"] = 15
        config["transfer"] = {"sources": {"rte": ["sst2"]}, "portfolio_size": 1}
        config["search_spaces"]["full_finetune"]["num_train_epochs"] = {"type": "int", "low": 1, "high": 1}
        check_config(config)
        studies = {}
        for task in ("sst2", "rte"):
            files = config["tasks"][task]["data_files"]
            drawn = subsample(TASKS[task], load_splits(TASKS[task], files), 40, 0.5, seed=0, confirmation_max_rows=15)
            summary = write_subsample(TASKS[task], drawn, tmp_path / "data" / task, seed=0)
            tokenize_task(
                TASKS[task], tmp_path / "data" / task, load_tokenizer(str(tiny_model)), tmp_path / "tokenized" / task,
                max_seq_length=64,
            )  # fmt: skip
            sources = [tmp_path / "studies" / "sst2" / "trials.csv"] if task == "rte" else []
            settings = study_settings(config, task, "full_finetune")
            studies[task] = run_study(
                settings, tmp_path / "tokenized" / task, summary, tmp_path / "studies" / task, transfer_sources=sources
            )
        best_source = max(studies["sst2"].trials, key=lambda t: (t.value, -t.number))
        first = studies["rte"].trials[0]
        assert first.user_attrs["portfolio_source"]["trial"] == best_source.number
        assert first.params == best_source.params
        rte = studies["rte"]
        scores = write_scores(
            StudyPaths(tmp_path / "studies" / "rte").best_model,
            {"validation": tmp_path / "data" / "rte" / "validation.jsonl"},
            None,
            task_name="rte",
            reference_predictions={
                "validation": StudyPaths(tmp_path / "studies" / "rte").trial_predictions(rte.best_trial.number)
            },
        )["scores"]["validation"]
        assert scores["value"] == pytest.approx(rte.best_value, abs=0.01) and scores["prediction_agreement"] == 1.0
