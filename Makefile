# One entry point for every chore: the README, CI and developers call these targets.
#
# Every install comes from uv.lock, which pins each dependency, direct and transitive, to one
# version with its hashes, so a fresh clone installs the same thing on any day. uv itself is
# pinned below (UV_VERSION) and bootstrapped into the venv with pip: Python 3.11 with pip and
# venv is all a machine needs. The venv is re-synced whenever pyproject.toml or uv.lock changes;
# the sync stops if uv.lock no longer matches pyproject.toml.
#
# make lock: refreshes the pins on purpose. `uv lock --upgrade` moves every dependency to the
# newest version pyproject.toml allows, then the venv is re-synced from the new lock; run
# `make test` and commit uv.lock with the change. To add or change one requirement without moving
# the others, edit pyproject.toml and run `.venv/bin/uv lock` instead.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UV_VERSION := 0.13.10
UV := $(BIN)/uv
UV_STAMP := $(VENV)/.uv-$(UV_VERSION)
# The extras the checks and tests need (pyproject.toml's optional-dependencies).
SYNC := $(UV) sync --frozen --extra test --extra dev

# uv syncs this venv (not one that happens to be active) and never downloads a Python.
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON_DOWNLOADS := never

.PHONY: install install-js pages run test check lint format typecheck importlint pytest lock migrate asyncapi bench clean

$(UV_STAMP):
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	rm -f $(VENV)/.uv-*
	touch $@

$(STAMP): $(UV_STAMP) pyproject.toml uv.lock
	$(UV) lock --locked
	$(SYNC)
	touch $@

## install: the venv, exactly as uv.lock says, with the project installed editable
install: $(STAMP)

# The TypeScript client's tools (clients/js: TypeScript, esbuild, vitest, ws), exactly as its
# package-lock.json says: npm ci, never npm install, so a fresh clone gets the locked versions.
# tests/clients/test_js_client.py runs its test suite against real nodes.
JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund
	touch $@

## install-js: clients/js/node_modules, exactly as clients/js/package-lock.json says
install-js: $(JS_STAMP)

# The pages' tools (clients/web: esbuild, TypeScript, the qr encoder bundled into the pages),
# from clients/web/package-lock.json. `make pages` rebuilds gateway/web/static/*.js from
# clients/web/src and ../js/src; tests/web/test_bundles.py fails when they are stale.
WEB := clients/web
WEB_STAMP := $(WEB)/node_modules/.installed

$(WEB_STAMP): $(WEB)/package.json $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund
	touch $@

## pages: type-check the wallet page and the cashier console, then bundle them into gateway/web/static
pages: $(WEB_STAMP)
	npm run --prefix $(WEB) --silent typecheck
	npm run --prefix $(WEB) --silent build

## lock: refresh uv.lock on purpose (uv lock --upgrade), then re-sync the venv from it
lock: $(UV_STAMP)
	$(UV) lock --upgrade
	$(SYNC)
	touch $(STAMP)

## run: install, make sure PostgreSQL and Redis answer, migrate, start two nodes, run the demo
run: $(STAMP)
	$(BIN)/python -m scripts.demo

## test: lint, type-check, import contracts and the whole test suite against the real servers
test: $(STAMP) lint typecheck importlint pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

# The architecture's contracts (pyproject.toml [tool.importlinter]); then the import graph's
# cycles, back-imports and module sizes (scripts/import_cycles.py), which must all be zero.
importlint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m scripts.import_cycles --check

pytest: $(STAMP) $(JS_STAMP) $(WEB_STAMP)
	$(BIN)/python -m scripts.services --ensure -- $(BIN)/python -m pytest $(PYTEST_ARGS)

migrate: $(STAMP)
	$(BIN)/python -m gateway migrate

# The TypeScript client's frames (clients/js/src/frames.ts) are generated from it too.
asyncapi: $(STAMP) $(JS_STAMP)
	$(BIN)/python -m protocol.asyncapi > protocol/asyncapi.json
	npm run --prefix $(JS) --silent gen

bench: $(STAMP)
	$(BIN)/python -m loadtests bench

clean:
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	rm -rf $(JS)/node_modules $(JS)/dist $(WEB)/node_modules
