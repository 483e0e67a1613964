"""Several workers on one study in a real PostgreSQL server: exactly n_trials COMPLETE, a killed worker's
trial turns stale and is retried. `.ci/start_postgres.sh` installs and starts the server in CI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from finetune_hpo.storage import StudyPaths, open_storage
from tests.helpers import freeze_in_a_running_trial, prepare_task, run_study_command, small_config, write_config

pytestmark = pytest.mark.postgres
URL_VARIABLE = "FINETUNE_HPO_TEST_POSTGRES_URL"


@pytest.fixture
def database_url() -> str:
    """A fresh database on the test server, dropped afterwards."""
    server_url = os.environ.get(URL_VARIABLE)
    if not server_url:
        if os.environ.get("FINETUNE_HPO_REQUIRE_SERVICES"):
            pytest.fail(f"{URL_VARIABLE} is not set but services are required (CI)")
        pytest.skip(f"no PostgreSQL server ({URL_VARIABLE} unset; see .ci/start_postgres.sh)")
    import psycopg2

    name = f"hpo_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    yield server_url.rsplit("/", 1)[0] + f"/{name}"
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


def _states(url: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    return optuna.load_study(study_name="sst2_full_finetune", storage=storage).trials


def test_two_workers_one_killed_finish_exactly_n_trials(tmp_path: Path, tiny_model: Path, database_url: str) -> None:
    config = small_config(
        tmp_path,
        tiny_model,
        n_trials=6,
        train_size=200,
        storage="env:FINETUNE_HPO_STORAGE_URL",
        workers_per_study=2,
        heartbeat_interval=1,
        # A margin for a saturated 2-core machine: a live worker never goes 10 s without a heartbeat.
        heartbeat_grace_period=10,
    )
    # The victim is frozen mid-trial before the kill (no timing luck), so trials can be short.
    config["search_spaces"]["full_finetune"]["num_train_epochs"] = {"type": "int", "low": 2, "high": 3}
    prepare_task(tmp_path, config, "sst2")
    config_path = write_config(tmp_path / "config.yaml", config)
    command = run_study_command(config_path, tmp_path / "results")
    environment = os.environ | {"FINETUNE_HPO_STORAGE_URL": database_url}
    # The password reaches the workers through the environment, never through the config file.
    assert database_url.split("@")[0] not in config_path.read_text()

    logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("victim", "survivor")}
    victim = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=logs["victim"])
    survivor = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=logs["survivor"])
    storage = optuna.storages.RDBStorage(database_url)  # one storage object for every poll

    def read_trials() -> list[optuna.trial.FrozenTrial]:
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()[-2000:]
        return optuna.load_study(study_name="sst2_full_finetune", storage=storage).get_trials(deepcopy=False)

    killed_number = freeze_in_a_running_trial(
        victim, read_trials, min_complete=0, owner=lambda t: t.user_attrs.get("worker", "").endswith(f":{victim.pid}")
    )
    victim.send_signal(signal.SIGKILL)  # frozen mid-trial: the kill cannot land between two trials
    victim.wait(timeout=60)
    cut_off = [
        t.number
        for t in _states(database_url)
        if t.user_attrs.get("worker", "").endswith(f":{victim.pid}") and t.state != TrialState.COMPLETE
    ]
    assert cut_off == [killed_number]
    try:
        survivor.wait(timeout=300)
    finally:
        survivor.kill()
    assert survivor.returncode == 0, (tmp_path / "survivor.log").read_text()[-3000:]

    trials = _states(database_url)
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 6
    assert TrialState.RUNNING not in states
    assert trials[killed_number].state == TrialState.FAIL  # marked stale by the surviving worker's heartbeat check
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retried) == 1 and retried[0].params == trials[killed_number].params
    assert len({t.number for t in trials}) == len(trials)
    # The constant liar: a worker counts the other's running trial as a bad result, so no two trials
    # propose the same point (only the stale trial's retry repeats its parameters, on purpose).
    proposals = [json.dumps(t.params, sort_keys=True) for t in trials if t.number != retried[0].number]
    assert len(set(proposals)) == len(proposals)


def test_storage_url_errors_name_the_server_without_the_password(tmp_path: Path) -> None:
    from finetune_hpo.storage import StudyError

    with pytest.raises(StudyError, match=r"cannot open optuna.storage postgresql://u:\*\*\*@127.0.0.1:1/x"):
        open_storage("postgresql://u:secret@127.0.0.1:1/x", StudyPaths(tmp_path))


def test_snakemake_fans_a_study_out_to_worker_jobs(tmp_path: Path, database_url: str) -> None:
    """optuna.workers_per_study: 2 through the workflow itself: two run_study_worker jobs share the study on
    PostgreSQL, then run_study finalizes it (trials table, best model, export) without running a trial."""
    import copy
    import sys

    import yaml

    from finetune_hpo.export import load_optimal
    from tests.conftest import REPO, demo_config

    config = copy.deepcopy(demo_config())
    config["tasks"] = {"sst2": config["tasks"]["sst2"] | {"train_size": 80}}
    config["methods"] = ["full_finetune"]
    config["vms"] = {}
    config["optuna"] |= {
        "n_trials": 4,
        "storage": "env:FINETUNE_HPO_STORAGE_URL",
        "workers_per_study": 2,
        "heartbeat_interval": 1,
        "heartbeat_grace_period": 10,
    }
    config["wandb"]["mode"] = "disabled"
    config["demo"] |= {"pretrain_steps": 20, "examples_per_split": {"train": 150, "validation": 100}}
    config["search_spaces"]["full_finetune"]["num_train_epochs"] = {"type": "int", "low": 1, "high": 2}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "--directory", str(tmp_path)],
        cwd=REPO,
        env=os.environ | {"FINETUNE_HPO_STORAGE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert sorted(path.name for path in (tmp_path / "results/studies/sst2_full_finetune/workers").iterdir()) == [
        "0.done",
        "1.done",
    ]
    trials = _states(database_url)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    # The trials ran in the worker jobs; rule run_study only finalized (its log has no trial line).
    logs = tmp_path / "logs/phase1_optuna/all/run_study"
    worker_lines = [
        line for log in logs.glob("sst2_full_finetune.worker*.log") for line in log.read_text().splitlines()
    ]
    assert sum("COMPLETE value=" in line for line in worker_lines) == 4
    assert "COMPLETE value=" not in (logs / "sst2_full_finetune.log").read_text()
    exported = load_optimal(tmp_path / "analysis/sst2_full_finetune_optimal.yaml")
    assert exported["n_trials"] == 4 and exported["best_model"]["reproduced"] is True
    assert "postgresql://" in exported["storage"] and "***" in exported["storage"]
