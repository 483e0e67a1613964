"""Benchmarks of the workflow (run_all.py) and of its search on tabular benchmarks (tabular/): README.md says
what each measures and how, BENCHMARKS.md holds the last numbers."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# The benchmarks measure this checkout's package, also when another checkout is installed editable.
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))
