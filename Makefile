# GhostCrate developer entry points. `make run` and `make test` work on a fresh
# machine with Python 3.11+ and cargo: each sets up .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test lint check-config bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## run: serve with the defaults (127.0.0.1:8080, ./ghostcrate-data); extra options via ARGS=
run: $(VENV)/.run-deps
	$(BIN)/ghostcrate serve $(ARGS)

## bench: GhostCrate vs nginx side by side (installs nginx and wrk once); ARGS="--quick" for ~2 min
bench: $(VENV)/.test-deps
	benchmarks/setup.sh
	$(BIN)/python benchmarks/bench.py $(ARGS)

## check-config: validate the configuration ($$GHOSTCRATE_CONFIG or ARGS="--config FILE")
check-config: $(VENV)/.run-deps
	$(BIN)/ghostcrate check-config $(ARGS)

## lint: ruff (lint and format) and mypy --strict
lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## test: the whole suite: bootstrap the tools the tests drive, lint, then pytest (a process
## per core, each taking whole files: most tests wait on servers they start, not on the CPU)
test: $(VENV)/.test-deps lint
	scripts/bootstrap-tests
	$(BIN)/pytest -n auto --dist loadfile $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
