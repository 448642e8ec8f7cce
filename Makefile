# flexseg: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKEND ?= tensorflow
PYTEST_ARGS ?=
# Extra pip arguments for the torch install, e.g. an index of CPU-only wheels on a machine
# where plain `pip install torch` would fetch a CUDA build.
TORCH_PIP_ARGS ?=

.PHONY: help setup test lint format demo docs bench clean-venv

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

# setup.py makes a console script per module of flexseg/commands/: a new command module
# (the folder changes) reinstalls.
$(STAMP): pyproject.toml setup.py flexseg/commands
	@echo "Setting up $(VENV) with CPU builds of TensorFlow, JAX and PyTorch (log: $(VENV)/setup.log)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first, pinned to the CPU wheel, so that nothing pulls a CUDA build.
	@{ $(PY) -m pip install --upgrade pip \
		&& $(PY) -m pip install torch==2.13.0 $(TORCH_PIP_ARGS) \
		&& $(PY) -m pip install -e '.[all,dev]'; } > $(VENV)/setup.log 2>&1 \
		|| { tail -n 30 $(VENV)/setup.log; echo "setup failed: see $(VENV)/setup.log"; exit 1; }
	@touch $(STAMP)

setup: $(STAMP) ## create .venv and install flexseg with all three backends (once)

test: setup ## run the test suite once per backend (tensorflow, jax, torch)
	@$(PY) scripts/run_tests.py -- -q -p no:cacheprovider $(PYTEST_ARGS)

lint: setup ## ruff lint and format check
	@$(VENV)/bin/ruff check flexseg scripts tests benchmarks examples setup.py
	@$(VENV)/bin/ruff format --check flexseg scripts tests benchmarks examples setup.py

format: setup ## apply ruff fixes and formatting
	@$(VENV)/bin/ruff check --fix flexseg scripts tests benchmarks examples setup.py
	@$(VENV)/bin/ruff format flexseg scripts tests benchmarks examples setup.py

demo: setup ## train, evaluate and infer on the built-in sample (BACKEND=tensorflow|jax|torch)
	@KERAS_BACKEND=$(BACKEND) $(VENV)/bin/flexseg-demo

docs: setup ## build the documentation site into site/ (strict: broken links and unlisted pages fail)
	@$(VENV)/bin/mkdocs build --strict --quiet && echo "built site/index.html"

bench: setup ## speed of every backend beside hand-written PyTorch -> benchmarks/results.{json,md}
	@$(VENV)/bin/python scripts/benchmark.py $(BENCH_ARGS)

clean-venv: ## remove .venv (your runs and data are left alone)
	rm -rf $(VENV)
