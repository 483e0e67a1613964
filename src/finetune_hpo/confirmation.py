"""The confirmation stage: retrain a study's top configurations with more seeds before naming the winner.

With 50-example selection sets (MRPC, RTE) one example is 2 points and a seed alone moves a score by
several, so the best of 10 single-seed trials is often a lucky seed. After the study, the top
``confirm_top_k`` distinct configurations are retrained with ``confirm_seeds - 1`` further seeds (the
study's own run is the first seed); every run is scored on the selection set and on the held-out
confirmation set, and the winner is the best mean on the confirmation set.

Every run is a trial of a sibling Optuna study, ``<study>/confirmation``, in the study's own storage: it is
RUNNING while it trains and COMPLETE once scored, so a killed stage resumes without redoing a finished run
(a killed run stays RUNNING and is marked FAIL on restart, like a study's trial) and the count of runs
comes out exact. A run whose loss diverges is recorded as FAIL with ``diverged`` set, and counts as done:
that seed of that configuration diverges.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import (
    read_best_model_info,
    top_complete_trials,
    trial_model_dir,
)
from finetune_hpo.confirmation_runs import Runner, drop_waiting, needs_run, recorded_run, run_record
from finetune_hpo.data import confirmation_rows_sha256
from finetune_hpo.estimates import summarize
from finetune_hpo.io import write_json_atomic, write_text_atomic
from finetune_hpo.runtime import effective_precision, frozen_for_garbage_collection
from finetune_hpo.settings import StudySettings
from finetune_hpo.signals import raise_if_stop_requested, sigterm_as_interrupt
from finetune_hpo.storage import StudyError, StudyPaths, fail_interrupted_trials, open_storage
from finetune_hpo.trial_records import write_best_predictions

logger = logging.getLogger(__name__)


def confirmation_study_name(study_name: str) -> str:
    """The sibling Optuna study that holds a study's confirmation runs."""
    return f"{study_name}/confirmation"


def confirmation_seeds(seed: int, n_seeds: int) -> list[int]:
    """The seeds of every candidate, the study's own seed first; the same for every candidate, so the
    comparison between two candidates is paired by seed (the task head's initialisation and the shuffling
    seed; adapters and batches also depend on a candidate's rank and batch size)."""
    return [seed + offset for offset in range(n_seeds)]


def top_candidates(trials: Sequence[FrozenTrial], k: int) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials with distinct parameters (ties: the lower number, as for the best trial).

    A configuration that TPE proposed twice is one candidate, represented by its better trial.
    """
    candidates: list[FrozenTrial] = []
    seen: set[str] = set()
    for trial in top_complete_trials(trials):
        key = json.dumps(trial.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            candidates.append(trial)
        if len(candidates) == k:
            break
    return candidates


@dataclass
class _Stage:
    """A finished study's confirmation stage, opened: its candidates, seeds and the sibling study of its runs.

    ``same`` is what a recorded run must share to count: the study's fingerprint and the confirmation rows'
    hash (a study restarted under another definition, or other rows, reuses no score)."""

    settings: StudySettings
    paths: StudyPaths
    study: optuna.Study
    confirmations: optuna.Study
    candidates: list[FrozenTrial]
    seeds: list[int]
    same: tuple[str | None, str | None]
    has_confirmation_rows: bool

    def needs_run(self, candidate: FrozenTrial, seed: int) -> bool:
        return needs_run(candidate, seed, self.seeds[0], self.has_confirmation_rows, self.same[1])


def run_confirmation(
    settings: StudySettings,
    tokenized_dir: Path,
    data_summary: Mapping[str, Any],
    study_dir: Path,
    *,
    output: Path | None = None,
    threads: int = 1,
    wandb_dir: Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) the confirmation stage of a finished study and write its summary.

    Args:
        settings: The study's settings (``selection.confirm_top_k`` and ``confirm_seeds``).
        tokenized_dir: The tokenized task, with its confirmation set.
        data_summary: ``summary.json`` of the subsample.
        study_dir: The study's folder (its journal, best model).
        output: Where the summary goes (rule confirm_top_trials' output); default
            ``<study_dir>/confirmation.json``.
        threads: CPU threads for torch.
        wandb_dir: Where offline W&B runs are written.

    Returns:
        The summary (see :func:`finetune_hpo.estimates.summarize`).

    Raises:
        StudyError: the study is missing or unfinished.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running run is stored as FAIL first.
    """
    stage = _open_stage(settings, StudyPaths(study_dir), data_summary)
    runner: Runner | None = None

    def get_runner() -> Runner:
        nonlocal runner
        if runner is None:  # loaded only when something trains
            runner = Runner(settings, tokenized_dir, data_summary, stage.paths, threads, wandb_dir, stage.same)
        return runner

    planned = _train_missing_runs(stage, get_runner)
    runs = {
        (candidate.number, seed): run_record(candidate, seed, stage.seeds[0], stage.confirmations, stage.same)
        for candidate in stage.candidates
        for seed in stage.seeds
    }
    summary = summarize(
        settings.study_name,
        settings.task.metric,
        stage.candidates,
        stage.seeds,
        runs,
        ranked_on="confirmation" if stage.has_confirmation_rows else "selection",
        trainings=planned,
    )
    if settings.selection.save_best_model:
        summary["best_model"] = _winner_model(stage, summary["winner_trial"], get_runner)
    write_json_atomic(Path(output or stage.paths.confirmation), summary)
    _keep_winner_predictions(stage.paths, summary)
    _log_outcome(summary)
    return summary


