# One entry point for developers and CI (.ci/run calls the same targets).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test check fmt demo bench reliability clean

# The Python client (client/, importable as benchlink) is its own distribution; installed
# editable with every extra so the tests and the tutorial use it as users do. setuptools
# warns on every editable install of a flat layout that folders named like its packages may
# shadow them: here those folders are the packages, so the warning only hides real output.
$(STAMP): pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" \
	  $(BIN)/python -m pip install --quiet -e '.[dev]' -e './client[all]'
	touch $(STAMP)

install: $(STAMP)

# Set up and run the whole test suite.
# Two workers, each test file on one of them (a file's module fixtures stay in one process);
# PYTEST_JOBS= runs them in one process.
PYTEST_JOBS ?= -n 2 --dist loadfile
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_JOBS) $(PYTEST_ARGS)

# Lint and type-check: the same script locally and in CI.
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Set up and run the demo scenario on embedded defaults (SQLite, the simulator).
demo: $(STAMP)
	$(BIN)/python bin/demo.py $(DEMO_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# The reliability suite in its long form (tens of minutes); writes docs/reliability.md.
# `make test` runs a short slice of it. BENCHLINK_RELIABILITY_SEED=N replays a run.
reliability: $(STAMP)
	$(BIN)/python bin/reliability.py $(RELIABILITY_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
