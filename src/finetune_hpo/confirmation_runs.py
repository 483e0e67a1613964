"""The confirmation stage's runs: each (configuration, seed) trained as a trial of the sibling Optuna study
``<study>/confirmation``, found again by what it must share to count (parameters, seed, the study's
definition and the confirmation rows), and the winner's model retrained when the study did not keep it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import best_model_card_info, point_best_model, save_trial_model, trial_model_info
from finetune_hpo.io import write_jsonl_atomic
from finetune_hpo.models import load_base_model
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.recording import RunRecord
from finetune_hpo.search_space import HyperParameters, suggest
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyError, StudyPaths
from finetune_hpo.trainer import NaNLossError
from finetune_hpo.training import TrainingSetup, train_and_evaluate
from finetune_hpo.trial_records import prediction_rows

logger = logging.getLogger(__name__)


def needs_run(
    candidate: FrozenTrial, seed: int, study_seed: int, has_confirmation_rows: bool, rows_sha256: str | None
) -> bool:
    """The study's own run stands for its seed, unless it was not scored on these confirmation rows (the
    study ran before confirmation was switched on, or the rows changed since)."""
    if seed != study_seed:
        return True
    attrs = candidate.user_attrs
    scored = attrs.get("confirmation_value") is not None and attrs.get("confirmation_sha256") == rows_sha256
    return has_confirmation_rows and not scored


def drop_waiting(confirmations: optuna.Study) -> None:
    """A run enqueued but never started (killed between the two): FAIL, so the next ``ask`` takes ours."""
    storage = confirmations._storage
    for trial in confirmations.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)


def recorded_run(
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


def run_record(
    candidate: FrozenTrial,
    seed: int,
    study_seed: int,
    confirmations: optuna.Study,
    same: tuple[str | None, str | None],
) -> dict[str, Any]:
    """One (configuration, seed) run as the summary lists it."""
    recorded = recorded_run(confirmations, candidate, seed, same)
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


class Runner:
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
