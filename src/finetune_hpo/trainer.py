"""The HF Trainer as a trial uses it: evaluation in dataset order, QA postprocessing in evaluation, and a
callback for the NaN guard, the SIGTERM stop and the per-epoch hook of the study."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from finetune_hpo.metrics import classification_metrics, squad_v2_metrics
from finetune_hpo.preprocess import TokenizedTask
from finetune_hpo.qa import QAPrediction, postprocess_predictions
from finetune_hpo.signals import stop_requested
from finetune_hpo.tasks import TaskSpec


class NaNLossError(RuntimeError):
    """The training loss became NaN or infinite; the trial's score would be meaningless."""


class EpochCallback:
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


class QAScorer:
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
        _non_embedding_parameters: tuple[int, int] | None = None  # (id of the model, its count)

        def _get_eval_sampler(self, eval_dataset: Any) -> Any:
            # Also with several processes: accelerate shards a sequential loader in order (the stock
            # method checks group_by_length before the world size, so it would permute there too).
            return SequentialSampler(eval_dataset)

        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            # The stock method counts the model's non-embedding parameters on every training step, walking
            # every module and parameter: 1.3 ms a step, ~7% of a small model's step on a CPU. The count
            # cannot change while one model trains, so it is taken once per model (a model_init Trainer
            # swaps self.model); the total_flos logged are the same.
            main_input = getattr(self.model, "main_input_name", "input_ids")
            if main_input not in inputs or not hasattr(self.model, "num_parameters"):
                return 0
            if self._non_embedding_parameters is None or self._non_embedding_parameters[0] != id(self.model):
                count = self.model.num_parameters(exclude_embeddings=True)
                self._non_embedding_parameters = (id(self.model), count)
            return 6 * inputs[main_input].numel() * self._non_embedding_parameters[1]

    return InOrderEvaluationTrainer


def _qa_trainer_class() -> type:
    """A Trainer whose evaluation postprocesses QA logits (as HF's ``trainer_qa.py``), in dataset order.

    The stock ``evaluate`` only calls ``compute_metrics`` when the eval set has labels, and QA windows of
    the validation set have none: answers are scored per question, not per window.
    """

    class QuestionAnsweringTrainer(in_order_trainer_class()):  # type: ignore[misc]
        def __init__(self, *args: Any, qa_scorer: QAScorer, **kwargs: Any) -> None:
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


class ClassificationScorer:
    """``compute_metrics`` for classification: accuracy and F1, keeping the last evaluation's predicted labels
    (in dataset order, one per row) for the trial's predictions file and the saved model's independent check."""

    def __init__(self, num_labels: int = 2) -> None:
        self.num_labels = num_labels
        self.last_predictions: list[int] = []

    def __call__(self, eval_prediction: Any) -> dict[str, float]:
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.argmax(logits, axis=-1)
        self.last_predictions = [int(label) for label in predictions]
        return classification_metrics(predictions, eval_prediction.label_ids, self.num_labels)


class RightPaddingCollator:
    """Dynamic padding on the right, whatever side the tokenizer pads on.

    Extractive QA labels a window's answer by token position (``start_positions``/``end_positions``) and
    reads the logits of a window from its first position; a tokenizer that pads on the left (LLaMA-style)
    would shift every token of a shorter window past both. Padding on the right keeps positions as the
    windowing computed them, for training targets and predictions alike.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        return self.tokenizer.pad(features, padding=True, padding_side="right", return_tensors="pt")


def make_trainer(
    task: TaskSpec,
    model: torch.nn.Module,
    tokenizer: Any,
    data: TokenizedTask,
    args: Any,
    callbacks: Sequence[Any] = (),
    qa_postprocessing: Mapping[str, Any] | None = None,
) -> tuple[Any, ClassificationScorer | QAScorer]:
    """The trial's Trainer (in-order evaluation; QA postprocessing for extractive QA) and its scorer, which
    keeps the last evaluation's predictions."""
    from transformers import DataCollatorWithPadding

    common = {
        "model": model,
        "args": args,
        "train_dataset": data.train,
        "eval_dataset": data.validation,
        "processing_class": tokenizer,
        "callbacks": list(callbacks),
    }
    scorer: ClassificationScorer | QAScorer
    if task.is_classification:
        # A sequence classifier finds its token (CLS, or the last non-pad token) from the attention mask
        # and pad ids, so either padding side works: the tokenizer's own.
        scorer = ClassificationScorer(task.num_labels)
        trainer = in_order_trainer_class()(
            compute_metrics=scorer, data_collator=DataCollatorWithPadding(tokenizer), **common
        )
    else:
        scorer = QAScorer(data, task, qa_postprocessing or {})
        trainer = _qa_trainer_class()(qa_scorer=scorer, data_collator=RightPaddingCollator(tokenizer), **common)
    if args.disable_tqdm:
        # Without a terminal the Trainer prints every log dict; the study logs one line per trial instead.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    return trainer, scorer
