"""Weights & Biases logging: one run per trial (grouped by study), never allowed to fail a trial.

We open and finish a run per trial ourselves: the Trainer's W&B callback would reuse one run for every
trial of the process.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class TrialRun:
    """A W&B run for one trial; every call is a no-op after the first W&B error.

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
        self.run_id: str | None = None
        if mode == "disabled":
            return
        try:
            import wandb

            if directory is not None:
                Path(directory).mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=project,
                entity=entity,
                group=group,
                name=name,
                job_type=job_type,
                config=dict(config),
                mode=mode,
                dir=str(directory) if directory else None,
                reinit="create_new",
                # W&B freezes the pip environment into every run by default: 0.3 s per run here (0.03 s
                # without), a tenth of a demo trial. Trials record the library versions themselves; the
                # study's summary run keeps requirements.txt, once per study.
                settings=wandb.Settings(silent=True, console="off", x_save_requirements=save_requirements),
            )
            self.run_id = self._run.id
        except Exception as err:  # noqa: BLE001 - W&B must never fail a trial
            logger.warning("W&B run for %s/%s not started (%s); the trial goes on without it", group, name, err)
            self._run = None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        self._call("log", dict(metrics), step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        try:
            self._run.summary.update(dict(values))
        except Exception as err:  # noqa: BLE001
            self._disable(err)

    def finish(self, exit_code: int = 0) -> None:
        self._call("finish", exit_code=exit_code)
        self._run = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            getattr(self._run, method)(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            self._disable(err)

    def _disable(self, err: Exception) -> None:
        logger.warning("W&B call failed (%s); logging to W&B stops for this trial", err)
        self._run = None


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
    """One W&B run per study beside its trial runs: the trials table, importances and the best config."""
    if mode == "disabled":
        return None
    try:
        import wandb
    except ImportError as err:  # pragma: no cover - wandb is a dependency
        logger.warning("W&B study summary not logged (%s)", err)
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
    if run._run is not None:
        try:
            columns = list(rows[0]) if rows else []
            table = wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])
            run._run.log({"trials": table, **{f"importance/{k}": v for k, v in importances.items()}})
        except Exception as err:  # noqa: BLE001 - W&B never fails the study
            run._disable(err)
    run.summary({"best_value": best.get("value"), "best_trial": best.get("number")})
    run.finish()
    return run.run_id
