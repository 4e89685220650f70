# holdgate: `make run` starts the service with the example config; `make test` runs the suite;
# `make lint` and `make typecheck` are the checks CI runs before it.
# Both set everything up on a fresh machine (virtualenv, Python packages, npm test peers).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PEERS := tests/peers/node_modules/.installed

.PHONY: run test install peers lint typecheck format bench clean

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

test: $(INSTALLED) $(PEERS)
	$(BIN)/pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy's settings (the packages it checks, the few untyped libraries) are in pyproject.toml.
typecheck: $(INSTALLED)
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(INSTALLED) $(PEERS)
	$(BIN)/python bench/bench_gateway.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_replicas.py

clean:
	rm -rf $(VENV) tests/peers/node_modules data
