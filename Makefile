# Anilay: one command to run the product, one to test it (README.md).
#
#   make run     create .venv, install, migrate + seed the database, serve on ANILAY_HOST:ANILAY_PORT
#   make test    create .venv, install with dev extras, run the whole suite on both engines
#   make check   ruff check + ruff format --check + the suite (what CI runs)
#   make bench   benchmarks in tests/bench (not part of the suite)
#
# The app reads its settings from the environment; the variables below reach every command
# when they are set in the environment or on the command line (`make run ANILAY_PORT=9000`).
# Unset ones stay unset, so the app's own defaults apply.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

PASSED_THROUGH := ANILAY_HOST ANILAY_PORT DATABASE_URL REDIS_URL
$(foreach name,$(PASSED_THROUGH),$(if $(filter undefined,$(origin $(name))),,$(eval export $(name))))

# Installs are redone only when pyproject.toml is newer than the stamp; deleting .venv
# deletes the stamps too, so a fresh venv is always installed.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev

.DEFAULT_GOAL := help
.PHONY: help run test check lint dev bench

help:
	@echo "make run    serve the whole product (embedded SQLite under ./var/) on http://$${ANILAY_HOST:-127.0.0.1}:$${ANILAY_PORT:-8000}"
	@echo "make test   run the test suite (SQLite and, when reachable, PostgreSQL + Redis)"
	@echo "make check  ruff check, ruff format --check, then the test suite"
	@echo "make bench  run the benchmarks in tests/bench"
	@echo "make dev    only create .venv with the dev dependencies"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The dev extras include everything `make run` needs, so they satisfy its stamp too.
$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(RUN_STAMP)

dev: $(DEV_STAMP)

run: $(RUN_STAMP)
	$(BIN)/anilay migrate
	$(BIN)/anilay seed
	exec $(BIN)/anilay serve

# pytest's exit code 5 means "no tests were collected": a failure here, said out loud.
test: $(DEV_STAMP)
	@echo "$(BIN)/pytest $(PYTEST_ARGS)"
	@$(BIN)/pytest $(PYTEST_ARGS) || { status=$$?; \
		if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; \
		exit $$status; }

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

check: lint test

# Every script in tests/bench runs (not the _helpers); the target fails if any of them does.
bench: $(RUN_STAMP)
	status=0; for script in tests/bench/[!_]*.py; do \
		echo "== $$script"; $(BIN)/python "$$script" || status=1; \
	done; exit $$status
