"""``finetune-hpo``: the package's command line, for the steps a researcher runs by hand.

The Snakemake rules call the same functions (through ``finetune_hpo.workflow``); this CLI is for
checking a config, running or exporting one study outside Snakemake, and generating the demo data.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from finetune_hpo.config import ConfigError, load_config, planned_tasks, study_settings
from finetune_hpo.data import DataError
from finetune_hpo.gpus import claim_gpu
from finetune_hpo.workflow import configure_logging

logger = logging.getLogger("finetune_hpo")


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


def cmd_validate(args: argparse.Namespace) -> None:
    config = load_config(args.config, _parse_overrides(args.set))
    tasks = planned_tasks(config)
    print(f"{args.config}: valid. Studies planned ({config['vm'] or 'all tasks'}):")
    for task in tasks:
        for method in config["methods"]:
            settings = study_settings(config, task, method)
            print(f"  {settings.study_name}: {len(settings.search_space)} hyperparameters, {settings.n_trials} trials")


def cmd_run_study(args: argparse.Namespace) -> None:
    from finetune_hpo.study import run_study

    claim_gpu()  # before anything imports torch: it pins this study to one free GPU of the host
    config = load_config(args.config, _parse_overrides(args.set))
    settings = study_settings(config, args.task, args.method)
    results = Path(args.results)
    summary_path = results / "data" / args.task / "summary.json"
    tokenized = results / "tokenized" / args.task
    if not summary_path.is_file() or not tokenized.is_dir():
        raise DataError(
            f"{summary_path} or {tokenized} is missing; prepare the data first: snakemake --profile PROFILE {tokenized}"
        )
    run_study(
        settings,
        tokenized,
        json.loads(summary_path.read_text()),
        results / "studies" / settings.study_name,
        threads=args.threads,
        wandb_dir=results / "wandb",
        allow_new_definition=args.new_study,
    )


def cmd_export(args: argparse.Namespace) -> None:
    from finetune_hpo.workflow import export_study

    config = load_config(args.config, _parse_overrides(args.set))
    settings = study_settings(config, args.task, args.method)
    results = Path(args.results)
    out = Path(args.out or f"analysis/{settings.study_name}_optimal.yaml")
    export_study(
        settings, results / "studies" / settings.study_name, results / "data" / args.task / "summary.json", out
    )


def cmd_check(args: argparse.Namespace) -> None:
    from finetune_hpo.report import render_terminal, review_phase1, write_summary

    config = load_config(args.config, _parse_overrides(args.set))
    tasks = args.tasks or planned_tasks(config)
    results = Path(args.results)
    reviews = review_phase1(config, tasks, results, Path(args.analysis))
    write_summary(reviews, results / "summary.md", results / "summary.csv")
    print(render_terminal(reviews))
    failed = [review for review in reviews if review.failed]
    for review in failed:
        logger.error("%s: %s", review.study_name, review.problem)
    if failed:
        sys.exit(1)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from finetune_hpo.evaluation import write_scores

    out = Path(args.out) if args.out else None
    document = write_scores(
        Path(args.model),
        [Path(path) for path in args.data],
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


def cmd_demo_data(args: argparse.Namespace) -> None:
    from finetune_hpo.demo import GENERATORS, generate_task_data

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
        ("export", cmd_export, "export a finished study's best configuration"),
    ):
        p = sub.add_parser(name, help=text)
        with_config(p)
        p.add_argument("--task", required=True)
        p.add_argument("--method", required=True, choices=("full_finetune", "lora"))
        p.add_argument("--results", default="results", help="results folder (default: %(default)s)")
        if name == "run-study":
            p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
            p.add_argument("--new-study", action="store_true", help="accept a changed study definition")
        else:
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

    p = sub.add_parser("demo-data", help="write the demo's synthetic data for some tasks")
    p.add_argument("--out", default="resources/synthetic")
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--train", type=int, default=1000)
    p.add_argument("--validation", type=int, default=400)
    p.add_argument("--seed", type=int, default=42)
    p.set_defaults(func=cmd_demo_data)
    return parser


def main(argv: list[str] | None = None) -> None:
    from finetune_hpo.evaluation import EvaluationError
    from finetune_hpo.export import ExportError
    from finetune_hpo.study import StudyError

    args = build_parser().parse_args(argv)
    configure_logging(level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        args.func(args)
    except (ConfigError, DataError, StudyError, ExportError, EvaluationError, FileNotFoundError) as err:
        logger.error("%s", err)
        sys.exit(1)
    except KeyboardInterrupt:
        logger.error("interrupted; finished trials are kept in the study's storage, rerun to resume")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
