"""One GPU per study job: real processes claim GPUs through the lock folder, no GPU needed.

Processes are coordinated through their pipes (a holder reports its claim, then holds it until its stdin
closes), never through sleeps; every wait has a deadline so a bug fails the test instead of hanging it.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from finetune_hpo.gpus import claim_gpu, release_gpu, visible_gpu_indices

DEADLINE_SECONDS = 60.0

# A study job in miniature: claim a GPU, report it, hold it until the test closes stdin.
HOLDER = """
import logging, os, sys
from pathlib import Path
from finetune_hpo.gpus import claim_gpu
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
index = claim_gpu(Path(sys.argv[1]), poll_seconds=0.02)
sys.stdout.write(f"{index} {os.environ.get('CUDA_VISIBLE_DEVICES')}\\n")
sys.stdout.flush()
sys.stdin.read()
"""


class Holder:
    """A child process running HOLDER, with deadline-bounded reads of its output."""

    def __init__(self, lock_dir: Path, visible: str) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(lock_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.stderr = b""

    def claimed(self) -> tuple[str, str]:
        """The (claimed index, CUDA_VISIBLE_DEVICES) the child reports once it holds a GPU."""
        line = _read_until(self.process.stdout, b"\n").decode()
        index, visible = line.split()
        return index, visible

    def wait_for_log(self, text: str) -> None:
        self.stderr += _read_until(self.process.stderr, text.encode(), already=self.stderr)

    def has_reported(self) -> bool:
        ready, _, _ = select.select([self.process.stdout], [], [], 0)
        return bool(ready)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=DEADLINE_SECONDS)


def _read_until(stream, marker: bytes, already: bytes = b"") -> bytes:
    """Bytes read from ``stream`` until ``marker`` appears (in them or in ``already``); fails after the deadline."""
    received = b""
    fd = stream.fileno()
    while marker not in already + received:
        ready, _, _ = select.select([fd], [], [], DEADLINE_SECONDS)
        if not ready:
            pytest.fail(f"no {marker!r} within {DEADLINE_SECONDS}s; got {already + received!r}")
        chunk = os.read(fd, 4096)
        if not chunk:
            pytest.fail(f"stream closed before {marker!r}; got {already + received!r}")
        received += chunk
    return received


def _is_locked(path: Path) -> bool:
    """Whether another process holds the flock on ``path`` (a non-blocking probe that takes nothing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the probe's own lock, if it got one
    return False


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


@pytest.fixture(autouse=True)
def _release_in_process_claims() -> Iterator[None]:
    yield
    release_gpu()


def test_two_concurrent_jobs_claim_distinct_gpus(tmp_path: Path, holders: list[Holder]) -> None:
    holders += [Holder(tmp_path, "0,1"), Holder(tmp_path, "0,1")]
    claims = [holder.claimed() for holder in holders]
    # Both children are still holding (blocked on stdin) when their claims are compared.
    assert sorted(index for index, _ in claims) == ["0", "1"]
    assert all(index == visible for index, visible in claims)
    assert _is_locked(tmp_path / "gpu-0.lock")
    assert _is_locked(tmp_path / "gpu-1.lock")
    pids = {(tmp_path / f"gpu-{index}.lock").read_text().strip() for index, _ in claims}
    assert pids == {str(holder.process.pid) for holder in holders}


def test_job_waits_until_a_killed_holder_frees_its_gpu(tmp_path: Path, holders: list[Holder]) -> None:
    first, second = Holder(tmp_path, "0,1"), Holder(tmp_path, "0,1")
    holders += [first, second]
    first_index, _ = first.claimed()
    second.claimed()
    waiter = Holder(tmp_path, "0,1")
    holders.append(waiter)
    waiter.wait_for_log("waiting for one to free")
    assert not waiter.has_reported()
    assert _is_locked(tmp_path / "gpu-0.lock") and _is_locked(tmp_path / "gpu-1.lock")

    first.process.send_signal(signal.SIGKILL)
    first.process.wait(timeout=DEADLINE_SECONDS)
    assert waiter.claimed() == (first_index, first_index)
    assert _is_locked(tmp_path / f"gpu-{first_index}.lock")
    assert waiter.stderr.count(b"waiting for one to free") == 1


def test_no_visible_gpu_runs_on_cpu_and_leaves_environment_alone(tmp_path: Path) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": ""}
    assert claim_gpu(tmp_path, environ=environ) is None
    assert environ == {"CUDA_VISIBLE_DEVICES": ""}
    assert list(tmp_path.iterdir()) == []


def test_claims_follow_the_schedulers_device_list(tmp_path: Path) -> None:
    first_job, second_job = {"CUDA_VISIBLE_DEVICES": "3,5"}, {"CUDA_VISIBLE_DEVICES": "3,5"}
    assert claim_gpu(tmp_path, environ=first_job) == "3"
    # flock conflicts between open files even within one process, so a second environment stands for a second job.
    assert claim_gpu(tmp_path, environ=second_job) == "5"
    assert (first_job, second_job) == ({"CUDA_VISIBLE_DEVICES": "3"}, {"CUDA_VISIBLE_DEVICES": "5"})
    assert (tmp_path / "gpu-3.lock").read_text() == f"{os.getpid()}\n"
    assert claim_gpu(tmp_path, environ=first_job) == "3"  # a second call keeps the claim


def test_release_restores_the_environment_and_frees_the_lock(tmp_path: Path, holders: list[Holder]) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert claim_gpu(tmp_path, environ=environ) == "0"
    release_gpu()
    assert environ == {"CUDA_VISIBLE_DEVICES": "0,1"}
    holders.append(Holder(tmp_path, "0,1"))
    assert holders[0].claimed() == ("0", "0")


def test_lock_dir_defaults_to_the_environment_setting(tmp_path: Path) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "6,7", "FINETUNE_HPO_GPU_LOCK_DIR": str(tmp_path / "locks")}
    assert claim_gpu(environ=environ) == "6"
    assert (tmp_path / "locks" / "gpu-6.lock").is_file()


