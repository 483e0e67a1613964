"""One trial's training and evaluation with the HF Trainer, full fine-tuning or LoRA (peft).

The base model is loaded once per study process and deep-copied per trial, so a trial never touches the
disk for weights. CUDA out-of-memory retries with half the per-device batch and twice the gradient
accumulation (same effective batch); a NaN loss ends the trial as a failure instead of a bogus score.
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from finetune_hpo.metrics import classification_metrics, squad_v2_metrics
from finetune_hpo.preprocess import TokenizedTask
from finetune_hpo.qa import QAPrediction, postprocess_predictions
from finetune_hpo.search_space import HyperParameters
from finetune_hpo.tasks import TaskSpec

logger = logging.getLogger(__name__)

# Attention projections LoRA adapts by default, per architecture family (first match wins).
LORA_TARGETS_BY_FAMILY: tuple[tuple[str, ...], ...] = (
    ("query", "value"),  # BERT, RoBERTa, ELECTRA, DeBERTa (v1)
    ("query_proj", "value_proj"),  # DeBERTa-v2/v3
    ("q_proj", "v_proj"),  # LLaMA, Mistral, Qwen, OPT, BART
    ("q_lin", "v_lin"),  # DistilBERT
    ("q", "v"),  # T5
    ("c_attn",),  # GPT-2
)


# Set by the study's SIGTERM handler. The handler also raises KeyboardInterrupt at once, but Python
# swallows an exception raised while it runs a weakref or __del__ callback; checking this at every
# training step makes sure the interrupt still ends the trial.
stop_requested = threading.Event()


class NaNLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial's score would be meaningless."""


@dataclass(frozen=True)
class TrainingSetup:
    """What every trial of a study shares.

    Args:
        task: The task's registry entry.
        method: ``full_finetune`` or ``lora``.
        seed: Seed of initialisation and data order.
        eval_batch_size: Per-device evaluation batch size.
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        max_oom_retries: Batch halvings allowed after a CUDA out-of-memory error.
        lora_target_modules: Modules LoRA adapts (a list of names, or a regex); ``None`` detects them.
        lora_modules_to_save: Modules trained in full under LoRA besides the head; ``None`` detects them.
        qa_postprocessing: ``n_best``, ``max_answer_length``, ``null_score_threshold`` (QA only).
        scratch_dir: Where the Trainer may write (nothing is checkpointed).
        keep_model: Return the trained model on the outcome (to save the best one); off, it is freed.
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
        qa_predictions: QA only: the last evaluation's predictions.
        precision: The precision the trial really trained in (``fp32``, ``bf16`` or ``fp16``).
        n_gpu: GPUs the Trainer used; the effective batch is per-device x accumulation x max(1, n_gpu).
        gpu_name: The GPU model, when one was used.
        lora_target_modules: LoRA only: the modules adapted, as resolved for this model.
        lora_modules_to_save: LoRA only: modules trained in full besides the adapters (head included).
        model: The trained model, when ``TrainingSetup.keep_model`` is set.
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
    qa_predictions: list[QAPrediction] | None = None
    precision: str = "fp32"
    n_gpu: int = 0
    gpu_name: str | None = None
    lora_target_modules: str | list[str] | None = None
    lora_modules_to_save: list[str] | None = None
    model: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps * max(1, self.n_gpu)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trial's result depends on (recorded so Phase 2 can rerun it)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("torch", "transformers", "peft", "optuna", "datasets", "finetune-hpo"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA) before anything random is built.

    The Trainer seeds only in its constructor, after a model we built ourselves: without this, a LoRA
    adapter's initial A matrix (and a freshly initialised head) would depend on what ran before.
    """
    from transformers import set_seed

    set_seed(seed)


def load_base_model(task: TaskSpec, model_name_or_path: str, seed: int = 42) -> torch.nn.Module:
    """Load the pretrained model with the task's head (randomly initialised from ``seed``, the same for
    every trial and every process).

    Weights are loaded in float32 whatever the checkpoint stores: transformers 5 defaults to
    ``dtype="auto"``, so a bf16 checkpoint would otherwise train in bf16 weights, where updates of a
    1e-6 learning rate vanish. Mixed precision, when asked for, is the Trainer's autocast on top.
    """
    from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification

    seed_everything(seed)
    if task.is_classification:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path,
            num_labels=task.num_labels,
            id2label=dict(enumerate(task.label_names)),
            label2id={name: index for index, name in enumerate(task.label_names)},
            dtype=torch.float32,
        )
    else:
        model = AutoModelForQuestionAnswering.from_pretrained(model_name_or_path, dtype=torch.float32)
    if getattr(model.config, "pad_token_id", None) is None and getattr(model.config, "eos_token_id", None) is not None:
        model.config.pad_token_id = model.config.eos_token_id  # decoder-only models have no pad token
    return model


