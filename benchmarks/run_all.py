"""Benchmarks of the workflow on this machine's CPU (sections 1-5 of BENCHMARKS.md), and BENCHMARKS.md itself.

``python benchmarks/run_all.py`` measures sections 1-4 (`make bench`), ``--only pruning`` section 5, and
``--render`` only rewrites BENCHMARKS.md from every saved section. benchmarks/README.md says what each section
measures; benchmarks/gpu_throughput.py is the GPU benchmark.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: make `benchmarks` importable

from benchmarks import REPO, RESULTS
from benchmarks.render import write_report

SECTIONS = ("demo", "overhead", "peer", "scaling", "pruning")


def save_section(name: str, result: Mapping[str, Any], command: str) -> None:
    """Each section's numbers in benchmarks/results/<name>.json, so one section can be rerun alone."""
    from benchmarks.measure import machine

    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "command": command, "result": result}
    (RESULTS / f"{name}.json").write_text(json.dumps(document, indent=1, default=str) + "\n")


def measure(sections: list[str], args: argparse.Namespace) -> None:
    """Run the sections (in their order), saving each as soon as it is measured."""
    # Imported here: they load torch and the workflow, which --render does not need.
    from benchmarks.measure import bench_demo, bench_overhead, bench_peer, bench_pruning, bench_scaling, demo_assets

    root = Path(tempfile.mkdtemp(prefix="finetune-hpo-bench-"))
    command = f"python benchmarks/run_all.py --only {' '.join(sections)}"
    if "overhead" in sections:
        command += f" --overhead-blocks {args.overhead_blocks}"
    try:
        if "demo" in sections:
            demo = bench_demo(root, cold_runs=args.cold_runs, reruns=5)
            model = demo.pop("workdir") / "resources" / "tiny-bert"
            save_section("demo", demo, command)
        else:
            model = demo_assets(root) / "resources" / "tiny-bert"
        runs = {
            "overhead": lambda: bench_overhead(root, model, n_trials=5, blocks=args.overhead_blocks),
            "peer": lambda: bench_peer(root, model, n_trials=10, seeds=args.seeds),
            "scaling": lambda: bench_scaling(root, model, sizes=[250, 500, 1000, 2000], repeats=3),
            "pruning": lambda: bench_pruning(root, model, seeds=args.pruning_seeds, n_trials=10),
        }
        for name in (name for name in runs if name in sections):
            result = runs[name]()
            save_section(name, result, command)  # what is measured so far survives a later failure
            print(name, json.dumps(result, default=str)[:2000], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    parser.add_argument("--only", nargs="*", choices=SECTIONS)
    parser.add_argument("--seeds", type=int, default=5, help="sampler seeds of the peer comparison")
    parser.add_argument("--pruning-seeds", type=int, default=10)
    parser.add_argument(
        "--cold-runs", type=int, default=3, choices=range(1, 11), help="cold `make demo` runs, each in a fresh folder"
    )
    parser.add_argument(
        "--overhead-blocks",
        type=int,
        default=9,
        help="interleaved blocks of the overhead section (its median is over them)",
    )
    parser.add_argument("--render", action="store_true", help="only rewrite BENCHMARKS.md from the saved sections")
    args = parser.parse_args()
    if not args.render:
        try:
            measure(args.only or ["demo", "overhead", "peer", "scaling"], args)
        finally:
            write_report(Path(args.out))
    else:
        write_report(Path(args.out))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
