"""The task registry: one entry per task, holding its schema, metric and hub location.

A task is data, not an ``if`` chain: the four Phase 1 tasks are :class:`TaskSpec` entries of ``TASKS``, and a
classification task on local files is declared in the config alone (``tasks.<name>.definition``), which
:func:`resolve_task` turns into an entry of the same kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

ProblemType = Literal["classification", "extractive_qa"]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the workflow needs to know about one task.

    Args:
        name: Short name used in paths and study names (``sst2``).
        problem_type: ``classification`` (sequence classification) or ``extractive_qa``.
        hub_path: Hugging Face dataset repository.
        hub_config: Dataset configuration name on the hub (``None`` when there is none).
        text_columns: Input text columns, in the order they are fed to the tokenizer.
        label_column: Column holding the gold label (classification) or answers (QA).
        label_names: Class names in label-id order (classification only).
        metric: The objective the study maximizes.
        extra_metrics: Metrics recorded beside the objective.
        id_column: Column identifying an example (used for QA predictions).
        group_columns: Columns whose rows are not independent (SQuAD v2: questions about one article, one
            paragraph), coarsest first. Held-out rows are drawn by whole groups, so no group is on both sides
            of the selection/confirmation split, and standard errors resample groups; the first column the
            data has and whose sizes allow it is used (see :func:`finetune_hpo.data.held_out_grouping`).
    """

    name: str
    problem_type: ProblemType
    hub_path: str
    hub_config: str | None
    text_columns: tuple[str, ...]
    label_column: str
    metric: str
    label_names: tuple[str, ...] = ()
    extra_metrics: tuple[str, ...] = ()
    id_column: str = "idx"
    group_columns: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns a data file must have for this task (hub schema)."""
        columns = (*self.text_columns, self.label_column)
        return (self.id_column, *columns) if self.problem_type == "extractive_qa" else columns

    @property
    def is_classification(self) -> bool:
        return self.problem_type == "classification"


def _glue_task(
    name: str,
    text_columns: tuple[str, ...],
    label_names: tuple[str, ...],
    metric: str = "accuracy",
    extra_metrics: tuple[str, ...] = (),
) -> TaskSpec:
    """A GLUE classification task as the hub's ``nyu-mll/glue`` serves it (config = the task's name)."""
    return TaskSpec(
        name=name,
        problem_type="classification",
        hub_path="nyu-mll/glue",
        hub_config=name,
        text_columns=text_columns,
        label_column="label",
        label_names=label_names,
        metric=metric,
        extra_metrics=extra_metrics,
    )


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue_task("sst2", ("sentence",), ("negative", "positive")),
        # The protocol scores MRPC by F1 of the "equivalent" class; accuracy is kept beside it.
        _glue_task(
            "mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "f1", extra_metrics=("accuracy",)
        ),
        _glue_task("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment")),
        TaskSpec(
            name="squad_v2",
            problem_type="extractive_qa",
            hub_path="rajpurkar/squad_v2",
            hub_config=None,
            text_columns=("question", "context"),
            label_column="answers",
            metric="f1",
            extra_metrics=("exact", "HasAns_f1", "NoAns_f1"),
            id_column="id",
            # SQuAD v2 asks several questions of each paragraph, and paragraphs come from articles.
            group_columns=("title", "context"),
        ),
    )
}


class TaskDefinitionError(ValueError):
    """A task the config declares that cannot be used; the message names the key."""


def task_from_definition(name: str, definition: Mapping[str, Any]) -> TaskSpec:
    """A classification task declared in the config (``tasks.<name>.definition``): its text column(s), label
    column and label names in label-id order, metric, and optionally extra metrics, an id column and a hub
    location (local ``data_files`` are the usual source).

    Raises:
        TaskDefinitionError: not a classification task, or a metric the classification scorer does not
            produce (or F1 of "the positive class" for more than two labels).
    """
    from finetune_hpo.metrics import METRICS

    where = f"tasks.{name}.definition"
    problem_type = definition.get("problem_type", "classification")
    if problem_type != "classification":
        raise TaskDefinitionError(
            f"{where}.problem_type: {problem_type!r} cannot be declared in the config; only classification "
            "(extractive QA needs the SQuAD windowing of a built-in task)"
        )
    labels = tuple(str(label) for label in definition["labels"])
    metrics = METRICS[problem_type]
    for key, metric in [("metric", definition["metric"])] + [
        (f"extra_metrics[{k}]", m) for k, m in enumerate(definition.get("extra_metrics", []))
    ]:
        if metric not in metrics:
            raise TaskDefinitionError(
                f"{where}.{key}: the classification scorer produces no metric {metric!r}; it produces "
                f"{', '.join(metrics)}"
            )
        if metrics[metric].binary_only and len(labels) != 2:
            raise TaskDefinitionError(
                f"{where}.{key}: {metric} is defined for two labels, the task has {len(labels)}; use "
                "matthews_correlation or accuracy"
            )
    return TaskSpec(
        name=name,
        problem_type="classification",
        hub_path=definition.get("hub_path") or "",
        hub_config=definition.get("hub_config"),
        text_columns=tuple(definition["text_columns"]),
        label_column=definition.get("label_column", "label"),
        metric=definition["metric"],
        label_names=labels,
        extra_metrics=tuple(definition.get("extra_metrics", [])),
        id_column=definition.get("id_column") or "idx",
    )


def resolve_task(name: str, task_config: Mapping[str, Any] | None = None) -> TaskSpec:
    """The registry entry of task ``name``: the config's declaration (``definition``) when it has one, else
    the built-in task of that name.

    Raises:
        TaskDefinitionError: an unknown task without a declaration, or a declaration that cannot be used.
    """
    definition = (task_config or {}).get("definition")
    if definition:
        if name in TASKS:
            raise TaskDefinitionError(
                f"tasks.{name}.definition: {name} is a built-in task; declare yours under another name"
            )
        return task_from_definition(name, definition)
    if name not in TASKS:
        raise TaskDefinitionError(
            f"tasks.{name}: unknown task; built-in tasks: {', '.join(sorted(TASKS))}, or declare it with "
            f"tasks.{name}.definition (text_columns, labels, metric)"
        )
    return TASKS[name]


def task_from_record(record: Mapping[str, Any]) -> TaskSpec:
    """A task as a saved model's info recorded it (``task_spec``), or the built-in task it names (models
    saved before the entry was recorded)."""
    spec = record.get("task_spec")
    if not spec:
        return TASKS[record["task"]]
    return TaskSpec(**{key: tuple(value) if isinstance(value, list) else value for key, value in spec.items()})
