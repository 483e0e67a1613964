"""One trial's training and evaluation with the HF Trainer, full fine-tuning or LoRA (peft).

The base model is loaded once per study process and deep-copied per trial, so a trial never touches the
disk for weights. CUDA out-of-memory retries with half the per-device batch and twice the gradient
accumulation (same effective batch); a NaN loss ends the trial as a failure instead of a bogus score.
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from finetune_hpo.methods import method_spec
from finetune_hpo.models import build_trial_model, count_parameters, resolve_lora_modules, seed_everything
from finetune_hpo.preprocess import TokenizedTask
from finetune_hpo.qa import QAPrediction
from finetune_hpo.runtime import effective_precision, free_accelerator_memory, resolve_precision
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.settings import StudySettings
from finetune_hpo.tasks import TaskSpec
from finetune_hpo.trainer import EpochCallback, NaNLossError, make_trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSetup:
    """What every trial of a study shares.

    Args:
        task: The task's registry entry.
        method: The method's name in the registry (:mod:`finetune_hpo.methods`).
        seed: Seed of initialisation and data order.
        eval_batch_size: Per-device evaluation batch size.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        max_oom_retries: Batch halvings allowed after a CUDA out-of-memory error.
        lora_target_modules: Modules LoRA adapts (a list of names, or a regex); ``None`` detects them.
        lora_modules_to_save: Modules trained in full under LoRA besides the head; ``None`` detects them.
        qa_postprocessing: ``n_best``, ``max_answer_length``, ``null_score_threshold`` (QA only).
        scratch_dir: Where the Trainer may write (nothing is checkpointed).
        keep_model: Return the trained model on the outcome (to save the best one); off, it is freed.
        score_confirmation: Also score the trained model on the confirmation set (when a confirmation
            stage will rank the top trials on it); the objective stays the selection-set score.
    """

    task: TaskSpec
    method: str
    seed: int
    eval_batch_size: int = 64
    precision: str = "auto"
    max_oom_retries: int = 3
    lora_target_modules: str | Sequence[str] | None = None
    lora_modules_to_save: Sequence[str] | None = None
    qa_postprocessing: Mapping[str, Any] = field(default_factory=dict)
    scratch_dir: Path | None = None
    keep_model: bool = False
    score_confirmation: bool = False

    @classmethod
    def from_settings(cls, settings: StudySettings, scratch_dir: Path, **flags: bool) -> TrainingSetup:
        """What a study's trials share, from its settings (``flags``: ``keep_model``, ``score_confirmation``)."""
        return cls(
            task=settings.task,
            method=settings.method,
            seed=settings.seed,
            eval_batch_size=settings.training.eval_batch_size,
            precision=settings.training.precision,
            max_oom_retries=settings.training.max_oom_retries,
            lora_target_modules=settings.model.lora_target_modules,
            lora_modules_to_save=settings.model.lora_modules_to_save,
            qa_postprocessing=settings.model.qa.postprocessing,
            scratch_dir=scratch_dir,
            **flags,
        )


@dataclass
class TrialOutcome:
    """What a finished trial reports.

    Args:
        value: The objective (the task's metric after the last epoch, in percent).
        metrics: Every metric of the last evaluation.
        history: One metrics dict per epoch.
        train_seconds: Wall time of training and evaluation.
        per_device_batch_size: The batch that finally fit (after OOM halvings).
        gradient_accumulation_steps: Accumulation that keeps the effective batch.
        oom_retries: How many times the batch was halved.
        trainable_parameters: Parameters updated by the optimizer.
        total_parameters: All parameters of the model.
        predictions: The last evaluation's predictions on the selection set, in dataset order: a label id per
            row (classification) or a :class:`QAPrediction` per question (extractive QA).
        precision: The precision the trial really trained in (``fp32``, ``bf16`` or ``fp16``).
        n_gpu: GPUs the Trainer used; the effective batch is per-device x accumulation x max(1, n_gpu).
        gpu_name: The GPU model, when one was used.
        lora_target_modules: LoRA only: the modules adapted, as resolved for this model.
        lora_modules_to_save: LoRA only: modules trained in full besides the adapters (head included).
        model: The trained model, when ``TrainingSetup.keep_model`` is set.
        confirmation_metrics: Every metric on the confirmation set, when ``score_confirmation`` is set
            and the task has confirmation rows.
        training_loss: The Trainer's mean training loss over all steps: a fingerprint of what was trained
            (two seeds, or two data orders, give different losses even when their scores tie).
    """

    value: float
    metrics: dict[str, float]
    history: list[dict[str, float]]
    train_seconds: float
    per_device_batch_size: int
    gradient_accumulation_steps: int
    oom_retries: int
    trainable_parameters: int
    total_parameters: int
    predictions: list[int] | list[QAPrediction] | None = None
    precision: str = "fp32"
    n_gpu: int = 0
    gpu_name: str | None = None
    lora_target_modules: str | list[str] | None = None
    lora_modules_to_save: list[str] | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)
    confirmation_metrics: dict[str, float] | None = None
    training_loss: float | None = None

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * max(1, self.n_gpu)

    def confirmation_value(self, metric: str) -> float | None:
        """The objective's metric on the confirmation set, when it was scored."""
        return None if self.confirmation_metrics is None else self.confirmation_metrics.get(metric)


