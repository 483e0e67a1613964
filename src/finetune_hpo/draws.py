"""The seeded draws of a task's rows: the training tier and the selection set, stratified by label, and the
held-out confirmation rows; where rows come in groups (SQuAD v2's questions per paragraph), the held-out sets
are drawn by whole groups and share none. Written with a summary of sizes, strata, groups and hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetune_hpo.data import (
    CONFIRMATION_SPLIT,
    SPLITS,
    DataError,
    check_rows,
    load_splits,
    selection_size,
    strata,
)
from finetune_hpo.io import write_json_atomic, write_jsonl_atomic
from finetune_hpo.tasks import TaskSpec

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)


def stratified_indices(labels: Sequence[Any], size: int, seed: int) -> list[int]:
    """Draw ``size`` row indices with each stratum's share kept (largest-remainder rounding), seeded.

    The result is sorted so the subsample keeps the source order; it depends only on ``labels``,
    ``size`` and ``seed``.
    """
    if size > len(labels):
        raise DataError(f"asked for {size} examples but the split has only {len(labels)}")
    rng = np.random.default_rng(seed)
    by_stratum: dict[Any, list[int]] = {}
    for index, label in enumerate(labels):
        by_stratum.setdefault(label, []).append(index)
    keys = sorted(by_stratum, key=repr)
    exact = {key: size * len(by_stratum[key]) / len(labels) for key in keys}
    quota = {key: int(exact[key]) for key in keys}
    # Hand the leftover examples to the strata with the largest remainders (ties by stratum order).
    leftover = size - sum(quota.values())
    for key in sorted(keys, key=lambda k: exact[k] - quota[k], reverse=True)[:leftover]:
        quota[key] += 1
    chosen: list[int] = []
    for key in keys:
        members = np.asarray(by_stratum[key])
        chosen.extend(rng.choice(members, size=quota[key], replace=False).tolist())
    return sorted(chosen)


# A coarser grouping (SQuAD v2's articles) is used only when each side of the split keeps at least this many
# groups: a selection set from fewer articles would choose the configuration on a handful of topics. At the
# protocol's sizes (300 selection questions; an article holds ~100-340 questions) SQuAD v2 falls back to
# paragraphs, which still keeps every paragraph on one side.
MIN_GROUPS_PER_SIDE = 5


class Subsample(Mapping[str, "datasets.Dataset"]):
    """The drawn splits (``train``, ``validation``: the selection set, ``confirmation``), the column whose
    groups the held-out rows were drawn by, and the one whose groups their standard errors resample
    (``None``: rows are independent)."""

    def __init__(
        self,
        splits: Mapping[str, datasets.Dataset],
        group_column: str | None = None,
        error_group_column: str | None = None,
    ) -> None:
        self.splits = dict(splits)
        self.group_column = group_column
        # The groups standard errors resample: the finest grouping (paragraphs), which has enough groups.
        self.error_group_column = error_group_column

    def __getitem__(self, split: str) -> datasets.Dataset:
        return self.splits[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)


def grouped_indices(
    groups: Sequence[Any], size: int, seed: int, exclude: set[Any] = frozenset()
) -> tuple[list[int], set[Any]]:
    """Draw about ``size`` rows as whole groups, in a seeded random order of the groups, skipping the groups
    in ``exclude``; the last group is cut to hit ``size`` exactly (its other rows are then used nowhere).

    Returns:
        The sorted row indices, and the groups they come from.
    """
    members: dict[Any, list[int]] = {}
    for index, group in enumerate(groups):
        if group not in exclude:
            members.setdefault(group, []).append(index)
    available = sum(len(rows) for rows in members.values())
    if size > available:
        raise DataError(f"asked for {size} examples but only {available} remain in groups of their own")
    rng = np.random.default_rng(seed)
    order = sorted(members, key=repr)
    chosen: list[int] = []
    used: set[Any] = set()
    for position in rng.permutation(len(order)):
        if len(chosen) >= size:
            break
        group = order[position]
        rows = members[group]
        take = min(len(rows), size - len(chosen))
        chosen.extend(rows if take == len(rows) else sorted(rng.choice(rows, size=take, replace=False).tolist()))
        used.add(group)
    return sorted(chosen), used


def held_out_grouping(task: TaskSpec, rows: datasets.Dataset, size: int, configured: str | None) -> str | None:
    """The column the selection and confirmation rows are drawn by: ``configured`` (``tasks.<task>.group_column``),
    else the task's coarsest grouping column the rows have whose sizes allow it (at least
    ``MIN_GROUPS_PER_SIDE`` groups on each side of a ``size``-row selection set), else its finest; ``None``
    for a task without one.

    Raises:
        DataError: the configured column is not in the validation rows.
    """
    if configured:
        if configured not in rows.column_names:
            raise DataError(
                f"tasks.{task.name}.group_column: column {configured!r} is not in the validation split "
                f"(columns: {', '.join(rows.column_names)})"
            )
        return configured
    present = [column for column in task.group_columns if column in rows.column_names]
    for column in present[:-1]:
        groups = rows[column]
        if len(set(groups)) < 2 * MIN_GROUPS_PER_SIDE or size >= len(groups):
            continue
        _, used = grouped_indices(groups, size, seed=0)
        if len(used) >= MIN_GROUPS_PER_SIDE and len(set(groups)) - len(used) >= MIN_GROUPS_PER_SIDE:
            return column
    return present[-1] if present else None


def subsample(
    task: TaskSpec,
    splits: datasets.DatasetDict,
    train_size: int,
    validation_fraction: float,
    seed: int,
    confirmation_max_rows: int = 0,
    group_column: str | None = None,
) -> Subsample:
    """Draw the training tier, a selection (``validation``) set of ``validation_fraction * train_size``
    examples, and a ``confirmation`` set from the validation rows the selection set left.

    The confirmation rows are disjoint from both the training tier (another split) and the selection set
    (other rows), so a score on them is not inflated by choosing the best of many trials on them. Where rows
    come in groups (SQuAD v2's questions per paragraph, or ``group_column``), both held-out sets are drawn
    by whole groups and share none: a paragraph seen while choosing would otherwise reappear in the rows
    that check the choice. Grouped draws keep the label mix only as far as the groups do (the summary
    counts each side's strata).

    Args:
        confirmation_max_rows: At most this many confirmation rows (a stratified, seeded draw when more
            remain); 0 draws none.
        group_column: The column to group held-out rows by (``tasks.<task>.group_column``); ``None``: the
            task's own (:func:`held_out_grouping`).

    Raises:
        DataError: a split is empty, has bad labels, is smaller than asked, or lacks ``group_column``.
    """
    sizes = {"train": train_size, "validation": selection_size(train_size, validation_fraction)}
    for split in SPLITS:
        _check_split(task, splits[split], split, sizes[split])
    validation = splits["validation"]
    grouping = held_out_grouping(task, validation, sizes["validation"], group_column)
    groups = validation[grouping] if grouping else None
    chosen = {"train": stratified_indices(strata(task, splits["train"]), sizes["train"], seed)}
    used: set[Any] = set()
    if groups is None:
        chosen["validation"] = stratified_indices(strata(task, validation), sizes["validation"], seed + 1)
    else:
        chosen["validation"], used = grouped_indices(groups, sizes["validation"], seed + 1)
    drawn = {split: splits[split].select(chosen[split]) for split in SPLITS}
    if confirmation_max_rows > 0:
        confirmation = _draw_confirmation(
            task, validation, set(chosen["validation"]), groups, used, confirmation_max_rows, seed
        )
        if confirmation is not None:
            drawn[CONFIRMATION_SPLIT] = confirmation
    finest = [column for column in task.group_columns if column in validation.column_names]
    return Subsample(drawn, grouping, group_column or (finest[-1] if finest else None))


def _check_split(task: TaskSpec, rows: datasets.Dataset, split: str, size: int) -> None:
    """A split's labels are valid and it holds the ``size`` rows asked of it."""
    check_rows(task, rows, split)
    if size > len(rows):
        raise DataError(
            f"task {task.name!r}: asked for {size} {split} examples but the split has only "
            f"{len(rows)}; lower tasks.{task.name}.train_size"
            + (" or validation_fraction" if split == "validation" else "")
        )


def _draw_confirmation(
    task: TaskSpec,
    validation: datasets.Dataset,
    selected: set[int],
    groups: Sequence[Any] | None,
    used_groups: set[Any],
    max_rows: int,
    seed: int,
) -> datasets.Dataset | None:
    """Up to ``max_rows`` validation rows outside the selection set (and, where rows come in ``groups``, outside
    its groups): stratified, or by whole groups; ``None`` (logged) when no row is left."""
    remaining = [
        index
        for index in range(len(validation))
        if index not in selected and (groups is None or groups[index] not in used_groups)
    ]
    if not remaining:
        logger.warning("task %s: no validation rows are left for confirmation", task.name)
        return None
    size = min(max_rows, len(remaining))
    if groups is None:
        picked = stratified_indices(strata(task, validation.select(remaining)), size, seed + len(SPLITS))
    else:
        picked, _ = grouped_indices([groups[index] for index in remaining], size, seed + 2)
    return validation.select([remaining[k] for k in picked])


def prepare_task_data(
    task: TaskSpec,
    data_files: Mapping[str, str] | None,
    out_dir: Path,
    *,
    train_size: int,
    validation_fraction: float,
    seed: int,
    confirmation_max_rows: int = 0,
    group_column: str | None = None,
) -> dict[str, Any]:
    """Rule subsample_dataset: load the task's splits (local files in the hub schema, or the hub), draw the
    tier, the selection set and the confirmation rows, and write them with their summary to ``out_dir``."""
    drawn = subsample(
        task,
        load_splits(task, data_files),
        train_size,
        validation_fraction,
        seed,
        confirmation_max_rows=confirmation_max_rows,
        group_column=group_column,
    )
    summary = write_subsample(task, drawn, out_dir, seed)
    logger.info("%s: %s", task.name, json.dumps(summary["splits"]))
    return summary


def write_subsample(task: TaskSpec, drawn: Mapping[str, datasets.Dataset], out_dir: Path, seed: int) -> dict:
    """Write each split as JSON Lines plus a ``summary.json`` with sizes, label counts and hashes.

    ``confirmation.jsonl`` is always written (empty when no confirmation rows were drawn), so the rule's
    outputs do not depend on the data. Each split records the hash of its file and, when the rows carry
    the task's id column, of its ids (the selection ids Phase 2 can check against).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    group_column = getattr(drawn, "group_column", None)
    summary: dict[str, Any] = {
        "task": task.name,
        "seed": seed,
        "held_out_grouped_by": group_column,
        "standard_errors_resample": getattr(drawn, "error_group_column", None),
        "splits": {},
    }
    group_sets: dict[str, set[Any]] = {}
    for split in (*SPLITS, CONFIRMATION_SPLIT):
        rows = drawn.get(split)
        records = rows.to_list() if rows is not None else []
        write_jsonl_atomic(out_dir / f"{split}.jsonl", records)
        if split == CONFIRMATION_SPLIT and rows is None:
            summary["splits"][split] = {"size": 0, "strata": {}, "sha256": None, "ids_sha256": None, "groups": None}
            continue
        counts = Counter(strata(task, rows))
        ids = [record[task.id_column] for record in records if task.id_column in record]
        if group_column and split != "train":
            group_sets[split] = {record[group_column] for record in records}
        summary["splits"][split] = {
            "size": len(records),
            "strata": {str(key): counts[key] for key in sorted(counts, key=repr)},
            "sha256": hashlib.sha256((out_dir / f"{split}.jsonl").read_bytes()).hexdigest(),
            "ids_sha256": hashlib.sha256(json.dumps(ids).encode()).hexdigest() if len(ids) == len(records) else None,
            # Distinct groups (SQuAD v2: articles or paragraphs) of the held-out sets.
            "groups": len(group_sets[split]) if split in group_sets else None,
        }
    if group_column:
        # Checked, not assumed: a group on both sides would let the rows that check a choice share text with
        # the rows that made it.
        shared = group_sets.get("validation", set()) & group_sets.get(CONFIRMATION_SPLIT, set())
        summary["held_out_shared_groups"] = len(shared)
    write_json_atomic(out_dir / "summary.json", summary)
    return summary
