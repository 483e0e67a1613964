"""``python -m benchmarks.tabular --section S``: run a section of the tabular benchmarks, save its raw results
and print its Markdown (benchmarks/README.md)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from benchmarks.tabular import records
from benchmarks.tabular.confirmation import DEFAULT_VARIANTS, NoiseModel, confirmation_markdown, confirmation_section
from benchmarks.tabular.samplers import samplers_markdown, samplers_section
from benchmarks.tabular.transfer import PARTS, transfer_markdown, transfer_section


@dataclass(frozen=True)
class Section:
    """A section: ``run`` measures (parsed arguments -> the section's results), ``markdown`` renders a saved
    record (-> the Markdown fragment and its summary)."""

    run: Callable[[argparse.Namespace], dict[str, Any]]
    markdown: Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


def run_transfer(args: argparse.Namespace) -> dict[str, Any]:
    """The transfer section, or one part of it joined to the parts of its saved run."""
    saved_path = args.out_json or records.default_path("transfer")
    saved = records.load(saved_path)["transfer"] if args.part != "all" and saved_path.is_file() else None
    return transfer_section(args, saved)


SECTIONS: dict[str, Section] = {
    "samplers": Section(
        lambda args: samplers_section(args, "samplers"), lambda record: samplers_markdown(record, "samplers")
    ),
    "samplers-gp": Section(
        lambda args: samplers_section(args, "samplers-gp"), lambda record: samplers_markdown(record, "samplers-gp")
    ),
    "confirmation": Section(lambda args: confirmation_section(args, args.noise_models), confirmation_markdown),
    "transfer": Section(run_transfer, transfer_markdown),
}


# Parsed arguments that are not settings of the run (derived from others), left out of the saved record.
DERIVED = ("only", "sampler_filter", "noise_models")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tabular", description=__doc__.split("\n")[0])
    parser.add_argument("--section", choices=(*SECTIONS, "all"), default="all")
    parser.add_argument("--replicates", type=int, default=200, help="replicate studies per dataset")
    parser.add_argument(
        "--expensive-replicates",
        type=int,
        default=15,
        help="samplers-gp: replicates per dataset for GPSampler, paired with random search's first ones",
    )
    parser.add_argument(
        "--datasets", help="comma-separated dataset or family names (default: all; transfer always uses all 8)"
    )
    parser.add_argument("--samplers", help="samplers sections: comma-separated substrings of sampler names to run")
    parser.add_argument(
        "--variants",
        default=DEFAULT_VARIANTS,
        help="confirmation: comma-separated noise models, 'none' (seed noise only) or 'N:M' = N selection rows, "
        "M confirmation rows ('exact' for no sampling noise at that stage)",
    )
    parser.add_argument("--selection-rows", type=int, help="confirmation: run this one noise model instead")
    parser.add_argument("--confirmation-rows", type=int, help="confirmation: run this one noise model instead")
    parser.add_argument(
        "--part",
        choices=(*PARTS, "all"),
        default="all",
        help="transfer: run one part (each under 30 minutes on one core) and join it to the saved run",
    )
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--prefix-check", type=int, default=20, help="replicates per dataset checked for B = A[:10]")
    parser.add_argument(
        "--out-json", type=Path, help="one section only; default benchmarks/results/tabular_<section>.json"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the Markdown from the saved JSON, computing nothing"
    )
    args = parser.parse_args(argv)
    if args.out_json and args.section == "all":
        parser.error("--out-json needs a single --section")
    if args.selection_rows is not None or args.confirmation_rows is not None:
        args.noise_models = [NoiseModel(args.selection_rows, args.confirmation_rows)]
    else:
        args.noise_models = [NoiseModel.parse(v) for v in args.variants.split(",")]
    args.only = {s.strip() for s in args.datasets.split(",")} if args.datasets else None
    args.sampler_filter = {s.strip() for s in args.samplers.split(",")} if args.samplers else None
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # The deprecation notice for these two TPE arguments is stated once in the samplers table instead.
    warnings.filterwarnings("ignore", message=r"`(consider_endpoints|prior_weight)` has been deprecated")

    for name in SECTIONS if args.section == "all" else (args.section,):
        section = SECTIONS[name]
        out_json = args.out_json or records.default_path(name)
        if args.render_only:
            record = records.load(out_json)
        else:
            settings = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in DERIVED})
            record = records.new_record(settings, name, out_json)
            record[name] = section.run(args)
        markdown, summary = section.markdown(record)
        if not args.render_only:
            record[name]["summary"] = summary
            records.save(record, out_json)
            print(f"raw results: {out_json}", file=sys.stderr)
        out_md = out_json.with_suffix(".md")
        out_md.write_text(markdown + "\n")
        print(markdown + "\n")
        print(f"markdown: {out_md}", file=sys.stderr)


if __name__ == "__main__":
    main()
