"""The experiment configuration: schema validation, the checks a schema cannot express, typed views.

Both the Snakefile and the CLI go through :func:`check_config`, so a typo is caught the same way
before any job starts, with a message that names the key.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from finetune_hpo.data import SUPPORTED_DATA_SUFFIXES, check_columns
from finetune_hpo.search_space import SearchSpaceError, build_search_space
from finetune_hpo.settings import StudySettings, build_study_settings
from finetune_hpo.tasks import METHODS, TASKS

logger = logging.getLogger(__name__)

# The schemas ship with the package (so a non-editable install has them); workflow/schemas/ links here,
# so Snakemake validates against the same files.
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
OPTIMAL_SCHEMA = SCHEMA_DIR / "optimal.schema.yaml"


class ConfigError(ValueError):
    """An error in the user's configuration; the message names the key and what to do."""


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config, merge ``overrides`` on top (like Snakemake's --config) and check it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if overrides:
        config = _deep_merge(config, overrides)
    return check_config(config)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_schema(config: dict[str, Any]) -> None:
    """Validate against the JSON Schema and fill in its defaults, in place (Snakemake's validator)."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(config, str(CONFIG_SCHEMA), set_default=True)
    except WorkflowError as err:
        raise ConfigError(f"config does not match {CONFIG_SCHEMA.name}: {_first_line(err)}") from err


def _first_line(err: Exception) -> str:
    # Snakemake's message repeats the whole schema; the first lines carry the key and the problem.
    lines = [line for line in str(err).splitlines() if line.strip()]
    return " ".join(lines[:3])


def check_config(
    config: dict[str, Any], *, check_data_files: bool = True, schema_validated: bool = False
) -> dict[str, Any]:
    """Validate ``config`` in place (schema, then semantics) and return it.

    Args:
        config: The merged config dict; schema defaults are written into it.
        check_data_files: Also check that local data files exist and have the task's columns. Files that
            the demo generates are skipped until they exist.
        schema_validated: The caller already ran Snakemake's ``validate`` (the Snakefile does).

    Raises:
        ConfigError: naming the key and the problem.
    """
    if not schema_validated:
        validate_schema(config)
    for task_name in config["tasks"]:
        if task_name not in TASKS:
            raise ConfigError(f"tasks.{task_name}: unknown task; known tasks: {', '.join(sorted(TASKS))}")
    for method in config["methods"]:
        if method not in METHODS:
            raise ConfigError(f"methods: unknown method {method!r}; known methods: {', '.join(METHODS)}")
        if method not in config["search_spaces"]:
            raise ConfigError(f"search_spaces.{method}: missing; every method in 'methods' needs a search space")
    for vm, vm_tasks in config["vms"].items():
        for task_name in vm_tasks:
            if task_name not in config["tasks"]:
                raise ConfigError(f"vms.{vm}: task {task_name!r} is not configured under 'tasks'")
    if config["vm"] is not None and config["vm"] not in config["vms"]:
        known = ", ".join(config["vms"]) or "none"
        raise ConfigError(f"vm: {config['vm']!r} is not defined under 'vms' (defined: {known})")
    _check_model(config)
    _check_workers(config)
    _check_enqueue_names(config)
    for task_name in config["tasks"]:
        for method in config["methods"]:
            settings = study_settings(config, task_name, method)
            _check_confirmation(settings, config)
            _check_enqueue_values(settings)
        if check_data_files:
            _check_data_files(config, task_name)
    return config


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
    return build_study_settings(config, TASKS[task_name], method, distributions)


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


def looks_like_local_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (``./x``, ``/abs``, ``a/b/c``) is a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _check_model(config: Mapping[str, Any]) -> None:
    name = str(config["model"]["name_or_path"])
    if config["demo"]["build_model"]:
        return  # rule build_demo_model writes it
    if looks_like_local_path(name) and not Path(name).expanduser().is_dir():
        raise ConfigError(f"model.name_or_path: local model directory {name} does not exist")


def _check_data_files(config: Mapping[str, Any], task_name: str) -> None:
    data_files = config["tasks"][task_name].get("data_files")
    if not data_files:
        return
    generated = bool(config["demo"]["synthetic_data"])
    for split in ("train", "validation"):
        key = f"tasks.{task_name}.data_files.{split}"
        if not data_files.get(split):
            raise ConfigError(f"{key}: missing; give a file for both 'train' and 'validation'")
        path = Path(data_files[split])
        if path.suffix not in SUPPORTED_DATA_SUFFIXES:
            raise ConfigError(
                f"{key}: {path} has an unsupported suffix; use one of {', '.join(SUPPORTED_DATA_SUFFIXES)}"
            )
        if not path.exists():
            if generated:
                continue  # rule generate_demo_data writes it
            raise ConfigError(f"{key}: file {path} does not exist")
        check_columns(path, TASKS[task_name], where=key)


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