def detect_lora_target_modules(model: torch.nn.Module) -> list[str]:
    """The attention projections LoRA should adapt in ``model``, by architecture family."""
    leaf_names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if not list(module.children())}
    for family in LORA_TARGETS_BY_FAMILY:
        if all(name in leaf_names for name in family):
            return list(family)
    raise ValueError(
        f"cannot detect LoRA target modules of {type(model).__name__}; set model.lora_target_modules in the config"
    )


def detect_modules_to_save(model: torch.nn.Module) -> list[str]:
    """Modules that masked-LM pretraining leaves untrained and a sentence task needs (BERT's pooler)."""
    return ["pooler"] if any(name.endswith("pooler") for name, _ in model.named_modules()) else []


def resolve_lora_modules(model: torch.nn.Module, setup: TrainingSetup) -> tuple[str | list[str], list[str]]:
    """The LoRA target modules and the extra fully trained modules, as configured or detected."""
    # A string is a regular expression over full module names (peft's convention); a list matches suffixes.
    targets = setup.lora_target_modules or detect_lora_target_modules(model)
    target_modules = targets if isinstance(targets, str) else list(targets)
    modules_to_save = list(
        setup.lora_modules_to_save if setup.lora_modules_to_save is not None else detect_modules_to_save(model)
    )
    return target_modules, modules_to_save


def build_trial_model(base_model: torch.nn.Module, setup: TrainingSetup, params: HyperParameters) -> torch.nn.Module:
    """A fresh copy of the base model, wrapped with LoRA adapters for the ``lora`` method.

    Call :func:`seed_everything` first: the adapters' initialisation draws from the global RNG.
    """
    model = copy.deepcopy(base_model)
    if setup.method == "full_finetune":
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    target_modules, modules_to_save = resolve_lora_modules(model, setup)
    task_type = TaskType.SEQ_CLS if setup.task.is_classification else TaskType.QUESTION_ANS
    lora_config = LoraConfig(
        task_type=task_type,
        r=int(params.lora_rank or 8),
        lora_alpha=int(params.lora_alpha or 16),
        lora_dropout=float(params.lora_dropout or 0.0),
        target_modules=target_modules,
        # peft adds the task head (classifier / qa_outputs) for these task types; we add the rest.
        modules_to_save=modules_to_save or None,
    )
    return get_peft_model(model, lora_config)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def effective_precision(precision: str) -> str:
    """The precision a trial really trains in: ``auto`` takes bf16 where the GPU supports it."""
    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if precision in ("bf16", "fp16") and not cuda:
        logger.warning("precision %s needs a GPU; training in fp32 on the CPU", precision)
        precision = "fp32"
    return precision


def resolve_precision(precision: str) -> dict[str, bool]:
    """TrainingArguments flags for ``precision`` (see :func:`effective_precision`)."""
    cuda = torch.cuda.is_available()
    precision = effective_precision(precision)
    flags = {"bf16": precision == "bf16", "fp16": precision == "fp16"}
    if cuda and torch.cuda.get_device_capability()[0] >= 8:
        flags["tf32"] = True  # Ampere and newer: TF32 matmuls for whatever stays in fp32
    return flags


