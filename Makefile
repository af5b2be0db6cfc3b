# One entry point for every chore: the README, CI and developers call these targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint format typecheck pytest migrate asyncapi bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

## run: install, make sure PostgreSQL and Redis answer, migrate, start two nodes, run the demo
run: $(STAMP)
	$(BIN)/python -m scripts.demo

## test: lint, type-check and the whole test suite against the real servers
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m scripts.services --ensure -- $(BIN)/python -m pytest $(PYTEST_ARGS)

migrate: $(STAMP)
	$(BIN)/python -m gateway migrate

asyncapi: $(STAMP)
	$(BIN)/python -m protocol.asyncapi > protocol/asyncapi.json

bench: $(STAMP)
	$(BIN)/python -m loadtests bench

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
