"""A section's saved run: ``benchmarks/results/tabular_<section>.json`` (settings, machine, raw regrets and the
summary) beside the Markdown fragment that BENCHMARKS.md includes."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from benchmarks import RESULTS

COMMAND = "nice -n 10 .venv/bin/python -m benchmarks.tabular"


def default_path(section: str) -> Path:
    return RESULTS / f"tabular_{section}.json"


def new_record(args: argparse.Namespace, section: str, out_json: Path) -> dict[str, Any]:
    """What a run records about itself before its results: command line, settings, machine, versions."""
    settings = {key: value for key, value in vars(args).items() if not key.startswith("_")}
    return {
        "argv": sys.argv,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "optuna": optuna.__version__,
        "numpy": np.__version__,
        "settings": settings | {"section": section, "out_json": str(out_json)},
    }


def provenance(record: dict[str, Any]) -> str:
    """Where and when a run was made, for a section's first line."""
    return (
        f"{record['machine']}, {record['date']}; Optuna {record['optuna']}, numpy {record['numpy']}, "
        f"Python {record['python']}"
    )


def save(record: dict[str, Any], out_json: Path) -> None:
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=1, default=float) + "\n")


def load(out_json: Path) -> dict[str, Any]:
    return json.loads(out_json.read_text())
