"""The workflow through snakemake-executor-plugin-slurm on a real single-node SLURM cluster
(`.ci/start_slurm.sh` starts munged, slurmctld and slurmd in CI): the same studies as a local run."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune_hpo.export import load_optimal
from tests.conftest import REPO, demo_config
from tests.helpers import assert_trials_learned

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    ready = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not ready:
        if os.environ.get("FINETUNE_HPO_REQUIRE_SERVICES"):
            pytest.fail("no SLURM cluster answers sinfo but services are required (CI): see .ci/start_slurm.sh")
        pytest.skip("no SLURM cluster (sinfo); see .ci/start_slurm.sh")


def _slice() -> dict:
    """RTE with the demo's model, which learns it: 3 trials of which TPE chooses 2 (one random start-up
    trial), so the later trials' parameters depend on the earlier trials' scores, and a cluster that
    trained differently would propose other configurations."""
    config = copy.deepcopy(demo_config())
    # The confirmation stage runs on the cluster too (the top 2 trials, one more seed each).
    config["tasks"] = {
        "rte": config["tasks"]["rte"]
        | {"train_size": 160, "validation_fraction": 0.5, "selection": {"confirm_top_k": 2, "confirm_seeds": 2}}
    }
    config["vms"] = {}
    config["optuna"]["n_trials"] = 3
    config["optuna"]["sampler"]["n_startup_trials"] = 1
    config["wandb"]["mode"] = "disabled"
    config["demo"]["examples_per_split"] = {"train": 200, "validation": 200}
    for space in config["search_spaces"].values():
        space["num_train_epochs"] = {"type": "int", "low": 2, "high": 3}
    # Learning rates around the one where RTE's 160 rows start to be learned in 2-3 epochs, so that the trials'
    # scores differ (the demo's ranges drew three rates that all stayed at chance, a narrower high range three
    # that all reached the same 85.0).
    config["search_spaces"]["full_finetune"]["learning_rate"] |= {"low": 2.0e-4, "high": 3.0e-3}
    config["search_spaces"]["lora"]["learning_rate"] |= {"low": 5.0e-4, "high": 1.0e-2}
    return config


def _run(workdir: Path, profile: str) -> subprocess.CompletedProcess:
    (workdir / "config").mkdir(parents=True)
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(_slice()))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", profile, "--directory", str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


def test_slurm_executor_runs_the_same_studies_as_a_local_run(slurm_cluster, tmp_path: Path) -> None:
    _run(tmp_path / "local", "profiles/demo")
    result = _run(tmp_path / "slurm", "tests/slurm_profile")
    log = result.stdout + result.stderr
    submitted = [line for line in log.splitlines() if "SLURM jobid" in line or "slurm jobid" in line.lower()]
    assert len(submitted) >= 3, log[-3000:]  # tokenization and both studies went through the cluster
    for study in ("rte_full_finetune", "rte_lora"):
        local = load_optimal(tmp_path / "local" / "analysis" / f"{study}_optimal.yaml")
        slurm = load_optimal(tmp_path / "slurm" / "analysis" / f"{study}_optimal.yaml")
        trials = _trials(tmp_path / "local", study)
        summary = json.loads((tmp_path / "local" / "results" / "data" / "rte" / "summary.json").read_text())
        assert_trials_learned([float(row["value"]) for row in trials], summary, "accuracy")
        # TPE chose trials 1 and 2 from trial 0's score (and 1's): their parameters follow the scores.
        assert [row["startup_trial"] for row in trials] == ["True", "False", "False"]
        # The same study: definition (space, model path, data hashes, seed), trial count and data.
        for key in ("study_name", "n_trials", "fingerprint", "dataset", "search_space", "sampler", "metric"):
            assert slurm[key] == local[key], key
        # The same trials, proposed from the same scores (the same threads train the same model on a CPU),
        # and the same winner with the same value.
        assert [(row["params"], row["value"]) for row in _trials(tmp_path / "slurm", study)] == [
            (row["params"], row["value"]) for row in trials
        ]
        assert (slurm["best_trial"], slurm["best_value"]) == (local["best_trial"], local["best_value"])
        # The confirmation stage ran on the cluster: both candidates with both seeds.
        assert slurm["confirmation"]["runs"] == 4 and len(slurm["confirmation"]["candidates"]) == 2


def _trials(workdir: Path, study: str) -> list[dict[str, str]]:
    with (workdir / "results" / "studies" / study / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))
