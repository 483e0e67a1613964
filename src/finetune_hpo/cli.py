"""``finetune-hpo``: the package's command line, for the steps a researcher runs by hand.

The Snakemake rules' scripts (``workflow/scripts/``) call the same functions; this CLI is for checking a
config, running, exporting or rescoring one study outside Snakemake, and generating the demo data. It
reads the config Snakemake reads for the same ``--profile``/``--directory``/``--configfile``
(:func:`finetune_hpo.config_sources.workflow_config_sources`) and finds files where the workflow writes them
(:class:`ResultsLayout`). Each command's arguments are in :mod:`finetune_hpo.cli_parser`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from finetune_hpo.cli_parser import build_parser
from finetune_hpo.config import ConfigError, method_search_space, planned_studies, study_settings
from finetune_hpo.config_sources import ConfigSources, load_config, workflow_config_sources
from finetune_hpo.data import DataError
from finetune_hpo.demo import GENERATORS, generate_task_data
from finetune_hpo.evaluation import write_scores
from finetune_hpo.export import export_study
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job
from finetune_hpo.review import StudyFiles, check_phase1
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyPaths
from finetune_hpo.transfer import portfolio_from_files, render_enqueue

logger = logging.getLogger("finetune_hpo")


@dataclass(frozen=True)
class ResultsLayout:
    """Where the workflow writes (the Snakefile's output paths), under a results and an analysis folder."""

    results: Path = Path("results")
    analysis: Path = Path("analysis")

    def data_summary(self, task: str) -> Path:
        return self.results / "data" / task / "summary.json"

    def tokenized(self, task: str) -> Path:
        return self.results / "tokenized" / task

    def study_dir(self, study_name: str) -> Path:
        return self.results / "studies" / study_name

    def trials_table(self, study_name: str) -> Path:
        return self.study_dir(study_name) / "trials.csv"

    def confirmation(self, study_name: str) -> Path:
        return StudyPaths(self.study_dir(study_name)).confirmation

    def best_model_scores(self, study_name: str) -> Path:
        return self.study_dir(study_name) / "best_model_scores.json"

    def optimal(self, study_name: str) -> Path:
        return self.analysis / f"{study_name}_optimal.yaml"

    @property
    def wandb(self) -> Path:
        return self.results / "wandb"


def _parse_overrides(pairs: list[str]) -> dict:
    """``key.sub=value`` pairs (values parsed as YAML) -> a nested dict, like Snakemake's --config."""
    import yaml

    overrides: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE (e.g. optuna.n_trials=3)")
        key, value = pair.split("=", 1)
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return overrides


def config_sources(args: argparse.Namespace) -> ConfigSources:
    """The config files of a command: ``--config`` as given, else those Snakemake reads for the same
    ``--profile``, ``--directory`` and ``--configfile``."""
    sources = workflow_config_sources(
        directory=args.directory,
        profile=args.profile,
        configfiles=args.configfile or (),
        overrides=_parse_overrides(args.set),
    )
    if args.config:
        files = (*args.config, *(args.configfile or ()))
        return ConfigSources(tuple(Path(path) for path in files), sources.overrides, sources.workdir)
    return sources


def _layout(args: argparse.Namespace, sources: ConfigSources) -> ResultsLayout:
    """The results and analysis folders: as given, else the working directory's."""
    return ResultsLayout(
        Path(args.results) if args.results else sources.workdir / "results",
        Path(getattr(args, "analysis", None) or sources.workdir / "analysis"),
    )


def _enter_workdir(sources: ConfigSources, layout: ResultsLayout) -> ResultsLayout:
    """Change into the working directory, as Snakemake does before a job, so the config's relative paths
    (a local model) resolve there; returns ``layout`` with absolute paths."""
    layout = ResultsLayout(layout.results.resolve(), layout.analysis.resolve())
    os.chdir(sources.workdir)
    return layout


def _study_settings(config: dict, task: str, method: str) -> StudySettings:
    """The settings of the study ``task`` x ``method`` of ``config``, or one line naming what it has."""
    if task not in config["tasks"]:
        raise ConfigError(f"--task: {task!r} is not a task of this config; it has {', '.join(config['tasks'])}")
    if method not in config["methods"]:
        raise ConfigError(f"--method: {method!r} is not a method of this config; it has {', '.join(config['methods'])}")
    return study_settings(config, task, method)


def cmd_validate(args: argparse.Namespace) -> None:
    sources = config_sources(args)
    print(sources.describe())
    config = load_config(sources)
    studies = planned_studies(config)
    print(f"valid. {len(studies)} studies planned ({'vm ' + config['vm'] if config['vm'] else 'all tasks'}):")
    for settings in studies:
        print(
            f"  {settings.study_name}: {len(settings.search_space)} hyperparameters, {settings.n_trials} trials, "
            f"train_size {settings.data.train_size}"
            + (
                f", starts from {', '.join(settings.transfer.sources)} "
                f"(a portfolio of {settings.transfer.portfolio_size} configurations, transfer.sources)"
                if settings.transfer.on
                else ""
            )
        )


def cmd_run_study(args: argparse.Namespace) -> None:
    claim_gpu(step="run-study")  # before torch is imported: it pins this study to one free GPU of the host
    from finetune_hpo.study import run_study  # imports torch, so only after the claim

    sources = config_sources(args)
    settings = _study_settings(load_config(sources), args.task, args.method)
    layout = _enter_workdir(sources, _layout(args, sources))
    summary_path, tokenized = layout.data_summary(args.task), layout.tokenized(args.task)
    if not summary_path.is_file() or not tokenized.is_dir():
        raise DataError(
            f"{summary_path} or {tokenized} is missing; prepare the data first: snakemake --profile PROFILE {tokenized}"
        )
    # transfer: the source studies' trials tables where the workflow writes them (they must have finished).
    sources_tables = [layout.trials_table(f"{task}_{settings.method}") for task in settings.transfer.sources]
    missing = [str(path) for path in sources_tables if settings.transfer.on and not path.is_file()]
    if missing:
        raise DataError(
            f"study {settings.study_name} starts from {', '.join(settings.transfer.sources)} (transfer.sources), "
            f"whose trials tables are missing: {', '.join(missing)}; run those studies first"
        )
    run_study(
        settings,
        tokenized,
        json.loads(summary_path.read_text()),
        layout.study_dir(settings.study_name),
        threads=args.threads,
        wandb_dir=layout.wandb,
        allow_new_definition=args.new_study,
        transfer_sources=sources_tables if settings.transfer.on else [],
    )


def cmd_confirm(args: argparse.Namespace) -> None:
    claim_gpu(step="confirm")  # as for run-study: before torch is imported
    from finetune_hpo.confirmation import run_confirmation

    sources = config_sources(args)
    settings = _study_settings(load_config(sources), args.task, args.method)
    layout = _enter_workdir(sources, _layout(args, sources))
    run_confirmation(
        settings,
        layout.tokenized(args.task),
        json.loads(layout.data_summary(args.task).read_text()),
        layout.study_dir(settings.study_name),
        output=layout.confirmation(settings.study_name),
        threads=args.threads,
        wandb_dir=layout.wandb,
    )


def cmd_export(args: argparse.Namespace) -> None:
    sources = config_sources(args)
    settings = _study_settings(load_config(sources), args.task, args.method)
    layout = _layout(args, sources)
    scores = layout.best_model_scores(settings.study_name)
    confirmation = layout.confirmation(settings.study_name)
    export_study(
        settings,
        layout.study_dir(settings.study_name),
        layout.data_summary(args.task),
        Path(args.out) if args.out else layout.optimal(settings.study_name),
        scores if scores.is_file() else None,
        confirmation if settings.selection.confirms else None,
    )


def cmd_check(args: argparse.Namespace) -> None:
    sources = config_sources(args)
    config = load_config(sources)
    layout = _layout(args, sources)
    studies = [
        StudyFiles(
            settings,
            layout.optimal(settings.study_name),
            layout.trials_table(settings.study_name),
            layout.data_summary(settings.task.name),
        )
        for settings in planned_studies(config, args.tasks)
    ]
    if not any(study.optimal.exists() or study.trials_table.exists() for study in studies):
        # Nothing has run here: a table of MISSING rows, written into this folder, would only mislead.
        raise FileNotFoundError(
            f"nothing to review: none of the {len(studies)} planned studies has an export in {layout.analysis}/ "
            f"or a trials table in {layout.results / 'studies'}/; run the workflow first, or point --directory "
            "(or --results and --analysis) at the folder it wrote"
        )
    check_phase1(studies, layout.results / "summary.md", layout.results / "summary.csv", show=print)


def cmd_evaluate(args: argparse.Namespace) -> None:
    claim_gpu(step="evaluate")  # the model goes to the GPU when there is one: the job's own
    out = Path(args.out) if args.out else None
    document = write_scores(
        Path(args.model),
        score_names(args.data),
        out,
        task_name=args.task,
        batch_size=args.batch_size,
        base_model=args.base_model,
    )
    for result in document["scores"].values():
        value = "-" if result["value"] is None else f"{result['value']:.2f}"
        error = "" if result["standard_error"] is None else f" ± {result['standard_error']:.2f}"
        print(
            f"{result['data_file']}: {result['metric']} = {value}{error} (n={result['size']}, trial {result['trial']})"
        )
    if out is not None:
        print(f"wrote {out}")


def score_names(paths: list[str]) -> dict[str, Path]:
    """A distinct name per ``--data`` file for the scores JSON: the file's stem, with as many parent folders
    as it takes to tell it from the others (``rte/validation``, ``sst2/validation``).

    Raises:
        ConfigError: the same file is given twice.
    """
    resolved = [Path(path).resolve() for path in paths]
    if len(set(resolved)) < len(resolved):
        raise ConfigError(f"--data: the same file is given twice ({', '.join(paths)})")
    depth = 1
    while True:
        names = ["/".join([*Path(path).with_suffix("").parts][-depth:]) for path in paths]
        if len(set(names)) == len(names) or depth > max(len(Path(path).parts) for path in paths):
            return dict(zip(names, map(Path, paths), strict=True))
        depth += 1


def cmd_portfolio(args: argparse.Namespace) -> None:
    config = load_config(config_sources(args))
    space = method_search_space(config, args.method, args.task)
    portfolio = portfolio_from_files(args.sources, space, args.size)
    target = f"search_spaces.{args.method}" + (f" with tasks.{args.task}'s overrides" if args.task else "")
    print(render_enqueue(portfolio, target), end="")


def cmd_demo_data(args: argparse.Namespace) -> None:
    for task in args.tasks or list(GENERATORS):
        generate_task_data(task, Path(args.out) / task, args.train, args.validation, args.seed)
        print(f"wrote {Path(args.out) / task}/{{train,validation}}.jsonl")


# The function that runs each command cli_parser parses, by its name.
COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "validate": cmd_validate,
    "run-study": cmd_run_study,
    "confirm": cmd_confirm,
    "export": cmd_export,
    "check": cmd_check,
    "evaluate": cmd_evaluate,
    "portfolio": cmd_portfolio,
    "demo-data": cmd_demo_data,
}


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with workflow_job(None, logging.DEBUG if args.verbose else logging.INFO):
        COMMANDS[args.command](args)


if __name__ == "__main__":  # pragma: no cover
    main()
