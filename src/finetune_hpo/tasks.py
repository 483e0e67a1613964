"""The task registry: one entry per Phase 1 task, holding its schema, metric and hub location.

A task is data, not an ``if`` chain: adding a task means adding a :class:`TaskSpec` to ``TASKS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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

METHODS: tuple[str, ...] = ("full_finetune", "lora")