def test_one_device_assigned_by_a_scheduler_is_taken_without_a_lock(tmp_path: Path) -> None:
    # Under SLURM's device cgroups every job sees its own GPU as "0": a host-wide lock would serialise them.
    environ = {"CUDA_VISIBLE_DEVICES": "0"}
    assert claim_gpu(tmp_path, environ=environ) == "0"
    assert environ == {"CUDA_VISIBLE_DEVICES": "0"} and not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("visible", "expected"),
    [("0,1", ["0", "1"]), (" 2 , 3 ", ["2", "3"]), ("", []), ("-1", []), ("1,-1,2", ["1"]), ("GPU-ab12", ["GPU-ab12"])],
)
def test_visible_devices_come_from_cuda_visible_devices(visible: str, expected: list[str]) -> None:
    assert visible_gpu_indices({"CUDA_VISIBLE_DEVICES": visible}) == expected


def _fake_nvidia_smi(bin_dir: Path, body: str) -> None:
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)


def test_without_cuda_visible_devices_the_host_gpus_are_listed(tmp_path: Path, monkeypatch) -> None:
    _fake_nvidia_smi(tmp_path, 'printf "0\\n1\\n"')
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpu_indices({}) == ["0", "1"]


def test_missing_or_failing_nvidia_smi_means_no_gpu(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert visible_gpu_indices({}) == []
    _fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert visible_gpu_indices({}) == []


def test_fewer_visible_gpus_than_the_profile_runs_at_once_is_refused(tmp_path: Path) -> None:
    from finetune_hpo.gpus import GpuClaimError

    # An inherited CUDA_VISIBLE_DEVICES=0 on a 2-GPU VM whose profile runs 2 studies at once: each job would
    # take GPU 0 without a lock (one visible device looks like a scheduler's assignment), and they would share it.
    environ = {"CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(GpuClaimError, match=r"run_study: the profile runs up to 2 GPU jobs .* only 1 GPU\(s\)"):
        claim_gpu(tmp_path, environ=environ, concurrent_jobs=2, step="run_study")
    assert environ == {"CUDA_VISIBLE_DEVICES": "0"}
    # Within the inherited list, jobs claim distinct GPUs; with one job at a time the one device is taken.
    first, second = {"CUDA_VISIBLE_DEVICES": "2,3"}, {"CUDA_VISIBLE_DEVICES": "2,3"}
    assert claim_gpu(tmp_path, environ=first, concurrent_jobs=2) == "2"
    assert claim_gpu(tmp_path, environ=second, concurrent_jobs=2) == "3"
    assert claim_gpu(tmp_path, environ={"CUDA_VISIBLE_DEVICES": "0"}, concurrent_jobs=1) == "0"
    # No GPU at all: the job runs on the CPU, as the demo does.
    assert claim_gpu(tmp_path, environ={"CUDA_VISIBLE_DEVICES": ""}, concurrent_jobs=2) is None


def _gpu_workflow(tmp_path: Path, tiny_model: Path, host_gpus: str) -> tuple[subprocess.CompletedProcess, Path]:
    """Two studies through Snakemake on a host whose nvidia-smi lists ``host_gpus``, with the profile's
    ``resources: gpu=2`` (two studies at once)."""
    import yaml

    from tests.conftest import REPO
    from tests.helpers import prepare_task, small_config

    workdir = tmp_path / "run"
    config = small_config(workdir, tiny_model, tasks=("rte",), n_trials=1, train_size=40)
    config["selection"]["save_best_model"] = False
    config["tasks"]["rte"]["selection"] = {"confirm_top_k": 1, "confirm_seeds": 2}  # a GPU job too
    prepare_task(workdir, config, "rte")  # the data files the config names
    (workdir / "config").mkdir()
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_nvidia_smi(bin_dir, f'printf "{host_gpus}"')
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    env |= {"PATH": f"{bin_dir}:{env['PATH']}", "FINETUNE_HPO_GPU_LOCK_DIR": str(tmp_path / "locks")}
    targets = [f"results/studies/rte_{method}/confirmation.json" for method in ("full_finetune", "lora")]
    options = ["--profile", "profiles/demo", "--directory", str(workdir), "--cores", "2", "--resources", "gpu=2"]
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *targets, *options],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result, workdir


def test_snakemake_runs_two_studies_at_once_each_on_its_own_gpu(tmp_path: Path, tiny_model: Path) -> None:
    result, workdir = _gpu_workflow(tmp_path, tiny_model, "0\\n1\\n")
    assert result.returncode == 0, result.stderr[-3000:]
    claims = {}
    for method in ("full_finetune", "lora"):
        log = (workdir / "logs/phase1_optuna/all/run_study" / f"rte_{method}.log").read_text()
        claimed = [line for line in log.splitlines() if "run_study: claimed GPU" in line]
        assert len(claimed) == 1, log[-2000:]
        claims[method] = claimed[0].split("claimed GPU ")[1].split()[0]
    for method in ("full_finetune", "lora"):  # the confirmation stage claims a GPU of its own too
        log = (workdir / "logs/phase1_optuna/all/confirm_top_trials" / f"rte_{method}.log").read_text()
        assert sum("confirm_top_trials: claimed GPU" in line for line in log.splitlines()) == 1, log[-2000:]
    # Both jobs were ready together and the profile allows two: they ran at once, on different GPUs.
    assert sorted(claims.values()) == ["0", "1"]


def test_a_job_that_would_share_a_gpu_fails_with_one_clear_line(tmp_path: Path, tiny_model: Path) -> None:
    result, workdir = _gpu_workflow(tmp_path, tiny_model, "0\\n")
    assert result.returncode != 0
    log = (workdir / "logs/phase1_optuna/all/run_study/rte_lora.log").read_text()
    assert "the profile runs up to 2 GPU jobs at once (resources: gpu=2) but only 1 GPU(s) are visible" in log
    assert "Traceback" not in log
