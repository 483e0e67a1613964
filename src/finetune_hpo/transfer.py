"""Transfer between studies: start a study from the best configurations of finished studies of other tasks.

Phase 1's GLUE studies of a method share a search space, and at 10 trials TPE barely beats random search, so
a study can begin with a portfolio: the top trials of sibling studies, mapped into its own space and enqueued
to run first (they count toward ``n_trials``). BENCHMARKS.md (section 8) measures what this buys on tabular
benchmarks with exactly this code.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import top_complete_trials
from finetune_hpo.settings import StorageSettings, StudySettings
from finetune_hpo.storage import StudyError, StudyPaths, load_stored_study

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class PortfolioEntry:
    """One configuration of a portfolio: the parameters to enqueue and where they came from.

    Args:
        params: The source's parameters mapped into the target space (a parameter the source lacks is
            absent: the sampler draws it).
        source: The source trial.
        mapping: What the mapping changed, one line per parameter (empty when nothing was changed), e.g.
            ``learning_rate: 0.0005 clipped to 0.0001 (the range's high end)``.
    """

    params: dict[str, Any]
    source: SourceTrial
    mapping: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """The source in one line: file, study, trial, rank and value."""
        where = f"{self.source.origin}: " if self.source.origin else ""
        return (
            f"{where}study {self.source.study}, trial {self.source.number}, rank {self.source.rank}, "
            f"{self.source.ranked_by} {self.source.value:.6g}"
        )

    def user_attrs(self) -> dict[str, Any]:
        """What an enqueued trial records about its origin (JSON-serialisable, for the trial's user attrs)."""
        return {
            "enqueued": True,
            "portfolio_source": {
                "study": self.source.study,
                "trial": self.source.number,
                "rank": self.source.rank,
                "value": self.source.value,
                "ranked_by": self.source.ranked_by,
                "origin": self.source.origin,
            },
            "portfolio_mapping": list(self.mapping),
        }


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


def build_portfolio(
    sources: Sequence[Sequence[SourceTrial]], target_space: Mapping[str, BaseDistribution], size: int
) -> list[PortfolioEntry]:
    """Up to ``size`` distinct configurations for a target study, taken by rank across source studies.

    The order interleaves the sources: rank 1 of the first source, rank 1 of the second, ..., then rank 2 of
    each, so one strong source cannot fill the portfolio with its near-duplicates. A configuration equal to
    an earlier one after mapping is skipped (logged), and the next one in that order is taken instead.

    Args:
        sources: The ranked trials of each source study, in the order the portfolio visits them.
        target_space: The target study's space, name -> distribution
            (:func:`finetune_hpo.search_space.build_search_space`).
        size: The most configurations to return.
    """
    if size < 0:
        raise ValueError(f"portfolio size must be >= 0, got {size}")
    ranked = [sorted(trials, key=lambda trial: (trial.rank, trial.number)) for trials in sources]
    portfolio: list[PortfolioEntry] = []
    seen: list[dict[str, Any]] = []
    for depth in range(max((len(trials) for trials in ranked), default=0)):
        for trials in ranked:
            if len(portfolio) == size:
                return portfolio
            if depth >= len(trials):
                continue
            source = trials[depth]
            params, notes = map_params(source.params, target_space)
            if params in seen:
                logger.info(
                    "portfolio: trial %d of %s (rank %d) is, in the target space, the same configuration as an "
                    "earlier entry; skipped",
                    source.number,
                    source.study,
                    source.rank,
                )
                continue
            seen.append(params)
            portfolio.append(PortfolioEntry(params=params, source=source, mapping=tuple(notes)))
    return portfolio


def portfolio_from_files(
    paths: Sequence[str | Path], target_space: Mapping[str, BaseDistribution], size: int
) -> list[PortfolioEntry]:
    """A portfolio from past runs' files (see :func:`load_source_trials`), in the order given; entries the
    mapping changed are logged, as is a portfolio smaller than ``size``.

    Args:
        paths: Study folders, trials tables or optimal YAMLs, one source study each.
        target_space: The target study's space.
        size: The most configurations to return.
    """
    portfolio = build_portfolio([load_source_trials(path) for path in paths], target_space, size)
    for entry in portfolio:
        if entry.mapping:
            logger.warning("mapped %s: %s", entry.describe(), "; ".join(entry.mapping))
    if len(portfolio) < size:
        logger.warning("the sources hold %d distinct configuration(s), fewer than the %d asked", len(portfolio), size)
    return portfolio


def render_enqueue(portfolio: Sequence[PortfolioEntry], target: str) -> str:
    """The portfolio as a YAML list for ``optuna.enqueue``, each entry after comments naming its source and
    what the mapping changed.

    Args:
        portfolio: The entries, in the order they should run.
        target: The target space in words (``search_spaces.lora``), for the header.
    """
    lines = [
        f"# {len(portfolio)} configuration(s) for optuna.enqueue, mapped into {target}; they run first, in this "
        "order, and count toward n_trials.",
        "# optuna.enqueue applies to every study of the config (restricted to its space): `finetune-hpo validate` "
        "checks each value against each study's space.",
    ]
    for entry in portfolio:
        lines.append(f"# from {entry.describe()}")
        lines += [f"#   {note}" for note in entry.mapping]
        lines.append(yaml.safe_dump([dict(entry.params)], sort_keys=False).rstrip("\n"))
    if not portfolio:
        lines.append("[]")
    return "\n".join(lines) + "\n"


def enqueue_portfolio(study: optuna.Study, portfolio: Sequence[PortfolioEntry]) -> None:
    """Enqueue the portfolio to run first in ``study``, each trial recording its source and mapping."""
    for entry in portfolio:
        study.enqueue_trial(dict(entry.params), user_attrs=entry.user_attrs(), skip_if_exists=True)


# ------------------------------------------------------------------------------------------------ mapping


def map_params(
    params: Mapping[str, Any], target_space: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], list[str]]:
    """A source configuration in the target space, and what was changed, one line per parameter.

    A number outside a range is clipped to its bound (ints rounded, ``step`` respected); a categorical value
    not among the choices goes to the nearest choice; a parameter the target lacks is dropped; one the
    source lacks, or whose value cannot be mapped, is left out for the sampler to draw.

    Args:
        params: The source trial's parameters.
        target_space: The target study's space.
    """
    mapped: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in params.items():
        if name not in target_space:
            notes.append(f"{name}: not in the target space, dropped")
            continue
        new_value, note = map_value(value, target_space[name])
        if note is not None:
            notes.append(f"{name}: {note}")
        if new_value is not None:
            mapped[name] = new_value
    # In the target space's order, so equal configurations compare and print alike.
    ordered = {name: mapped[name] for name in target_space if name in mapped}
    for name in target_space:
        if name not in params:
            notes.append(f"{name}: not in the source, drawn by the sampler")
    return ordered, notes


def map_value(value: Any, distribution: BaseDistribution) -> tuple[Any, str | None]:
    """One value in a target distribution: ``(mapped value, note)``; the note is ``None`` when the value
    fits as it is, and the value is ``None`` when it cannot be mapped (the sampler then draws it)."""
    if isinstance(distribution, CategoricalDistribution):
        return _map_categorical(value, distribution.choices)
    if not isinstance(distribution, FloatDistribution | IntDistribution):
        raise TypeError(f"unsupported distribution {distribution!r}")
    if not _is_number(value) or not math.isfinite(value):
        return None, f"{value!r} is not a finite number, drawn by the sampler"
    low, high, step = distribution.low, distribution.high, distribution.step
    number = float(value)
    if number < low:
        new, why = low, f"clipped to {_show(low)} (the range's low end)"
    elif number > high:
        new, why = high, f"clipped to {_show(high)} (the range's high end)"
    else:
        new, why = number, None
    if step is not None:
        on_grid = low + round((new - low) / step) * step
        on_grid = min(on_grid, high)
        if not math.isclose(on_grid, new, rel_tol=0, abs_tol=1e-12 * max(1.0, abs(new))):
            # An int's step of 1 goes without saying.
            step_note = "" if isinstance(distribution, IntDistribution) and step == 1 else f" (step {_show(step)})"
            why = why or f"rounded to {_show(on_grid)}{step_note}"
        new = on_grid
    if isinstance(distribution, IntDistribution):
        integer = round(new)
        return integer, None if why is None else f"{_show(value)} {why}"
    return float(new), None if why is None else f"{_show(value)} {why}"


def _map_categorical(value: Any, choices: Sequence[Any]) -> tuple[Any, str | None]:
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return choice, None
    for choice in choices:  # 4 and 4.0 are the same batch size
        if _is_number(choice) and _is_number(value) and choice == value:
            return choice, None
    numbers = [choice for choice in choices if _is_number(choice) and math.isfinite(choice)]
    if not _is_number(value) or not math.isfinite(value) or not numbers:
        return None, f"{value!r} is not among the choices {list(choices)}, drawn by the sampler"
    # Choices such as ranks and batch sizes are spread geometrically: compare ratios, not differences.
    log_scale = value > 0 and all(_is_number(choice) and choice > 0 for choice in choices)

    def distance(choice: Any) -> float:
        return abs(math.log(choice) - math.log(value)) if log_scale else abs(choice - value)

    nearest = min(numbers, key=distance)  # on a tie, the choice listed first
    scale = "on a log scale" if log_scale else "numerically"
    return nearest, f"{_show(value)} not among the choices {list(choices)}, nearest {scale}: {_show(nearest)}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------ readers


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


def study_portfolio(settings: StudySettings, source_tables: Sequence[Path]) -> list[PortfolioEntry]:
    """The portfolio a study of the workflow starts from (``transfer`` in the config): the best COMPLETE
    trials of its source studies, read from their trials tables (in the order ``transfer.sources`` names
    them), interleaved by rank and mapped into the study's own space.

    Raises:
        TransferError: a source's trials table is missing or holds no COMPLETE trial.
    """
    if not settings.transfer.on:
        return []
    if len(source_tables) != len(settings.transfer.sources):
        raise TransferError(
            f"study {settings.study_name} starts from {', '.join(settings.transfer.sources)} (transfer.sources), but "
            f"{len(source_tables)} trials table(s) were given: run the source studies first"
        )
    sources = [load_source_trials(path) for path in source_tables]
    portfolio = build_portfolio(sources, settings.search_space, settings.transfer.portfolio_size)
    logger.info(
        "study %s starts from %d configuration(s) of %s: %s",
        settings.study_name,
        len(portfolio),
        ", ".join(trials[0].study for trials in sources),
        "; ".join(
            entry.describe() + (f" ({'; '.join(entry.mapping)})" if entry.mapping else "") for entry in portfolio
        ),
    )
    return portfolio


def portfolio_definition(portfolio: Sequence[PortfolioEntry]) -> list[dict[str, Any]]:
    """The portfolio as part of a study's definition: each source trial and the parameters it enqueues. A
    resumed study recomputes it from its sources; a source that changed since (rerun, or another one) gives
    another definition, which the study refuses like any other change (``--new-study`` accepts it)."""
    return [
        {"source": f"{entry.source.study}#{entry.source.number}", "params": dict(sorted(entry.params.items()))}
        for entry in portfolio
    ]


def transfer_outcome(trials: Iterable[FrozenTrial], exported_trial: int) -> dict[str, Any]:
    """What transfer did for a finished study: how many trials came from its portfolio (they record their
    source), the best of them against the best trial the sampler chose, and where the exported configuration
    came from (``sst2_lora #4``, ``the config's optuna.enqueue`` or ``the sampler``)."""
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE and trial.value is not None]
    transferred = [trial for trial in complete if "portfolio_source" in trial.user_attrs]
    sampled = [trial for trial in complete if not trial.user_attrs.get("enqueued")]
    exported = next((trial for trial in complete if trial.number == exported_trial), None)
    origin = None
    if exported is not None:
        source = exported.user_attrs.get("portfolio_source")
        if source:
            origin = f"{source['study']} #{source['trial']}"
        else:
            origin = "the config's optuna.enqueue" if exported.user_attrs.get("enqueued") else "the sampler"
    return {
        "transferred": len(transferred),
        "best_transferred": max((float(t.value) for t in transferred), default=None),
        "best_sampled": max((float(t.value) for t in sampled), default=None),
        "winner_from": origin,
    }
