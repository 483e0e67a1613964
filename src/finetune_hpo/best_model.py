"""The best trial's model, kept: ``results/studies/<study>/best_model/`` with its tokenizer and a model card.

A trial that beats the best COMPLETE trial writes its model to a folder of its own; once Optuna has
stored it as COMPLETE, the ``best_model`` symlink is swapped to it, so a reader (or a kill) never sees
half a model or the model of a trial that failed. It reloads with
plain ``AutoModelFor...`` / ``peft.PeftModel.from_pretrained`` (see :mod:`finetune_hpo.evaluation`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.config_paths import looks_like_local_path
from finetune_hpo.io import apply_umask, write_text_atomic
from finetune_hpo.methods import method_spec
from finetune_hpo.settings import StudySettings

if TYPE_CHECKING:
    from finetune_hpo.training import TrialOutcome

logger = logging.getLogger(__name__)

BEST_MODEL_DIR = "best_model"
# What the workflow knows about the saved model (task, metric, value, parameters, data, settings).
INFO_FILE = "finetune_hpo.json"


def read_best_model_info(directory: Path) -> dict[str, Any] | None:
    """The info of the saved model at ``directory``; ``None`` when there is none."""
    info = Path(directory) / INFO_FILE
    if not info.is_file():
        return None
    return json.loads(info.read_text())


def best_complete_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The best COMPLETE trial: the highest value, and on a tie the lowest number.

    Optuna's ``best_trial`` breaks ties by storage order (the RDB storage arbitrarily); MRPC and RTE
    scores move in 2-point steps, so ties are common, and the saved model, the export and the review
    must all name the same trial.
    """
    ranked = top_complete_trials(trials, 1)
    return ranked[0] if ranked else None


def beats(value: float, number: int, best: FrozenTrial | None) -> bool:
    """Whether a trial (``value``, ``number``) would become the best COMPLETE trial over ``best``."""
    if best is None:
        return True
    return value > float(best.value) or (value == float(best.value) and number < best.number)


def top_complete_trials(trials: Iterable[FrozenTrial], k: int | None = None) -> list[FrozenTrial]:
    """The ``k`` best COMPLETE trials (all with ``None``): highest value first, ties to the lower number.
    The one ranking behind the best trial, the models a study keeps and the confirmation candidates."""
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE and trial.value is not None]
    return sorted(complete, key=lambda trial: (-float(trial.value), trial.number))[:k]


def ranks_in_top(value: float, number: int, trials: Iterable[FrozenTrial], k: int) -> bool:
    """Whether a trial (``value``, ``number``) would be among the ``k`` best COMPLETE trials."""
    ahead = [trial for trial in top_complete_trials(trials, k) if not beats(value, number, trial)]
    return len(ahead) < k


def trial_model_dir(directory: Path, trial_number: int) -> Path:
    """Where trial ``trial_number``'s model is written, beside the ``best_model`` link."""
    return directory.with_name(f"{directory.name}.trial-{trial_number}")


