"""The source trials of a transfer: a finished study's COMPLETE trials, ranked, read from what a Phase 1 run
leaves behind (a study folder, its trials table or its exported optimal YAML).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import top_complete_trials
from finetune_hpo.settings import StorageSettings
from finetune_hpo.storage import StudyError, StudyPaths, load_stored_study

# The columns of a trials table (trial_records.write_trials_table) that a portfolio needs.
TRIALS_TABLE_REQUIRED = ("number", "state", "value", "params")


class TransferError(ValueError):
    """A source of trials that cannot be read; the message names the file and what was expected."""


@dataclass(frozen=True)
class SourceTrial:
    """A COMPLETE trial of a finished study, ranked within that study.

    Args:
        study: The source study's name (``<task>_<method>``).
        number: The trial's number in the source study.
        value: What it was ranked by: its objective value, or its confirmation mean (see ``ranked_by``).
            Higher is better, as for every Phase 1 metric.
        params: Its hyperparameters as the source study stored them.
        rank: 1 for the study's best; ties go to the lower trial number.
        origin: The file or folder it was read from ("" when built in memory).
        ranked_by: What ``value`` is, in words.
    """

    study: str
    number: int
    value: float
    params: Mapping[str, Any]
    rank: int
    origin: str = ""
    ranked_by: str = "objective value"


def rank_trials(study_name: str, trials: Iterable[FrozenTrial], origin: str = "") -> list[SourceTrial]:
    """A finished study's COMPLETE trials as ranked source trials, best first (ties to the lower number).

    Args:
        study_name: The study's name, recorded on each source trial.
        trials: The study's trials (any state; only COMPLETE trials with a value are kept).
        origin: The file or folder they were read from.
    """
    return [
        SourceTrial(
            study=study_name,
            number=trial.number,
            value=float(trial.value),
            params=dict(trial.params),
            rank=rank,
            origin=origin,
        )
        for rank, trial in enumerate(top_complete_trials(trials), start=1)
    ]


def load_source_trials(path: str | Path) -> list[SourceTrial]:
    """The ranked COMPLETE trials of a finished study, from what a Phase 1 run leaves behind.

    Args:
        path: A study folder (``results/studies/<study>/`` with its ``optuna.journal``; the study's name is
            the folder's), a trials table (``trials.csv``, :func:`finetune_hpo.trial_records.write_trials_table`)
            or an exported optimal YAML (``analysis/<study>_optimal.yaml``: its configuration, or with a
            confirmation block its candidates ranked by their mean on the confirmation set).

    Raises:
        TransferError: the path is none of these, or does not hold a finished study (names the file).
    """
    path = Path(path)
    if path.is_dir():
        return _from_study_folder(path)
    if not path.is_file():
        raise TransferError(
            f"{path}: no such file or folder; give a study folder (results/studies/<study>/), a trials.csv or "
            "an exported optimal YAML"
        )
    if path.suffix == ".csv":
        return _from_trials_table(path)
    if path.suffix in (".yaml", ".yml"):
        return _from_optimal_yaml(path)
    raise TransferError(
        f"{path}: unknown kind of file; give a study folder (results/studies/<study>/), a trials.csv or an "
        "exported optimal YAML (.yaml)"
    )


def _from_study_folder(folder: Path) -> list[SourceTrial]:
    paths = StudyPaths(folder)
    if not paths.journal.is_file():
        raise TransferError(
            f"{folder}: no {paths.journal.name} in this folder; expected a study folder results/studies/<study>/ "
            "written by rule run_study"
        )
    study_name = folder.resolve().name
    try:
        study = load_stored_study(StorageSettings(url=None), study_name, folder)
    except StudyError as err:
        raise TransferError(
            f"{paths.journal}: {err} (the study's name is taken from its folder, {study_name!r})"
        ) from err
    trials = rank_trials(study_name, study.get_trials(deepcopy=False), origin=str(folder))
    if not trials:
        raise TransferError(f"{paths.journal}: study {study_name} has no COMPLETE trial")
    return trials


def _from_trials_table(path: Path) -> list[SourceTrial]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in TRIALS_TABLE_REQUIRED if column not in (reader.fieldnames or [])]
        if missing:
            raise TransferError(
                f"{path}: missing column(s) {', '.join(missing)}; expected a trials table written by the workflow "
                f"(results/studies/<study>/trials.csv, columns {', '.join(TRIALS_TABLE_REQUIRED)}, ...)"
            )
        trials = []
        for line, row in enumerate(reader, start=2):
            if row["state"] != TrialState.COMPLETE.name or not row["value"]:
                continue
            try:
                params = json.loads(row["params"])
                trials.append(_frozen(int(row["number"]), float(row["value"]), params))
            except (ValueError, TypeError) as err:
                raise TransferError(f"{path}, line {line}: cannot read trial {row['number']!r} ({err})") from err
    # The workflow writes results/studies/<study>/trials.csv; a table saved elsewhere is named by its file.
    study_name = path.parent.name if path.name == "trials.csv" else path.stem
    ranked = rank_trials(study_name, trials, origin=str(path))
    if not ranked:
        raise TransferError(f"{path}: no COMPLETE trial with a value")
    return ranked


def _frozen(number: int, value: float, params: Any) -> FrozenTrial:
    if not isinstance(params, dict):
        raise TypeError(f"params is {type(params).__name__}, not a JSON object")
    return FrozenTrial(
        number=number,
        state=TrialState.COMPLETE,
        value=value,
        datetime_start=None,
        datetime_complete=None,
        params=params,
        distributions={},
        user_attrs={},
        system_attrs={},
        intermediate_values={},
        trial_id=number,
    )


def _from_optimal_yaml(path: Path) -> list[SourceTrial]:
    from finetune_hpo.export import ExportError, load_optimal

    try:
        document = load_optimal(path)
    except ExportError as err:
        raise TransferError(f"{err} (expected an exported optimal YAML, analysis/<study>_optimal.yaml)") from err
    study_name = document["study_name"]
    confirmation = document.get("confirmation")
    if not confirmation:
        return [
            SourceTrial(
                study=study_name,
                number=int(document["best_trial"]),
                value=float(document["best_value"]),
                params=dict(document["best_hyperparameters"]),
                rank=1,
                origin=str(path),
            )
        ]
    ranked_on = confirmation["ranked_on"]
    seeds = len(confirmation["seeds"])

    def order(candidate: Mapping[str, Any]) -> tuple:
        # As the confirmation stage ranked them: a candidate with a diverged seed after every other one,
        # then the best mean on the set it ranked on, then its rank in the study.
        mean = candidate[ranked_on]["mean"]
        return (bool(candidate.get("diverged_seeds")), mean is None, -(mean or 0.0), candidate.get("rank_in_study", 0))

    candidates = sorted(confirmation["candidates"], key=order)
    trials = []
    for rank, candidate in enumerate(candidates, start=1):
        mean = candidate[ranked_on]["mean"]
        trials.append(
            SourceTrial(
                study=study_name,
                number=int(candidate["trial"]),
                value=float(candidate["study_value"] if mean is None else mean),
                params=dict(candidate["params"]),
                rank=rank,
                origin=str(path),
                ranked_by="study value" if mean is None else f"{ranked_on} mean over {seeds} seeds",
            )
        )
    return trials
