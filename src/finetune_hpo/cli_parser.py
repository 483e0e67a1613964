"""The arguments of ``finetune-hpo``: one function per command adds its options, registered with its name and
one-line summary by :func:`command`; as in click, the function's docstring is the rest of the command's
``--help`` description. :mod:`finetune_hpo.cli` runs the command they parse.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable

from finetune_hpo.demo import GENERATORS
from finetune_hpo.methods import METHODS
from finetune_hpo.tasks import TASKS

# Tasks are the config's: the built-in ones, or any it declares (tasks.<name>.definition).
TASK_HELP = f"(built-in: {', '.join(sorted(TASKS))}; or one the config declares)"

DESCRIPTION = """The steps of the Phase 1 workflow that you run by hand: check a config and list the
studies Snakemake would plan (validate), run, confirm or export one study outside Snakemake, review the
finished studies (check), rescore a saved model (evaluate) and write the demo's data (demo-data). Each
command that reads a config reads what Snakemake reads for the same --profile, --directory and
--configfile; run one with --help for its options."""

AddArguments = Callable[[argparse.ArgumentParser], None]

# (name, summary, the function that adds its options), in the order `finetune-hpo --help` lists them.
COMMAND_ARGUMENTS: list[tuple[str, str, AddArguments]] = []


def command(name: str, summary: str) -> Callable[[AddArguments], AddArguments]:
    """Register the decorated function as command ``name``'s options; ``summary`` is its line in
    ``finetune-hpo --help`` and, with the function's docstring after it, its own ``--help`` description."""

    def register(add_arguments: AddArguments) -> AddArguments:
        COMMAND_ARGUMENTS.append((name, summary, add_arguments))
        return add_arguments

    return register


def build_parser() -> argparse.ArgumentParser:
    """The ``finetune-hpo`` parser: ``args.command`` names the command, which :mod:`finetune_hpo.cli` runs."""
    parser = argparse.ArgumentParser(prog="finetune-hpo", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary, add_arguments in COMMAND_ARGUMENTS:
        # argparse rewraps the description, so the docstring's line breaks and indentation do not show.
        description = f"{summary[0].upper()}{summary[1:]}. {inspect.getdoc(add_arguments) or ''}"
        add_arguments(commands.add_parser(name, help=summary, description=description))
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _config_arguments(p: argparse.ArgumentParser) -> None:
    """Which config a command reads: what Snakemake reads for the same options, or ``--config``'s files."""
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


def _study_arguments(p: argparse.ArgumentParser, *, threads: bool = False) -> None:
    """The config, which of its studies a command works on and where its results are; ``threads``: the
    command trains."""
    _config_arguments(p)
    p.add_argument("--task", required=True, help=f"the study's task, one of the config's {TASK_HELP}")
    p.add_argument("--method", required=True, choices=METHODS, help="the study's method")
    p.add_argument("--results", help="results folder (default: DIR/results)")
    if threads:
        p.add_argument("--threads", type=int, default=1, help="CPU threads for torch (default: %(default)s)")


@command("validate", "check a config and list the studies it plans")
def validate_arguments(p: argparse.ArgumentParser) -> None:
    """Checks the schema (one line per problem, naming the key), names, ranges and search spaces, that local
    data files exist with the task's columns and enough rows for the training tier and the selection set, and
    that the profile's vm is defined; then prints the files it merged and the studies Snakemake would plan for
    the same options."""
    _config_arguments(p)


@command("run-study", "run or resume one study on prepared data")
def run_study_arguments(p: argparse.ArgumentParser) -> None:
    """Needs the task's tier and tokenized data (results/data/TASK, results/tokenized/TASK), which Snakemake
    prepares. Stops at exactly optuna.n_trials COMPLETE trials."""
    _study_arguments(p, threads=True)
    p.add_argument("--new-study", action="store_true", help="accept a changed study definition")


@command("confirm", "run or resume a finished study's confirmation stage")
def confirm_arguments(p: argparse.ArgumentParser) -> None:
    """Retrains the study's top selection.confirm_top_k configurations with confirm_seeds seeds and writes
    results/studies/STUDY/confirmation.json."""
    _study_arguments(p, threads=True)


@command("export", "export a finished study's best configuration")
def export_arguments(p: argparse.ArgumentParser) -> None:
    """Writes analysis/TASK_METHOD_optimal.yaml, the file Phase 2 reads, validated against its schema."""
    _study_arguments(p)
    p.add_argument("--out", help="output YAML (default: DIR/analysis/TASK_METHOD_optimal.yaml)")


@command("check", "review Phase 1")
def check_arguments(p: argparse.ArgumentParser) -> None:
    """Prints the review table of the planned studies and writes it to results/summary.md and .csv; exits
    non-zero when an export is missing or invalid or a saved model does not reproduce its score. With nothing
    to review (no export and no trials table) it writes nothing and says where it looked."""
    _config_arguments(p)
    p.add_argument("--tasks", nargs="*", help=f"tasks to review (default: the planned ones) {TASK_HELP}")
    p.add_argument("--results", help="results folder (default: DIR/results)")
    p.add_argument("--analysis", help="folder of the optimal configs (default: DIR/analysis)")


@command("evaluate", "score a saved model on data files with plain transformers/peft")
def evaluate_arguments(p: argparse.ArgumentParser) -> None:
    """Reloads a model the workflow saved (results/studies/STUDY/best_model: full weights, or a LoRA adapter
    with its trained head) without the Trainer and prints its score on each file."""
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


@command("portfolio", "print the best configurations of finished studies as an optuna.enqueue list")
def portfolio_arguments(p: argparse.ArgumentParser) -> None:
    """Takes each source study's COMPLETE trials by rank, interleaves them across the sources, maps them into
    the method's search space (clipped to a range's bound, the nearest choice, a parameter the space lacks
    dropped) and prints a YAML list to paste under optuna.enqueue, each entry after comments naming its source
    and what was mapped."""
    _config_arguments(p)
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


@command("demo-data", "write the demo's synthetic data for some tasks")
def demo_data_arguments(p: argparse.ArgumentParser) -> None:
    """Writes OUT/TASK/{train,validation}.jsonl in each task's hub schema, as rule generate_demo_data does."""
    p.add_argument("--out", default="resources/synthetic", help="folder (default: %(default)s)")
    p.add_argument("--tasks", nargs="*", choices=sorted(GENERATORS), help="tasks (default: all)")
    p.add_argument("--train", type=int, default=1000, help="training rows (default: %(default)s)")
    p.add_argument("--validation", type=int, default=400, help="validation rows (default: %(default)s)")
    p.add_argument("--seed", type=int, default=42, help="(default: %(default)s)")
