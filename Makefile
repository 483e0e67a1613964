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

.PHONY: env demo test lint format bench dryrun clean-demo

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e ".[dev]"
	touch $@

env: $(STAMP)

demo: env
	$(BIN)/snakemake --profile profiles/demo
	$(BIN)/snakemake --profile profiles/demo --report report.html  # -> demo/report.html
	@echo
	@cd demo && ../$(BIN)/finetune-hpo check

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check workflow
	$(BIN)/snakemake --lint --profile profiles/demo

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

bench: env
	$(BIN)/python benchmarks/run_all.py

clean-demo:
	rm -rf demo/results demo/analysis demo/logs demo/resources demo/benchmarks demo/.snakemake