def _open_stage(settings: StudySettings, paths: StudyPaths, data_summary: Mapping[str, Any]) -> _Stage:
    """The finished study, its candidates and seeds, and the sibling study of the runs (interrupted runs of an
    earlier attempt marked FAIL).

    Raises:
        StudyError: no confirmation configured, the study missing or unfinished, or another precision here.
    """
    selection = settings.selection
    if not selection.confirms:
        raise StudyError(f"study {settings.study_name}: selection.confirm_top_k is 0; no confirmation to run")
    storage = open_storage(settings.storage.url, paths, settings.storage.heartbeat)
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage)
    except KeyError as err:
        raise StudyError(f"study {settings.study_name} is not in its storage; run rule run_study first") from err
    here = effective_precision(settings.training.precision)
    studied = study.user_attrs.get("definition", {}).get("precision")
    if studied not in (None, "auto", here):
        # Seeds of one candidate must differ by their seed alone, not by the arithmetic they trained in.
        raise StudyError(
            f"study {settings.study_name} trained in {studied}, this machine would train its confirmation runs in "
            f"{here}; run the stage where the study ran, or set training.precision: {studied} if it is available here"
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < settings.n_trials:
        raise StudyError(
            f"study {settings.study_name} has {len(complete)} of {settings.n_trials} COMPLETE trials; "
            "confirmation runs after the study has finished"
        )
    confirmations = optuna.create_study(
        study_name=confirmation_study_name(settings.study_name),
        storage=storage,
        direction=study.direction,
        # Every parameter is fixed by enqueue_trial; the sampler never draws.
        sampler=optuna.samplers.RandomSampler(seed=settings.seed),
        load_if_exists=True,
    )
    # One job confirms a study, so a RUNNING run is a killed one, whatever the storage (on an RDB, runs
    # started with ask() have no heartbeat for fail_stale_trials to judge).
    fail_interrupted_trials(confirmations)
    drop_waiting(confirmations)
    candidates = top_candidates(complete, selection.confirm_top_k)
    if len(candidates) < selection.confirm_top_k:
        logger.warning(
            "study %s: only %d distinct configurations among its COMPLETE trials (confirm_top_k=%d)",
            settings.study_name,
            len(candidates),
            selection.confirm_top_k,
        )
    return _Stage(
        settings=settings,
        paths=paths,
        study=study,
        confirmations=confirmations,
        candidates=candidates,
        seeds=confirmation_seeds(settings.seed, selection.confirm_seeds),
        # A recorded score counts only for the same study definition and the same confirmation rows.
        same=(study.user_attrs.get("fingerprint"), confirmation_rows_sha256(data_summary)),
        has_confirmation_rows=int(data_summary["splits"].get("confirmation", {}).get("size", 0)) > 0,
    )


def _train_missing_runs(stage: _Stage, get_runner: Callable[[], Runner]) -> int:
    """Train every (candidate, seed) run not recorded yet, seed by seed (so each seed's base model, its head
    initialised from that seed, is loaded once); returns how many runs the stage trains in all."""
    pairs = [(c, s) for s in stage.seeds for c in stage.candidates if stage.needs_run(c, s)]
    missing = [(c, s) for c, s in pairs if recorded_run(stage.confirmations, c, s, stage.same) is None]
    logger.info(
        "study %s: confirming %d configuration(s) x %d seed(s) %s; %d of %d run(s) to train",
        stage.settings.study_name,
        len(stage.candidates),
        len(stage.seeds),
        stage.seeds,
        len(missing),
        len(pairs),
    )
    if missing:
        with sigterm_as_interrupt(), frozen_for_garbage_collection():
            for number, (candidate, seed) in enumerate(missing, start=1):
                logger.info(
                    "confirmation run %d/%d: trial %d's configuration with seed %d",
                    number,
                    len(missing),
                    candidate.number,
                    seed,
                )
                get_runner().run(stage.confirmations, candidate, seed)
                raise_if_stop_requested()
    return len(pairs)


def _winner_model(stage: _Stage, winner: int, get_runner: Callable[[], Runner]) -> dict[str, Any]:
    """Which model ``best_model`` holds for the winner: the study's own run when the study kept it, else a
    retraining with the study's seed (recorded, so a rerun of the stage does not retrain it again)."""
    saved = read_best_model_info(trial_model_dir(stage.paths.best_model, winner))
    stored = stage.confirmations.user_attrs.get("winner_model", {})
    if saved is not None and saved.get("fingerprint") == stage.same[0]:
        # The study kept every candidate's model (or an earlier run of this stage retrained it, and its record
        # says so); rule score_best_model points best_model at it and checks it.
        return stored if stored.get("trial") == winner else {"trial": winner, "retrained": False}
    # Only when the study did not keep it: a candidate that shares its configuration with a better trial, or a
    # study run before confirmation was switched on.
    with sigterm_as_interrupt():
        record = get_runner().keep_winner_model(stage.study.trials[winner])
    stage.confirmations.set_user_attr("winner_model", record)
    return record


def _keep_winner_predictions(paths: StudyPaths, summary: Mapping[str, Any]) -> None:
    """best_predictions.jsonl follows the exported trial: the confirmed winner, as its saved model."""
    retrained = paths.trial_predictions(summary["winner_trial"], retrained=True)
    if summary.get("best_model", {}).get("retrained") and retrained.is_file():
        write_text_atomic(paths.best_predictions, retrained.read_text())
    else:
        write_best_predictions(paths, summary["winner_trial"])


def _log_outcome(summary: Mapping[str, Any]) -> None:
    winner = next(row for row in summary["candidates"] if row["trial"] == summary["winner_trial"])
    ranked = winner[summary["ranked_on"]]
    test = summary["paired_test"]
    logger.info(
        "%s: confirmed winner trial %d, %s %s ± %s over %d seeds on the %s set%s%s",
        summary["study_name"],
        summary["winner_trial"],
        summary["metric"],
        "-" if ranked["mean"] is None else f"{ranked['mean']:.2f}",
        "-" if ranked["sd"] is None else f"{ranked['sd']:.2f}",
        len(summary["seeds"]),
        summary["ranked_on"],
        f" (changed from trial {summary['single_best_trial']})" if summary["winner_changed"] else "",
        ""
        if test is None
        else f"; vs runner-up trial {summary['runner_up_trial']}: p={test['p_value']}"
        + (" (separable)" if test["separable"] else " (within seed noise)"),
    )
