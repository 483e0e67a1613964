"""The best trial's model is kept, reloads with plain transformers/peft code in another process, and scores
what the study exported; the same parameters retrain to the same value in a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_hpo.best_model import (
    best_complete_trial,
    promote_best_model,
    read_best_model_info,
    save_trial_model,
    select_saved_model,
)
from finetune_hpo.config import check_config, study_settings
from finetune_hpo.demo import generate_task_data
from finetune_hpo.models import load_base_model
from finetune_hpo.storage import StudyPaths
from finetune_hpo.study import run_study
from finetune_hpo.tasks import TASKS
from tests.helpers import assert_trials_learned, prepare_task, small_config

SUBPROCESS_TIMEOUT = 300
# Sizes under which the tests' model learns (conftest.tiny_model): RTE's synthetic rows, 160 training
# examples; SQuAD v2's, 80 questions. Three trials then differ and the best beats the constant prediction.
TRAIN_SIZES = {"rte": 160, "squad_v2": 80}


def _study(tmp_path: Path, tiny_model: Path, task: str, method: str, n_trials: int = 3):
    config = small_config(tmp_path, tiny_model, tasks=(task,), n_trials=n_trials, train_size=TRAIN_SIZES[task])
    generate_task_data(task, tmp_path / "synthetic" / task, 300, 200, seed=0)
    summary = prepare_task(tmp_path, config, task)
    settings = study_settings(check_config(config), task, method)
    study_dir = tmp_path / "results" / "studies" / settings.study_name
    study = run_study(settings, tmp_path / "results" / "tokenized" / task, summary, study_dir)
    # Scores that differ and beat the constant prediction: a broken head or adapter cannot reproduce them.
    assert_trials_learned([trial.value for trial in study.trials], summary, settings.task.metric)
    return config, settings, study, StudyPaths(study_dir)


@pytest.mark.parametrize(
    ("task", "method"),
    [("rte", "full_finetune"), ("rte", "lora"), ("squad_v2", "full_finetune"), ("squad_v2", "lora")],
)
def test_saved_best_model_reloaded_in_a_fresh_process_reproduces_best_value(
    tmp_path: Path, tiny_model: Path, task: str, method: str
) -> None:
    _, _, study, paths = _study(tmp_path, tiny_model, task, method)
    info = read_best_model_info(paths.best_model)
    assert info is not None and info["trial"] == study.best_trial.number
    assert info["value"] == study.best_value
    assert (paths.best_model / "README.md").read_text().startswith("---\nlibrary_name:")
    # LoRA keeps the adapter (and its trained head), not a copy of the base weights.
    assert (paths.best_model / "adapter_config.json").is_file() == (method == "lora")
    scores = tmp_path / "scores.json"
    selection = tmp_path / "results" / "data" / task / "validation.jsonl"
    confirmation = tmp_path / "results" / "data" / task / "confirmation.jsonl"
    command = [sys.executable, "-m", "finetune_hpo.cli", "evaluate", "--model", str(paths.best_model)]
    command += ["--task", task, "--data", str(selection), "--data", str(confirmation), "--out", str(scores)]
    command += ["--batch-size", "7"]  # not the study's eval batch: the score must not depend on it
    subprocess.run(command, check=True, timeout=SUBPROCESS_TIMEOUT, capture_output=True)
    result = json.loads(scores.read_text())["scores"]
    assert result["validation"]["value"] == pytest.approx(study.best_value, abs=0.01)
    assert result["validation"]["size"] == TRAIN_SIZES[task] // 2
    assert result["validation"]["standard_error"] > 0
    # The confirmation rows: the validation split minus the selection set.
    assert result["confirmation"]["size"] == 200 - TRAIN_SIZES[task] // 2
    assert 0.0 <= result["confirmation"]["value"] <= 100.0


def test_best_model_links_the_best_complete_trial_never_a_failed_one(tmp_path: Path, tiny_model: Path) -> None:
    import optuna
    from optuna.trial import TrialState, create_trial

    from finetune_hpo.preprocess import load_tokenizer

    task = TASKS["sst2"]
    model = load_base_model(task, str(tiny_model), seed=0)
    tokenizer = load_tokenizer(str(tiny_model))
    directory = tmp_path / "best_model"
    base = {"task": "sst2", "method": "full_finetune", "metric": "accuracy", "study_name": "sst2_full_finetune"}
    base |= {"base_model": str(tiny_model), "params": {"learning_rate": 0.001}}
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def trial(number: int, state: TrialState, value: float | None) -> optuna.trial.FrozenTrial:
        frozen = create_trial(state=state, value=value, params={"x": 0.5}, distributions=distributions)
        frozen.number = number
        if value is not None:
            save_trial_model(model, tokenizer, directory, {**base, "trial": number, "value": value})
        return frozen

    trials = [trial(0, TrialState.COMPLETE, 50.0), trial(1, TrialState.COMPLETE, 40.0)]
    # Killed after its model was saved: FAIL, though it scored higher.
    trials.append(trial(2, TrialState.FAIL, None))
    save_trial_model(model, tokenizer, directory, {**base, "trial": 2, "value": 90.0})
    trials.append(trial(3, TrialState.COMPLETE, 50.0))  # a tie keeps the earlier trial
    trials.append(trial(4, TrialState.RUNNING, None))  # another worker's, still training
    save_trial_model(model, tokenizer, directory, {**base, "trial": 4, "value": 95.0})
    assert promote_best_model(directory, trials) == tmp_path / "best_model.trial-0"
    assert directory.is_symlink() and read_best_model_info(directory)["trial"] == 0
    assert best_complete_trial(trials).number == 0
    # The finished losers' folders are gone, the running trial's is kept, no staging folder is left.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "best_model",
        "best_model.trial-0",
        "best_model.trial-4",
    ]
    trials[4] = trial(4, TrialState.COMPLETE, 95.0)
    promote_best_model(directory, trials)
    assert read_best_model_info(directory)["trial"] == 4 and (directory / "config.json").is_file()
    assert not (tmp_path / "best_model.trial-0").exists()

    # With a confirmation stage, the candidates' models are kept (the top 2 here) ...
    trials[0] = trial(0, TrialState.COMPLETE, 50.0)
    promote_best_model(directory, trials, keep_top=2)
    assert read_best_model_info(directory)["trial"] == 4
    assert sorted(p.name for p in tmp_path.glob("best_model.trial-*")) == ["best_model.trial-0", "best_model.trial-4"]
    # ... and score_best_model points the link at the exported (confirmed) trial's, deleting nothing.
    assert select_saved_model(directory, 0) == tmp_path / "best_model.trial-0"
    assert read_best_model_info(directory)["trial"] == 0 and (tmp_path / "best_model.trial-4").is_dir()
    with pytest.raises(FileNotFoundError, match="no saved model of trial 1"):
        select_saved_model(directory, 1)


def test_no_model_is_kept_when_turned_off(tmp_path: Path, tiny_model: Path) -> None:
    config = small_config(tmp_path, tiny_model, n_trials=1)
    config["selection"] = {"save_best_model": False}
    summary = prepare_task(tmp_path, config, "sst2")
    settings = study_settings(check_config(config), "sst2", "full_finetune")
    study_dir = tmp_path / "results" / "studies" / settings.study_name
    run_study(settings, tmp_path / "results" / "tokenized" / "sst2", summary, study_dir)
    assert not StudyPaths(study_dir).best_model.exists()


RERUN_SCRIPT = """
import json, sys
from pathlib import Path
import yaml
from finetune_hpo.config import check_config, study_settings
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.models import load_base_model
from finetune_hpo.training import TrainingSetup, train_and_evaluate

