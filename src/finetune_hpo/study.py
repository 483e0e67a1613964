"""One Optuna study per task x method: storage, sampler, crash-safe resume and the exact trial count.

The study runs until it holds exactly ``n_trials`` COMPLETE trials, however often it was interrupted:
trials left RUNNING by a killed process are marked FAIL on restart, the sampler is re-seeded from the
number of trials already stored (a re-created seeded sampler would replay its first suggestions), and
a study whose definition (space, model, data) changed is refused rather than silently mixed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import distribution_to_json
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import BEST_MODEL_DIR, beats, best_complete_trial, promote_best_model, save_trial_model
from finetune_hpo.config import StudySettings
from finetune_hpo.io import write_jsonl_atomic, write_text_atomic
from finetune_hpo.search_space import suggest

if TYPE_CHECKING:
    import torch

    from finetune_hpo.preprocess import TokenizedTask
    from finetune_hpo.training import TrainingSetup

logger = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
TRIALS_TABLE_NAME = "trials.csv"
TRIALS_TABLE_COLUMNS = (
    "number",
    "state",
    "value",
    "params",
    "duration_s",
    "wandb_run_id",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "oom_retries",
    "effective_batch_size",
    "n_gpu",
    "precision",
    "startup_trial",
    "trainable_parameters",
    "error",
)


class StudyError(RuntimeError):
    """A study that cannot go on; the message says what happened and what to do."""


@dataclass(frozen=True)
class StudyPaths:
    """Files of one study under ``results/studies/<study_name>/``.

    The journal is deliberately not a Snakemake output: Snakemake deletes a failed job's outputs, and
    the journal holds every finished trial.
    """

    root: Path

    @property
    def journal(self) -> Path:
        return self.root / JOURNAL_NAME

    @property
    def trials_table(self) -> Path:
        return self.root / TRIALS_TABLE_NAME

    @property
    def predictions_dir(self) -> Path:
        return self.root / "predictions"

    @property
    def best_predictions(self) -> Path:
        return self.root / "best_predictions.jsonl"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def best_model(self) -> Path:
        return self.root / BEST_MODEL_DIR

    @property
    def trials_progress(self) -> Path:
        """The trials table as of the last finished trial: not a Snakemake output, so a failed job keeps it."""
        return self.root / "trials_progress.csv"


def resolve_storage_url(storage: str | None) -> str | None:
    """``env:VAR`` -> the URL in that environment variable (keeps passwords out of the config)."""
    if storage and storage.startswith("env:"):
        variable = storage.removeprefix("env:")
        url = os.environ.get(variable)
        if not url:
            raise StudyError(f"optuna.storage is {storage!r} but the environment variable {variable} is not set")
        return url
    return storage


def open_storage(
    storage: str | None, paths: StudyPaths, heartbeat: tuple[int, int] = (60, 180)
) -> optuna.storages.BaseStorage:
    """The study's storage: a journal file per study by default, or an RDB (PostgreSQL) URL.

    Args:
        storage: ``None`` (journal), an RDB URL, or ``env:VAR``.
        paths: The study's folder (journal location).
        heartbeat: RDB only: seconds between a worker's heartbeats, and the silence after which its
            running trial is stale (FAIL, then retried once with the same parameters).

    Raises:
        StudyError: the journal file is corrupted (names the file and what to do).
    """
    url = resolve_storage_url(storage)
    if url:
        return _open_rdb(url, *heartbeat)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    paths.root.mkdir(parents=True, exist_ok=True)
    # An absolute path: Optuna's lock is a symlink to the journal, and a relative target would resolve
    # from the lock's own folder, so a lock left by a killed writer could never be broken (Optuna then
    # spins on it forever instead of releasing it after its grace period).
    journal = paths.journal.resolve()
    repair_journal_tail(journal)
    try:
        return JournalStorage(JournalFileBackend(str(journal)))
    except (ValueError, json.JSONDecodeError, KeyError) as err:
        raise StudyError(
            f"Optuna journal {paths.journal} is corrupted ({err}). Its finished trials cannot be read. "
            f"Restore it from a backup, or move it away (e.g. `mv {paths.journal} {paths.journal}.broken`) "
            "to start this study from scratch."
        ) from err


def _open_rdb(url: str, heartbeat_interval: int, grace_period: int, attempts: int = 5) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats; retried briefly because workers starting together race to create
    Optuna's tables, and the loser sees a duplicate-key error until the winner has committed."""
    for attempt in range(1, attempts + 1):
        try:
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                # A dead worker's trial: FAIL, then retried once with the same parameters.
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
            )
        except ImportError as err:
            raise StudyError(f"optuna.storage {redacted(url)} needs a database driver: {err}") from err
        except Exception as err:  # sqlalchemy's OperationalError and friends: say which server
            if attempt == attempts or "duplicate key" not in str(err):
                raise StudyError(f"cannot open optuna.storage {redacted(url)}: {str(err).splitlines()[0]}") from err
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def redacted(url: str) -> str:
    from finetune_hpo.export import redact_url

    return redact_url(url)


