"""``finetune-hpo``: the package's command line, for the steps a researcher runs by hand.

The Snakemake rules' scripts (``workflow/scripts/``) call the same functions; this CLI is for checking a
config, running, exporting or rescoring one study outside Snakemake, and generating the demo data. It
finds files where the workflow writes them (:class:`ResultsLayout`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from finetune_hpo.config import ConfigError, load_config, method_search_space, planned_studies, study_settings
from finetune_hpo.data import DataError
from finetune_hpo.demo import GENERATORS, generate_task_data
from finetune_hpo.evaluation import write_scores
from finetune_hpo.export import export_study
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.jobs import workflow_job
from finetune_hpo.report import render_terminal, write_summary
from finetune_hpo.review import StudyFiles, review_phase1
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_validate(args: argparse.Namespace) -> None:
    config = load_config(args.config, _parse_overrides(args.set))
    print(f"{args.config}: valid. Studies planned ({config['vm'] or 'all tasks'}):")
    for settings in planned_studies(config):
        print(f"  {settings.study_name}: {len(settings.search_space)} hyperparameters, {settings.n_trials} trials")


def cmd_run_study(args: argparse.Namespace) -> None:
    claim_gpu()  # before torch is imported: it pins this study to one free GPU of the host
    from finetune_hpo.study import run_study  # imports torch, so only after the claim

    config = load_config(args.config, _parse_overrides(args.set))
    settings = study_settings(config, args.task, args.method)
    layout = ResultsLayout(Path(args.results))
    summary_path, tokenized = layout.data_summary(args.task), layout.tokenized(args.task)
    if not summary_path.is_file() or not tokenized.is_dir():
        raise DataError(
            f"{summary_path} or {tokenized} is missing; prepare the data first: snakemake --profile PROFILE {tokenized}"
        )
    run_study(
        settings,
        tokenized,
        json.loads(summary_path.read_text()),
        layout.study_dir(settings.study_name),
        threads=args.threads,
        wandb_dir=layout.wandb,
        allow_new_definition=args.new_study,
    )


def cmd_confirm(args: argparse.Namespace) -> None:
    claim_gpu()  # as for run-study: before torch is imported
    from finetune_hpo.confirmation import run_confirmation

    config = load_config(args.config, _parse_overrides(args.set))
    settings = study_settings(config, args.task, args.method)
    layout = ResultsLayout(Path(args.results))
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
    config = load_config(args.config, _parse_overrides(args.set))
    settings = study_settings(config, args.task, args.method)
    layout = ResultsLayout(Path(args.results))
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
    config = load_config(args.config, _parse_overrides(args.set))
    layout = ResultsLayout(Path(args.results), Path(args.analysis))
    studies = [
        StudyFiles(
            settings,
            layout.optimal(settings.study_name),
            layout.trials_table(settings.study_name),
            layout.data_summary(settings.task.name),
        )
        for settings in planned_studies(config, args.tasks)
    ]
    reviews = review_phase1(studies)
    write_summary(reviews, layout.results / "summary.md", layout.results / "summary.csv")
    print(render_terminal(reviews))
    failed = [review for review in reviews if review.failed]
    for review in failed:
        logger.error("%s: %s", review.study_name, review.problem)
    if failed:
        sys.exit(1)


def cmd_evaluate(args: argparse.Namespace) -> None:
    claim_gpu()  # the model goes to the GPU when there is one: the job's own
    out = Path(args.out) if args.out else None
    document = write_scores(
        Path(args.model),
        {Path(path).stem: Path(path) for path in args.data},
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


def cmd_portfolio(args: argparse.Namespace) -> None:
    config = load_config(args.config, _parse_overrides(args.set))
    space = method_search_space(config, args.method, args.task)
    portfolio = portfolio_from_files(args.sources, space, args.size)
    target = f"search_spaces.{args.method}" + (f" with tasks.{args.task}'s overrides" if args.task else "")
    print(render_enqueue(portfolio, target), end="")


def cmd_demo_data(args: argparse.Namespace) -> None:
    for task in args.tasks or list(GENERATORS):
        generate_task_data(task, Path(args.out) / task, args.train, args.validation, args.seed)
        print(f"wrote {Path(args.out) / task}/{{train,validation}}.jsonl")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="finetune-hpo", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default="config/config.yaml", help="experiment config (default: %(default)s)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")

    p = sub.add_parser("validate", help="check a config (schema, ranges, data files) and list its studies")
    with_config(p)
    p.set_defaults(func=cmd_validate)

    for name, func, text in (
        ("run-study", cmd_run_study, "run or resume one study on prepared data (results/data, results/tokenized)"),
        ("confirm", cmd_confirm, "run or resume a finished study's confirmation stage (selection.confirm_top_k)"),
        ("export", cmd_export, "export a finished study's best configuration"),
    ):
        p = sub.add_parser(name, help=text)
        with_config(p)
        p.add_argument("--task", required=True)
        p.add_argument("--method", required=True, choices=("full_finetune", "lora"))
        p.add_argument("--results", default="results", help="results folder (default: %(default)s)")
        if name in ("run-study", "confirm"):
            p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
        if name == "run-study":
            p.add_argument("--new-study", action="store_true", help="accept a changed study definition")
        elif name == "export":
            p.add_argument("--out", help="output YAML (default: analysis/<task>_<method>_optimal.yaml)")
        p.set_defaults(func=func)

    p = sub.add_parser("check", help="review Phase 1: every optimal config present and valid, gaps, convergence")
    with_config(p)
    p.add_argument("--tasks", nargs="*", help="tasks to review (default: the config's planned tasks)")
    p.add_argument("--results", default="results", help="results folder (default: %(default)s)")
    p.add_argument("--analysis", default="analysis", help="folder of the optimal configs (default: %(default)s)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "evaluate",
        help="score a saved model (results/studies/<study>/best_model) on data files, with plain transformers/peft",
    )
    p.add_argument("--model", required=True, help="the saved model's folder")
    p.add_argument("--task", required=True, help="the task (must be the model's)")
    p.add_argument(
        "--data", required=True, action="append", help="a file in the task's hub schema (repeat for several)"
    )
    p.add_argument("--out", help="scores JSON (default: <model>/scores.json)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--base-model", help="LoRA: the base model to load the adapter on (default: the one it was trained on)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "portfolio",
        help="the best configurations of finished studies, mapped into a method's space, as an optuna.enqueue list",
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
    p.add_argument("--method", required=True, choices=("full_finetune", "lora"))
    p.add_argument("--size", type=_positive_int, default=3, help="configurations (default: %(default)s)")
    p.add_argument("--task", help="the target task: its search_space_overrides apply")
    p.set_defaults(func=cmd_portfolio)

    p = sub.add_parser("demo-data", help="write the demo's synthetic data for some tasks")
    p.add_argument("--out", default="resources/synthetic")
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--validation", type=int, default=400)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_demo_data)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    with workflow_job(None, logging.DEBUG if args.verbose else logging.INFO):
        args.func(args)


if __name__ == "__main__":  # pragma: no cover
    main()
