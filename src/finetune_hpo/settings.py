"""Typed settings of one study, built once from the validated config (:func:`finetune_hpo.config.study_settings`).

Everything below the settings constructor reads these fields, never the config mapping, so the config's
shape lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna.distributions import BaseDistribution

from finetune_hpo.tasks import TaskSpec


@dataclass(frozen=True)
class SamplerSettings:
    """TPE of the study.

    Args:
        n_startup_trials: Random trials before TPE models the results.
        multivariate: Model the hyperparameters jointly.
        seed: The sampler's base seed (the config's, or the top-level seed).
    """

    n_startup_trials: int
    multivariate: bool
    seed: int


@dataclass(frozen=True)
class StorageSettings:
    """Where the study lives and how workers share it.

    Args:
        url: ``None`` (a journal file per study), an RDB URL, or ``env:VAR``.
        workers_per_study: Worker jobs per study (> 1 needs an RDB).
        heartbeat_interval: RDB only: seconds between a worker's heartbeats.
        heartbeat_grace_period: RDB only: silence after which a worker's trial is stale.
    """

    url: str | None = None
    workers_per_study: int = 1
    heartbeat_interval: int = 60
    heartbeat_grace_period: int = 180

    @property
    def heartbeat(self) -> tuple[int, int]:
        return self.heartbeat_interval, self.heartbeat_grace_period


@dataclass(frozen=True)
class WandbSettings:
    """Weights & Biases logging: ``mode`` is ``online``, ``offline`` or ``disabled``."""

    project: str = "NLP-Phase1-Optuna"
    entity: str | None = None
    mode: str = "offline"


@dataclass(frozen=True)
class QASettings:
    """SQuAD v2 windowing and postprocessing.

    Args:
        max_seq_length: Tokens per window.
        doc_stride: Tokens shared by consecutive windows.
        n_best: Start and end candidates per window.
        max_answer_length: Longest answer, in tokens.
        null_score_threshold: The answer is empty when null score - best span score exceeds this.
    """

    max_seq_length: int = 384
    doc_stride: int = 128
    n_best: int = 20
    max_answer_length: int = 30
    null_score_threshold: float = 0.0

    @property
    def postprocessing(self) -> dict[str, Any]:
        return {
            "n_best": self.n_best,
            "max_answer_length": self.max_answer_length,
            "null_score_threshold": self.null_score_threshold,
        }


@dataclass(frozen=True)
class ModelSettings:
    """The base model and what is adapted.

    Args:
        name_or_path: Hub id or local directory.
        max_seq_length: Token limit of classification inputs.
        lora_target_modules: Modules LoRA adapts (names, or a regex); ``None`` detects them.
        lora_modules_to_save: Modules trained in full besides the head; ``None`` detects them.
        qa: SQuAD v2 settings.
    """

    name_or_path: str
    max_seq_length: int = 128
    lora_target_modules: str | tuple[str, ...] | None = None
    lora_modules_to_save: tuple[str, ...] | None = None
    qa: QASettings = field(default_factory=QASettings)


@dataclass(frozen=True)
class TrainingSettings:
    """Fixed training settings: evaluation batch, precision, OOM retries."""

    eval_batch_size: int = 64
    precision: str = "auto"
    max_oom_retries: int = 3


@dataclass(frozen=True)
class SelectionSettings:
    """How the winner is chosen and checked beyond the trials that chose it.

    Args:
        save_best_model: Keep the winner's model and re-score it with plain transformers/peft code.
        confirmation_max_rows: Held-out validation rows that score the winner (the confirmation set).
        confirm_top_k: Distinct configurations retrained with several seeds after the study (0: off).
        confirm_seeds: Seeds per confirmed configuration, the study's own run counting as one.
    """

    save_best_model: bool = True
    confirmation_max_rows: int = 2000
    confirm_top_k: int = 0
    confirm_seeds: int = 3

    @property
    def confirms(self) -> bool:
        """Whether a confirmation stage follows the study."""
        return self.confirm_top_k > 0

    @property
    def models_kept(self) -> int:
        """Saved models kept while the study runs: the best trial's, or every confirmation candidate's."""
        return max(1, self.confirm_top_k)


@dataclass(frozen=True)
class DataSettings:
    """The task's data: tier size, selection share, local files (``None``: the hub), and the column whose
    groups the held-out rows are drawn by (``None``: the task's own)."""

    train_size: int
    validation_fraction: float
    data_files: Mapping[str, str] | None = None
    group_column: str | None = None


@dataclass(frozen=True)
class TransferSettings:
    """Which finished studies a study starts from (``transfer`` in the config).

    Args:
        sources: Tasks whose study of the same method feeds this one: their best COMPLETE trials, by rank,
            interleaved across the sources, run first as a portfolio and count toward ``n_trials``.
        portfolio_size: Configurations in the portfolio (0: none).
    """

    sources: tuple[str, ...] = ()
    portfolio_size: int = 0

    @property
    def on(self) -> bool:
        return bool(self.sources) and self.portfolio_size > 0


@dataclass(frozen=True)
class StudySettings:
    """Everything that defines and runs one study (task x method).

    Args:
        task: The task's registry entry.
        method: ``full_finetune`` or ``lora``.
        study_name: ``<task>_<method>``, the Optuna study name and the W&B group.
        search_space: Hyperparameter name -> Optuna distribution, overrides applied.
        seed: Seed of subsampling, initialisation and training.
        n_trials: COMPLETE trials the study runs to.
        max_consecutive_failures: Failed trials in a row that stop the study.
        pruner: ``none``, ``median`` or ``hyperband``.
        sampler, storage, wandb, model, training, selection, data: the sections of the config.
        enqueue: Configurations run first (warm start), each restricted to this study's space.
        transfer: The finished studies of other tasks this study starts from.
    """

    task: TaskSpec
    method: str
    study_name: str
    search_space: dict[str, BaseDistribution]
    seed: int
    n_trials: int
    max_consecutive_failures: int
    pruner: str
    sampler: SamplerSettings
    storage: StorageSettings
    wandb: WandbSettings
    model: ModelSettings
    training: TrainingSettings
    selection: SelectionSettings
    data: DataSettings
    enqueue: tuple[Mapping[str, Any], ...] = ()
    transfer: TransferSettings = field(default_factory=TransferSettings)

    @property
    def model_name_or_path(self) -> str:
        return self.model.name_or_path

    @property
    def sampler_seed(self) -> int:
        return self.sampler.seed

    @property
    def data_source(self) -> str:
        """Where the task's rows come from, for the export."""
        if self.data.data_files:
            return "local files"
        return f"hub:{self.task.hub_path}" + (f"/{self.task.hub_config}" if self.task.hub_config else "")


def build_study_settings(
    config: Mapping[str, Any], task: TaskSpec, method: str, search_space: dict[str, BaseDistribution]
) -> StudySettings:
    """Read the validated ``config`` into :class:`StudySettings` (the only place that knows its keys)."""
    optuna_config, model = config["optuna"], config["model"]
    sampler = optuna_config["sampler"]
    task_config = config["tasks"][task.name]
    targets = model["lora_target_modules"]
    return StudySettings(
        task=task,
        method=method,
        study_name=f"{task.name}_{method}",
        search_space=search_space,
        seed=int(config["seed"]),
        n_trials=int(optuna_config["n_trials"]),
        max_consecutive_failures=int(optuna_config["max_consecutive_failures"]),
        pruner=str(optuna_config["pruner"]),
        sampler=SamplerSettings(
            n_startup_trials=int(sampler["n_startup_trials"]),
            multivariate=bool(sampler["multivariate"]),
            seed=int(config["seed"] if sampler["seed"] is None else sampler["seed"]),
        ),
        storage=StorageSettings(
            url=optuna_config["storage"],
            workers_per_study=int(optuna_config["workers_per_study"]),
            heartbeat_interval=int(optuna_config["heartbeat_interval"]),
            heartbeat_grace_period=int(optuna_config["heartbeat_grace_period"]),
        ),
        wandb=WandbSettings(**config["wandb"]),
        model=ModelSettings(
            name_or_path=str(model["name_or_path"]),
            max_seq_length=int(model["max_seq_length"]),
            lora_target_modules=targets if targets is None or isinstance(targets, str) else tuple(targets),
            lora_modules_to_save=(
                None if model["lora_modules_to_save"] is None else tuple(model["lora_modules_to_save"])
            ),
            qa=QASettings(**model["qa"]),
        ),
        training=TrainingSettings(**config["training"]),
        # The task's selection entries (confirmation on for the small selection sets) replace the global ones.
        selection=SelectionSettings(**{**config["selection"], **task_config.get("selection", {})}),
        enqueue=_enqueued(optuna_config.get("enqueue", []), search_space),
        transfer=TransferSettings(
            sources=tuple(configured_sources(config, task.name)),
            portfolio_size=int(config["transfer"]["portfolio_size"]),
        ),
        data=DataSettings(
            train_size=int(task_config["train_size"]),
            validation_fraction=float(task_config["validation_fraction"]),
            data_files=task_config.get("data_files"),
            group_column=task_config.get("group_column"),
        ),
    )


def configured_sources(config: Mapping[str, Any], target: str) -> list[str]:
    """The tasks ``target``'s study starts from: its ``transfer.sources`` entry, less the tasks not configured
    (and none when ``target`` itself is not)."""
    if target not in config["tasks"]:
        return []
    return [task for task in config["transfer"]["sources"].get(target, []) if task in config["tasks"]]


def _enqueued(
    configurations: list[Mapping[str, Any]], search_space: dict[str, BaseDistribution]
) -> tuple[dict[str, Any], ...]:
    """The warm-start configurations for one study: restricted to its space (an entry left empty, such as a
    LoRA-only one for full fine-tuning, is dropped) and typed by its distributions (YAML reads ``2e-5`` as
    a string). Values outside the space are left as written for ``config.check_config`` to name."""
    studies = []
    for params in configurations:
        typed = {}
        for name, value in params.items():
            if name not in search_space:
                continue
            distribution = search_space[name]
            try:
                typed[name] = distribution.to_external_repr(distribution.to_internal_repr(value))
            except (TypeError, ValueError):
                typed[name] = value
        if typed:
            studies.append(typed)
    return tuple(studies)
