"""Weights & Biases logging: one run per trial (grouped by study), never allowed to fail a trial, and made by
a background thread, so that W&B's start and finish stay off the trial's time.

We open and finish a run per trial ourselves: the Trainer's W&B callback would reuse one run for every
trial of the process. Every W&B call of the process goes, in order, to one thread (:func:`wait_for_runs`
joins it). A trial hands it its run's start, logs, summary and finish and goes on: the run starts while
the trial builds its model and Trainer, and finishes while the next trial is drawn. A new run starts only
once every earlier run has finished, so a kill loses at most the run in flight (W&B keeps nothing of a run
whose process is killed before its finish); a normal exit first finishes every run handed to the thread.
"""

from __future__ import annotations

import logging
import secrets
import string
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# W&B's run ids: 8 base-36 characters (as wandb's own generator draws them).
_RUN_ID_CHARACTERS = string.ascii_lowercase + string.digits
_RUN_ID_LENGTH = 8


class _WandbThread:
    """The one thread that makes this process's W&B calls, in the order they were handed to it.

    A ThreadPoolExecutor's thread is joined when the interpreter exits normally, after the calls already
    handed to it and before atexit handlers (W&B's own teardown among them) run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, call: Callable[[], None]) -> Future:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandb")
            self._pending = [future for future in self._pending if not future.done()]
            try:
                future = self._executor.submit(call)
            except RuntimeError:  # the interpreter is shutting down: no new thread work, so make the call here
                future = Future()
                call()
                future.set_result(None)
            self._pending.append(future)
            return future

    def wait(self) -> None:
        with self._lock:
            pending = list(self._pending)
        wait(pending)


_WANDB_THREAD = _WandbThread()


def wait_for_runs() -> None:
    """Return once every W&B call handed to the background thread so far is made: the runs finished so far
    are in their files (offline) or handed to W&B's service."""
    _WANDB_THREAD.wait()


class TrialRun:
    """A W&B run for one trial. Its calls are made by the background thread; a failing call is logged and
    the run's other calls are still made, so one W&B error loses only that call, and none reaches the trial.

    Creating the run first waits until every earlier run of the process has finished (at once, normally:
    a finish is made while the next trial is drawn), then hands W&B the start and returns.

    Args:
        project: W&B project.
        group: The study name: all trials of a study side by side.
        name: The run's name (``trial-<number>``).
        config: Hyperparameters and study settings.
        mode: ``online``, ``offline`` or ``disabled``.
        entity: W&B entity, or ``None`` for the default.
        directory: Where W&B keeps its files (offline runs wait there for ``wandb sync``).
        job_type: ``trial``, or ``confirmation`` for a confirmation stage's extra seeds.
        save_requirements: Save the environment's ``requirements.txt`` with the run (the summary run's job).
    """

    def __init__(
        self,
        *,
        project: str,
        group: str,
        name: str,
        config: Mapping[str, Any],
        mode: str,
        entity: str | None = None,
        directory: Path | None = None,
        job_type: str = "trial",
        save_requirements: bool = False,
    ) -> None:
        self._run: Any = None
        self._label = f"{group}/{name}"
        self._call_failed = False
        self._started: Future | None = None
        # The id W&B is asked to give the run, known before W&B has started it (the trial records it at once).
        self.planned_id: str | None = None
        if mode == "disabled":
            return
        try:
            # Imported here, in the trial's thread (once per process): a module imported by two threads at
            # once can deadlock on their import locks.
            import wandb
        except ImportError as err:  # pragma: no cover - wandb is a dependency
            logger.warning("W&B run for %s not started (%s); the trial goes on without it", self._label, err)
            return
        self.planned_id = "".join(secrets.choice(_RUN_ID_CHARACTERS) for _ in range(_RUN_ID_LENGTH))
        arguments = {
            "id": self.planned_id,
            "project": project,
            "entity": entity,
            "group": group,
            "name": name,
            "job_type": job_type,
            "config": dict(config),
            "mode": mode,
            "dir": str(directory) if directory else None,
            "reinit": "create_new",
            # W&B freezes the pip environment into every run by default (BENCHMARKS.md section 1, "W&B
            # per trial"). Trials record the library versions themselves; the study's summary run keeps
            # requirements.txt, once per study.
            "settings": wandb.Settings(silent=True, console="off", x_save_requirements=save_requirements),
        }
        wait_for_runs()  # every earlier run finished before this one starts: a kill loses at most this one
        self._started = _WANDB_THREAD.submit(lambda: self._start(wandb, directory, arguments))

    def _start(self, wandb: Any, directory: Path | None, arguments: dict[str, Any]) -> None:
        try:
            if directory is not None:
                Path(directory).mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(**arguments)
        except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
            logger.warning("W&B run for %s not started (%s); the trial goes on without it", self._label, err)
            self._run = None

    @property
    def run_id(self) -> str | None:
        """The id of the run W&B started (waiting for W&B's start when it is still being made); ``None`` when
        W&B is disabled or could not start the run."""
        if self._started is None:
            return None
        wait([self._started])
        return None if self._run is None else self._run.id

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        values = dict(metrics)
        self.apply("log", lambda run: run.log(values, step=step))

    def summary(self, values: Mapping[str, Any]) -> None:
        values = dict(values)
        self.apply("summary", lambda run: run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        self.apply("finish", lambda run: run.finish(exit_code=exit_code))

    def apply(self, what: str, call: Callable[[Any], None]) -> None:
        """Hand ``call(run)`` to the background thread, after the run's earlier calls."""
        if self._started is None:
            return
        _WANDB_THREAD.submit(lambda: self._make(what, call))

    def _make(self, what: str, call: Callable[[Any], None]) -> None:
        if self._run is None:
            return
        try:
            call(self._run)
        except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
            # Warned once per run; the run's other calls are still made (a bad value loses only itself).
            (logger.debug if self._call_failed else logger.warning)(
                "W&B %s failed for %s (%s); the run's other calls go on", what, self._label, err
            )
            self._call_failed = True


def log_study_summary(
    *,
    project: str,
    entity: str | None,
    mode: str,
    study_name: str,
    rows: list[dict[str, Any]],
    best: Mapping[str, Any],
    importances: Mapping[str, float],
    directory: Path | None = None,
) -> str | None:
    """One W&B run per study beside its trial runs: the trials table, importances and the best config.
    Handed to the background thread like a trial's run (:func:`wait_for_runs` waits for its finish).

    Returns:
        The id W&B is asked to give the run, ``None`` when W&B is disabled.
    """
    if mode == "disabled":
        return None
    run = TrialRun(
        project=project,
        entity=entity,
        mode=mode,
        group=study_name,
        name=f"{study_name}-summary",
        save_requirements=True,
        config={"study_name": study_name, **{f"best/{k}": v for k, v in best.items()}},
        directory=directory,
    )

    def log_trials(wandb_run: Any) -> None:
        import wandb

        columns = list(rows[0]) if rows else []
        table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
        wandb_run.log({"trials": table, **{f"importance/{k}": v for k, v in importances.items()}})

    run.apply("trials table", log_trials)
    run.summary({"best_value": best.get("value"), "best_trial": best.get("number")})
    run.finish()
    return run.planned_id
