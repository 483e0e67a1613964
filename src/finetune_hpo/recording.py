"""What one training run leaves behind, for a study's trial and a confirmation run alike: its W&B run (per-epoch
metrics, a final summary), its error, and its attributes on the Optuna trial that holds it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from finetune_hpo.settings import StudySettings
from finetune_hpo.tracking import TrialRun
from finetune_hpo.training import TrialOutcome

# The longest error text kept on a trial: enough for the exception's message, not a whole traceback.
ERROR_CHARACTERS = 500


class RunRecord:
    """One run's records. Opens its W&B run (grouped by study) on creation; :meth:`completed`,
    :meth:`failed` or :meth:`pruned` writes the outcome and finishes it. W&B never fails the run
    (:class:`finetune_hpo.tracking.TrialRun`).

    Args:
        trial: The Optuna trial that holds the run (a study's trial, or one of ``<study>/confirmation``).
        settings: The study's settings (W&B project, task, method, model).
        name: The W&B run's name (``trial-3``, ``confirm-trial-3-seed-43``).
        config: The run's parameters and identity, beside the task, method and model.
        wandb_dir: Where offline runs are written.
        job_type: ``trial`` or ``confirmation``.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        settings: StudySettings,
        *,
        name: str,
        config: Mapping[str, Any],
        wandb_dir: Path | None,
        job_type: str = "trial",
    ) -> None:
        self.trial = trial
        self.run = TrialRun(
            project=settings.wandb.project,
            entity=settings.wandb.entity,
            mode=settings.wandb.mode,
            group=settings.study_name,
            name=name,
            job_type=job_type,
            config={
                **config,
                "task": settings.task.name,
                "method": settings.method,
                "model": settings.model_name_or_path,
            },
            directory=wandb_dir,
        )
        if self.run.run_id:
            trial.set_user_attr("wandb_run_id", self.run.run_id)

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """One epoch's evaluation, as W&B's ``eval/<metric>`` series."""
        self.run.log({f"eval/{key}": value for key, value in metrics.items()} | {"epoch": epoch})

    def completed(self, outcome: TrialOutcome, attributes: Mapping[str, Any] = ()) -> None:
        """The run trained and scored: its attributes on the trial (``attributes`` beside what every run
        records), and its objective and metrics in W&B's summary."""
        for key, value in {**outcome_attributes(outcome), **dict(attributes)}.items():
            self.trial.set_user_attr(key, value)
        held_out = {f"confirmation/{key}": value for key, value in (outcome.confirmation_metrics or {}).items()}
        self.run.summary({"objective": outcome.value, "state": "COMPLETE", **outcome.metrics, **held_out})
        self.run.finish()

    def failed(self, error: BaseException, attributes: Mapping[str, Any] = ()) -> None:
        """The run raised: its error on the trial (and ``attributes``, e.g. ``diverged``) and in W&B."""
        self.trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:ERROR_CHARACTERS])
        for key, value in dict(attributes).items():
            self.trial.set_user_attr(key, value)
        self.run.summary({"state": "FAIL", "error": repr(error)[:ERROR_CHARACTERS]})
        self.run.finish(exit_code=1)

    def pruned(self) -> None:
        """The pruner stopped the run after an epoch."""
        self.run.summary({"state": "PRUNED"})
        self.run.finish()


def outcome_attributes(outcome: TrialOutcome) -> dict[str, Any]:
    """What every finished run records about how it trained (the export's provenance reads them)."""
    return {
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
        "effective_batch_size": outcome.effective_batch_size,
        "lora_target_modules": outcome.lora_target_modules,
        "lora_modules_to_save": outcome.lora_modules_to_save,
    }
