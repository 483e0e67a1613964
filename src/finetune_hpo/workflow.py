"""Adapters from Snakemake's ``script:`` object to the typed package functions, one per rule.

Each adapter sends logging to the rule's log file (and the terminal), turns the errors a user can cause
into one clear line and a non-zero exit, and leaves everything else to the package.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from finetune_hpo.config import ConfigError, study_settings
from finetune_hpo.data import DataError
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.tasks import TASKS

logger = logging.getLogger("finetune_hpo")

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, FileNotFoundError, OSError)


def configure_logging(log_file: str | Path | None = None, level: int = logging.INFO) -> None:
    """Log to stderr and, when given, to ``log_file`` (the rule's log), with timestamps."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True
    )
    # Libraries stay at warnings: the rule's log should read as the study's story.
    for noisy in ("transformers", "datasets", "optuna", "peft", "wandb", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def rule_context(smk: Any) -> Iterator[None]:
    """Logging for the job, and one clear line (not a traceback) for errors a user can fix."""
    from finetune_hpo.evaluation import EvaluationError
    from finetune_hpo.export import ExportError
    from finetune_hpo.study import StudyError

    configure_logging(smk.log[0] if smk.log else None)
    try:
        yield
    except (*USER_ERRORS, StudyError, ExportError, EvaluationError) as err:
        logger.error("%s", err)
        sys.exit(1)
    except KeyboardInterrupt:
        logger.error("interrupted; finished trials are kept in the study's storage, rerun to resume")
        sys.exit(130)


def _threads(smk: Any) -> int:
    return int(getattr(smk, "threads", 1) or 1)


def generate_demo_data(smk: Any) -> None:
    from finetune_hpo.demo import generate_task_data

    with rule_context(smk):
        examples = smk.params.examples
        generate_task_data(
            smk.wildcards.task,
            Path(smk.output.train).parent,
            examples["train"],
            examples["validation"],
            smk.params.seed,
        )


def write_demo_corpus(smk: Any) -> None:
    from finetune_hpo.demo import write_corpus

    with rule_context(smk):
        write_corpus(Path(smk.output.corpus), n_sentences=20000, seed=smk.params.seed)


def build_demo_model(smk: Any) -> None:
    from finetune_hpo.demo import build_tiny_model

    with rule_context(smk):
        info = build_tiny_model(
            Path(smk.input.corpus),
            Path(smk.output.model),
            seed=smk.params.seed,
            pretrain_steps=smk.params.pretrain_steps,
            threads=_threads(smk),
        )
        logger.info("tiny model: %s", info)


def subsample_dataset(smk: Any) -> None:
    from finetune_hpo.data import load_splits, subsample, write_subsample

    with rule_context(smk):
        task = TASKS[smk.wildcards.task]
        task_config = smk.params.task_config
        splits = load_splits(task, task_config.get("data_files"))
        drawn = subsample(
            task,
            splits,
            task_config["train_size"],
            task_config["validation_fraction"],
            smk.params.seed,
            confirmation_max_rows=smk.params.confirmation_max_rows,
        )
        summary = write_subsample(task, drawn, Path(smk.output.summary).parent, smk.params.seed)
        logger.info("%s: %s", task.name, json.dumps(summary["splits"]))


def tokenize_dataset(smk: Any) -> None:
    from finetune_hpo.preprocess import load_tokenizer, tokenize_task
    from finetune_hpo.qa import QAWindowing

    with rule_context(smk):
        task = TASKS[smk.wildcards.task]
        model = smk.params.model
        tokenizer = load_tokenizer(model["name_or_path"])
        summary = tokenize_task(
            task,
            Path(smk.input.train).parent,
            tokenizer,
            Path(smk.output.tokenized),
            max_seq_length=model["max_seq_length"],
            qa_windowing=QAWindowing(model["qa"]["max_seq_length"], model["qa"]["doc_stride"]),
        )
        logger.info("%s: %s", task.name, json.dumps(summary["splits"]))


def run_study(smk: Any) -> None:
    from finetune_hpo.study import run_study as run

    with rule_context(smk):
        claim_gpu()  # before anything imports torch: it pins this job to one free GPU of the host
        settings = study_settings(smk.config, smk.wildcards.task, smk.wildcards.method)
        data_summary = json.loads(Path(smk.input.summary).read_text())
        run(
            settings,
            Path(smk.input.tokenized),
            data_summary,
            Path(smk.params.study_dir),
            threads=_threads(smk),
            wandb_dir=Path("results") / "wandb",
            # A worker job of a shared study leaves the table (and the W&B summary) to rule run_study.
            finalize=hasattr(smk.output, "trials"),
        )


def score_best_model(smk: Any) -> None:
    from finetune_hpo.evaluation import write_scores

    with rule_context(smk):
        claim_gpu()  # before torch starts: one GPU per job, as for the studies
        write_scores(
            Path(smk.params.model),
            [Path(smk.input.selection), Path(smk.input.confirmation)],
            Path(smk.output.scores),
            task_name=smk.wildcards.task,
        )


def export_best_config(smk: Any) -> None:
    with rule_context(smk):
        settings = study_settings(smk.config, smk.wildcards.task, smk.wildcards.method)
        scores = Path(smk.input.scores) if smk.input.get("scores") else None
        export_study(settings, Path(smk.params.study_dir), Path(smk.input.summary), Path(smk.output.optimal), scores)


def export_study(
    settings: Any, study_dir: Path, summary_path: Path, out_path: Path, scores_path: Path | None = None
) -> dict[str, Any]:
    """Load a study from its storage and export its best configuration (with the best model's scores)."""
    import optuna

    from finetune_hpo.export import export_best_config as export
    from finetune_hpo.export import redact_url
    from finetune_hpo.study import StudyError, StudyPaths, open_storage, resolve_storage_url

    paths = StudyPaths(study_dir)
    storage_setting = settings.config["optuna"]["storage"]
    if storage_setting is None and not paths.journal.is_file():
        raise StudyError(f"no study storage at {paths.journal}; run rule run_study first")
    storage = open_storage(storage_setting, paths)
    try:
        study = optuna.load_study(study_name=settings.study_name, storage=storage)
    except KeyError as err:
        raise StudyError(f"study {settings.study_name} is not in its storage; run rule run_study first") from err
    url = resolve_storage_url(storage_setting)
    label = redact_url(url) if url else str(paths.journal)
    scores = json.loads(scores_path.read_text()) if scores_path is not None else None
    return export(study, settings, json.loads(summary_path.read_text()), out_path, label, scores)


def check_phase1(smk: Any) -> None:
    from finetune_hpo.config import planned_tasks
    from finetune_hpo.report import render_terminal, review_phase1, write_summary

    with rule_context(smk):
        reviews = review_phase1(smk.config, planned_tasks(smk.config), Path("results"), Path("analysis"))
        write_summary(reviews, Path(smk.output.markdown), Path(smk.output.csv))
        logger.info("Phase 1 review (%s):\n%s", smk.output.markdown, render_terminal(reviews))
        failed = [review.study_name for review in reviews if review.failed]
        if failed:
            raise ConfigError(f"Phase 1 check failed for {', '.join(failed)}; see {smk.output.markdown}")


def _load_study(config: Any, study_name: str, study_dir: Path) -> Any:
    import optuna

    from finetune_hpo.study import StudyPaths, open_storage

    return optuna.load_study(
        study_name=study_name, storage=open_storage(config["optuna"]["storage"], StudyPaths(study_dir))
    )


def plot_study(smk: Any) -> None:
    from finetune_hpo.plots import plot_study as plot

    with rule_context(smk):
        study_name = f"{smk.wildcards.task}_{smk.wildcards.method}"
        paths = plot(_load_study(smk.config, study_name, Path(smk.params.study_dir)), Path(smk.output.history).parent)
        logger.info("%s: %s", study_name, ", ".join(str(path) for path in paths.values()))


def plot_lora_vs_full(smk: Any) -> None:
    from finetune_hpo.config import planned_tasks
    from finetune_hpo.plots import plot_lora_vs_full as plot
    from finetune_hpo.report import review_phase1

    with rule_context(smk):
        reviews = review_phase1(smk.config, planned_tasks(smk.config), Path("results"), Path("analysis"))
        plot(reviews, Path(smk.output.figure))
