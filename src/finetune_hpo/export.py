"""Export a finished study's best configuration to ``analysis/<task>_<method>_optimal.yaml`` for Phase 2.

The file is built only from what the study stored, so re-exporting a finished study is byte-identical;
it is validated against ``workflow/schemas/optimal.schema.yaml`` before it replaces anything.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import optuna
import yaml
from optuna.trial import TrialState

from finetune_hpo.config import OPTIMAL_SCHEMA, StudySettings
from finetune_hpo.io import write_text_atomic

logger = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The study cannot be exported (not finished, or the result breaks the schema)."""


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


def best_config(
    study: optuna.Study, settings: StudySettings, data_summary: Mapping[str, Any], storage_label: str
) -> dict[str, Any]:
    """The optimal-config document of ``study``.

    Raises:
        ExportError: the study holds fewer COMPLETE trials than configured.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < settings.n_trials:
        raise ExportError(
            f"study {settings.study_name} has {len(complete)} COMPLETE trial(s), fewer than optuna.n_trials="
            f"{settings.n_trials}; run the study to the end before exporting"
        )
    best = study.best_trial
    definition = study.user_attrs.get("definition", {})
    splits = data_summary["splits"]
    sampler = settings.config["optuna"]["sampler"]
    training_keys = (
        "per_device_batch_size",
        "gradient_accumulation_steps",
        "oom_retries",
        "train_seconds",
        "trainable_parameters",
        "total_parameters",
    )
    task_config = settings.config["tasks"][settings.task.name]
    source = "local files" if task_config.get("data_files") else f"hub:{settings.task.hub_path}"
    if settings.task.hub_config and not task_config.get("data_files"):
        source += f"/{settings.task.hub_config}"
    return {
        "study_name": settings.study_name,
        "task": settings.task.name,
        "method": settings.method,
        "metric": settings.task.metric,
        "metric_unit": "percent",
        "best_value": float(best.value),
        "best_trial": best.number,
        "best_hyperparameters": {name: _plain(value) for name, value in best.params.items()},
        "best_trial_metrics": {k: float(v) for k, v in sorted(best.user_attrs.get("metrics", {}).items())},
        "best_trial_training": {k: best.user_attrs[k] for k in training_keys if k in best.user_attrs},
        "n_trials": len(complete),
        "n_failed_trials": len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
        "n_pruned_trials": len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
        "model": settings.model_name_or_path,
        "dataset": {
            "source": source,
            "train_size": splits["train"]["size"],
            "validation_size": splits["validation"]["size"],
            "train_sha256": splits["train"]["sha256"],
            "validation_sha256": splits["validation"]["sha256"],
        },
        "seed": settings.seed,
        "sampler": {
            "name": "TPESampler",
            "n_startup_trials": sampler["n_startup_trials"],
            "multivariate": sampler["multivariate"],
            "seed": settings.sampler_seed,
        },
        "search_space": definition.get("search_space", {}),
        "storage": storage_label,
        "fingerprint": study.user_attrs.get("fingerprint", ""),
    }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def validate_optimal(document: Mapping[str, Any], where: str = "optimal config") -> None:
    """Raise :class:`ExportError` naming the first schema violation of ``document``."""
    schema = yaml.safe_load(OPTIMAL_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        problems = [
            f"{'.'.join(str(part) for part in error.path) or '(top level)'}: {error.message}" for error in errors
        ]
        raise ExportError(f"{where}: " + "; ".join(problems[:3]) + (" ..." if len(problems) > 3 else ""))


def render_yaml(document: Mapping[str, Any]) -> str:
    header = (
        f"# Phase 1 optimum of study {document['study_name']} ({document['n_trials']} COMPLETE trials).\n"
        "# Written by finetune-hpo; schema: workflow/schemas/optimal.schema.yaml.\n"
    )
    # A JSON round trip turns tuples into lists so the YAML holds plain types only.
    return header + yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False, allow_unicode=True)


def export_best_config(
    study: optuna.Study,
    settings: StudySettings,
    data_summary: Mapping[str, Any],
    out_path: Path,
    storage_label: str,
) -> dict[str, Any]:
    """Validate and atomically write the optimal config; returns the document."""
    document = best_config(study, settings, data_summary, storage_label)
    validate_optimal(document, where=str(out_path))
    write_text_atomic(out_path, render_yaml(document))
    logger.info(
        "%s: best %s %.2f (trial %d) -> %s",
        settings.study_name,
        document["metric"],
        document["best_value"],
        document["best_trial"],
        out_path,
    )
    return document


def load_optimal(path: Path) -> dict[str, Any]:
    """Read and validate an exported optimal config (what Phase 2 does)."""
    try:
        document = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ExportError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(document, dict):
        raise ExportError(f"{path}: expected a mapping at the top level")
    validate_optimal(document, where=str(path))
    return document
