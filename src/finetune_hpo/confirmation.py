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
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import (
    best_model_card_info,
    point_best_model,
    read_best_model_info,
    save_trial_model,
    top_complete_trials,
    trial_model_dir,
    trial_model_info,
)
from finetune_hpo.data import confirmation_rows_sha256
from finetune_hpo.estimates import summarize
from finetune_hpo.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
from finetune_hpo.models import load_base_model
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.recording import RunRecord
from finetune_hpo.search_space import HyperParameters, suggest
from finetune_hpo.settings import StudySettings
from finetune_hpo.signals import raise_if_stop_requested, sigterm_as_interrupt
from finetune_hpo.storage import StudyError, StudyPaths, fail_interrupted_trials, open_storage
from finetune_hpo.trainer import NaNLossError
from finetune_hpo.training import (
    TrainingSetup,
    effective_precision,
    frozen_for_garbage_collection,
    train_and_evaluate,
)
from finetune_hpo.trial_records import prediction_rows, write_best_predictions

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
        The summary (see :func:`summarize`).

    Raises:
        StudyError: the study is missing or unfinished.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running run is stored as FAIL first.
    """
    selection = settings.selection
    if not selection.confirms:
        raise StudyError(f"study {settings.study_name}: selection.confirm_top_k is 0; no confirmation to run")
    paths = StudyPaths(study_dir)
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
    _drop_waiting(confirmations)

    # A recorded score counts only for the same study definition and the same confirmation rows.
    fingerprint = study.user_attrs.get("fingerprint")
    rows_sha256 = confirmation_rows_sha256(data_summary)
    same = (fingerprint, rows_sha256)
    candidates = top_candidates(complete, selection.confirm_top_k)
    if len(candidates) < selection.confirm_top_k:
        logger.warning(
            "study %s: only %d distinct configurations among its COMPLETE trials (confirm_top_k=%d)",
            settings.study_name,
            len(candidates),
            selection.confirm_top_k,
        )
    seeds = confirmation_seeds(settings.seed, selection.confirm_seeds)
    has_confirmation_rows = int(data_summary["splits"].get("confirmation", {}).get("size", 0)) > 0
    # Seed by seed, so each seed's base model (its head initialised from that seed) is loaded once.
    missing = [
        (candidate, seed)
        for seed in seeds
        for candidate in candidates
        if _needs_run(candidate, seed, seeds[0], has_confirmation_rows, rows_sha256)
        and _recorded(confirmations, candidate, seed, same) is None
    ]
    planned = sum(
        1 for c in candidates for s in seeds if _needs_run(c, s, seeds[0], has_confirmation_rows, rows_sha256)
    )
    logger.info(
        "study %s: confirming %d configuration(s) x %d seed(s) %s; %d of %d run(s) to train",
        settings.study_name,
        len(candidates),
        len(seeds),
        seeds,
        len(missing),
        planned,
    )
    runner: _Runner | None = None

    def get_runner() -> _Runner:
        nonlocal runner
        if runner is None:  # loaded only when something trains
            runner = _Runner(settings, tokenized_dir, data_summary, paths, threads, wandb_dir, same)
        return runner

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
                get_runner().run(confirmations, candidate, seed)
                raise_if_stop_requested()
    runs = {
        (candidate.number, seed): _run_record(candidate, seed, seeds[0], confirmations, same)
        for candidate in candidates
        for seed in seeds
    }
    summary = summarize(
        settings.study_name,
        settings.task.metric,
        candidates,
        seeds,
        runs,
        ranked_on="confirmation" if has_confirmation_rows else "selection",
        trainings=planned,
    )
    if selection.save_best_model:
        winner = summary["winner_trial"]
        saved = read_best_model_info(trial_model_dir(paths.best_model, winner))
        stored = confirmations.user_attrs.get("winner_model", {})
        if saved is not None and saved.get("fingerprint") == fingerprint:
            # The study kept every candidate's model (or an earlier run of this stage retrained it, and
            # its record says so); rule score_best_model points best_model at it and checks it.
            summary["best_model"] = stored if stored.get("trial") == winner else {"trial": winner, "retrained": False}
        else:
            # Only when the study did not keep it: a candidate that shares its configuration with a better
            # trial, or a study run before confirmation was switched on.
            with sigterm_as_interrupt():
                summary["best_model"] = get_runner().keep_winner_model(study.trials[winner])
            confirmations.set_user_attr("winner_model", summary["best_model"])
    write_json_atomic(Path(output or paths.confirmation), summary)
    # best_predictions.jsonl follows the exported trial: the confirmed winner, as its saved model.
    retrained = paths.trial_predictions(summary["winner_trial"], retrained=True)
    if summary.get("best_model", {}).get("retrained") and retrained.is_file():
        write_text_atomic(paths.best_predictions, retrained.read_text())
    else:
        write_best_predictions(paths, summary["winner_trial"])
    _log_outcome(summary)
    return summary


def _needs_run(
    candidate: FrozenTrial, seed: int, study_seed: int, has_confirmation_rows: bool, rows_sha256: str | None
) -> bool:
    """The study's own run stands for its seed, unless it was not scored on these confirmation rows (the
    study ran before confirmation was switched on, or the rows changed since)."""
    if seed != study_seed:
        return True
    attrs = candidate.user_attrs
    scored = attrs.get("confirmation_value") is not None and attrs.get("confirmation_sha256") == rows_sha256
    return has_confirmation_rows and not scored


def _drop_waiting(confirmations: optuna.Study) -> None:
    """A run enqueued but never started (killed between the two): FAIL, so the next ``ask`` takes ours."""
    storage = confirmations._storage
    for trial in confirmations.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def _recorded(
    confirmations: optuna.Study, candidate: FrozenTrial, seed: int, same: tuple[str | None, str | None]
) -> FrozenTrial | None:
    """The finished run of ``candidate`` with ``seed`` (COMPLETE, or FAIL because it diverged), if any.

    A run counts only for the same parameters, study definition and confirmation rows (``same``: the
    fingerprint and the rows' hash), so a study restarted under another definition never inherits runs of
    a configuration that merely shares a trial number, and no score of other rows is reused.
    """
    fingerprint, rows_sha256 = same
    for trial in confirmations.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        attrs = trial.user_attrs
        if trial.state == TrialState.FAIL and not attrs.get("diverged"):
            continue
        if (
            attrs.get("source_trial") == candidate.number
            and attrs.get("seed") == seed
            and attrs.get("fingerprint") == fingerprint
            and attrs.get("confirmation_sha256") == rows_sha256
            and trial.params == candidate.params
        ):
            return trial
    return None


def _run_record(
    candidate: FrozenTrial,
    seed: int,
    study_seed: int,
    confirmations: optuna.Study,
    same: tuple[str | None, str | None],
) -> dict[str, Any]:
    """One (configuration, seed) run as the summary lists it."""
    recorded = _recorded(confirmations, candidate, seed, same)
    if recorded is None and seed == study_seed:
        return {
            "seed": seed,
            "source": f"study trial {candidate.number}",
            "selection_value": float(candidate.value),
            "confirmation_value": candidate.user_attrs.get("confirmation_value"),
            "train_loss": candidate.user_attrs.get("train_loss"),
            "diverged": False,
        }
    if recorded is None:
        raise StudyError(f"confirmation run of trial {candidate.number} with seed {seed} is missing")
    diverged = recorded.state == TrialState.FAIL
    return {
        "seed": seed,
        "source": f"confirmation trial {recorded.number}",
        "selection_value": None if diverged else float(recorded.value),
        "confirmation_value": None if diverged else recorded.user_attrs.get("confirmation_value"),
        # What the run trained, beyond its scores: seeds that differ in head or data order differ here.
        "train_loss": recorded.user_attrs.get("train_loss"),
        "diverged": diverged,
    }


class _Runner:
    """Trains confirmation runs: the tokenizer and data are loaded once per stage, the base model once per
    seed (a seed initialises the task head too, as the study's seed did for its trials)."""

    def __init__(
        self,
        settings: StudySettings,
        tokenized_dir: Path,
        data_summary: Mapping[str, Any],
        paths: StudyPaths,
        threads: int,
        wandb_dir: Path | None,
        same: tuple[str | None, str | None],
    ) -> None:
        torch.set_num_threads(max(1, threads))
        self.settings = settings
        self.paths = paths
        self.wandb_dir = wandb_dir
        self.fingerprint, self.rows_sha256 = same
        self.data_summary = data_summary
        self.setup = TrainingSetup.from_settings(settings, paths.scratch, score_confirmation=True)
        self.tokenizer = load_tokenizer(settings.model_name_or_path)
        self.data = load_tokenized(tokenized_dir)
        self._base: tuple[int, torch.nn.Module] | None = None

    def base_model(self, seed: int) -> torch.nn.Module:
        """The pretrained model with its task head initialised from ``seed`` (one seed's kept at a time)."""
        if self._base is None or self._base[0] != seed:
            self._base = None  # free the previous seed's copy first
            self._base = (seed, load_base_model(self.settings.task, self.settings.model_name_or_path, seed=seed))
        return self._base[1]

    def run(self, confirmations: optuna.Study, candidate: FrozenTrial, seed: int) -> FrozenTrial:
        """Train ``candidate``'s configuration with ``seed`` as a trial of the confirmation study."""
        settings = self.settings
        confirmations.enqueue_trial(
            dict(candidate.params),
            user_attrs={
                "source_trial": candidate.number,
                "seed": seed,
                "fingerprint": self.fingerprint,
                "confirmation_sha256": self.rows_sha256,
            },
        )
        trial = confirmations.ask()
        params = suggest(trial, settings.search_space)  # the enqueued values, as the study's trial had them
        if trial.params != candidate.params:
            # A parameter the candidate lacks would be drawn at random: that is another configuration.
            confirmations.tell(trial, state=TrialState.FAIL)
            raise StudyError(
                f"trial {candidate.number}'s parameters {candidate.params} do not cover the search space "
                f"{sorted(settings.search_space)}; it cannot be retrained as it ran"
            )
        record = RunRecord(
            trial,
            settings,
            name=f"confirm-trial-{candidate.number}-seed-{seed}",
            config={**trial.params, "source_trial": candidate.number, "seed": seed},
            wandb_dir=self.wandb_dir,
            job_type="confirmation",
        )
        try:
            outcome = train_and_evaluate(
                replace(self.setup, seed=seed),
                self.base_model(seed),
                self.tokenizer,
                self.data,
                params,
                record.log_epoch,
            )
        except NaNLossError as err:
            # A real outcome of this seed: recorded as finished, so a rerun does not retry it forever.
            record.failed(err, {"diverged": True})
            confirmations.tell(trial, state=TrialState.FAIL)
            return confirmations.trials[trial.number]
        except BaseException as err:
            record.failed(err)
            confirmations.tell(trial, state=TrialState.FAIL)
            raise
        record.completed(
            outcome,
            {
                "confirmation_metrics": outcome.confirmation_metrics,
                "confirmation_value": outcome.confirmation_value(settings.task.metric),
            },
        )
        confirmations.tell(trial, outcome.value)
        return confirmations.trials[trial.number]

    def keep_winner_model(self, trial: FrozenTrial) -> dict[str, Any]:
        """Save the winner's model when the study did not keep it: its study run retrained with the study's
        seed. Seeded training reproduces it on a CPU; on a GPU only within noise, so the export checks the
        reloaded model against this retrained value and records both."""
        logger.info(
            "saving the confirmed winner's model: trial %d retrained with seed %d", trial.number, self.setup.seed
        )
        outcome = train_and_evaluate(
            replace(self.setup, keep_model=True, score_confirmation=False),
            self.base_model(self.setup.seed),
            self.tokenizer,
            self.data,
            HyperParameters.from_params(dict(trial.params)),
        )
        info = trial_model_info(
            best_model_card_info(self.settings, self.data_summary),
            trial.number,
            trial.params,
            outcome,
            self.setup.eval_batch_size,
            self.fingerprint,
        )
        save_trial_model(outcome.model, self.tokenizer, self.paths.best_model, info)
        point_best_model(self.paths.best_model, trial.number, keep=None)
        # What the saved model predicted, for its independent rescoring (the study trial's own file stays).
        write_jsonl_atomic(
            self.paths.trial_predictions(trial.number, retrained=True),
            prediction_rows(self.settings.task, self.data, outcome.predictions),
        )
        return {
            "trial": trial.number,
            "retrained": True,
            "study_value": float(trial.value),
            "retrained_value": float(outcome.value),
        }


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
