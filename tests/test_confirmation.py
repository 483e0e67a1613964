"""The confirmation stage: top configurations retrained with more seeds, resumable, and exported."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from finetune_hpo.best_model import read_best_model_info, trial_model_dir
from finetune_hpo.config import ConfigError, check_config, study_settings
from finetune_hpo.confirmation import confirmation_study_name, run_confirmation, top_candidates
from finetune_hpo.estimates import paired_test, summarize
from finetune_hpo.export import export_study, load_optimal
from finetune_hpo.storage import JOURNAL_NAME, StudyPaths, open_storage
from finetune_hpo.study import run_study
from tests.helpers import (
    assert_trials_learned,
    freeze_in_a_running_trial,
    journal_trials,
    prepare_task,
    small_config,
    write_config,
)

STUDY = "rte_lora"
TASK = "rte"  # the tests' model learns its synthetic rows (conftest.tiny_model): seeds then differ


def _trial(number: int, value: float, lr: float) -> optuna.trial.FrozenTrial:
    trial = create_trial(
        value=value, params={"learning_rate": lr}, distributions={"learning_rate": FloatDistribution(1e-5, 1e-1)}
    )
    trial.number = number
    return trial


def test_candidates_are_the_best_distinct_configurations_ties_to_the_lower_number() -> None:
    trials = [_trial(0, 70.0, 1e-3), _trial(1, 80.0, 2e-3), _trial(2, 80.0, 2e-3), _trial(3, 80.0, 3e-3)]
    picked = top_candidates(trials, 3)
    # Trial 2 repeats trial 1's configuration; the tie between 1 and 3 goes to the lower number.
    assert [t.number for t in picked] == [1, 3, 0]
    assert [t.number for t in top_candidates(trials, 10)] == [1, 3, 0]


def test_paired_test_separates_a_consistent_gap_and_not_noise() -> None:
    clear = paired_test([80.0, 82.0, 81.0, 83.0], [70.0, 71.5, 71.0, 72.0])
    assert clear["separable"] and clear["p_value"] < 0.01 and clear["n_pairs"] == 4
    assert "two-sided" in clear["test"]
    noisy = paired_test([80.0, 70.0, 75.0], [74.0, 76.0, 74.0])
    assert not noisy["separable"] and noisy["p_value"] > 0.05
    assert "paired t-test" in noisy["test"]
    # A diverged seed drops out of the pairs; one pair is no test.
    assert paired_test([80.0, None], [70.0, 72.0])["p_value"] is None


def test_a_constant_gap_left_uneven_by_float_rounding_is_no_test() -> None:
    # Accuracies on 60 rows, the runner-up 2 rows behind on every seed: the differences are 3.333... each, but
    # float subtraction leaves them 4e-15 apart, which made t ~ 1e15, p ~ 5e-31 and "separable".
    winner = [100 * 34 / 60, 100 * 48 / 60, 100 * 32 / 60]
    runner_up = [100 * 32 / 60, 100 * 46 / 60, 100 * 30 / 60]
    assert len({a - b for a, b in zip(winner, runner_up, strict=True)}) > 1  # the rounding is really there
    result = paired_test(winner, runner_up)
    assert result["p_value"] is None and result["separable"] is False
    assert "undefined" in result["note"] and result["sd_difference"] == 0.0
    # A real, if small, spread is still tested.
    assert paired_test([80.0, 81.0, 79.5], [76.0, 78.0, 76.0])["p_value"] is not None


def test_winner_is_the_best_mean_on_the_confirmation_set_not_the_lucky_seed() -> None:
    lucky, steady = _trial(4, 90.0, 1e-3), _trial(7, 84.0, 2e-3)
    seeds = [42, 43, 44]
    runs = {
        (4, 42): {"seed": 42, "selection_value": 90.0, "confirmation_value": 70.0, "diverged": False},
        (4, 43): {"seed": 43, "selection_value": 72.0, "confirmation_value": 71.0, "diverged": False},
        (4, 44): {"seed": 44, "selection_value": 74.0, "confirmation_value": 69.0, "diverged": False},
        (7, 42): {"seed": 42, "selection_value": 84.0, "confirmation_value": 80.0, "diverged": False},
        (7, 43): {"seed": 43, "selection_value": 83.0, "confirmation_value": 81.0, "diverged": False},
        (7, 44): {"seed": 44, "selection_value": 85.0, "confirmation_value": 79.5, "diverged": False},
    }
    summary = summarize("s", "accuracy", [lucky, steady], seeds, runs, ranked_on="confirmation", trainings=4)
    assert summary["winner_trial"] == 7 and summary["single_best_trial"] == 4 and summary["winner_changed"]
    assert summary["runner_up_trial"] == 4 and summary["runs"] == 6
    steady_row = next(row for row in summary["candidates"] if row["trial"] == 7)
    assert steady_row["confirmation"]["mean"] == pytest.approx(80.1666, abs=1e-3)
    assert steady_row["confirmation"]["sd"] == pytest.approx(0.7637, abs=1e-3)
    assert summary["separable_from_runner_up"] is True
    # A candidate with a diverged seed ranks after one without, whatever its mean.
    runs[(7, 44)] = {"seed": 44, "selection_value": None, "confirmation_value": None, "diverged": True}
    summary = summarize("s", "accuracy", [lucky, steady], seeds, runs, ranked_on="confirmation", trainings=4)
    assert summary["winner_trial"] == 4 and not summary["winner_changed"]


def test_confirm_top_k_larger_than_the_study_is_refused(tmp_path: Path) -> None:
    config = small_config(tmp_path, tmp_path, n_trials=3)
    config["selection"]["confirm_top_k"] = 4
    with pytest.raises(ConfigError, match=r"selection.confirm_top_k: 4 candidates .*optuna.n_trials=3"):
        check_config(config, check_data_files=False)
    config["selection"]["confirm_top_k"] = 0
    config["tasks"]["sst2"]["selection"] = {"confirm_top_k": 5}
    with pytest.raises(ConfigError, match=r"tasks.sst2.selection.confirm_top_k"):
        check_config(config, check_data_files=False)


def _confirmed_config(tmp_path: Path, tiny_model: Path, n_trials: int = 3, top_k: int = 2, seeds: int = 2) -> dict:
    config = small_config(tmp_path, tiny_model, tasks=(TASK,), n_trials=n_trials, train_size=160)
    config["tasks"][TASK]["selection"] = {"confirm_top_k": top_k, "confirm_seeds": seeds}
    return check_config(config, check_data_files=False)


def _assert_seeds_trained_differently(result: dict) -> None:
    """Each candidate's seeds trained different heads and batches: their training losses all differ (a
    stage that retrained with the study's seed while recording another would repeat the first run's)."""
    for candidate in result["candidates"]:
        losses = [run["train_loss"] for run in candidate["runs"]]
        assert None not in losses and len(set(losses)) == len(losses), (candidate["trial"], losses)


def _load(study_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(None, StudyPaths(study_dir)))


def test_confirmation_trains_each_missing_seed_once_and_the_export_names_the_winner(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = _confirmed_config(tmp_path, tiny_model)
    summary = prepare_task(tmp_path, config, TASK)
    settings = study_settings(config, TASK, "lora")
    study_dir = tmp_path / "results/studies" / STUDY
    tokenized = tmp_path / f"results/tokenized/{TASK}"
    study = run_study(settings, tokenized, summary, study_dir)
    assert_trials_learned([t.value for t in study.trials], summary, settings.task.metric)
    # With confirmation on, every trial is also scored on the held-out rows (not seen by the sampler).
    assert all(t.user_attrs["confirmation_value"] is not None for t in study.trials)

    result = run_confirmation(settings, tokenized, summary, study_dir)
    assert result["runs"] == 4 and result["trainings"] == 2 and result["seeds"] == [42, 43]
    _assert_seeds_trained_differently(result)
    confirmations = _load(study_dir, confirmation_study_name(STUDY))
    assert [t.state for t in confirmations.trials] == [TrialState.COMPLETE] * 2
    assert sorted((t.user_attrs["source_trial"], t.user_attrs["seed"]) for t in confirmations.trials) == sorted(
        (c["trial"], 43) for c in result["candidates"]
    )
    for candidate in result["candidates"]:
        first = candidate["runs"][0]
        assert first["source"] == f"study trial {candidate['trial']}"
        assert first["confirmation_value"] == study.trials[candidate["trial"]].user_attrs["confirmation_value"]
        assert candidate["confirmation"]["mean"] is not None
    # The study kept every candidate's model, so the winner's is its own run: nothing is retrained.
    for candidate in result["candidates"]:
        assert (
            read_best_model_info(trial_model_dir(study_dir / "best_model", candidate["trial"]))["trial"]
            == (candidate["trial"])
        )
    assert result["best_model"] == {"trial": result["winner_trial"], "retrained": False}
    assert json.loads((study_dir / "confirmation.json").read_text()) == result
    runs = _load(study_dir, confirmation_study_name(STUDY)).trials
    assert {run.user_attrs["seed"] for run in runs} == {43}

    # A rerun trains nothing and writes the same summary.
    again = run_confirmation(settings, tokenized, summary, study_dir)
    assert len(_load(study_dir, confirmation_study_name(STUDY)).trials) == 2
    assert again == result

    out = tmp_path / f"analysis/{STUDY}_optimal.yaml"
    export_study(
        settings,
        study_dir,
        tmp_path / f"results/data/{TASK}/summary.json",
        out,
        confirmation_path=study_dir / "confirmation.json",
    )
    document = load_optimal(out)
    assert document["best_trial"] == result["winner_trial"]
    assert document["best_value"] == study.trials[result["winner_trial"]].value
    assert document["best_hyperparameters"] == result["winner_params"]
    assert document["confirmation"]["winner_changed"] == (result["winner_trial"] != result["single_best_trial"])
    assert len(document["confirmation"]["candidates"]) == 2


def test_a_kill_during_confirmation_resumes_to_exactly_k_times_m_runs(tmp_path: Path, tiny_model: Path) -> None:
    config = _confirmed_config(tmp_path, tiny_model, n_trials=3, top_k=2, seeds=3)
    config["search_spaces"]["lora"]["num_train_epochs"] = {"type": "int", "low": 3, "high": 4}
    summary = prepare_task(tmp_path, config, TASK)
    settings = study_settings(config, TASK, "lora")
    study_dir = tmp_path / "results/studies" / STUDY
    run_study(settings, tmp_path / f"results/tokenized/{TASK}", summary, study_dir)
    config_path = write_config(tmp_path / "config.yaml", config)
    command = [
        sys.executable, "-m", "finetune_hpo.cli", "confirm", "--config", str(config_path),
        "--task", TASK, "--method", "lora", "--results", str(tmp_path / "results"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs = journal_trials(study_dir / JOURNAL_NAME, confirmation_study_name(STUDY))
    killed_run = freeze_in_a_running_trial(process, runs, min_complete=1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    before = {t.number: (t.user_attrs, t.value) for t in _load(study_dir, confirmation_study_name(STUDY)).trials}

    subprocess.run(command, check=True, capture_output=True, timeout=600)
    trials = _load(study_dir, confirmation_study_name(STUDY)).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2 * (3 - 1)  # k x m runs, the study's own trial being each first seed
    assert len({(t.user_attrs["source_trial"], t.user_attrs["seed"]) for t in complete}) == len(complete)
    assert [t.number for t in trials if t.state == TrialState.FAIL] == [killed_run]
    assert trials[killed_run].user_attrs["interrupted"]
    for number, (attrs, value) in before.items():  # finished runs are kept, not redone
        if value is not None:
            assert trials[number].value == value and trials[number].user_attrs == attrs
    result = json.loads((study_dir / "confirmation.json").read_text())
    assert result["runs"] == 6 and all(len(c["runs"]) == 3 for c in result["candidates"])
    _assert_seeds_trained_differently(result)


def test_turning_confirmation_on_after_the_study_retrains_the_first_seed_too(tmp_path: Path, tiny_model: Path) -> None:
    config = _confirmed_config(tmp_path, tiny_model, n_trials=3, top_k=1, seeds=2)
    summary = prepare_task(tmp_path, config, TASK)
    plain = yaml.safe_load(yaml.safe_dump(config))
    plain["tasks"][TASK]["selection"] = {"confirm_top_k": 0}
    study_dir = tmp_path / "results/studies" / STUDY
    tokenized = tmp_path / f"results/tokenized/{TASK}"
    study = run_study(
        study_settings(check_config(plain, check_data_files=False), TASK, "lora"), tokenized, summary, study_dir
    )
    assert_trials_learned([t.value for t in study.trials], summary, "accuracy")
    assert "confirmation_value" not in study.trials[0].user_attrs
    result = run_confirmation(study_settings(config, TASK, "lora"), tokenized, summary, study_dir)
    assert result["trainings"] == 2
    candidate = result["candidates"][0]
    first = candidate["runs"][0]
    assert first["source"].startswith("confirmation trial") and first["confirmation_value"] is not None
    # Seeded training reproduces the study's own run of that seed: its score and what it trained.
    assert first["selection_value"] == pytest.approx(candidate["study_value"], abs=1e-6)
    assert first["train_loss"] == pytest.approx(study.trials[candidate["trial"]].user_attrs["train_loss"], rel=1e-6)
    _assert_seeds_trained_differently(result)


def test_scores_of_other_confirmation_rows_are_not_reused(tmp_path: Path, tiny_model: Path) -> None:
    config = _confirmed_config(tmp_path, tiny_model, n_trials=2, top_k=1, seeds=2)
    summary = prepare_task(tmp_path, config, TASK)
    settings = study_settings(config, TASK, "lora")
    study_dir = tmp_path / "results/studies" / STUDY
    tokenized = tmp_path / f"results/tokenized/{TASK}"
    run_study(settings, tokenized, summary, study_dir)
    assert run_confirmation(settings, tokenized, summary, study_dir)["trainings"] == 1
    # Other held-out rows (e.g. a new confirmation_max_rows): both seeds are scored again.
    moved = json.loads(json.dumps(summary))
    moved["splits"]["confirmation"]["sha256"] = "0" * 64
    result = run_confirmation(settings, tokenized, moved, study_dir)
    assert [run["source"].split()[0] for run in result["candidates"][0]["runs"]] == ["confirmation"] * 2
    assert len(_load(study_dir, confirmation_study_name(STUDY)).trials) == 3


def test_best_predictions_and_the_reviewed_model_follow_the_confirmed_winner(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finetune_hpo import confirmation
    from finetune_hpo.review import review_study
    from finetune_hpo.storage import load_stored_study

    real_summarize = confirmation.summarize

    def runner_up_wins(*args, **kwargs):  # the seeds overturned the single best trial
        result = real_summarize(*args, **kwargs)
        loser = next(row for row in result["candidates"] if row["trial"] != result["winner_trial"])
        result |= {"winner_trial": loser["trial"], "winner_params": loser["params"]}
        result["winner_changed"] = loser["trial"] != result["single_best_trial"]
        return result

    monkeypatch.setattr(confirmation, "summarize", runner_up_wins)
    config = _confirmed_config(tmp_path, tiny_model, n_trials=3, top_k=2, seeds=2)
    summary = prepare_task(tmp_path, config, TASK)
    settings = study_settings(config, TASK, "lora")
    study_dir = tmp_path / "results/studies" / STUDY
    run_study(settings, tmp_path / f"results/tokenized/{TASK}", summary, study_dir)
    paths = StudyPaths(study_dir)
    single_best = paths.best_predictions.read_text()
    result = run_confirmation(settings, tmp_path / f"results/tokenized/{TASK}", summary, study_dir)
    winner = result["winner_trial"]
    assert result["winner_changed"] and single_best == paths.trial_predictions(result["single_best_trial"]).read_text()
    # The error-analysis file is the exported model's, the winner's, not the single best trial's any more.
    assert paths.best_predictions.read_text() == paths.trial_predictions(winner).read_text() != single_best
    out = tmp_path / f"analysis/{STUDY}_optimal.yaml"
    export_study(
        settings, study_dir, tmp_path / f"results/data/{TASK}/summary.json", out, None, study_dir / "confirmation.json"
    )
    study = load_stored_study(settings.storage, STUDY, study_dir)
    review = review_study(STUDY, out, study, expected_trials=3, n_startup_trials=4)
    trainable = {t.number: t.user_attrs["trainable_parameters"] for t in study.trials}
    assert trainable[winner] != trainable[result["single_best_trial"]]  # other ranks: the counts differ
    assert review.trainable_parameters == trainable[winner]