def repair_journal_tail(journal: Path) -> None:
    """Drop a half-written last line (a write cut by SIGKILL), keeping a backup of the original.

    Optuna ignores such a line on read, but its next append would glue a new record to it and corrupt
    the journal for good.
    """
    from optuna.storages.journal import JournalFileSymlinkLock

    if not journal.exists() or journal.stat().st_size == 0:
        return
    # Under Optuna's own write lock a partial line can only come from a dead writer, never from a live
    # worker in the middle of an append (the lock of a killed writer expires after its grace period).
    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()
    try:
        data = journal.read_bytes()
        if data.endswith(b"\n"):
            return
        backup = journal.with_name(f"{journal.name}.{int(time.time())}.bak")
        shutil.copy2(journal, backup)
        keep = data.rfind(b"\n") + 1
        with journal.open("r+b") as handle:
            handle.truncate(keep)
    finally:
        lock.release()
    logger.warning(
        "%s ended in a half-written record (%d bytes, from an interrupted write); dropped it, original kept as %s",
        journal,
        len(data) - keep,
        backup,
    )


def study_definition(settings: StudySettings, data_summary: Mapping[str, Any]) -> dict[str, Any]:
    """What defines a study: every setting that changes a trial's result. A stored study with other values
    is a different experiment (settings that only change speed or bookkeeping are left out)."""
    config = settings.config
    model, training, sampler = config["model"], config["training"], config["optuna"]["sampler"]
    return {
        "task": settings.task.name,
        "method": settings.method,
        "metric": settings.task.metric,
        "model": settings.model_name_or_path,
        "search_space": {name: json.loads(distribution_to_json(d)) for name, d in settings.search_space.items()},
        # The confirmation rows are not the study's data: they are scored after it.
        "data_sha256": {split: data_summary["splits"][split]["sha256"] for split in ("train", "validation")},
        "max_seq_length": model["max_seq_length"],
        "qa": model["qa"] if not settings.task.is_classification else None,
        "lora_target_modules": model["lora_target_modules"] if settings.method == "lora" else None,
        "lora_modules_to_save": model["lora_modules_to_save"] if settings.method == "lora" else None,
        "precision": training["precision"],
        "sampler": {
            "n_startup_trials": sampler["n_startup_trials"],
            "multivariate": sampler["multivariate"],
            "seed": settings.sampler_seed,
        },
        "pruner": config["optuna"]["pruner"],
        "seed": settings.seed,
    }