config_path, tokenized, params = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
settings = study_settings(check_config(yaml.safe_load(Path(config_path).read_text())), "rte", "lora")
model = settings.model_name_or_path
setup = TrainingSetup(task=settings.task, method="lora", seed=settings.seed,
                      eval_batch_size=settings.training.eval_batch_size,
                      lora_target_modules=settings.model.lora_target_modules)
outcome = train_and_evaluate(setup, load_base_model(settings.task, model, seed=settings.seed),
                             load_tokenizer(model), load_tokenized(tokenized), HyperParameters.from_params(params))
print(json.dumps({"value": outcome.value, "train_loss": outcome.training_loss}))
"""


def test_best_trial_parameters_retrain_to_the_same_value_in_a_fresh_process(tmp_path: Path, tiny_model: Path) -> None:
    from tests.helpers import write_config

    config, _, study, _ = _study(tmp_path, tiny_model, "rte", "lora", n_trials=3)
    # The best trial must not be the first: then earlier trials have drawn from the RNGs in the study's
    # process, and only a trial that seeds everything itself retrains the same in a fresh one.
    assert study.best_trial.number > 0
    config_path = write_config(tmp_path / "config.yaml", config)
    output = subprocess.run(
        [
            sys.executable,
            "-c",
            RERUN_SCRIPT,
            str(config_path),
            str(tmp_path / "results" / "tokenized" / "rte"),
            json.dumps(study.best_trial.params),
        ],
        check=True,
        timeout=SUBPROCESS_TIMEOUT,
        capture_output=True,
        text=True,
    )
    rerun = json.loads(output.stdout.strip().splitlines()[-1])
    assert rerun["value"] == pytest.approx(study.best_value, abs=1e-6)
    # The training loss too: the same head, adapters and batches, not merely a score that happens to tie.
    assert rerun["train_loss"] == pytest.approx(study.best_trial.user_attrs["train_loss"], rel=1e-6)


def test_scoring_runs_torch_on_the_jobs_threads(tmp_path: Path, tiny_model: Path) -> None:
    import torch

    from finetune_hpo.evaluation import score_exported_model

    _, settings, _, paths = _study(tmp_path, tiny_model, "rte", "full_finetune")
    data = tmp_path / "results" / "data" / "rte"
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        # Rule score_best_model hands its job's threads here, as the study and confirmation rules do.
        score_exported_model(
            settings, paths.root, {"validation": data / "validation.jsonl"}, tmp_path / "scores.json", threads=2
        )
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_exports_provenance_is_what_the_trial_and_the_data_recorded(tmp_path: Path, tiny_model: Path) -> None:
    import torch
    import transformers

    from finetune_hpo.evaluation import score_exported_model
    from finetune_hpo.export import export_study, load_optimal

    _, settings, study, paths = _study(tmp_path, tiny_model, "rte", "lora")
    data = tmp_path / "results" / "data" / "rte"
    score_exported_model(
        settings,
        paths.root,
        {"validation": data / "validation.jsonl", "confirmation": data / "confirmation.jsonl"},
        paths.root / "best_model_scores.json",
    )
    out = tmp_path / "analysis" / "rte_lora_optimal.yaml"
    export_study(settings, paths.root, data / "summary.json", out, paths.root / "best_model_scores.json")
    document = load_optimal(out)
    best = study.trials[document["best_trial"]]
    summary = json.loads((data / "summary.json").read_text())
    attrs = best.user_attrs
    for key in ("precision", "per_device_batch_size", "gradient_accumulation_steps", "n_gpu", "effective_batch_size"):
        assert document["training_setup"][key] == attrs[key], key
    assert document["training_setup"]["lora_target_modules"] == attrs["lora_target_modules"]
    assert document["training_setup"]["lora_modules_to_save"] == attrs["lora_modules_to_save"]
    assert document["training_setup"]["max_seq_length"] == settings.model.max_seq_length
    assert document["versions"] == attrs["versions"]
    assert document["versions"]["torch"] == torch.__version__ and document["versions"]["transformers"] == (
        transformers.__version__
    )
    # The seeds the sampler was given, in the order the trials recorded them; one process here, one seed.
    assert (
        document["sampler"]["seeds_used"]
        == [settings.sampler.seed]
        == sorted({t.user_attrs["sampler_seed"] for t in study.trials})
    )
    splits = summary["splits"]
    assert document["dataset"]["train_sha256"] == splits["train"]["sha256"]
    assert document["dataset"]["validation_sha256"] == splits["validation"]["sha256"]
    assert document["dataset"]["selection_ids_sha256"] == splits["validation"]["ids_sha256"] is not None
    assert document["fingerprint"] == study.user_attrs["fingerprint"]
    # The seed the trial trained with (head, adapters, data order): Phase 2 reruns the trial with it.
    assert document["seed"] == settings.seed == read_best_model_info(paths.best_model)["seed"]
    assert document["best_model"]["predictions_compared"] == splits["validation"]["size"]
    assert document["best_model"]["prediction_agreement"] == 1.0 and document["best_model"]["reproduced"]