def train_and_evaluate(
    setup: TrainingSetup,
    base_model: torch.nn.Module,
    tokenizer: Any,
    data: TokenizedTask,
    params: HyperParameters,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrialOutcome:
    """Train one trial and return its objective; retries on CUDA OOM with half the batch.

    Args:
        setup: What the study's trials share.
        base_model: The pretrained model; it is copied, never modified.
        tokenizer: The model's tokenizer (padding per batch).
        data: The task's tokenized splits.
        params: The trial's hyperparameters.
        on_epoch: Called after each epoch's evaluation with ``(epoch, metrics)``; may raise
            ``optuna.TrialPruned`` to stop the trial.

    Raises:
        NaNLossError: the loss diverged.
        torch.OutOfMemoryError: even a per-device batch of 1 does not fit.
    """
    batch_size, accumulation = params.batch_size, 1
    for attempt in range(setup.max_oom_retries + 1):
        out_of_memory = False
        try:
            outcome = _train_once(setup, base_model, tokenizer, data, params, batch_size, accumulation, on_epoch)
            outcome.oom_retries = attempt
            return outcome
        except torch.OutOfMemoryError:
            if batch_size == 1 or attempt == setup.max_oom_retries:
                raise
            out_of_memory = True
        # Outside the except block: its traceback holds the failed attempt's frames (model, optimizer,
        # activations), and empty_cache() cannot hand back memory that is still referenced.
        if out_of_memory:
            free_accelerator_memory()
            batch_size, accumulation = batch_size // 2, accumulation * 2
            logger.warning(
                "CUDA out of memory; retrying with per-device batch %d x %d accumulation steps",
                batch_size,
                accumulation,
            )
    raise AssertionError("unreachable")


def evaluate_with_trainer(
    setup: TrainingSetup, model: torch.nn.Module, tokenizer: Any, data: TokenizedTask
) -> tuple[dict[str, float], list[int] | list[QAPrediction]]:
    """Score ``model`` on ``data.validation`` through the same Trainer evaluation path as a trial.

    The arguments that could reorder evaluation (length grouping, the seeds) are those of a trial, so
    this is what tests use to show that the trial's scores do not depend on batch size or row order.
    """

    scratch = Path(setup.scratch_dir or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="eval-") as output_dir:
        args = trial_arguments(setup, output_dir, disable_tqdm=True)
        trainer, scorer = make_trainer(
            setup.task, model, tokenizer, data, args, qa_postprocessing=setup.qa_postprocessing
        )
        metrics = trainer.evaluate()
    clean = {
        key.removeprefix("eval_"): float(value) for key, value in metrics.items() if isinstance(value, int | float)
    }
    return clean, scorer.last_predictions


def trial_arguments(setup: TrainingSetup, output_dir: str, **arguments: Any) -> Any:
    """``TrainingArguments`` as every trial uses them (seeds, length-grouped training batches, device,
    label names), with ``arguments`` for the rest."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        per_device_eval_batch_size=setup.eval_batch_size,
        report_to="none",
        seed=setup.seed,
        data_seed=setup.seed,
        train_sampling_strategy="group_by_length",
        use_cpu=not torch.cuda.is_available(),
        label_names=["labels"] if setup.task.is_classification else ["start_positions", "end_positions"],
        **arguments,
    )


def _train_once(
    setup: TrainingSetup,
    base_model: torch.nn.Module,
    tokenizer: Any,
    data: TokenizedTask,
    params: HyperParameters,
    batch_size: int,
    accumulation: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
) -> TrialOutcome:
    started = time.perf_counter()
    # Every attempt starts from the same RNG state, so the same parameters build the same adapters and
    # draw the same batches, in this process or a fresh one.
    seed_everything(setup.seed)
    model = build_trial_model(
        base_model, setup.task, setup.method, params, setup.lora_target_modules, setup.lora_modules_to_save
    )
    trainable, total = count_parameters(model)
    lora_targets, lora_to_save = _applied_lora_modules(setup, base_model, model)
    precision = effective_precision(setup.precision)
    scratch = Path(setup.scratch_dir or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="trial-") as output_dir:
        args = _training_arguments(setup, output_dir, params, len(data.train), batch_size, accumulation, precision)
        epoch_callback = EpochCallback(on_epoch)
        trainer, scorer = make_trainer(
            setup.task, model, tokenizer, data, args, [epoch_callback.callback], setup.qa_postprocessing
        )
        train_output = trainer.train()
        n_gpu = int(args.n_gpu) if torch.cuda.is_available() else 0
    final = _final_metrics(setup, train_output.training_loss, epoch_callback.history)
    confirmation_metrics = None
    if setup.score_confirmation and data.confirmation is not None:
        # A separate pass with the trial's evaluation arguments; the objective is untouched by it.
        confirmation_metrics, _ = evaluate_with_trainer(setup, trainer.model, tokenizer, data.on_confirmation())
    trained = trainer.model if setup.keep_model else None
    del trainer, model
    return TrialOutcome(
        value=final[setup.task.metric],
        metrics=final,
        history=epoch_callback.history,
        train_seconds=time.perf_counter() - started,
        per_device_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        oom_retries=0,
        trainable_parameters=trainable,
        total_parameters=total,
        predictions=scorer.last_predictions,
        precision=precision,
        n_gpu=n_gpu,
        gpu_name=torch.cuda.get_device_name(0) if n_gpu else None,
        lora_target_modules=lora_targets,
        lora_modules_to_save=lora_to_save,
        model=trained,
        confirmation_metrics=confirmation_metrics,
        training_loss=float(train_output.training_loss),
    )


def _applied_lora_modules(
    setup: TrainingSetup, base_model: torch.nn.Module, model: torch.nn.Module
) -> tuple[list[str] | None, list[str] | None]:
    """The modules an adapter method wrapped and saved in full, as peft applied them: the head it adds for
    the task type (classifier, score, qa_outputs, ...) and what it matched by suffix, not what was asked for.
    ``(None, None)`` for a method without adapters."""
    if not method_spec(setup.method).is_adapter:
        return None, None
    targets = resolve_lora_modules(base_model, setup.lora_target_modules, setup.lora_modules_to_save)[0]
    return targets, sorted(model.peft_config["default"].modules_to_save or [])


def _training_arguments(
    setup: TrainingSetup,
    output_dir: str,
    params: HyperParameters,
    train_rows: int,
    batch_size: int,
    accumulation: int,
    precision: str,
) -> Any:
    """A trial's ``TrainingArguments``: its hyperparameters, evaluated each epoch, nothing saved."""
    steps_per_epoch = max(1, math.ceil(train_rows / (batch_size * accumulation)))
    return trial_arguments(
        setup,
        output_dir,
        learning_rate=params.learning_rate,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=params.num_train_epochs,
        # transformers 5: a float in [0, 1) is a ratio of the total steps (warmup_ratio is gone).
        warmup_steps=float(params.warmup_ratio),
        weight_decay=params.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="no",
        # A few loss logs per epoch: enough for the NaN guard to stop a diverged trial early.
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 4),
        logging_nan_inf_filter=False,
        disable_tqdm=not sys.stderr.isatty(),
        dataloader_pin_memory=torch.cuda.is_available(),
        **resolve_precision(precision),
    )


def _final_metrics(setup: TrainingSetup, training_loss: float, history: list[dict[str, float]]) -> dict[str, float]:
    """The last epoch's metrics, or the error that makes the trial a failure rather than a bogus score.

    Raises:
        NaNLossError: the training loss or the objective is not finite.
        RuntimeError: no epoch was evaluated.
    """
    if not math.isfinite(training_loss):
        raise NaNLossError(f"training loss is {training_loss}")
    if not history:
        raise RuntimeError("training finished without an evaluation; num_train_epochs must be >= 1")
    final = history[-1]
    metric = setup.task.metric
    if metric not in final or not math.isfinite(final[metric]):
        raise NaNLossError(f"evaluation returned {metric}={final.get(metric)}")
    return final