def fingerprint(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def _differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return sorted(key for key in set(stored) | set(current) if stored.get(key) != current.get(key))


def open_study(
    settings: StudySettings,
    storage: optuna.storages.BaseStorage,
    definition: Mapping[str, Any],
    *,
    allow_new_definition: bool = False,
) -> tuple[optuna.Study, int]:
    """Create or resume the study, with a sampler seeded past the trials already stored.

    Returns:
        The study and the seed its sampler was given in this process (recorded on every trial it runs).

    Raises:
        StudyError: the stored study was defined differently and ``allow_new_definition`` is false.
    """
    sampler_config = settings.config["optuna"]["sampler"]
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True
    )
    stored = study.user_attrs.get("definition")
    if stored is not None and stored != dict(definition) and study.trials:
        if not allow_new_definition:
            raise StudyError(
                f"study {settings.study_name!r} already has {len(study.trials)} trial(s) run with a different "
                f"{', '.join(_differences(stored, definition))}. Mixing them would corrupt the search. Restore the "
                "old settings, or start a new study: move the study's storage away (results/studies/"
                f"{settings.study_name}/) or run with --new-study to record the new definition and continue."
            )
        logger.warning(
            "study %s: definition changed (%s); continuing as asked",
            settings.study_name,
            ", ".join(_differences(stored, definition)),
        )
    study.set_user_attr("definition", dict(definition))
    study.set_user_attr("fingerprint", fingerprint(definition))
    # Seeding with the stored trial count keeps a resumed study reproducible without replaying the
    # first run's suggestions. Workers sharing a study would all start from the same count, so each
    # adds its process id: parallel workers must not propose the same parameters.
    seed = settings.sampler_seed + len(study.trials)
    if isinstance(storage, optuna.storages.RDBStorage) and settings.config["optuna"]["workers_per_study"] > 1:
        seed += os.getpid()
    study.sampler = optuna.samplers.TPESampler(
        n_startup_trials=int(sampler_config["n_startup_trials"]),
        multivariate=bool(sampler_config["multivariate"]),
        constant_liar=True,  # a running trial counts as a bad result, so parallel workers spread out
        seed=seed,
    )
    study.pruner = make_pruner(settings.config["optuna"]["pruner"])
    return study, seed


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        # Never prune before the random start-up trials have given a median to compare with.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()


def fail_interrupted_trials(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a killed process as FAIL (single-writer storages only)."""
    numbers = []
    storage = study._storage
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(trial._trial_id, "interrupted", True)
        storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        numbers.append(trial.number)
    if numbers:
        logger.warning("trial(s) %s were interrupted in an earlier run; marked FAIL", numbers)
    return numbers


def heartbeat_setting(config: Mapping[str, Any]) -> tuple[int, int]:
    return int(config["optuna"]["heartbeat_interval"]), int(config["optuna"]["heartbeat_grace_period"])


def count_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (preemption, Snakemake's cancel) behaves like Ctrl-C: the running trial ends FAIL."""

    from finetune_hpo.training import stop_requested

    def handler(signum: int, frame: Any) -> None:
        stop_requested.set()
        raise KeyboardInterrupt(f"received signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_requested.clear()


def trials_table_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: number, state, value, params, duration and what the trial recorded."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": "" if trial.value is None else repr(float(trial.value)),
                "params": json.dumps(trial.params, sort_keys=True),
                "duration_s": "" if trial.duration is None else f"{trial.duration.total_seconds():.3f}",
                "wandb_run_id": attrs.get("wandb_run_id") or "",
                "per_device_batch_size": attrs.get("per_device_batch_size", ""),
                "gradient_accumulation_steps": attrs.get("gradient_accumulation_steps", ""),
                "oom_retries": attrs.get("oom_retries", ""),
                "effective_batch_size": attrs.get("effective_batch_size", ""),
                "n_gpu": attrs.get("n_gpu", ""),
                "precision": attrs.get("precision", ""),
                "startup_trial": attrs.get("startup_trial", ""),
                "trainable_parameters": attrs.get("trainable_parameters", ""),
                "error": attrs.get("error", ""),
            }
        )
    return rows