@contextmanager
def _locked(directory: Path, mode: int = fcntl.LOCK_EX) -> Iterator[None]:
    """Serialise saves and swaps between workers of one study that share a filesystem."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def save_trial_model(model: Any, tokenizer: Any, directory: Path, info: Mapping[str, Any]) -> Path:
    """Write a trial's model beside the ``best_model`` link (``best_model.trial-<n>``); the link is moved
    by :func:`promote_best_model` once the trial is COMPLETE.

    Args:
        model: The trained model: a transformers model (full fine-tuning) or a peft model (LoRA: the
            adapter and the modules trained in full, the head included, are what is saved).
        tokenizer: The model's tokenizer, saved beside it.
        directory: ``results/studies/<study>/best_model``.
        info: Task, method, metric, value, trial, parameters, fingerprint, data and settings of the trial.
    """
    directory = Path(directory)
    target = trial_model_dir(directory, int(info["trial"]))
    with _locked(directory):
        # Staging folders of killed saves; none can be in progress while we hold the lock.
        for leftover in directory.parent.glob(f".{directory.name}.trial-*.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = directory.with_name(f".{target.name}.partial-{os.getpid()}")
        staging.mkdir(parents=True)
        if hasattr(model, "peft_config"):
            # The vocabulary is never resized: the base embeddings need no copy in the adapter.
            model.save_pretrained(str(staging), save_embedding_layers=False)
        else:
            model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        write_text_atomic(staging / INFO_FILE, json.dumps(dict(info), indent=2, sort_keys=True) + "\n")
        write_text_atomic(staging / "README.md", model_card(info))
        apply_umask(staging)  # the weights come from safetensors at 0o600: a colleague could not load them
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def promote_best_model(directory: Path, trials: Sequence[FrozenTrial], keep_top: int = 1) -> Path | None:
    """Point ``best_model`` at the best COMPLETE trial's saved model; drop the models of finished trials
    outside the ``keep_top`` best (a RUNNING trial's, another worker's, is kept). A confirmation stage keeps
    its candidates' models this way, so its winner's model is the study's own run.

    The link is replaced atomically, so a reader sees the old model or the new one, never neither. A
    trial whose model was saved but that then failed (killed during its last steps) is never promoted.

    Returns:
        The folder ``best_model`` now points to, or ``None`` when no COMPLETE trial has a saved model.
    """
    best = best_complete_trial(trials)
    keep = {trial.number for trial in trials if trial.state == TrialState.RUNNING}
    keep |= {trial.number for trial in top_complete_trials(trials, keep_top)}
    return point_best_model(directory, None if best is None else best.number, keep=keep)


def point_best_model(directory: Path, trial_number: int | None, keep: Iterable[int] | None = ()) -> Path | None:
    """Point ``best_model`` at trial ``trial_number``'s saved model (when there is one) and drop the saved
    models of every other trial except those in ``keep`` (``None``: drop none).

    Used by :func:`promote_best_model`, and with ``keep=None`` by rule score_best_model, which points the
    link at the model of the trial the export names (the confirmed winner, when confirmation ran).
    """
    directory = Path(directory)
    with _locked(directory):
        target = trial_model_dir(directory, trial_number) if trial_number is not None else None
        if target is not None and (target / INFO_FILE).is_file():
            if not (directory.is_symlink() and directory.resolve() == target.resolve()):
                if directory.exists() and not directory.is_symlink():
                    shutil.rmtree(directory)  # a plain folder from a copy: the link takes its place
                link = directory.with_name(f".{directory.name}.link-{os.getpid()}")
                link.unlink(missing_ok=True)
                link.symlink_to(target.name)  # relative: the study folder can be moved as a whole
                os.replace(link, directory)
                logger.info("best model: trial %d (%s)", trial_number, target)
        else:
            target = None
        for folder in directory.parent.glob(f"{directory.name}.trial-*"):
            number = int(folder.name.rsplit("-", 1)[1])
            if keep is not None and folder != (target or Path()) and number not in set(keep):
                shutil.rmtree(folder, ignore_errors=True)
    return target


def select_saved_model(directory: Path, trial_number: int) -> Path:
    """Point ``best_model`` at trial ``trial_number``'s saved model, deleting nothing, and return its folder.

    Raises:
        FileNotFoundError: no saved model of that trial (the study or its confirmation stage must run).
    """
    target = point_best_model(directory, trial_number, keep=None)
    if target is None:
        raise FileNotFoundError(
            f"no saved model of trial {trial_number} beside {directory}; rerun rule run_study (and "
            "confirm_top_trials when confirmation is on), which keep it"
        )
    return target


def resolve_saved_model(directory: Path) -> Path:
    """The folder a ``best_model`` link points to now (read once, so a swap cannot mix two models)."""
    lock = Path(directory).parent / f".{Path(directory).name}.lock"
    if not os.access(lock, os.W_OK):
        return Path(directory).resolve()  # a copied or read-only model: nobody swaps it
    with _locked(Path(directory), fcntl.LOCK_SH):
        return Path(directory).resolve()


def model_card(info: Mapping[str, Any]) -> str:
    """A short Hugging Face model card: what the model is, how it scored, and on which data."""
    spec = method_spec(info["method"])
    params = "\n".join(f"| `{name}` | {value} |" for name, value in sorted(info["params"].items()))
    data = info.get("data", {})
    return f"""---
library_name: {"peft" if spec.is_adapter else "transformers"}
base_model: {info["base_model"]}
tags: [finetune-hpo, {info["task"]}, {info["method"]}]
---

# {info["study_name"]}: best trial {info["trial"]}

{spec.card} for **{info["task"]}**,
the best of the Phase 1 study `{info["study_name"]}` (trial {info["trial"]}).

**Selection score:** {info["metric"]} = {info["value"]:.2f} % on the {data.get("selection_size", "?")}-row selection
set. It is the maximum over the study's trials on the set that chose it, so it is optimistic: see the
confirmation score in `analysis/{info["study_name"]}_optimal.yaml`.

| hyperparameter | value |
|---|---|
{params}

Data: training tier sha256 `{data.get("train_sha256")}`, selection set sha256 `{data.get("selection_sha256")}`.

Reload and score it with plain transformers/peft code:

```bash
finetune-hpo evaluate --model {BEST_MODEL_DIR} --task {info["task"]} --data results/data/{info["task"]}/validation.jsonl
```
"""


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
