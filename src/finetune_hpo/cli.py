"""``finetune-hpo``: the package's command line, for the steps a researcher runs by hand.

The Snakemake rules' scripts (``workflow/scripts/``) call the same functions; this CLI is for checking a
config, running, exporting or rescoring one study outside Snakemake, and generating the demo data. It
reads the config Snakemake reads for the same ``--profile``/``--directory``/``--configfile``
(:func:`finetune_hpo.config_sources.workflow_config_sources`) and finds files where the workflow writes them
(:class:`ResultsLayout`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from finetune_hpo.config import ConfigError, method_search_space, planned_studies, study_settings
from finetune_hpo.config_sources import ConfigSources, load_config, workflow_config_sources
from finetune_hpo.data import DataError
from finetune_hpo.demo import GENERATORS, generate_task_data
from finetune_hpo.evaluation import write_scores
from finetune_hpo.export import export_study
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job
from finetune_hpo.methods import METHODS
from finetune_hpo.report import render_terminal, write_summary
from finetune_hpo.review import StudyFiles, review_phase1
from finetune_hpo.settings import StudySettings
from finetune_hpo.storage import StudyPaths
from finetune_hpo.tasks import TASKS
from finetune_hpo.transfer import portfolio_from_files, render_enqueue

# Tasks are the config's: the built-in ones, or any it declares (tasks.<name>.definition).
TASK_HELP = f"(built-in: {', '.join(sorted(TASKS))}; or one the config declares)"

logger = logging.getLogger("finetune_hpo")

DESCRIPTION = """The steps of the Phase 1 workflow that you run by hand: check a config and list the
studies Snakemake would plan (validate), run, confirm or export one study outside Snakemake, review the
finished studies (check), rescore a saved model (evaluate) and write the demo's data (demo-data). Each
command that reads a config reads what Snakemake reads for the same --profile, --directory and
--configfile; run one with --help for its options."""


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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    reviews = review_phase1(studies)
    write_summary(reviews, layout.results / "summary.md", layout.results / "summary.csv")
    print(render_terminal(reviews))
    failed = [review for review in reviews if review.failed]
    for review in failed:
        logger.error("%s: %s", review.study_name, review.problem)
    if failed:
        sys.exit(1)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune-hpo", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_command(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {description}")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--directory",
            metavar="DIR",
            help="the working directory, as snakemake --directory: its config/config.yaml is the config, "
            "relative paths in the config are relative to it, results/ and analysis/ are read and written in "
            "it, and run-study and confirm run in it as Snakemake's jobs do (default: the profile's directory, "
            "else the current one)",
        )
        p.add_argument(
            "--profile",
            metavar="DIR",
            help="a Snakemake profile (e.g. profiles/vm1): its configfiles, directory and config apply as in "
            "snakemake --profile",
        )
        p.add_argument(
            "--configfile",
            nargs="+",
            metavar="FILE",
            help="config files merged onto DIR/config/config.yaml (or onto --config), in order, as snakemake "
            "--configfile merges them (they replace the profile's configfiles)",
        )
        p.add_argument(
            "--config",
            nargs="+",
            metavar="FILE",
            help="the config: exactly these files, each merged onto the ones before (default: what Snakemake "
            "reads, DIR/config/config.yaml and the profile's configfiles)",
        )
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    def with_study(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", required=True, help=f"the study's task, one of the config's {TASK_HELP}")
        p.add_argument("--method", required=True, choices=METHODS, help="the study's method")
        p.add_argument("--results", help="results folder (default: DIR/results)")

    p = add_command(
        "validate",
        "check a config and list the studies it plans",
        "Checks the schema (one line per problem, naming the key), names, ranges and search spaces, that "
        "local data files exist with the task's columns and enough rows for the training tier and the "
        "selection set, and that the profile's vm is defined; then prints the files it merged and the "
        "studies Snakemake would plan for the same options.",
    )
    with_config(p)
    p.set_defaults(func=cmd_validate)

    p = add_command(
        "run-study",
        "run or resume one study on prepared data",
        "Needs the task's tier and tokenized data (results/data/TASK, results/tokenized/TASK), which "
        "Snakemake prepares. Stops at exactly optuna.n_trials COMPLETE trials.",
    )
    with_config(p)
    with_study(p)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: %(default)s)")
    p.add_argument("--new-study", action="store_true", help="accept a changed study definition")
    p.set_defaults(func=cmd_run_study)

    p = add_command(
        "confirm",
        "run or resume a finished study's confirmation stage",
        "Retrains the study's top selection.confirm_top_k configurations with confirm_seeds seeds and "
        "writes results/studies/STUDY/confirmation.json.",
    )
    with_config(p)
    with_study(p)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: %(default)s)")
    p.set_defaults(func=cmd_confirm)

    p = add_command(
        "export",
        "export a finished study's best configuration",
        "Writes analysis/TASK_METHOD_optimal.yaml, the file Phase 2 reads, validated against its schema.",
    )
    with_config(p)
    with_study(p)
    p.add_argument("--out", help="output YAML (default: DIR/analysis/TASK_METHOD_optimal.yaml)")
    p.set_defaults(func=cmd_export)

    p = add_command(
        "check",
        "review Phase 1",
        "Prints the review table of the planned studies and writes it to results/summary.md and .csv; exits "
        "non-zero when an export is missing or invalid or a saved model does not reproduce its score. With "
        "nothing to review (no export and no trials table) it writes nothing and says where it looked.",
    )
    with_config(p)
    p.add_argument("--tasks", nargs="*", help=f"tasks to review (default: the planned ones) {TASK_HELP}")
    p.add_argument("--results", help="results folder (default: DIR/results)")
    p.add_argument("--analysis", help="folder of the optimal configs (default: DIR/analysis)")
    p.set_defaults(func=cmd_check)

    p = add_command(
        "evaluate",
        "score a saved model on data files with plain transformers/peft",
        "Reloads a model the workflow saved (results/studies/STUDY/best_model: full weights, or a LoRA "
        "adapter with its trained head) without the Trainer and prints its score on each file.",
    )
    p.add_argument("--model", required=True, help="the saved model's folder")
    p.add_argument("--task", required=True, help=f"the task, which must be the model's {TASK_HELP}")
    p.add_argument(
        "--data", required=True, action="append", help="a file in the task's hub schema (repeat for several)"
    )
    p.add_argument(
        "--out",
        help="also write the scores as JSON to this file (default: print them only; the model's folder is the "
        "study's, swapped when a later trial wins, so nothing is written into it)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per forward pass (default: %(default)s)")
    p.add_argument(
        "--base-model", help="LoRA: the base model to load the adapter on (default: the one it was trained on)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = add_command(
        "portfolio",
        "print the best configurations of finished studies as an optuna.enqueue list",
        "Takes each source study's COMPLETE trials by rank, interleaves them across the sources, maps them into "
        "the method's search space (clipped to a range's bound, the nearest choice, a parameter the space lacks "
        "dropped) and prints a YAML list to paste under optuna.enqueue, each entry after comments naming its "
        "source and what was mapped.",
    )
    with_config(p)
    p.add_argument(
        "--from",
        dest="sources",
        nargs="+",
        required=True,
        metavar="PATH",
        help="finished studies: study folders (results/studies/<study>/), trials.csv files or optimal YAMLs; "
        "the portfolio takes rank 1 of each in this order, then rank 2, ...",
    )
    p.add_argument("--method", required=True, choices=METHODS, help="the target study's method")
    p.add_argument("--size", type=_positive_int, default=3, help="configurations (default: %(default)s)")
    p.add_argument("--task", help="the target task: its search_space_overrides apply")
    p.set_defaults(func=cmd_portfolio)

    p = add_command(
        "demo-data",
        "write the demo's synthetic data for some tasks",
        "Writes OUT/TASK/{train,validation}.jsonl in each task's hub schema, as rule generate_demo_data does.",
    )
    p.add_argument("--out", default="resources/synthetic", help="folder (default: %(default)s)")
    p.add_argument("--tasks", nargs="*", choices=sorted(GENERATORS), help="tasks (default: all)")
    p.add_argument("--train", type=int, default=1000, help="training rows (default: %(default)s)")
    p.add_argument("--validation", type=int, default=400, help="validation rows (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="(default: %(default)s)")
    p.set_defaults(func=cmd_demo_data)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with workflow_job(None, logging.DEBUG if args.verbose else logging.INFO):
        args.func(args)


if __name__ == "__main__":  # pragma: no cover
    main()
