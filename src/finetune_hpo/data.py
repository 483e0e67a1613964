"""Loading a task's splits (hub or local files in the hub schema) and drawing the seeded, stratified tiers.

Stratification keeps the label mix of each split (answerable vs unanswerable for SQuAD v2), so a 500-example
tier of RTE has the same class balance as the full training set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune_hpo.tasks import TaskSpec

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "validation")
# Local data files: suffix -> the datasets builder that reads it.
SUPPORTED_DATA_SUFFIXES = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# Validation rows left over by the selection set: an unbiased score of the chosen configuration.
CONFIRMATION_SPLIT = "confirmation"


class DataError(ValueError):
    """Data that cannot be used for a task; the message names the file or split and the problem."""


def read_columns(path: Path) -> list[str]:
    """Column names of a local data file, read without loading the whole file."""
    suffix = path.suffix
    if suffix in (".json", ".jsonl"):
        with path.open() as handle:
            first = handle.readline().strip()
        if not first:
            raise DataError(f"{path} is empty")
        try:
            row = json.loads(first)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: first line is not a JSON object ({err}); expected JSON Lines") from err
        if not isinstance(row, dict):
            raise DataError(f"{path}: first line is not a JSON object; expected JSON Lines")
        return list(row)
    if suffix == ".csv":
        import csv

        with path.open(newline="") as handle:
            return next(csv.reader(handle), [])
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    raise DataError(f"{path}: unsupported file type {suffix!r}")


def count_rows(path: Path) -> int:
    """Rows of a local data file, counted without loading it: JSON Lines' non-blank lines, CSV records
    after the header, parquet's metadata."""
    suffix = path.suffix
    if suffix in (".json", ".jsonl"):
        with path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())
    if suffix == ".csv":
        import csv

        with path.open(newline="") as handle:
            return max(0, sum(1 for _ in csv.reader(handle)) - 1)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    raise DataError(f"{path}: unsupported file type {suffix!r}")


def selection_size(train_size: int, validation_fraction: float) -> int:
    """Rows of the selection set drawn from the validation split: ``validation_fraction`` of the tier."""
    return max(1, round(train_size * validation_fraction))


def check_columns(path: Path, task: TaskSpec, where: str) -> None:
    """Raise a :class:`DataError` naming ``where`` if ``path`` lacks a column of ``task``'s hub schema."""
    columns = read_columns(Path(path))
    missing = [column for column in task.required_columns if column not in columns]
    if missing:
        raise DataError(
            f"{where}: {path} lacks column(s) {', '.join(missing)} of task {task.name!r} "
            f"(found: {', '.join(columns) or 'none'}; expected the hub schema: {', '.join(task.required_columns)})"
        )


def load_splits(task: TaskSpec, data_files: Mapping[str, str] | None = None) -> datasets.DatasetDict:
    """Load the train and validation splits of ``task`` from the hub, or from local files in the hub schema.

    Args:
        task: The task's registry entry.
        data_files: ``{"train": path, "validation": path}``; ``None`` loads ``task.hub_path`` from the hub.
    """
    import datasets

    if data_files:
        paths = {split: str(data_files[split]) for split in SPLITS}
        for split, path in paths.items():
            if not Path(path).is_file():
                raise DataError(f"data file for split {split!r} of task {task.name!r} does not exist: {path}")
            check_columns(Path(path), task, where=f"tasks.{task.name}.data_files.{split}")
        builders = {SUPPORTED_DATA_SUFFIXES[Path(path).suffix] for path in paths.values()}
        if len(builders) != 1:
            raise DataError(f"task {task.name!r}: train and validation files must have the same format")
        loaded = datasets.load_dataset(builders.pop(), data_files=paths)
    else:
        logger.info("loading %s (%s) from the Hugging Face hub", task.hub_path, task.hub_config)
        loaded = datasets.load_dataset(task.hub_path, task.hub_config)
    return datasets.DatasetDict({split: loaded[split] for split in SPLITS})


def strata(task: TaskSpec, rows: datasets.Dataset) -> list[Any]:
    """The stratum of every row: its label, or whether a QA question is answerable."""
    labels = rows[task.label_column]
    if task.is_classification:
        return list(labels)
    return [bool(answer["text"]) for answer in labels]


def check_rows(task: TaskSpec, rows: datasets.Dataset, split: str) -> None:
    """Refuse an empty split or labels outside the task's label set, before anything is written."""
    if len(rows) == 0:
        raise DataError(f"task {task.name!r}: split {split!r} is empty")
    if task.is_classification:
        bad = sorted({label for label in rows[task.label_column] if label not in range(task.num_labels)})
        if bad:
            raise DataError(
                f"task {task.name!r}: split {split!r} has label(s) {bad[:5]} outside 0..{task.num_labels - 1} "
                f"({', '.join(task.label_names)})"
            )
    else:
        for answer in rows[task.label_column][:100]:
            if not isinstance(answer, Mapping) or "text" not in answer or "answer_start" not in answer:
                raise DataError(
                    f"task {task.name!r}: split {split!r} has an '{task.label_column}' value without "
                    "'text' and 'answer_start' lists (the SQuAD v2 schema)"
                )


def confirmation_rows_sha256(data_summary: Mapping[str, Any]) -> str | None:
    """Hash of the task's confirmation rows (``None`` without any), recorded with every score on them."""
    return data_summary["splits"].get(CONFIRMATION_SPLIT, {}).get("sha256")
