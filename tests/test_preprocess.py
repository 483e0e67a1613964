"""Tokenization as rule tokenize_dataset runs it: a job's threads tokenize in that many processes, to the
same rows as one process."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest

from finetune_hpo.preprocess import prepare_tokenized_task
from finetune_hpo.tasks import TASKS
from tests.helpers import prepare_task, small_config


@pytest.mark.parametrize("task_name", ["sst2", "squad_v2"])
def test_tokenizing_in_several_processes_gives_the_same_rows(
    tmp_path: Path, tiny_model: Path, task_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(tmp_path, tiny_model, tasks=(task_name,))
    prepare_task(tmp_path, config, task_name)
    data_dir = tmp_path / "results" / "data" / task_name
    processes: dict[int, set] = {1: set(), 2: set()}
    tokenized = {}
    for threads in (1, 2):
        real_map = datasets.Dataset.map

        def recording_map(self, *args, _threads=threads, _real=real_map, **kwargs):
            processes[_threads].add(kwargs.get("num_proc"))
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(datasets.Dataset, "map", recording_map)
        out = tmp_path / f"tokenized-{threads}"
        summary = prepare_tokenized_task(
            TASKS[task_name],
            data_dir,
            str(tiny_model),
            out,
            max_seq_length=config["model"]["max_seq_length"],
            qa=config["model"]["qa"],
            threads=threads,
        )
        monkeypatch.undo()
        tokenized[threads] = (summary, datasets.load_from_disk(str(out)))
    (one_summary, one), (two_summary, two) = tokenized[1], tokenized[2]
    assert one_summary == two_summary and set(one) == set(two) and "train" in one
    for split in one:
        assert len(one[split]) > 0 and one[split].to_dict() == two[split].to_dict(), split
    # Every split was mapped in the job's processes: one process at 1 thread, two at 2.
    assert processes == {1: {None}, 2: {2}}