def write_trials_table(study: optuna.Study, path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIALS_TABLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(trials_table_rows(study))
    write_text_atomic(path, buffer.getvalue())


class ProgressLogger:
    """One line per finished trial: k/n, parameters, value, best so far, elapsed and time left."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials
        self.started = time.monotonic()
        self.trials_this_run = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.trials_this_run += 1
        complete = count_complete(study)
        elapsed = time.monotonic() - self.started
        remaining = max(0, self.n_trials - complete)
        eta = elapsed / self.trials_this_run * remaining
        best = _best_value(study)
        value = "-" if trial.value is None else f"{trial.value:.2f}"
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        logger.info(
            "trial %d/%d (#%d) %s value=%s best=%s | %s | elapsed %s, ~%s left",
            complete,
            self.n_trials,
            trial.number,
            trial.state.name,
            value,
            "-" if best is None else f"{best:.2f}",
            params,
            _duration(elapsed),
            _duration(eta),
        )


def _best_value(study: optuna.Study) -> float | None:
    values = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    return max(values) if values else None


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


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
        from finetune_hpo.training import library_versions

        self.versions = library_versions()

    def __call__(self, trial: optuna.Trial) -> float:
        from finetune_hpo.tracking import TrialRun
        from finetune_hpo.training import train_and_evaluate

        self._refuse_surplus(trial)
        # Recorded before suggesting, the way TPE itself decides: fewer COMPLETE/PRUNED trials than
        # n_startup_trials means a random draw (FAIL trials do not count, so numbers alone mislead).
        seen = len(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        trial.set_user_attr("startup_trial", seen < int(self.settings.config["optuna"]["sampler"]["n_startup_trials"]))
        if self.sampler_seed is not None:
            trial.set_user_attr("sampler_seed", self.sampler_seed)
        params = suggest(trial, self.settings.search_space)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        wandb_config = self.settings.config["wandb"]
        run = TrialRun(
            project=wandb_config["project"],
            entity=wandb_config["entity"],
            mode=wandb_config["mode"],
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
        best = best_complete_trial(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        if outcome.model is not None and self.best_model_info is not None and beats(outcome.value, trial.number, best):
            # Written now, while the model is in memory; promoted to best_model only once Optuna has
            # stored the trial as COMPLETE (promote_best_model, after each trial).
            save_trial_model(
                outcome.model,
                self.tokenizer,
                self.paths.best_model,
                {
                    **self.best_model_info,
                    "trial": trial.number,
                    "value": outcome.value,
                    "params": trial.params,
                    "metrics": outcome.metrics,
                    "lora_target_modules": outcome.lora_target_modules,
                    "lora_modules_to_save": outcome.lora_modules_to_save,
                    "precision": outcome.precision,
                    "eval_batch_size": self.setup.eval_batch_size,
                    "fingerprint": trial.study.user_attrs.get("fingerprint"),
                },
            )
        outcome.model = None
        if outcome.qa_predictions is not None:
            write_jsonl_atomic(
                self.paths.predictions_dir / f"trial-{trial.number}.jsonl",
                self._prediction_rows(outcome.qa_predictions),
            )
        run.summary({"objective": outcome.value, "state": "COMPLETE", **outcome.metrics})
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

    def _prediction_rows(self, predictions: list[Any]) -> list[dict[str, Any]]:
        task = self.settings.task
        golds = {row[task.id_column]: row[task.label_column]["text"] for row in self.data.validation_examples}
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


def run_study(
    settings: StudySettings,
    tokenized_dir: Path,
    data_summary: Mapping[str, Any],
    study_dir: Path,
    *,
    threads: int = 1,
    wandb_dir: Path | None = None,
    allow_new_definition: bool = False,
    finalize: bool = True,
) -> optuna.Study:
    """Run (or resume) the study until it holds exactly ``n_trials`` COMPLETE trials; write its trials table.

    Args:
        settings: The study's resolved settings.
        tokenized_dir: Output of the tokenize step.
        data_summary: ``summary.json`` of the subsample (its hashes define the study's data).
        study_dir: ``results/studies/<study_name>``: journal, trials table, predictions.
        threads: CPU threads for torch (the Snakemake job's ``threads``).
        wandb_dir: Where offline W&B runs are written.
        allow_new_definition: Continue a stored study whose definition changed.
        finalize: Write the trials table, best predictions and the W&B summary run (one worker of a
            shared study does this, after all have finished).

    Raises:
        StudyError: too many consecutive failures, a corrupted storage, or a changed definition.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is stored as FAIL first.
    """
    import torch

    from finetune_hpo.preprocess import load_tokenized, load_tokenizer
    from finetune_hpo.training import TrainingSetup, load_base_model

    config = settings.config
    paths = StudyPaths(study_dir)
    storage = open_storage(config["optuna"]["storage"], paths, heartbeat_setting(config))
    definition = study_definition(settings, data_summary)
    study, sampler_seed = open_study(settings, storage, definition, allow_new_definition=allow_new_definition)
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    else:
        fail_interrupted_trials(study)
    n_trials = settings.n_trials
    complete = count_complete(study)
    logger.info(
        "study %s: %d/%d COMPLETE trial(s) stored in %s",
        settings.study_name,
        complete,
        n_trials,
        paths.journal if config["optuna"]["storage"] is None else "the configured RDB storage",
    )
    if complete < n_trials:
        torch.set_num_threads(max(1, threads))
        save_best = bool(config["selection"]["save_best_model"])
        objective = Objective(
            settings=settings,
            setup=TrainingSetup(
                task=settings.task,
                method=settings.method,
                seed=settings.seed,
                eval_batch_size=config["training"]["eval_batch_size"],
                precision=config["training"]["precision"],
                max_oom_retries=config["training"]["max_oom_retries"],
                lora_target_modules=config["model"]["lora_target_modules"],
                lora_modules_to_save=config["model"]["lora_modules_to_save"],
                qa_postprocessing={
                    key: config["model"]["qa"][key] for key in ("n_best", "max_answer_length", "null_score_threshold")
                },
                scratch_dir=paths.scratch,
                keep_model=save_best,
            ),
            base_model=load_base_model(settings.task, settings.model_name_or_path, seed=settings.seed),
            tokenizer=load_tokenizer(settings.model_name_or_path),
            data=load_tokenized(tokenized_dir),
            paths=paths,
            wandb_dir=wandb_dir,
            sampler_seed=sampler_seed,
            best_model_info=best_model_card_info(settings, data_summary) if save_best else None,
        )
        try:
            _optimize_until_complete(
                study,
                objective,
                n_trials,
                config["optuna"]["max_consecutive_failures"],
                paths.trials_progress,
                paths.best_model if save_best else None,
            )
        finally:
            # Every finished trial, with its error, where a failed job does not delete it.
            write_trials_table(study, paths.trials_progress)
    if finalize and config["selection"]["save_best_model"]:
        # Workers promote after each of their trials; this settles the link once all have finished.
        promote_best_model(paths.best_model, study.get_trials(deepcopy=False))
    if finalize:
        # Once per study, by whichever process finalizes it: with several workers, that process ran
        # no trial itself.
        if not study.user_attrs.get("wandb_summary_logged") and log_summary_run(study, settings, wandb_dir):
            study.set_user_attr("wandb_summary_logged", True)
        write_best_predictions(study, paths)
        write_trials_table(study, paths.trials_table)
        shutil.rmtree(paths.scratch, ignore_errors=True)
    return study


def best_model_card_info(settings: StudySettings, data_summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the saved best model records besides its trial: the base model, data and the settings that
    a plain reload needs to score it the way the study did."""
    from finetune_hpo.config import looks_like_local_path

    model = settings.config["model"]
    base = settings.model_name_or_path
    if looks_like_local_path(base) or Path(base).is_dir():
        base = str(Path(base).resolve())  # the adapter must find its base from wherever it is scored
    splits = data_summary["splits"]
    return {
        "study_name": settings.study_name,
        "task": settings.task.name,
        "method": settings.method,
        "metric": settings.task.metric,
        "base_model": base,
        "seed": settings.seed,
        "max_seq_length": model["max_seq_length"],
        "qa": dict(model["qa"]) if not settings.task.is_classification else None,
        "data": {
            "train_size": splits["train"]["size"],
            "train_sha256": splits["train"]["sha256"],
            "selection_size": splits["validation"]["size"],
            "selection_sha256": splits["validation"]["sha256"],
            "selection_ids_sha256": splits["validation"].get("ids_sha256"),
        },
    }


def _optimize_until_complete(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    max_consecutive_failures: int,
    progress_table: Path | None = None,
    best_model_dir: Path | None = None,
    poll_seconds: float = 2.0,
) -> None:
    """Run trials until the study holds ``n_trials`` COMPLETE ones, sharing the count with other workers."""
    import torch

    from finetune_hpo.training import stop_requested

    progress = ProgressLogger(n_trials)
    finished: list[FrozenTrial] = []

    def promote(study: optuna.Study, _trial: FrozenTrial) -> None:
        # After Optuna stored the trial's state: a saved model becomes best_model only if COMPLETE.
        if best_model_dir is not None:
            promote_best_model(best_model_dir, study.get_trials(deepcopy=False))

    consecutive_failures = 0
    with sigterm_as_interrupt():
        while (complete := count_complete(study)) < n_trials:
            running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
            if complete + running >= n_trials:
                # Other workers hold the remaining slots: wait in case one of them fails or dies
                # (a dead worker's trial turns stale after the heartbeat grace period and is retried).
                # (A no-op for storages without heartbeats.)
                optuna.storages.fail_stale_trials(study)
                time.sleep(poll_seconds)
                continue
            # One trial per call: the count is checked before every trial, never an 11th.
            study.optimize(
                objective,
                n_trials=1,
                catch=(Exception,),
                callbacks=[progress, lambda _study, trial: finished.append(trial), promote],
                # A full collection costs ~0.1 s: worth it to hand a trial's GPU memory back, not on a CPU.
                gc_after_trial=torch.cuda.is_available(),
            )
            if progress_table is not None:
                write_trials_table(study, progress_table)
            if stop_requested.is_set():  # the interrupt was swallowed between two trials
                raise KeyboardInterrupt("stop requested (SIGTERM)")
            last = finished[-1]
            if last.state == TrialState.FAIL:
                consecutive_failures += 1
                if consecutive_failures >= max_consecutive_failures:
                    raise StudyError(
                        f"study {study.study_name}: {consecutive_failures} trials failed in a row "
                        f"(last: {last.user_attrs.get('error', 'see the log')}; every trial's error is in "
                        f"{progress_table}). Fix the cause and rerun; the "
                        f"{count_complete(study)} COMPLETE trial(s) are kept. The limit is "
                        "optuna.max_consecutive_failures."
                    )
            elif not last.user_attrs.get("surplus"):
                consecutive_failures = 0


def log_summary_run(study: optuna.Study, settings: StudySettings, wandb_dir: Path | None) -> bool:
    """A W&B run for the whole study: trials table, importances, best. Returns whether it was logged."""
    from finetune_hpo.report import parameter_importances
    from finetune_hpo.tracking import log_study_summary

    wandb_config = settings.config["wandb"]
    if wandb_config["mode"] == "disabled" or count_complete(study) == 0:
        return False
    best = best_complete_trial(study.get_trials(deepcopy=False))
    log_study_summary(
        project=wandb_config["project"],
        entity=wandb_config["entity"],
        mode=wandb_config["mode"],
        study_name=settings.study_name,
        rows=trials_table_rows(study),
        best={"number": best.number, "value": best.value, **best.params},
        importances=parameter_importances(study)[0],
        directory=wandb_dir,
    )
    return True


def write_best_predictions(study: optuna.Study, paths: StudyPaths) -> None:
    """QA: keep the best trial's validation predictions beside the trials table, for error analysis."""
    if count_complete(study) == 0:
        return
    best = best_complete_trial(study.get_trials(deepcopy=False))
    source = paths.predictions_dir / f"trial-{best.number}.jsonl"
    if source.is_file():
        write_text_atomic(paths.best_predictions, source.read_text())