class _EpochCallback:
    """Trainer callback: NaN guard on every logged loss, and the per-epoch hook of the study."""

    def __init__(self, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        from transformers import TrainerCallback

        outer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if stop_requested.is_set():
                    raise KeyboardInterrupt("stop requested (SIGTERM)")

            def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(loss):
                    raise NaNLossError(f"training loss became {loss} at step {state.global_step}")

            def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
                epoch_metrics = {
                    key.removeprefix("eval_"): float(value)
                    for key, value in (metrics or {}).items()
                    if isinstance(value, int | float)
                }
                outer.history.append(epoch_metrics)
                if outer.on_epoch is not None:
                    outer.on_epoch(len(outer.history), epoch_metrics)

        self.on_epoch = on_epoch
        self.history: list[dict[str, float]] = []
        self.callback = Callback()


class _QAScorer:
    """``compute_metrics`` for QA: postprocess window logits into answers, then score like SQuAD v2."""

    def __init__(self, data: TokenizedTask, task: TaskSpec, options: Mapping[str, Any]) -> None:
        self.examples = data.validation_examples.to_list()
        self.windows = data.validation_windows.to_list()
        self.golds = {row[task.id_column]: row[task.label_column]["text"] for row in self.examples}
        self.id_column = task.id_column
        self.options = dict(options)
        self.last_predictions: list[QAPrediction] = []

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        start_logits, end_logits = eval_prediction.predictions[:2]  # EvalLoopOutput or EvalPrediction
        self.last_predictions = postprocess_predictions(
            self.examples,
            self.windows,
            np.asarray(start_logits),
            np.asarray(end_logits),
            id_column=self.id_column,
            **self.options,
        )
        answers = {prediction.id: prediction.prediction_text for prediction in self.last_predictions}
        return squad_v2_metrics(answers, self.golds)


def in_order_trainer_class(base: type | None = None) -> type:
    """A Trainer that evaluates in dataset order, whatever the training sampler.

    With ``train_sampling_strategy="group_by_length"``, transformers 5 also length-groups the *evaluation*
    batches (``Trainer._get_eval_sampler``), so predictions come back permuted. QA postprocessing pairs
    window logits with windows by position, so it must see them in dataset order.
    """
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class InOrderEvaluationTrainer(base or Trainer):  # type: ignore[misc, valid-type]
        def _get_eval_sampler(self, eval_dataset: Any) -> Any:
            # Also with several processes: accelerate shards a sequential loader in order (the stock
            # method checks group_by_length before the world size, so it would permute there too).
            return SequentialSampler(eval_dataset)

    return InOrderEvaluationTrainer


def _qa_trainer_class() -> type:
    """A Trainer whose evaluation postprocesses QA logits (as HF's ``trainer_qa.py``), in dataset order.

    The stock ``evaluate`` only calls ``compute_metrics`` when the eval set has labels, and QA windows of
    the validation set have none: answers are scored per question, not per window.
    """

    class QuestionAnsweringTrainer(in_order_trainer_class()):  # type: ignore[misc]
        def __init__(self, *args: Any, qa_scorer: _QAScorer, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.qa_scorer = qa_scorer

        def evaluate(
            self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
        ) -> dict[str, float]:
            started = time.perf_counter()
            output = self.evaluation_loop(
                self.get_eval_dataloader(eval_dataset),
                description="Evaluation",
                prediction_loss_only=False,
                ignore_keys=ignore_keys,
                metric_key_prefix=metric_key_prefix,
            )
            metrics = {f"{metric_key_prefix}_{k}": v for k, v in self.qa_scorer(output).items()}
            metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - started, 4)
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return QuestionAnsweringTrainer


def _classification_scorer(eval_prediction: Any) -> dict[str, float]:
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return classification_metrics(np.argmax(logits, axis=-1), eval_prediction.label_ids)


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


def make_trainer(
    setup: TrainingSetup,
    model: torch.nn.Module,
    tokenizer: Any,
    data: TokenizedTask,
    args: Any,
    callbacks: Sequence[Any] = (),
) -> tuple[Any, _QAScorer | None]:
    """The trial's Trainer (in-order evaluation; QA postprocessing for extractive QA) and its QA scorer."""
    from transformers import DataCollatorWithPadding

    common = {
        "model": model,
        "args": args,
        "train_dataset": data.train,
        "eval_dataset": data.validation,
        "processing_class": tokenizer,
        "data_collator": DataCollatorWithPadding(tokenizer),
        "callbacks": list(callbacks),
    }
    qa_scorer = None
    if setup.task.is_classification:
        trainer = in_order_trainer_class()(compute_metrics=_classification_scorer, **common)
    else:
        qa_scorer = _QAScorer(data, setup.task, setup.qa_postprocessing)
        trainer = _qa_trainer_class()(qa_scorer=qa_scorer, **common)
    if args.disable_tqdm:
        # Without a terminal the Trainer prints every log dict; the study logs one line per trial instead.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer, qa_scorer


def evaluate_with_trainer(
    setup: TrainingSetup, model: torch.nn.Module, tokenizer: Any, data: TokenizedTask
) -> tuple[dict[str, float], list[QAPrediction] | None]:
    """Score ``model`` on ``data.validation`` through the same Trainer evaluation path as a trial.

    The arguments that could reorder evaluation (length grouping, the seeds) are those of a trial, so
    this is what tests use to show that the trial's scores do not depend on batch size or row order.
    """
    from transformers import TrainingArguments

    scratch = Path(setup.scratch_dir or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="eval-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            per_device_eval_batch_size=setup.eval_batch_size,
            report_to="none",
            seed=setup.seed,
            data_seed=setup.seed,
            train_sampling_strategy="group_by_length",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
            label_names=["labels"] if setup.task.is_classification else ["start_positions", "end_positions"],
        )
        trainer, qa_scorer = make_trainer(setup, model, tokenizer, data, args)
        metrics = trainer.evaluate()
    clean = {
        key.removeprefix("eval_"): float(value) for key, value in metrics.items() if isinstance(value, int | float)
    }
    return clean, (qa_scorer.last_predictions if qa_scorer else None)


def free_accelerator_memory() -> None:
    """Collect garbage and return cached CUDA blocks to the driver (a no-op on a CPU)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


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
    from transformers import TrainingArguments

    started = time.perf_counter()
    # Every attempt starts from the same RNG state, so the same parameters build the same adapters and
    # draw the same batches, in this process or a fresh one.
    seed_everything(setup.seed)
    model = build_trial_model(base_model, setup, params)
    trainable, total = count_parameters(model)
    lora_targets, lora_to_save = None, None
    if setup.method == "lora":
        # As peft applied them: the head it adds for the task type (classifier, score, qa_outputs, ...)
        # and what it matched by suffix, not what we asked for.
        lora_targets = resolve_lora_modules(base_model, setup)[0]
        lora_to_save = sorted(model.peft_config["default"].modules_to_save or [])
    precision = effective_precision(setup.precision)
    steps_per_epoch = max(1, math.ceil(len(data.train) / (batch_size * accumulation)))
    scratch = Path(setup.scratch_dir or tempfile.gettempdir())
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="trial-") as output_dir:
        args = TrainingArguments(
            output_dir=output_dir,
            learning_rate=params.learning_rate,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            per_device_eval_batch_size=setup.eval_batch_size,
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
            report_to="none",
            seed=setup.seed,
            data_seed=setup.seed,
            train_sampling_strategy="group_by_length",
            disable_tqdm=not sys.stderr.isatty(),
            use_cpu=not torch.cuda.is_available(),
            dataloader_pin_memory=torch.cuda.is_available(),
            label_names=["labels"] if setup.task.is_classification else ["start_positions", "end_positions"],
            **resolve_precision(precision),
        )
        epoch_callback = _EpochCallback(on_epoch)
        trainer, qa_scorer = make_trainer(setup, model, tokenizer, data, args, [epoch_callback.callback])
        train_output = trainer.train()
        n_gpu = int(args.n_gpu) if torch.cuda.is_available() else 0
    if not math.isfinite(train_output.training_loss):
        raise NaNLossError(f"training loss is {train_output.training_loss}")
    if not epoch_callback.history:
        raise RuntimeError("training finished without an evaluation; num_train_epochs must be >= 1")
    final = epoch_callback.history[-1]
    metric = setup.task.metric
    if metric not in final or not math.isfinite(final[metric]):
        raise NaNLossError(f"evaluation returned {metric}={final.get(metric)}")
    trained = trainer.model if setup.keep_model else None
    del trainer, model
    return TrialOutcome(
        value=final[metric],
        metrics=final,
        history=epoch_callback.history,
        train_seconds=time.perf_counter() - started,
        per_device_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        oom_retries=0,
        trainable_parameters=trainable,
        total_parameters=total,
        qa_predictions=qa_scorer.last_predictions if qa_scorer else None,
        precision=precision,
        n_gpu=n_gpu,
        gpu_name=torch.cuda.get_device_name(0) if n_gpu else None,
        lora_target_modules=lora_targets,
        lora_modules_to_save=lora_to_save,
        model=trained,
    )
