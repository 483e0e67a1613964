"""The experiment configuration: schema validation, the checks a schema cannot express, typed views
(where a run's config comes from is :mod:`finetune_hpo.config_sources`; the checks of the files it names,
:mod:`finetune_hpo.config_paths`).

Both the Snakefile and the CLI go through :func:`check_config`, so a typo is caught the same way before any
job starts, with one line per problem that names the key: ``Invalid configuration: <key>: <problem>``.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from finetune_hpo.config_paths import check_model_path, check_task_data_files
from finetune_hpo.config_schema import ConfigError, validate_schema
from finetune_hpo.data import DataError
from finetune_hpo.methods import METHODS
from finetune_hpo.search_space import SearchSpaceError, build_search_space
from finetune_hpo.settings import StudySettings, build_study_settings, configured_sources
from finetune_hpo.tasks import TASKS, TaskDefinitionError, resolve_task

logger = logging.getLogger(__name__)


def check_config(
    config: dict[str, Any],
    *,
    check_data_files: bool = True,
    schema_validated: bool = False,
    workdir: str | Path = ".",
) -> dict[str, Any]:
    """Validate ``config`` in place (schema, then semantics) and return it.

    Args:
        config: The merged config dict; schema defaults are written into it.
        check_data_files: Also check that local data files exist, have the task's columns and hold the
            rows the tier and the selection set draw. A file is excused from existing only when the demo
            generates it (``demo.synthetic_data`` and the path rule generate_demo_data writes).
        schema_validated: The caller already ran Snakemake's ``validate`` (the Snakefile does).
        workdir: Snakemake's working directory, which relative data and model paths are relative to.

    Raises:
        ConfigError: one line per problem, each naming the key.
    """
    if not schema_validated:
        validate_schema(config)
    workdir = Path(workdir)
    problems: list[str] = []

    def collect(check: Callable[..., Any], *args: Any) -> None:
        try:
            check(*args)
        except ConfigError as err:
            problems.extend(err.problems)
        except DataError as err:
            problems.append(str(err))

    collect(_check_names, config)
    if problems:  # the checks below look tasks and methods up by name
        raise ConfigError(*problems)
    collect(check_model_path, config, workdir)
    collect(_check_workers, config)
    collect(_check_transfer, config)
    collect(_check_enqueue_names, config)
    for task_name in config["tasks"]:
        for method in config["methods"]:
            collect(_check_study, config, task_name, method)
        if check_data_files:
            collect(check_task_data_files, config, task_name, workdir)
    if problems:
        raise ConfigError(*problems)
    return config


def _check_names(config: Mapping[str, Any]) -> None:
    """Tasks, methods and VMs name things that exist."""
    problems = []
    for task_name, task_config in config["tasks"].items():
        if task_name not in TASKS and not task_config.get("definition"):
            problems.append(
                f"tasks.{task_name}: unknown task{_close_to(task_name, TASKS)}; built-in tasks: "
                f"{', '.join(sorted(TASKS))}, or declare it with tasks.{task_name}.definition"
            )
            continue
        try:
            resolve_task(task_name, task_config)
        except TaskDefinitionError as err:
            problems.append(str(err))
    for method in config["methods"]:
        if method not in METHODS:
            problems.append(
                f"methods: unknown method {method!r}{_close_to(method, METHODS)}; known methods: {', '.join(METHODS)}"
            )
        elif method not in config["search_spaces"]:
            problems.append(f"search_spaces.{method}: missing; every method in 'methods' needs a search space")
    for vm, vm_tasks in config["vms"].items():
        for task_name in vm_tasks:
            if task_name not in config["tasks"]:
                problems.append(f"vms.{vm}: task {task_name!r} is not configured under 'tasks'")
    if config["vm"] is not None and config["vm"] not in config["vms"]:
        known = ", ".join(config["vms"]) or "none"
        problems.append(f"vm: {config['vm']!r} is not defined under 'vms' (defined: {known})")
    if problems:
        raise ConfigError(*problems)


def _check_transfer(config: Mapping[str, Any]) -> None:
    """Transfer edges join tasks that run on the same VM, and form no cycle: a study waits for its sources, and
    on one VM the workflow can wait only for studies of that VM.

    An edge from or into a task the config leaves out is dropped, not refused: a config that keeps only RTE
    and SST-2 but carries the default edges starts RTE's study from SST-2's only (:func:`configured_sources`;
    ``validate`` prints what each study starts from). A self-edge or a cycle is refused wherever it is: it is
    a mistake in the edges themselves."""
    problems = []
    sources = config["transfer"]["sources"]
    for target, feeding in sources.items():
        where = f"transfer.sources.{target}"
        if target in feeding:
            problems.append(f"{where}: a study cannot start from itself")
        feeding = configured_sources(config, target)
        for vm, vm_tasks in config["vms"].items():
            apart = [task for task in feeding if target in vm_tasks and task not in vm_tasks]
            if apart:
                problems.append(
                    f"{where}: {', '.join(apart)} runs on another VM than {vm}, so {target}'s study could not wait "
                    f"for it there; feed {target} from tasks of {vm} ({', '.join(vm_tasks)})"
                )
    cycle = _transfer_cycle(sources)
    if cycle:
        problems.append(f"transfer.sources: a cycle ({' <- '.join(cycle)}); each study would wait for the other")
    if problems:
        raise ConfigError(*problems)


def _transfer_cycle(sources: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle of the feeds-into graph as a path of tasks, or ``[]``."""
    state: dict[str, str] = {}

    def visit(task: str, path: list[str]) -> list[str]:
        if state.get(task) == "open":
            return [*path[path.index(task) :], task]
        if state.get(task) == "done":
            return []
        state[task] = "open"
        for source in sources.get(task, []):
            found = visit(source, [*path, task])
            if found:
                return found
        state[task] = "done"
        return []

    for task in sources:
        found = visit(task, [])
        if found:
            return found
    return []


