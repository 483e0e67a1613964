"""Builders for small but real studies: synthetic data in the hub schema, tokenized with the tiny model."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from finetune_hpo.config import check_config
from finetune_hpo.data import load_splits
from finetune_hpo.demo import generate_task_data
from finetune_hpo.draws import subsample, write_subsample
from finetune_hpo.preprocess import load_tokenizer, tokenize_task
from finetune_hpo.qa import QAWindowing
from finetune_hpo.tasks import TASKS
from tests.conftest import demo_config


def small_config(
    workdir: Path, model: Path, *, tasks=("sst2",), n_trials: int = 3, train_size: int = 80, **optuna
) -> dict:
    """The demo config cut down to ``tasks``, with W&B disabled and files under ``workdir``."""
    config = copy.deepcopy(demo_config())
    config["tasks"] = {
        task: {
            "train_size": train_size,
            "validation_fraction": 0.5,
            "data_files": {
                split: str(workdir / "synthetic" / task / f"{split}.jsonl") for split in ("train", "validation")
            },
        }
        for task in tasks
    }
    config["vms"] = {}
    config["model"]["name_or_path"] = str(model)
    config["optuna"]["n_trials"] = n_trials
    config["optuna"].update(optuna)
    config["wandb"]["mode"] = "disabled"
    config["demo"] = {"synthetic_data": False, "build_model": False}
    for space in config["search_spaces"].values():
        space["num_train_epochs"] = {"type": "int", "low": 1, "high": 2}
    return config


def prepare_task(workdir: Path, config: dict, task_name: str) -> dict[str, Any]:
    """Generate, subsample and tokenize one task like the workflow's rules do; returns the data summary."""
    task = TASKS[task_name]
    generate_task_data(task_name, workdir / "synthetic" / task_name, 300, 200, seed=0)
    check_config(config)
    task_config = config["tasks"][task_name]
    selection = config["selection"]
    drawn = subsample(
        task,
        load_splits(task, task_config["data_files"]),
        task_config["train_size"],
        0.5,
        seed=0,
        # As rule subsample_dataset: held-out rows when a best model is kept or candidates are confirmed.
        confirmation_max_rows=selection["confirmation_max_rows"]
        if selection["save_best_model"] or {**selection, **task_config.get("selection", {})}["confirm_top_k"]
        else 0,
    )
    summary = write_subsample(task, drawn, workdir / "results" / "data" / task_name, seed=0)
    qa = config["model"]["qa"]
    tokenize_task(
        task,
        workdir / "results" / "data" / task_name,
        load_tokenizer(config["model"]["name_or_path"]),
        workdir / "results" / "tokenized" / task_name,
        max_seq_length=config["model"]["max_seq_length"],
        qa_windowing=QAWindowing(qa["max_seq_length"], qa["doc_stride"]),
    )
    return summary


def trial_provenance(batch_size: int = 2) -> dict[str, Any]:
    """The user attributes a real trial records about how it trained (what the export's provenance holds),
    for studies the tests build by hand."""
    from finetune_hpo.models import library_versions

    return {
        "precision": "fp32",
        "per_device_batch_size": batch_size,
        "gradient_accumulation_steps": 1,
        "n_gpu": 0,
        "gpu_name": None,
        "effective_batch_size": batch_size,
        "versions": library_versions(),
        "sampler_seed": 42,
    }


def assert_trials_learned(values, summary: dict, metric: str, margin: float = 5.0) -> None:
    """The guard of every test that compares scores: they differ, and the best beats the best constant
    prediction on the selection set by ``margin`` points. A model that never learns scores the same
    constant whatever the code does, and a test comparing such scores cannot fail."""
    from finetune_hpo.metrics import constant_prediction_baseline
    from finetune_hpo.tasks import TASKS

    values = [float(value) for value in values]
    problem_type = TASKS[summary["task"]].problem_type if summary["task"] in TASKS else "classification"
    baseline = constant_prediction_baseline(problem_type, metric, summary["splits"]["validation"]["strata"])
    assert len(set(values)) > 1, f"every trial or seed scored {values[0]}: the test would compare constants"
    assert baseline is not None and max(values) > baseline + margin, (
        f"the best score {max(values):.2f} does not beat the constant prediction's {baseline:.2f}: nothing learned"
    )


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(json.loads(json.dumps(config))))
    return path


