"""One GPU per study job: a job claims one free GPU of its host and hides the others from torch.

Snakemake may run several studies at once on a VM with several GPUs; without a claim, the HF Trainer wraps
the model in DataParallel over every visible GPU and parallel jobs share devices.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

# Deliberately no torch import: CUDA_VISIBLE_DEVICES only takes effect if it is set before torch
# initialises CUDA, so this module must be usable before torch is loaded.

logger = logging.getLogger(__name__)

LOCK_DIR_ENV = "FINETUNE_HPO_GPU_LOCK_DIR"
# nvidia-smi can hang on a wedged driver; a job should then fall back to CPU rather than stall.
NVIDIA_SMI_TIMEOUT_SECONDS = 30.0


@dataclass
class _HeldGpu:
    index: str
    lock_fd: int
    environ: MutableMapping[str, str]
    previous_visible: str | None


# The open, locked file descriptors of this process. Kept for the life of the process on purpose: the
# kernel drops an flock when the last descriptor closes, which also happens when the process is killed
# (even by SIGKILL), so a dead job never leaves a GPU claimed.
_held_gpus: list[_HeldGpu] = []


def visible_gpu_indices(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries.

    Args:
        environ: the environment to read. A ``CUDA_VISIBLE_DEVICES`` already set (by a scheduler such as
            SLURM's gres, or by the user) is authoritative, and an empty value means no GPU; otherwise the
            host's GPUs as listed by ``nvidia-smi`` (none when it is missing or fails).

    Returns:
        The entries, in order (indices, or UUIDs when the scheduler gives those).
    """
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = []
        for entry in (part.strip() for part in visible.split(",")):
            # CUDA stops reading the list at the first invalid entry; "-1" is the usual way to hide every GPU.
            if not entry or entry.startswith("-"):
                break
            entries.append(entry)
        return entries
    try:
        listing = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=NVIDIA_SMI_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.SubprocessError) as err:
        # No driver (a CPU machine, the demo, CI) is normal; the job then runs on CPU.
        logger.debug("no GPU listed by nvidia-smi: %s", err)
        return []
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def default_lock_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$FINETUNE_HPO_GPU_LOCK_DIR``, else a folder in the host's temporary directory.

    Host-local on purpose: GPUs belong to one host, and flock on a network filesystem is unreliable.
    """
    configured = environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / "finetune-hpo-gpu-locks"


class GpuClaimError(RuntimeError):
    """Fewer GPUs are visible to a job than the studies that may run at once; the message says what to set."""


def claim_gpu(
    lock_dir: Path | None = None,
    *,
    environ: MutableMapping[str, str] = os.environ,
    poll_seconds: float = 5.0,
    concurrent_jobs: int | None = None,
    step: str = "the job",
) -> str | None:
    """Claim one free GPU among the visible ones for the rest of this process, waiting until one is free.

    The claim is an exclusive flock on ``lock_dir/gpu-<index>.lock`` (the file holds the claimant's pid,
    for a person looking), and ``CUDA_VISIBLE_DEVICES`` is set to that one GPU, so call this before torch
    initialises CUDA. A job whose environment already names exactly one device (a scheduler assigned it)
    takes it without a lock. On a host listed by ``nvidia-smi`` with one GPU the claim is still taken, so
    two jobs never share it. Calling it again in the same process returns the same GPU.

    Args:
        lock_dir: the folder of the lock files, shared by every job of the host (default:
            :func:`default_lock_dir`).
        environ: the environment to read the visible GPUs from and to set ``CUDA_VISIBLE_DEVICES`` in.
        poll_seconds: how often to retry while every visible GPU is claimed by other jobs.
        concurrent_jobs: how many GPU jobs the profile lets run at once on this host (its ``resources:
            gpu=N``); ``None`` when no such limit is set (a cluster scheduler gives each job its devices).
        step: what runs, for the log (``run_study``, ``the evaluation``).

    Returns:
        The claimed ``CUDA_VISIBLE_DEVICES`` entry, or None when no GPU is visible (the job runs on CPU).

    Raises:
        GpuClaimError: some GPUs are visible but fewer than ``concurrent_jobs``, so jobs would share one
            (e.g. an inherited ``CUDA_VISIBLE_DEVICES=0`` on a VM whose profile runs 2 studies at once).
    """
    for held in _held_gpus:
        if held.environ is environ:
            return held.index
    candidates = visible_gpu_indices(environ)
    if not candidates:
        logger.info("no GPU visible; %s runs on CPU", step)
        return None
    _check_enough_gpus(candidates, concurrent_jobs, environ, step)
    if environ.get("CUDA_VISIBLE_DEVICES") is not None and len(candidates) == 1:
        # One device given to this job (SLURM gres, a container): nothing to choose, and under device
        # cgroups every job sees its own GPU as "0", so a host-wide lock on "0" would queue jobs that
        # run on different GPUs.
        logger.info("%s: GPU %s assigned by the environment (CUDA_VISIBLE_DEVICES)", step, candidates[0])
        return candidates[0]
    _warn_if_cuda_initialised()
    return _wait_for_free_gpu(lock_dir or default_lock_dir(environ), candidates, environ, step, poll_seconds)


def _wait_for_free_gpu(
    lock_dir: Path, candidates: list[str], environ: MutableMapping[str, str], step: str, poll_seconds: float
) -> str:
    """Lock a free GPU among ``candidates``, retrying every ``poll_seconds`` while other jobs hold them all."""
    announced_wait = False
    while True:
        index = _lock_free_gpu(lock_dir, candidates, environ, step)
        if index is not None:
            return index
        if not announced_wait:
            # Once, not per poll: a queue of jobs would otherwise fill their logs while they wait.
            logger.info(
                "every visible GPU (%s) is claimed by another job (%s); waiting for one to free",
                ",".join(candidates),
                _describe_holders(lock_dir, candidates),
            )
            announced_wait = True
        time.sleep(poll_seconds)


def _check_enough_gpus(
    candidates: list[str], concurrent_jobs: int | None, environ: Mapping[str, str], step: str
) -> None:
    """Raise :class:`GpuClaimError` when fewer GPUs are visible than GPU jobs may run at once."""
    if concurrent_jobs is None or len(candidates) >= concurrent_jobs:
        return
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    raise GpuClaimError(
        f"{step}: the profile runs up to {concurrent_jobs} GPU jobs at once (resources: gpu={concurrent_jobs}) "
        f"but only {len(candidates)} GPU(s) are visible ("
        + (f"CUDA_VISIBLE_DEVICES={visible}" if visible is not None else "nvidia-smi")
        + f"), so jobs would share one; set the profile's gpu={len(candidates)}, or unset CUDA_VISIBLE_DEVICES "
        "to let each job claim its own"
    )


def _lock_free_gpu(lock_dir: Path, candidates: list[str], environ: MutableMapping[str, str], step: str) -> str | None:
    """One pass over ``candidates``: lock the first free GPU, hold it and point ``CUDA_VISIBLE_DEVICES`` at it;
    ``None`` when every one is locked by another job."""
    for index in candidates:
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = _try_lock(_lock_path(lock_dir, index))
        except PermissionError as err:
            # Typically a lock folder left by another user of a shared host.
            raise PermissionError(
                f"cannot take a GPU lock in {lock_dir}: {err.strerror}; "
                f"set {LOCK_DIR_ENV} to a folder every study job of this host can write"
            ) from err
        if lock_fd is None:
            continue
        _held_gpus.append(_HeldGpu(index, lock_fd, environ, environ.get("CUDA_VISIBLE_DEVICES")))
        environ["CUDA_VISIBLE_DEVICES"] = index
        logger.info(
            "%s: claimed GPU %s of %s (lock %s); CUDA_VISIBLE_DEVICES=%s",
            step,
            index,
            ",".join(candidates),
            _lock_path(lock_dir, index),
            index,
        )
        return index
    return None


def release_gpu() -> None:
    """Give back every GPU this process claimed and restore ``CUDA_VISIBLE_DEVICES`` (tests, long-lived
    processes; a study job simply exits)."""
    while _held_gpus:
        held = _held_gpus.pop()
        os.close(held.lock_fd)  # closing the last descriptor drops the flock
        if held.previous_visible is None:
            held.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            held.environ["CUDA_VISIBLE_DEVICES"] = held.previous_visible
        logger.info("released GPU %s", held.index)


def _lock_path(lock_dir: Path, index: str) -> Path:
    # Old MIG identifiers contain slashes; a lock file name must not.
    return lock_dir / f"gpu-{index.replace('/', '_')}.lock"


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None if another process holds it."""
    # The file is never deleted: unlinking a lock file lets a late opener lock a fresh inode while the
    # holder still locks the old one, and two jobs would share a GPU.
    lock_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        return None
    except BaseException:
        os.close(lock_fd)
        raise
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    return lock_fd


def _describe_holders(lock_dir: Path, candidates: list[str]) -> str:
    holders = []
    for index in candidates:
        try:
            pid = _lock_path(lock_dir, index).read_text().strip() or "?"
        except OSError:
            pid = "?"
        holders.append(f"GPU {index}: pid {pid}")
    return ", ".join(holders)


def _warn_if_cuda_initialised() -> None:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        logger.warning(
            "torch has already initialised CUDA, so the GPU claim comes too late to restrict this process; "
            "claim_gpu must run before the first CUDA call"
        )
