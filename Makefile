# holdgate: `make run` starts the service with the example config; `make test` runs the suite and
# `make test-fast` its unit tier (no server, peer, browser or database server; under 30 s on an idle machine);
# `make lint` is the checks CI runs before the suite: ruff, the import layering (import-linter), mypy.
# Both set everything up on a fresh machine (virtualenv, Python packages, npm test peers).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PEERS := tests/peers/node_modules/.installed

.PHONY: run test test-fast install peers lint imports typecheck cycles format bench clean

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

peers: $(PEERS)

$(PEERS): tests/peers/package.json tests/peers/package-lock.json
	cd tests/peers && npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: $(INSTALLED)
	HOLDGATE_ANONYMOUS_DEV_GRANT=$${HOLDGATE_ANONYMOUS_DEV_GRANT:-true} $(BIN)/holdgate serve

# Most tests wait on peers, browsers and databases rather than the CPU, so four workers beat two cores;
# `--dist loadfile` keeps a module's tests (and its module-scoped peers) in one worker. TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 4
test: $(INSTALLED) $(PEERS)
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# tests/support/tiers.py marks the tests that start something `integration`; the rest are the unit tier.
test-fast: $(INSTALLED)
	$(BIN)/pytest -m "not integration"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) --no-print-directory imports typecheck

# The layers and the channel boundary, as contracts in pyproject.toml ([tool.importlinter]).
imports: $(INSTALLED)
	$(BIN)/lint-imports

# mypy's settings (the packages it checks, the few untyped libraries) are in pyproject.toml.
typecheck: $(INSTALLED)
	$(BIN)/mypy

# The import cycles in service/ and bots/ (a figure to watch, not a check).
cycles: $(INSTALLED)
	$(BIN)/python tools/import_cycles.py

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(INSTALLED) $(PEERS)
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_replicas.py

clean:
	rm -rf $(VENV) tests/peers/node_modules data
