"""The workflow through snakemake-executor-plugin-slurm on a real single-node SLURM cluster
(`.ci/start_slurm.sh` starts munged, slurmctld and slurmd in CI): the same studies as a local run."""

from __future__ import annotations

import copy
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from finetune_hpo.export import load_optimal
from tests.conftest import REPO, demo_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    ready = shutil.which("sinfo") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not ready:
        if os.environ.get("FINETUNE_HPO_REQUIRE_SERVICES"):
            pytest.fail("no SLURM cluster answers sinfo but services are required (CI): see .ci/start_slurm.sh")
        pytest.skip("no SLURM cluster (sinfo); see .ci/start_slurm.sh")


def _slice() -> dict:
    config = copy.deepcopy(demo_config())
    # The confirmation stage runs on the cluster too (the top 2 of 2 trials, one more seed each).
    config["tasks"] = {
        "sst2": config["tasks"]["sst2"] | {"train_size": 80, "selection": {"confirm_top_k": 2, "confirm_seeds": 2}}
    }
    config["vms"] = {}
    config["optuna"]["n_trials"] = 2
    config["wandb"]["mode"] = "disabled"
    config["demo"]["pretrain_steps"] = 20
    config["demo"]["examples_per_split"] = {"train": 150, "validation": 100}
    for space in config["search_spaces"].values():
        space["num_train_epochs"] = {"type": "int", "low": 1, "high": 2}
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
    for study in ("sst2_full_finetune", "sst2_lora"):
        local = load_optimal(tmp_path / "local" / "analysis" / f"{study}_optimal.yaml")
        slurm = load_optimal(tmp_path / "slurm" / "analysis" / f"{study}_optimal.yaml")
        # The same study: definition (space, model path, data hashes, seed), trial count and data.
        for key in ("study_name", "n_trials", "fingerprint", "dataset", "search_space", "sampler", "metric"):
            assert slurm[key] == local[key], key
        # The same trials: the seeded sampler proposed the same parameters in the same order. The scores
        # themselves are not compared bit for bit: the tiny model is pretrained in another process
        # environment, and a float summed in another order can change which of two trials wins.
        assert _trial_params(tmp_path / "slurm", study) == _trial_params(tmp_path / "local", study)
        assert 0.0 <= slurm["best_value"] <= 100.0
        # The confirmation stage ran on the cluster: both candidates with both seeds.
        assert slurm["confirmation"]["runs"] == 4 and len(slurm["confirmation"]["candidates"]) == 2


def _trial_params(workdir: Path, study: str) -> list[str]:
    with (workdir / "results" / "studies" / study / "trials.csv").open() as handle:
        return [row["params"] for row in csv.DictReader(handle)]
