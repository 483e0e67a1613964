"""The study loop: run (or resume) one Optuna study until it holds exactly ``n_trials`` COMPLETE trials.

However often it was interrupted: trials left RUNNING by a killed process are marked FAIL on restart,
SIGTERM ends the running trial as FAIL, one trial runs per ``optimize`` call so the count is checked
before every trial (also across workers sharing an RDB), and repeated failures stop the study with the
cause. The pieces live beside it: storage, definition, objective, progress, trial_records.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from finetune_hpo.best_model import best_complete_trial, best_model_card_info, promote_best_model
from finetune_hpo.data import confirmation_rows_sha256
from finetune_hpo.definition import open_study, study_definition
from finetune_hpo.importances import parameter_importances
from finetune_hpo.models import load_base_model
from finetune_hpo.objective import Objective
from finetune_hpo.preprocess import load_tokenized, load_tokenizer
from finetune_hpo.progress import ProgressLogger, count_complete
from finetune_hpo.runtime import effective_precision, frozen_for_garbage_collection
from finetune_hpo.settings import StudySettings
from finetune_hpo.signals import raise_if_stop_requested, sigterm_as_interrupt
from finetune_hpo.storage import StudyError, StudyPaths, fail_interrupted_trials, open_storage
from finetune_hpo.tracking import log_study_summary
from finetune_hpo.training import TrainingSetup
from finetune_hpo.transfer import study_portfolio
from finetune_hpo.trial_records import trials_table_rows, write_best_predictions, write_trials_table

logger = logging.getLogger(__name__)


def run_study(
    settings: StudySettings,
    tokenized_dir: Path,
    data_summary: Mapping[str, Any],
    study_dir: Path,
    *,
    threads: int = 1,
    wandb_dir: Path | None = None,
    allow_new_definition: bool = False,
    trials_table: Path | None = None,
    transfer_sources: Sequence[Path] = (),
) -> optuna.Study:
    """Rule run_study: run (or resume) the study to exactly ``n_trials`` COMPLETE trials, then finalize it
    (:func:`finalize_study`). With worker jobs (``optuna.workers_per_study > 1``) they have run the trials and
    this only finalizes.

    Args:
        settings: The study's resolved settings.
        tokenized_dir: Output of the tokenize step.
        data_summary: ``summary.json`` of the subsample (its hashes define the study's data).
        study_dir: ``results/studies/<study_name>``: journal, trials table, predictions.
        threads: CPU threads for torch (the Snakemake job's ``threads``).
        wandb_dir: Where offline W&B runs are written.
        allow_new_definition: Continue a stored study whose definition changed.
        trials_table: Where the trials table goes (the rule's output); default ``<study_dir>/trials.csv``.
        transfer_sources: The trials tables of the finished studies this one starts from
            (``transfer.sources``, in that order).

    Raises:
        StudyError: too many consecutive failures, a corrupted storage, or a changed definition.
        KeyboardInterrupt: Ctrl-C or SIGTERM; the running trial is stored as FAIL first.
    """
    study, settings = run_study_worker(
        settings,
        tokenized_dir,
        data_summary,
        study_dir,
        threads=threads,
        wandb_dir=wandb_dir,
        allow_new_definition=allow_new_definition,
        transfer_sources=transfer_sources,
    )
    finalize_study(study, settings, StudyPaths(study_dir), wandb_dir=wandb_dir, trials_table=trials_table)
    return study


def run_study_worker(
    settings: StudySettings,
    tokenized_dir: Path,
    data_summary: Mapping[str, Any],
    study_dir: Path,
    *,
    threads: int = 1,
    wandb_dir: Path | None = None,
    allow_new_definition: bool = False,
    transfer_sources: Sequence[Path] = (),
) -> tuple[optuna.Study, StudySettings]:
    """Rule run_study_worker (and the first half of :func:`run_study`): run trials until the study, shared
    with any other workers, holds ``n_trials`` COMPLETE ones; every finished trial goes to the progress
    table, where a failed job does not delete it.

    Returns:
        The study, and its settings with the precision resolved on this machine.
    """
    # Over 60 lines: the steps of one worker in their order (open, define, resume, run, record), each a call.
    paths = StudyPaths(study_dir)
    storage = open_storage(settings.storage.url, paths, settings.storage.heartbeat)
    # One precision for every trial of this process, and the one the study's definition records.
    settings = replace(
        settings, training=replace(settings.training, precision=effective_precision(settings.training.precision))
    )
    # The configurations the study starts from, read from its finished source studies; part of its definition.
    portfolio = study_portfolio(settings, transfer_sources)
    definition = study_definition(settings, data_summary, precision=settings.training.precision, portfolio=portfolio)
    study, sampler_seed = open_study(
        settings, storage, definition, allow_new_definition=allow_new_definition, portfolio=portfolio
    )
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    else:
        fail_interrupted_trials(study)
    complete = count_complete(study)
    logger.info(
        "study %s: %d/%d COMPLETE trial(s) stored in %s",
        settings.study_name,
        complete,
        settings.n_trials,
        paths.journal if settings.storage.url is None else "the configured RDB storage",
    )
    if complete >= settings.n_trials:
        return study, settings
    torch.set_num_threads(max(1, threads))
    objective = _objective(settings, tokenized_dir, data_summary, paths, wandb_dir, sampler_seed)
    try:
        with frozen_for_garbage_collection():
            _optimize_until_complete(
                study,
                objective,
                settings.n_trials,
                settings.max_consecutive_failures,
                paths.trials_progress,
                paths.best_model if settings.selection.save_best_model else None,
                settings.selection.models_kept,
            )
    except KeyboardInterrupt:
        if not isinstance(storage, optuna.storages.RDBStorage):
            # A signal that lands between Optuna creating a trial and running it leaves the trial RUNNING;
            # with a single-writer storage every RUNNING trial is this process's.
            fail_interrupted_trials(study)
        raise
    finally:
        # Every finished trial, with its error, where a failed job does not delete it.
        write_trials_table(study, paths.trials_progress)
    return study, settings


def _objective(
    settings: StudySettings,
    tokenized_dir: Path,
    data_summary: Mapping[str, Any],
    paths: StudyPaths,
    wandb_dir: Path | None,
    sampler_seed: int,
) -> Objective:
    """The study's objective, with the data, tokenizer and base weights every trial of this process shares."""
    save_best = settings.selection.save_best_model
    return Objective(
        settings=settings,
        setup=TrainingSetup.from_settings(
            settings, paths.scratch, keep_model=save_best, score_confirmation=settings.selection.confirms
        ),
        base_model=load_base_model(settings.task, settings.model_name_or_path, seed=settings.seed),
        tokenizer=load_tokenizer(settings.model_name_or_path),
        data=load_tokenized(tokenized_dir),
        paths=paths,
        wandb_dir=wandb_dir,
        sampler_seed=sampler_seed,
        best_model_info=best_model_card_info(settings, data_summary) if save_best else None,
        confirmation_sha256=confirmation_rows_sha256(data_summary),
    )


def finalize_study(
    study: optuna.Study,
    settings: StudySettings,
    paths: StudyPaths,
    *,
    wandb_dir: Path | None = None,
    trials_table: Path | None = None,
) -> None:
    """Once all trials are in: point ``best_model`` at the best trial's model (workers promote after each of
    their trials; this settles it), log the study's W&B summary run once, keep the best trial's predictions
    and write the trials table."""
    if settings.selection.save_best_model:
        promote_best_model(paths.best_model, study.get_trials(deepcopy=False), settings.selection.models_kept)
    # Once per study, by whichever process finalizes it: with several workers, that process ran no trial.
    if not study.user_attrs.get("wandb_summary_logged") and log_summary_run(study, settings, wandb_dir):
        study.set_user_attr("wandb_summary_logged", True)
    best = best_complete_trial(study.get_trials(deepcopy=False))
    write_best_predictions(paths, None if best is None else best.number)
    write_trials_table(study, trials_table or paths.trials_table)
    shutil.rmtree(paths.scratch, ignore_errors=True)


def _optimize_until_complete(
    study: optuna.Study,
    objective: Objective,
    n_trials: int,
    max_consecutive_failures: int,
    progress_table: Path | None = None,
    best_model_dir: Path | None = None,
    models_kept: int = 1,
    poll_seconds: float = 2.0,
) -> None:
    """Run trials until the study holds ``n_trials`` COMPLETE ones, sharing the count with other workers."""
    progress = ProgressLogger(n_trials)
    finished: list[FrozenTrial] = []

    def promote(study: optuna.Study, _trial: FrozenTrial) -> None:
        # After Optuna stored the trial's state: a saved model becomes best_model only if COMPLETE.
        if best_model_dir is not None:
            promote_best_model(best_model_dir, study.get_trials(deepcopy=False), models_kept)

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
            raise_if_stop_requested()
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
    if settings.wandb.mode == "disabled" or count_complete(study) == 0:
        return False
    best = best_complete_trial(study.get_trials(deepcopy=False))
    log_study_summary(
        project=settings.wandb.project,
        entity=settings.wandb.entity,
        mode=settings.wandb.mode,
        study_name=settings.study_name,
        rows=trials_table_rows(study),
        best={"number": best.number, "value": best.value, **best.params},
        importances=parameter_importances(study)[0],
        directory=wandb_dir,
    )
    return True
