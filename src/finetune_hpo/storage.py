"""Where a study lives: its files, the Optuna storage (a journal per study, or an RDB shared by workers),
repair of a journal cut by a kill, and loading a stored study for the export, the review and the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from finetune_hpo.best_model import BEST_MODEL_DIR
from finetune_hpo.settings import StorageSettings

logger = logging.getLogger(__name__)

JOURNAL_NAME = "optuna.journal"
TRIALS_TABLE_NAME = "trials.csv"


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

    def trial_predictions(self, trial_number: int, *, retrained: bool = False) -> Path:
        """A trial's selection-set predictions; ``retrained``: those of the confirmation stage's retraining
        of the trial (its saved model, when the study did not keep the trial's own)."""
        return self.predictions_dir / f"trial-{trial_number}{'-retrained' if retrained else ''}.jsonl"

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
    def confirmation(self) -> Path:
        """The confirmation stage's summary (rule confirm_top_trials' output)."""
        return self.root / "confirmation.json"

    @property
    def trials_progress(self) -> Path:
        """The trials table as of the last finished trial: not a Snakemake output, so a failed job keeps it."""
        return self.root / "trials_progress.csv"


def describe_storage(storage: StorageSettings, paths: StudyPaths) -> str:
    """Where the study lives, for logs and the export: the journal path, or the URL without password."""
    url = resolve_storage_url(storage.url)
    return redact_url(url) if url else str(paths.journal)


def load_stored_study(storage: StorageSettings, study_name: str, study_dir: Path) -> optuna.Study:
    """An existing study, read from its storage (export, review, figures, CLI).

    Raises:
        StudyError: no storage or no such study in it (names the rule that writes it).
    """
    paths = StudyPaths(study_dir)
    if storage.url is None and not paths.journal.is_file():
        raise StudyError(f"no study storage at {paths.journal}; run rule run_study first")
    try:
        return optuna.load_study(study_name=study_name, storage=open_storage(storage.url, paths))
    except KeyError as err:
        # Also while a journal is being created: the file exists before the study is written to it.
        raise StudyError(f"study {study_name} is not in its storage; run rule run_study first") from err


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
            raise StudyError(f"optuna.storage {redact_url(url)} needs a database driver: {err}") from err
        except Exception as err:  # sqlalchemy's OperationalError and friends: say which server
            if attempt == attempts or "duplicate key" not in str(err):
                raise StudyError(f"cannot open optuna.storage {redact_url(url)}: {str(err).splitlines()[0]}") from err
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")


def redact_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1***@", url)


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
