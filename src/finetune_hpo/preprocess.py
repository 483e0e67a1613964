"""Tokenize a task's subsample once per task and model; trials read the cached, memory-mapped Arrow files.

Nothing is padded here: the collator pads each batch to its own longest example (dynamic padding).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from finetune_hpo.config import ConfigError
from finetune_hpo.data import CONFIRMATION_SPLIT
from finetune_hpo.io import write_json_atomic
from finetune_hpo.qa import QAWindowing, prepare_train_features, prepare_validation_features
from finetune_hpo.tasks import TaskSpec

logger = logging.getLogger(__name__)

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class TokenizedTask:
    """A task's tokenized splits, as the trials consume them.

    Args:
        train: Model inputs with labels (``labels``, or ``start_positions``/``end_positions``).
        validation: Model inputs of the validation set (QA: one row per window, no labels).
        validation_examples: QA only: the raw validation rows, for postprocessing.
        validation_windows: QA only: ``example_id`` and ``offset_mapping`` per window.
        confirmation, confirmation_examples, confirmation_windows: The same for the held-out confirmation
            rows, when the subsample has any.
    """

    train: Any
    validation: Any
    validation_examples: Any = None
    validation_windows: Any = None
    confirmation: Any = None
    confirmation_examples: Any = None
    confirmation_windows: Any = None

    def on_confirmation(self) -> TokenizedTask:
        """The same task with the confirmation set in place of the selection set, so the Trainer's own
        evaluation path scores it (the held-out rows the confirmation stage ranks candidates on)."""
        if self.confirmation is None:
            raise ValueError("this tokenized task has no confirmation set (confirmation.jsonl was empty)")
        return replace(
            self,
            validation=self.confirmation,
            validation_examples=self.confirmation_examples,
            validation_windows=self.confirmation_windows,
        )


def load_tokenizer(model_name_or_path: str) -> Any:
    """The model's tokenizer; a clear ``ConfigError`` when the model is neither local nor on the hub."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.name_or_path: cannot load {model_name_or_path!r}: it is not a local model directory and "
            f"could not be fetched from the Hugging Face hub ({str(err).splitlines()[0]})"
        ) from err


def tokenize_task(
    task: TaskSpec,
    data_dir: Path,
    tokenizer: Any,
    out_dir: Path,
    *,
    max_seq_length: int,
    qa_windowing: QAWindowing | None = None,
    num_proc: int | None = None,
) -> dict[str, Any]:
    """Tokenize ``data_dir/{train,validation,confirmation}.jsonl`` into ``out_dir`` (``datasets.save_to_disk``).

    The confirmation rows are tokenized like the selection set, when there are any: trials score them
    only when a confirmation stage follows the study.

    Returns:
        A summary (rows and tokens per split) that is also written to ``out_dir/summary.json``.
    """
    import datasets

    splits = ["train", "validation"]
    confirmation_file = data_dir / f"{CONFIRMATION_SPLIT}.jsonl"
    if confirmation_file.is_file() and confirmation_file.stat().st_size > 0:
        splits.append(CONFIRMATION_SPLIT)
    raw = datasets.load_dataset("json", data_files={split: str(data_dir / f"{split}.jsonl") for split in splits})
    if task.is_classification:
        tokenized = _tokenize_classification(task, raw, tokenizer, max_seq_length, num_proc)
    else:
        tokenized = _tokenize_qa(task, raw, tokenizer, qa_windowing or QAWindowing(), num_proc)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenized.save_to_disk(str(out_dir))
    summary = {
        "task": task.name,
        "tokenizer": getattr(tokenizer, "name_or_path", ""),
        "splits": {
            split: {"rows": len(rows), "tokens": int(sum(rows["length"])) if "length" in rows.column_names else None}
            for split, rows in tokenized.items()
        },
    }
    write_json_atomic(out_dir / "tokenization.json", summary)
    return summary


def prepare_tokenized_task(
    task: TaskSpec,
    data_dir: Path,
    model_name_or_path: str,
    out_dir: Path,
    *,
    max_seq_length: int,
    qa: Mapping[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """Rule tokenize_dataset: the model's tokenizer over the task's drawn rows, written to ``out_dir``, in
    ``threads`` processes (the job's threads; 1 tokenizes in this process)."""
    summary = tokenize_task(
        task,
        data_dir,
        load_tokenizer(model_name_or_path),
        out_dir,
        max_seq_length=max_seq_length,
        qa_windowing=QAWindowing(int(qa["max_seq_length"]), int(qa["doc_stride"])),
        num_proc=threads if threads > 1 else None,
    )
    logger.info("%s: %s", task.name, json.dumps(summary["splits"]))
    return summary


def _tokenize_classification(
    task: TaskSpec, raw: Any, tokenizer: Any, max_seq_length: int, num_proc: int | None
) -> Any:
    def encode(batch: Mapping[str, list]) -> dict:
        texts = [batch[column] for column in task.text_columns]
        encoded = tokenizer(*texts, truncation=True, max_length=max_seq_length, padding=False)
        encoded["labels"] = batch[task.label_column]
        # Lengths let the trainer group similar lengths into a batch (less padding).
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return dict(encoded)

    return raw.map(encode, batched=True, remove_columns=raw["train"].column_names, num_proc=num_proc)


def _tokenize_qa(task: TaskSpec, raw: Any, tokenizer: Any, windowing: QAWindowing, num_proc: int | None) -> Any:
    import datasets

    train = raw["train"].map(
        prepare_train_features,
        fn_kwargs={"tokenizer": tokenizer, "windowing": windowing},
        batched=True,
        remove_columns=raw["train"].column_names,
        num_proc=num_proc,
    )
    splits = {"train": train}
    for split in ("validation", CONFIRMATION_SPLIT):
        if split not in raw:
            continue
        windows = raw[split].map(
            prepare_validation_features,
            fn_kwargs={"tokenizer": tokenizer, "windowing": windowing, "id_column": task.id_column},
            batched=True,
            remove_columns=raw[split].column_names,
            num_proc=num_proc,
        )
        inputs = [column for column in MODEL_INPUTS if column in windows.column_names]
        splits[split] = windows.select_columns(inputs)
        splits[f"{split}_windows"] = windows.select_columns(["example_id", "offset_mapping"])
        splits[f"{split}_examples"] = raw[split]
    return datasets.DatasetDict(splits)


def load_tokenized(path: Path) -> TokenizedTask:
    """Open a tokenized task written by :func:`tokenize_task` (memory-mapped, nothing copied)."""
    import datasets

    if not (path / "dataset_dict.json").is_file():
        raise FileNotFoundError(f"{path} holds no tokenized task (no dataset_dict.json); rerun the tokenize rule")
    loaded = datasets.load_from_disk(str(path))
    splits = json.loads((path / "dataset_dict.json").read_text())["splits"]
    return TokenizedTask(**{split: loaded[split] for split in splits})
