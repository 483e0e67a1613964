"""Transfer between studies: start a study from the best configurations of finished studies of other tasks.

Phase 1's GLUE studies of a method share a search space, and at 10 trials TPE barely beats random search, so
a study can begin with a portfolio: the top trials of sibling studies, mapped into its own space and enqueued
to run first (they count toward ``n_trials``). BENCHMARKS.md (section 8) measures what this buys on tabular
benchmarks with exactly this code. The source trials and their readers are in
:mod:`finetune_hpo.transfer_sources`, the mapping into a space in :mod:`finetune_hpo.transfer_mapping`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.settings import StudySettings
from finetune_hpo.transfer_mapping import map_params
from finetune_hpo.transfer_sources import SourceTrial, TransferError, load_source_trials

logger = logging.getLogger(__name__)


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