def _close_to(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _check_study(config: Mapping[str, Any], task_name: str, method: str) -> None:
    settings = study_settings(config, task_name, method)
    _check_confirmation(settings, config)
    _check_enqueue_values(settings)


def study_settings(config: Mapping[str, Any], task_name: str, method: str) -> StudySettings:
    """Resolve one study's settings: the method's space with the task's overrides applied."""
    task_config = config["tasks"][task_name]
    space = dict(config["search_spaces"][method])
    overrides = task_config.get("search_space_overrides", {})
    unknown_methods = sorted(set(overrides) - set(METHODS))
    if unknown_methods:
        raise ConfigError(f"tasks.{task_name}.search_space_overrides: unknown method(s) {', '.join(unknown_methods)}")
    space.update(overrides.get(method, {}))
    where = f"search_spaces.{method}" + (
        f" (with tasks.{task_name}.search_space_overrides.{method})" if method in overrides else ""
    )
    try:
        distributions = build_search_space(method, space, where)
    except SearchSpaceError as err:
        raise ConfigError(str(err)) from err
    try:
        task = resolve_task(task_name, task_config)
    except TaskDefinitionError as err:
        raise ConfigError(str(err)) from err
    return build_study_settings(config, task, method, distributions)


def method_search_space(config: Mapping[str, Any], method: str, task_name: str | None = None) -> dict[str, Any]:
    """A method's search space as distributions: ``search_spaces.<method>``, with the task's overrides when
    ``task_name`` is given (the space of study ``<task>_<method>``)."""
    if method not in config["search_spaces"]:
        raise ConfigError(f"search_spaces.{method}: missing; configured: {', '.join(config['search_spaces'])}")
    if task_name is not None:
        if task_name not in config["tasks"]:
            raise ConfigError(f"tasks.{task_name}: not configured; configured tasks: {', '.join(config['tasks'])}")
        return study_settings(config, task_name, method).search_space
    try:
        return build_search_space(method, config["search_spaces"][method], f"search_spaces.{method}")
    except SearchSpaceError as err:
        raise ConfigError(str(err)) from err


def _check_enqueue_names(config: Mapping[str, Any]) -> None:
    """Every enqueued parameter must be a hyperparameter of some method's space (a typo is not ignored)."""
    known = {name for space in config["search_spaces"].values() for name in space}
    for index, params in enumerate(config["optuna"].get("enqueue", [])):
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"optuna.enqueue[{index}]: unknown hyperparameter(s) {', '.join(unknown)}; the search spaces "
                f"define {', '.join(sorted(known))}"
            )


def _check_enqueue_values(settings: StudySettings) -> None:
    """Each enqueued value must lie inside the study's distribution (after the task's overrides)."""
    for index, params in enumerate(settings.enqueue):
        for name, value in params.items():
            distribution = settings.search_space[name]
            try:
                inside = distribution._contains(distribution.to_internal_repr(value))
            except (TypeError, ValueError):
                inside = False
            if not inside:
                raise ConfigError(
                    f"optuna.enqueue[{index}].{name}: {value!r} is outside study {settings.study_name}'s space "
                    f"({_describe(distribution)})"
                )


def _describe(distribution: Any) -> str:
    if hasattr(distribution, "choices"):
        return f"choices {list(distribution.choices)}"
    return f"{distribution.low} to {distribution.high}" + (", log scale" if distribution.log else "")


def _check_confirmation(settings: StudySettings, config: Mapping[str, Any]) -> None:
    """Confirmation draws its candidates from the study's COMPLETE trials and ranks them on held-out rows."""
    selection = settings.selection
    where = (
        f"tasks.{settings.task.name}.selection.confirm_top_k"
        if "confirm_top_k" in config["tasks"][settings.task.name].get("selection", {})
        else "selection.confirm_top_k"
    )
    if selection.confirm_top_k > settings.n_trials:
        raise ConfigError(
            f"{where}: {selection.confirm_top_k} candidates cannot come from a study of optuna.n_trials="
            f"{settings.n_trials} trials"
        )
    if selection.confirms and selection.confirmation_max_rows == 0:
        logger.warning(
            "%s is on but selection.confirmation_max_rows is 0: study %s's candidates will be ranked on "
            "the selection set that chose them",
            where,
            settings.study_name,
        )


def _check_workers(config: Mapping[str, Any]) -> None:
    workers = config["optuna"]["workers_per_study"]
    storage = config["optuna"]["storage"] or ""
    if workers > 1 and (not storage or storage.startswith("sqlite")):
        raise ConfigError(
            f"optuna.workers_per_study: {workers} workers need a shared RDB storage (optuna.storage: "
            "postgresql://... or env:VAR); a journal file or SQLite is unsafe across machines"
        )


def planned_tasks(config: Mapping[str, Any]) -> list[str]:
    """Tasks to plan: the selected vm's tasks, or every configured task when no vm is selected."""
    if config["vm"] is None:
        return list(config["tasks"])
    return [task for task in config["tasks"] if task in config["vms"][config["vm"]]]


def planned_studies(config: Mapping[str, Any], tasks: list[str] | None = None) -> list[StudySettings]:
    """The settings of every study to run: ``tasks`` (default: the planned ones) x the configured methods."""
    return [
        study_settings(config, task, method) for task in tasks or planned_tasks(config) for method in config["methods"]
    ]
