"""One trial: suggest its parameters, train and score it, record what it did (W&B run, trial attributes,
QA predictions) and keep its model when it beats the best COMPLETE trial."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from finetune_hpo.best_model import ranks_in_top, save_trial_model, trial_model_info
from finetune_hpo.io import write_jsonl_atomic
from finetune_hpo.models import library_versions
from finetune_hpo.preprocess import TokenizedTask
from finetune_hpo.recording import RunRecord
from finetune_hpo.search_space import suggest
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyPaths
from finetune_hpo.training import TrainingSetup, TrialOutcome, train_and_evaluate
from finetune_hpo.trial_records import prediction_rows

logger = logging.getLogger(__name__)


class Objective:
    """Trains one trial; data, tokenizer and base weights are loaded once and shared by all trials.

    Args:
        settings: The study's settings.
        setup: What every trial shares (``keep_model`` set when the best model is saved).
        base_model: The pretrained model with the task's head; copied per trial.
        tokenizer: The model's tokenizer.
        data: The tokenized task.
        paths: The study's files.
        wandb_dir: Where offline W&B runs go.
        sampler_seed: The seed this process gave the sampler (recorded on each trial).
        best_model_info: What the saved best model's card records besides the trial (data hashes, the
            settings it was trained with); ``None`` keeps no model.
        confirmation_sha256: Hash of the confirmation rows a trial is scored on (confirmation on).
    """

    def __init__(
        self,
        settings: StudySettings,
        setup: TrainingSetup,
        base_model: torch.nn.Module,
        tokenizer: Any,
        data: TokenizedTask,
        paths: StudyPaths,
        wandb_dir: Path | None,
        sampler_seed: int | None = None,
        best_model_info: Mapping[str, Any] | None = None,
        confirmation_sha256: str | None = None,
    ) -> None:
        self.settings = settings
        self.setup = setup
        self.base_model = base_model
        self.tokenizer = tokenizer
        self.data = data
        self.paths = paths
        self.wandb_dir = wandb_dir
        self.sampler_seed = sampler_seed
        self.best_model_info = best_model_info
        self.confirmation_sha256 = confirmation_sha256
        self.versions = library_versions()

    def __call__(self, trial: optuna.Trial) -> float:
        self._refuse_surplus(trial)
        self._record_draw(trial)
        params = suggest(trial, self.settings.search_space)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        record = RunRecord(
            trial,
            self.settings,
            name=f"trial-{trial.number}",
            config={**trial.params, "trial_number": trial.number},
            wandb_dir=self.wandb_dir,
        )
        metric = self.settings.task.metric

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            record.log_epoch(epoch, metrics)
            if metric in metrics and math.isfinite(metrics[metric]):
                trial.report(metrics[metric], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} ({metric}={metrics[metric]:.2f})")

        try:
            outcome = train_and_evaluate(self.setup, self.base_model, self.tokenizer, self.data, params, on_epoch)
        except optuna.TrialPruned:
            record.pruned()
            raise
        except BaseException as err:
            record.failed(err)
            raise
        self._keep_model(trial, outcome)
        if outcome.predictions is not None:
            # Every trial's selection-set predictions: the best's become best_predictions.jsonl, and the
            # saved model's independent rescoring must reproduce them row by row.
            write_jsonl_atomic(
                self.paths.trial_predictions(trial.number),
                prediction_rows(self.settings.task, self.data, outcome.predictions),
            )
        attributes: dict[str, Any] = {"versions": self.versions}
        if outcome.confirmation_metrics is not None:
            # For the confirmation stage only (this trial's run is one of a candidate's seeds); the sampler
            # never sees it. The rows' hash: a score on other confirmation rows is not reused as a seed.
            attributes |= {
                "confirmation_metrics": outcome.confirmation_metrics,
                "confirmation_value": outcome.confirmation_value(metric),
                "confirmation_sha256": self.confirmation_sha256,
            }
        record.completed(outcome, attributes)
        return outcome.value

    def _record_draw(self, trial: optuna.Trial) -> None:
        """Whether TPE draws this trial at random, recorded before suggesting, the way TPE itself decides:
        fewer COMPLETE/PRUNED trials than n_startup_trials means a random draw (FAIL trials do not count, so
        trial numbers alone mislead). An enqueued (warm start) trial is neither a random draw nor TPE's pick;
        it still counts among the trials TPE needs before it models (Optuna counts every finished trial)."""
        seen = len(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        enqueued = bool(trial.user_attrs.get("enqueued"))
        trial.set_user_attr("startup_trial", seen < self.settings.sampler.n_startup_trials and not enqueued)
        if self.sampler_seed is not None:
            trial.set_user_attr("sampler_seed", self.sampler_seed)

    def _keep_model(self, trial: optuna.Trial, outcome: TrialOutcome) -> None:
        """Save the trial's model when it ranks among the models the study keeps, then let go of it.

        Written now, while the model is in memory; promoted to best_model only once Optuna has stored the
        trial as COMPLETE (promote_best_model, after each trial). With confirmation on, the top confirm_top_k
        trials' models are kept: the confirmed winner's is the study's run."""
        complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        keep = self.settings.selection.models_kept
        if (
            outcome.model is not None
            and self.best_model_info is not None
            and ranks_in_top(outcome.value, trial.number, complete, keep)
        ):
            save_trial_model(
                outcome.model,
                self.tokenizer,
                self.paths.best_model,
                trial_model_info(
                    self.best_model_info,
                    trial.number,
                    trial.params,
                    outcome,
                    self.setup.eval_batch_size,
                    trial.study.user_attrs.get("fingerprint"),
                ),
            )
        outcome.model = None

    def _refuse_surplus(self, trial: optuna.Trial) -> None:
        """With several workers, two may start a trial for the last slot: the higher number yields.

        Trial numbers are assigned atomically by the storage, so counting the COMPLETE and RUNNING trials
        numbered below this one decides which trials fill the ``n_trials`` slots, before any training.
        """
        states = (TrialState.COMPLETE, TrialState.RUNNING)
        ahead = [t for t in trial.study.get_trials(deepcopy=False, states=states) if t.number < trial.number]
        if len(ahead) >= self.settings.n_trials:
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned(f"surplus: {len(ahead)} earlier trials already fill the study")
