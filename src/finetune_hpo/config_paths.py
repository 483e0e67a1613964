"""The files a config names, checked before any job: a local model's folder, and each task's local data files
(they exist, or the demo writes them; they have the task's columns; they hold the rows its tier and selection
set draw). Relative paths are resolved in Snakemake's working directory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from finetune_hpo.config_schema import ConfigError
from finetune_hpo.data import (
    SUPPORTED_DATA_SUFFIXES,
    DataError,
    check_columns,
    count_rows,
    read_columns,
    selection_size,
)
from finetune_hpo.tasks import resolve_task

# Where rule generate_demo_data writes a task's synthetic split, relative to the working directory
# (workflow/rules/demo.smk builds its outputs from it).
DEMO_DATA_FILE = "resources/synthetic/{task}/{split}.jsonl"


def looks_like_local_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (``./x``, ``/abs``, ``a/b/c``) is a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _in_workdir(workdir: Path, path: str | Path) -> Path:
    """Where a relative path of the config points: Snakemake resolves it in its working directory."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else workdir / path


def check_model_path(config: Mapping[str, Any], workdir: Path) -> None:
    """A local model (``model.name_or_path`` that is a path, not a hub id) is a folder, unless the demo builds it."""
    name = str(config["model"]["name_or_path"])
    if config["demo"]["build_model"]:
        return  # rule build_demo_model writes it
    if looks_like_local_path(name) and not _in_workdir(workdir, name).is_dir():
        raise ConfigError(f"model.name_or_path: local model directory {name} does not exist{_looked_in(workdir, name)}")


def _looked_in(workdir: Path, path: str) -> str:
    """Where a relative path was looked for, when that is not the current directory."""
    if workdir == Path(".") or Path(path).expanduser().is_absolute():
        return ""
    return f" (looked for {_in_workdir(workdir, path)})"


def check_task_data_files(config: Mapping[str, Any], task_name: str, workdir: Path) -> None:
    """The task's local files exist (or the demo writes them), have the task's columns, and hold the rows
    its tier and selection set draw."""
    task_config = config["tasks"][task_name]
    data_files = task_config.get("data_files")
    if not data_files:
        definition = task_config.get("definition") or {}
        if definition and not definition.get("hub_path"):
            raise ConfigError(
                f"tasks.{task_name}.data_files: missing; a task declared in the config reads local files "
                "(or give definition.hub_path)"
            )
        return
    demo = config["demo"]
    rows: dict[str, tuple[int, str]] = {}
    problems = []
    for split in ("train", "validation"):
        key = f"tasks.{task_name}.data_files.{split}"
        if not data_files.get(split):
            problems.append(f"{key}: missing; give a file for both 'train' and 'validation'")
            continue
        written = str(data_files[split])
        path = _in_workdir(workdir, written)
        if path.suffix not in SUPPORTED_DATA_SUFFIXES:
            problems.append(
                f"{key}: {written} has an unsupported suffix; use one of {', '.join(SUPPORTED_DATA_SUFFIXES)}"
            )
            continue
        generated = _in_workdir(workdir, DEMO_DATA_FILE.format(task=task_name, split=split))
        if not path.exists():
            if demo["synthetic_data"] and path.resolve() == generated.resolve():
                # Rule generate_demo_data writes it, with demo.examples_per_split rows.
                rows[split] = (demo["examples_per_split"][split], f"demo.examples_per_split.{split}")
                continue
            hint = (
                f"; the demo generates only {DEMO_DATA_FILE.format(task=task_name, split=split)}"
                if demo["synthetic_data"]
                else ""
            )
            problems.append(f"{key}: file {written} does not exist{_looked_in(workdir, written)}{hint}")
            continue
        try:
            check_columns(path, resolve_task(task_name, task_config), where=key)
            rows[split] = (count_rows(path), written)
        except DataError as err:
            problems.append(str(err))
            continue
        group_column = task_config.get("group_column")
        if split == "validation" and group_column and group_column not in read_columns(path):
            problems.append(
                f"tasks.{task_name}.group_column: column {group_column!r} is not in {written} "
                f"(columns: {', '.join(read_columns(path))})"
            )
    problems.extend(_row_problems(task_name, task_config, rows))
    if problems:
        raise ConfigError(*problems)


def _row_problems(task_name: str, task_config: Mapping[str, Any], rows: Mapping[str, tuple[int, str]]) -> list[str]:
    """The tier and the selection set must fit the rows of the files they are drawn from."""
    problems = []
    train_size = int(task_config["train_size"])
    if "train" in rows and train_size > rows["train"][0]:
        available, source = rows["train"]
        problems.append(
            f"tasks.{task_name}.train_size: {train_size} training examples asked, but {source} has {available} "
            "rows; lower train_size or give a larger file"
        )
    selection = selection_size(train_size, float(task_config["validation_fraction"]))
    if "validation" in rows and selection > rows["validation"][0]:
        available, source = rows["validation"]
        problems.append(
            f"tasks.{task_name}.validation_fraction: the selection set needs {selection} rows "
            f"({task_config['validation_fraction']} x train_size {train_size}), but {source} has {available}; "
            "lower validation_fraction or train_size"
        )
    return problems