def run_study_command(config_path: Path, results: Path, task: str = "sst2", method: str = "full_finetune") -> list[str]:
    """The CLI command that runs (or resumes) one study in its own process, as a worker would."""
    return [
        sys.executable,
        "-m",
        "finetune_hpo.cli",
        "run-study",
        "--config",
        str(config_path),
        "--task",
        task,
        "--method",
        method,
        "--results",
        str(results),
    ]


def journal_trials(journal: Path, study_name: str) -> Callable[[], list]:
    """A reader of a study's trials from its journal beside a live writer, with one storage object (it reads
    the journal incrementally); raises ``KeyError`` while the study is not written yet."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = None

    def read() -> list:
        nonlocal storage
        if not journal.exists():
            raise KeyError(study_name)
        storage = storage or JournalStorage(JournalFileBackend(str(journal)))
        return optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)

    return read


def freeze_in_a_running_trial(
    process: subprocess.Popen,
    read_trials: Callable[[], list],
    *,
    min_complete: int,
    group: bool = False,
    owner: Callable[[Any], bool] | None = None,
    timeout: float = 300,
) -> int:
    """Stop ``process`` (its process group with ``group``) with SIGSTOP while its study is mid-trial.

    Nothing is timed by the wall clock: the process is frozen first, then the storage is read while it
    cannot move. When the storage holds a RUNNING trial (of ``owner``, when given) that has its parameters,
    so training has begun, after at least ``min_complete`` COMPLETE trials, the process stays frozen and the
    trial's number is returned; otherwise it is resumed and the check repeats. The caller then kills it,
    or sends SIGTERM and SIGCONT.
    """
    from optuna.trial import TrialState

    def send(signum: int) -> None:
        os.killpg(process.pid, signum) if group else os.kill(process.pid, signum)

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the study finished before it could be interrupted"
        send(signal.SIGSTOP)
        try:
            trials = read_trials()
        except KeyError:
            trials = []  # the storage exists before the study is written to it
        complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
        running = [
            trial
            for trial in trials
            if trial.state == TrialState.RUNNING and trial.params and (owner is None or owner(trial))
        ]
        if complete >= min_complete and running:
            return running[-1].number
        send(signal.SIGCONT)
        time.sleep(0.05)
    raise AssertionError(f"no running trial to interrupt within {timeout} s")


def read_wandb_run(run_dir: Path) -> dict[str, Any]:
    """What an offline W&B run holds, read from its ``run-<id>.wandb`` file with W&B's own record schema
    (``wandb.proto.wandb_internal_pb2.Record``): the run's name and config, and its final summary.

    The file is W&B's LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then records in 32 KiB
    blocks, each chunk behind a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last). wandb
    0.31 moved its Python reader into its Go core, so the framing is read here and the records by W&B.
    """
    import json
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = Path(run_dir).glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    position, block, pending, records = 7, 32768, b"", []
    while position + 7 <= len(data):
        room = block - position % block
        if room < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        position += 7
        pending += data[position : position + length]
        position += length
        if kind in (1, 4) and pending:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    run: dict[str, Any] = {"name": None, "config": {}, "summary": {}}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["name"] = record.run.display_name
            run["config"] |= {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif kind == "config":
            run["config"] |= {item.key: json.loads(item.value_json) for item in record.config.update if item.key}
        elif kind == "summary":
            run["summary"] |= {item.key: json.loads(item.value_json) for item in record.summary.update if item.key}
    return run
