"""W&B: a run of its own for every trial (offline, for real), and a W&B failure never fails a trial."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from finetune_hpo.config import check_config, study_settings
from finetune_hpo.study import run_study, run_study_worker
from finetune_hpo.tracking import TrialRun, wait_for_runs
from tests.helpers import (
    freeze_in_a_running_trial,
    journal_trials,
    prepare_task,
    read_wandb_run,
    run_study_command,
    small_config,
    write_config,
)


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
            self.calls: list[str] = []

        def log(self, *args, **kwargs):
            self.calls.append("log")
            raise ConnectionError("W&B service went away")

        def finish(self, *args, **kwargs):
            self.calls.append("finish")
            raise ConnectionError("W&B service went away")

    import wandb

    failing = FailingRun()
    monkeypatch.setattr(wandb, "init", lambda **kwargs: failing)
    run = TrialRun(project="p", group="g", name="trial-0", config={}, mode="online")
    assert run.run_id == "abc123"
    run.log({"eval/accuracy": 1.0})  # no exception reaches the trial
    run.log({"eval/accuracy": 2.0})  # and a failed call does not keep the run's next ones from being tried
    run.finish()
    wait_for_runs()
    assert failing.calls == ["log", "log", "finish"]
    assert caplog.text.count("W&B log failed for g/trial-0") == 1  # warned once per run


def test_a_failed_wandb_call_loses_only_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    real_init = wandb.init

    def init_whose_first_log_fails(**kwargs):
        run = real_init(**kwargs)
        real_log, failures = run.log, [ConnectionError("W&B service hiccup")]
        run.log = lambda *args, **kw: real_log(*args, **kw) if not failures else _raise(failures.pop())
        return run

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(wandb, "init", init_whose_first_log_fails)
    run = TrialRun(project="p", group="g", name="trial-0", config={"lr": 0.1}, mode="offline", directory=tmp_path)
    run.log({"eval/accuracy": 50.0, "epoch": 1})  # fails
    run.log({"eval/accuracy": 75.0, "epoch": 2})
    run.summary({"objective": 75.0, "state": "COMPLETE"})
    run.finish()
    wait_for_runs()
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run.run_id}")
    recorded = read_wandb_run(run_dir)
    assert recorded["config"]["lr"] == 0.1
    assert recorded["summary"]["objective"] == 75.0
    # The first log was lost and the second kept: one history row, epoch 2's.
    assert [(row["eval/accuracy"], row["epoch"]) for row in recorded["history"]] == [(75.0, 2)]


def _raise(error: Exception):
    raise error


def test_wandb_start_and_finish_are_made_off_the_trials_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb
    from wandb.sdk.wandb_run import Run

    # W&B's start and finish are held until released: the trial's calls must return while they wait.
    start_released, finish_released = threading.Event(), threading.Event()
    real_init, real_finish = wandb.init, Run.finish

    def held_init(**kwargs):
        assert start_released.wait(timeout=20), "the trial waited for W&B's start"
        return real_init(**kwargs)

    def held_finish(self, *args, **kwargs):
        assert finish_released.wait(timeout=20), "the trial waited for W&B's finish"
        return real_finish(self, *args, **kwargs)

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(wandb, "init", held_init)
    monkeypatch.setattr(Run, "finish", held_finish)
    first = TrialRun(project="p", group="g", name="trial-0", config={}, mode="offline", directory=tmp_path)
    first.log({"eval/accuracy": 1.0, "epoch": 1})
    first.summary({"objective": 1.0})
    first.finish()
    assert not start_released.is_set()  # every call returned while W&B had not even started the run
    start_released.set()
    # The next run starts only once this one has finished (a kill then loses at most the run in flight).
    second: list[TrialRun] = []
    starting = threading.Thread(
        target=lambda: second.append(
            TrialRun(project="p", group="g", name="trial-1", config={}, mode="offline", directory=tmp_path)
        )
    )
    starting.start()
    starting.join(timeout=1.0)
    assert starting.is_alive() and not second  # waiting for the first run's finish
    finish_released.set()
    starting.join(timeout=60)
    assert second
    second[0].summary({"objective": 2.0})
    second[0].finish()
    wait_for_runs()
    for run, objective in ((first, 1.0), (second[0], 2.0)):
        (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run.run_id}")
        assert read_wandb_run(run_dir)["summary"]["objective"] == objective


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
    assert "the run's other calls go on" in caplog.text


def test_a_normal_exit_finishes_every_run_handed_to_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A process hands W&B a run (its finish slowed to 1 s) and ends at once, waiting for nothing itself.
    monkeypatch.setenv("WANDB_SILENT", "true")
    ends_at_once = (
        "import sys, time\n"
        "from wandb.sdk.wandb_run import Run\n"
        "finish = Run.finish\n"
        "Run.finish = lambda self, *args, **kwargs: (time.sleep(1.0), finish(self, *args, **kwargs))[1]\n"
        "from finetune_hpo.tracking import TrialRun\n"
        "run = TrialRun(project='p', group='g', name='trial-0', config={}, mode='offline', directory=sys.argv[1])\n"
        "run.summary({'objective': 1.0})\n"
        "run.finish()\n"
        "print(run.planned_id)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", ends_at_once, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{result.stdout.split()[-1]}")
    assert read_wandb_run(run_dir)["summary"]["objective"] == 1.0


def test_a_killed_study_loses_at_most_the_wandb_run_in_flight(tmp_path: Path, tiny_model: Path) -> None:
    from optuna.trial import TrialState

    from finetune_hpo.storage import JOURNAL_NAME

    config = small_config(tmp_path, tiny_model, n_trials=4)
    config["wandb"]["mode"] = "offline"
    prepare_task(tmp_path, config, "sst2")
    command = run_study_command(write_config(tmp_path / "config.yaml", config), tmp_path / "results")
    # The study's process, with W&B's finish slowed to 1.5 s: were a trial to train before the run of the
    # trial before it had finished, the kill below would catch that run unfinished (W&B keeps nothing of it).
    slow_finish = (
        "import sys, time\n"
        "from wandb.sdk.wandb_run import Run\n"
        "finish = Run.finish\n"
        "Run.finish = lambda self, *args, **kwargs: (time.sleep(1.5), finish(self, *args, **kwargs))[1]\n"
        "from finetune_hpo.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", slow_finish, *command[3:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    trials = journal_trials(tmp_path / "results/studies/sst2_full_finetune" / JOURNAL_NAME, "sst2_full_finetune")
    # Killed while a trial trains with its W&B run started, after two COMPLETE trials.
    in_flight = freeze_in_a_running_trial(
        process, trials, min_complete=2, owner=lambda trial: "wandb_run_id" in trial.user_attrs
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    runs_dir = tmp_path / "results" / "wandb" / "wandb"
    complete = [trial for trial in trials() if trial.state == TrialState.COMPLETE]
    assert len(complete) >= 2 and trials()[in_flight].state == TrialState.RUNNING
    for trial in complete:  # every finished trial's run holds what it logged
        (run_dir,) = runs_dir.glob(f"offline-run-*-{trial.user_attrs['wandb_run_id']}")
        run = read_wandb_run(run_dir)
        assert run["name"] == f"trial-{trial.number}" and run["summary"]["objective"] == trial.value
