"""What a study is: its definition and fingerprint (a stored study defined otherwise is refused rather
than mixed), and its creation or resumption with a sampler seeded past the trials already stored."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import optuna
from optuna.distributions import distribution_to_json
from optuna.trial import TrialState

from finetune_hpo.methods import method_spec
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyError
from finetune_hpo.transfer import PortfolioEntry, enqueue_portfolio, portfolio_definition

logger = logging.getLogger(__name__)


def study_definition(
    settings: StudySettings,
    data_summary: Mapping[str, Any],
    precision: str | None = None,
    portfolio: Sequence[PortfolioEntry] = (),
) -> dict[str, Any]:
    """What defines a study: every setting that changes a trial's result. A stored study with other values
    is a different experiment (settings that only change speed or bookkeeping are left out).

    Args:
        precision: The precision the trials really train in on this machine (``training.precision`` with
            ``auto`` resolved); a study resumed on hardware that resolves it otherwise is then refused.
        portfolio: The configurations the study starts from (transfer from finished studies).
    """
    model = settings.model
    adapter = method_spec(settings.method).is_adapter
    return {
        "task": settings.task.name,
        "method": settings.method,
        "metric": settings.task.metric,
        "model": settings.model_name_or_path,
        "search_space": {name: json.loads(distribution_to_json(d)) for name, d in settings.search_space.items()},
        # The confirmation rows are not the study's data: they are scored after it.
        "data_sha256": {split: data_summary["splits"][split]["sha256"] for split in ("train", "validation")},
        "max_seq_length": model.max_seq_length,
        "qa": asdict(model.qa) if not settings.task.is_classification else None,
        # Adapter methods only: where the adapter goes decides what a trial trains.
        "lora_target_modules": _plain(model.lora_target_modules) if adapter else None,
        "lora_modules_to_save": _plain(model.lora_modules_to_save) if adapter else None,
        "precision": precision or settings.training.precision,
        "sampler": {
            "n_startup_trials": settings.sampler.n_startup_trials,
            "multivariate": settings.sampler.multivariate,
            "seed": settings.sampler.seed,
        },
        "pruner": settings.pruner,
        "seed": settings.seed,
        # Only when set, so the fingerprint of a study defined before warm starts existed is unchanged.
        **({"enqueue": [dict(params) for params in settings.enqueue]} if settings.enqueue else {}),
        **({"transfer": portfolio_definition(portfolio)} if portfolio else {}),
    }


def _plain(value: str | tuple[str, ...] | None) -> str | list[str] | None:
    # As the config wrote it (JSON has lists), so a definition stored before typed settings still matches.
    return list(value) if isinstance(value, tuple) else value


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
    portfolio: Sequence[PortfolioEntry] = (),
) -> tuple[optuna.Study, int]:
    """Create or resume the study, with a sampler seeded past the trials already stored.

    Returns:
        The study and the seed its sampler was given in this process (recorded on every trial it runs).

    Raises:
        StudyError: the stored study was defined differently and ``allow_new_definition`` is false.
    """
    study = optuna.create_study(
        study_name=settings.study_name, storage=storage, direction="maximize", load_if_exists=True
    )
    stored = _resolved_legacy_precision(study, study.user_attrs.get("definition"), definition)
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
    if isinstance(storage, optuna.storages.RDBStorage) and settings.storage.workers_per_study > 1:
        seed += os.getpid()
    study.sampler = optuna.samplers.TPESampler(
        n_startup_trials=settings.sampler.n_startup_trials,
        multivariate=settings.sampler.multivariate,
        constant_liar=True,  # a running trial counts as a bad result, so parallel workers spread out
        seed=seed,
    )
    study.pruner = make_pruner(settings.pruner)
    if (settings.enqueue or portfolio) and not study.trials:
        # Warm start, once, when the study is new: the config's configurations, then the portfolio from the
        # source studies, run first and count toward n_trials (and toward TPE's start-up trials).
        for params in settings.enqueue:
            study.enqueue_trial(dict(params), user_attrs={"enqueued": True}, skip_if_exists=True)
        enqueue_portfolio(study, portfolio)
        logger.info(
            "study %s: %d configuration(s) enqueued to run first",
            settings.study_name,
            len(settings.enqueue) + len(portfolio),
        )
    return study, seed


def _resolved_legacy_precision(
    study: optuna.Study, stored: Mapping[str, Any] | None, definition: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    """A definition stored before precision was resolved says ``auto``: it matches the resolved value when
    every finished trial recorded training in it (the machine is the same kind), and differs otherwise."""
    if stored is None or stored.get("precision") != "auto" or definition.get("precision") == "auto":
        return stored
    recorded = {t.user_attrs.get("precision") for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    return {**stored, "precision": definition["precision"]} if recorded <= {definition["precision"]} else stored


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    if name == "median":
        # Never prune before the random start-up trials have given a median to compare with.
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1)
    return optuna.pruners.NopPruner()
