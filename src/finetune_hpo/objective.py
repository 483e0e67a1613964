"""One trial: suggest its parameters, train and score it, record what it did (W&B run, trial attributes,
QA predictions) and keep its model when it beats the best COMPLETE trial."""

from __future__ import annotations

import logging
import math
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from finetune_hpo.best_model import ranks_in_top, save_trial_model
from finetune_hpo.config import looks_like_local_path
from finetune_hpo.io import write_jsonl_atomic
from finetune_hpo.models import library_versions
from finetune_hpo.preprocess import TokenizedTask
from finetune_hpo.search_space import suggest
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyPaths
from finetune_hpo.tasks import TaskSpec
from finetune_hpo.tracking import TrialRun
from finetune_hpo.training import TrainingSetup, TrialOutcome, train_and_evaluate

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
        # Recorded before suggesting, the way TPE itself decides: fewer COMPLETE/PRUNED trials than
        # n_startup_trials means a random draw (FAIL trials do not count, so numbers alone mislead).
        seen = len(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        # An enqueued (warm start) trial is neither a random draw nor TPE's pick; it still counts among the
        # trials TPE needs before it models (Optuna counts every finished trial).
        enqueued = bool(trial.user_attrs.get("enqueued"))
        trial.set_user_attr("startup_trial", seen < self.settings.sampler.n_startup_trials and not enqueued)
        if self.sampler_seed is not None:
            trial.set_user_attr("sampler_seed", self.sampler_seed)
        params = suggest(trial, self.settings.search_space)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        run = TrialRun(
            project=self.settings.wandb.project,
            entity=self.settings.wandb.entity,
            mode=self.settings.wandb.mode,
            group=self.settings.study_name,
            name=f"trial-{trial.number}",
            config={
                **trial.params,
                "trial_number": trial.number,
                "task": self.settings.task.name,
                "method": self.settings.method,
                "model": self.settings.model_name_or_path,
            },
            directory=self.wandb_dir,
        )
        if run.run_id:
            trial.set_user_attr("wandb_run_id", run.run_id)
        metric = self.settings.task.metric

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            run.log({f"eval/{key}": value for key, value in metrics.items()} | {"epoch": epoch})
            if metric in metrics and math.isfinite(metrics[metric]):
                trial.report(metrics[metric], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch} ({metric}={metrics[metric]:.2f})")

        try:
            outcome = train_and_evaluate(self.setup, self.base_model, self.tokenizer, self.data, params, on_epoch)
        except optuna.TrialPruned:
            run.summary({"state": "PRUNED"})
            run.finish()
            raise
        except BaseException as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            run.summary({"state": "FAIL", "error": repr(err)[:500]})
            run.finish(exit_code=1)
            raise
        for key, value in {
            "metrics": outcome.metrics,
            "history": outcome.history,
            "train_seconds": round(outcome.train_seconds, 3),
            "train_loss": outcome.training_loss,
            "per_device_batch_size": outcome.per_device_batch_size,
            "gradient_accumulation_steps": outcome.gradient_accumulation_steps,
            "oom_retries": outcome.oom_retries,
            "trainable_parameters": outcome.trainable_parameters,
            "total_parameters": outcome.total_parameters,
            "precision": outcome.precision,
            "n_gpu": outcome.n_gpu,
            "gpu_name": outcome.gpu_name,
            "versions": self.versions,
            "effective_batch_size": outcome.effective_batch_size,
            "lora_target_modules": outcome.lora_target_modules,
            "lora_modules_to_save": outcome.lora_modules_to_save,
        }.items():
            trial.set_user_attr(key, value)
        if outcome.confirmation_metrics is not None:
            # For the confirmation stage only (this trial's run is one of a candidate's seeds); the
            # sampler never sees it.
            trial.set_user_attr("confirmation_metrics", outcome.confirmation_metrics)
            trial.set_user_attr("confirmation_value", outcome.confirmation_value(metric))
            # Which rows: a score on other confirmation rows is not reused as a candidate's first seed.
            trial.set_user_attr("confirmation_sha256", self.confirmation_sha256)
        complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        keep = self.settings.selection.models_kept
        if (
            outcome.model is not None
            and self.best_model_info is not None
            and ranks_in_top(outcome.value, trial.number, complete, keep)
        ):
            # Written now, while the model is in memory; promoted to best_model only once Optuna has
            # stored the trial as COMPLETE (promote_best_model, after each trial). With confirmation on,
            # the top confirm_top_k trials' models are kept: the confirmed winner's is the study's run.
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
        if outcome.predictions is not None:
            # Every trial's selection-set predictions: the best's become best_predictions.jsonl, and the
            # saved model's independent rescoring must reproduce them row by row.
            write_jsonl_atomic(
                self.paths.trial_predictions(trial.number),
                prediction_rows(self.settings.task, self.data, outcome.predictions),
            )
        confirmation = {f"confirmation/{key}": value for key, value in (outcome.confirmation_metrics or {}).items()}
        run.summary({"objective": outcome.value, "state": "COMPLETE", **outcome.metrics, **confirmation})
        run.finish()
        return outcome.value

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


def prediction_rows(task: TaskSpec, data: TokenizedTask, predictions: list[Any]) -> list[dict[str, Any]]:
    """A trial's selection-set predictions as rows: ``row`` (position in the selection set), the predicted
    and gold label (classification); ``id``, answer, gold answers and scores (extractive QA)."""
    if task.is_classification:
        labels = data.validation["labels"]
        return [
            {"row": row, "prediction": int(prediction), "label": int(label)}
            for row, (prediction, label) in enumerate(zip(predictions, labels, strict=True))
        ]
    golds = {row[task.id_column]: row[task.label_column]["text"] for row in data.validation_examples}
    return [
        {
            "id": p.id,
            "prediction": p.prediction_text,
            "gold": golds.get(p.id, []),
            "null_score": p.null_score,
            "best_span_score": p.best_span_score if math.isfinite(p.best_span_score) else None,
        }
        for p in predictions
    ]


def trial_model_info(
    card_info: Mapping[str, Any],
    trial_number: int,
    params: Mapping[str, Any],
    outcome: TrialOutcome,
    eval_batch_size: int,
    fingerprint: str | None,
) -> dict[str, Any]:
    """The model card of a trial's saved model: :func:`best_model_card_info` plus what the trial did."""
    return {
        **card_info,
        "trial": trial_number,
        "value": outcome.value,
        "params": dict(params),
        "metrics": outcome.metrics,
        "lora_target_modules": outcome.lora_target_modules,
        "lora_modules_to_save": outcome.lora_modules_to_save,
        "precision": outcome.precision,
        "eval_batch_size": eval_batch_size,
        "fingerprint": fingerprint,
    }


def best_model_card_info(settings: StudySettings, data_summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the saved best model records besides its trial: the base model, data and the settings that
    a plain reload needs to score it the way the study did."""
    base = settings.model_name_or_path
    if looks_like_local_path(base) or Path(base).is_dir():
        base = str(Path(base).resolve())  # the adapter must find its base from wherever it is scored
    splits = data_summary["splits"]
    return {
        "study_name": settings.study_name,
        "task": settings.task.name,
        # The whole entry, so a reload scores a task the config declared as the study did.
        "task_spec": asdict(settings.task),
        "method": settings.method,
        "metric": settings.task.metric,
        "base_model": base,
        "seed": settings.seed,
        "max_seq_length": settings.model.max_seq_length,
        "qa": asdict(settings.model.qa) if not settings.task.is_classification else None,
        "data": {
            "train_size": splits["train"]["size"],
            "train_sha256": splits["train"]["sha256"],
            "selection_size": splits["validation"]["size"],
            "selection_sha256": splits["validation"]["sha256"],
            "selection_ids_sha256": splits["validation"].get("ids_sha256"),
            # Held-out rows drawn by these groups: their standard errors resample groups, not rows.
            "group_column": data_summary.get("standard_errors_resample"),
        },
    }
