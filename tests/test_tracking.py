"""W&B: a run of its own for every trial (offline, for real), and a W&B failure never fails a trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.study import run_study, run_study_worker
from finetune_hpo.tracking import TrialRun
from tests.helpers import prepare_task, read_wandb_run, small_config


def test_every_trial_gets_its_own_offline_run(tmp_path: Path, tiny_model: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = small_config(tmp_path, tiny_model, tasks=("rte",), n_trials=3, train_size=160)
    config["wandb"]["mode"] = "offline"
    summary = prepare_task(tmp_path, config, "rte")
    settings = study_settings(check_config(config), "rte", "full_finetune")
    study = run_study(
        settings,
        tmp_path / "results/tokenized/rte",
        summary,
        tmp_path / "results/studies/rte_full_finetune",
        wandb_dir=tmp_path / "wandb",
    )
    run_ids = [trial.user_attrs.get("wandb_run_id") for trial in study.trials]
    assert all(run_ids) and len(set(run_ids)) == 3
    run_dirs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    # One run per trial, plus the study's summary run.
    assert len(run_dirs) == 4
    assert set(run_ids) < {path.name.rsplit("-", 1)[-1] for path in run_dirs}
    table = (tmp_path / "results/studies/rte_full_finetune/trials.csv").read_text()
    assert all(run_id in table for run_id in run_ids)
    # What the runs hold, read back from W&B's own files: each trial's parameters and objective.
    runs = {path.name.rsplit("-", 1)[-1]: read_wandb_run(path) for path in run_dirs}
    values = {trial.value for trial in study.trials}
    for trial in study.trials:
        run = runs[trial.user_attrs["wandb_run_id"]]
        assert run["name"] == f"trial-{trial.number}" and run["config"]["trial_number"] == trial.number
        assert {name: run["config"][name] for name in trial.params} == trial.params
        assert run["summary"]["objective"] == trial.value and run["summary"]["state"] == "COMPLETE"
    assert len(values) > 1  # the trials' runs are told apart by what they hold, not only by their names
    # The pip environment is frozen once per study, into the summary run, not into every trial's run.
    with_requirements = [path for path in run_dirs if (path / "files" / "requirements.txt").is_file()]
    assert len(with_requirements) == 1 and with_requirements[0].name.rsplit("-", 1)[-1] not in run_ids


def test_wandb_failure_leaves_the_trial_alone(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import wandb

    def broken_init(**kwargs):  # what a W&B outage looks like to the caller
        raise wandb.errors.CommError("service unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    run = TrialRun(project="p", group="g", name="trial-0", config={}, mode="online")
    assert run.run_id is None
    run.log({"eval/accuracy": 1.0})
    run.summary({"objective": 1.0})
    run.finish()
    assert "goes on without it" in caplog.text


def test_summary_run_is_logged_once_by_the_process_that_finalizes_a_shared_study(
    tmp_path: Path, tiny_model: Path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = small_config(tmp_path, tiny_model, n_trials=2)
    config["wandb"]["mode"] = "offline"
    summary = prepare_task(tmp_path, config, "sst2")
    settings = study_settings(check_config(config), "sst2", "full_finetune")
    arguments = (
        settings,
        tmp_path / "results/tokenized/sst2",
        summary,
        tmp_path / "results/studies/sst2_full_finetune",
    )
    # A worker job runs the trials and leaves the summary to rule run_study, which then runs none itself.
    run_study_worker(*arguments, wandb_dir=tmp_path / "wandb")
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 2
    study = run_study(*arguments, wandb_dir=tmp_path / "wandb")
    assert study.user_attrs["wandb_summary_logged"] is True
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 3
    run_study(*arguments, wandb_dir=tmp_path / "wandb")  # a rerun logs no second summary
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 3


def test_wandb_log_and_finish_failures_leave_the_trial_alone(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    class FailingRun:  # a run that W&B started, then lost its service
        id = "abc123"

        def __init__(self) -> None:
            self.summary: dict = {}

        def log(self, *args, **kwargs):
            raise ConnectionError("W&B service went away")

        def finish(self, *args, **kwargs):
            raise ConnectionError("W&B service went away")

    import wandb

    monkeypatch.setattr(wandb, "init", lambda **kwargs: FailingRun())
    run = TrialRun(project="p", group="g", name="trial-0", config={}, mode="online")
    assert run.run_id == "abc123"
    run.log({"eval/accuracy": 1.0})  # no exception reaches the trial
    run.log({"eval/accuracy": 2.0})  # and after the first error the run is left alone
    run.finish()
    assert caplog.text.count("W&B") >= 1


def test_a_wandb_failure_during_a_real_trial_leaves_it_complete(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import wandb

    class LostService:  # W&B started the run, then its service went away mid-trial
        id = "lost0001"

        @property
        def summary(self):
            raise ConnectionError("W&B service went away")

        def log(self, *args, **kwargs):
            raise ConnectionError("W&B service went away")

        def finish(self, *args, **kwargs):
            raise ConnectionError("W&B service went away")

    monkeypatch.setattr(wandb, "init", lambda **kwargs: LostService())
    config = small_config(tmp_path, tiny_model, tasks=("rte",), n_trials=2, train_size=160)
    config["wandb"]["mode"] = "online"
    summary = prepare_task(tmp_path, config, "rte")
    settings = study_settings(check_config(config), "rte", "full_finetune")
    study = run_study(
        settings, tmp_path / "results/tokenized/rte", summary, tmp_path / "results/studies/rte_full_finetune"
    )
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    assert all(trial.value is not None and trial.user_attrs["wandb_run_id"] == "lost0001" for trial in study.trials)
    assert "logging to W&B stops for this trial" in caplog.text
