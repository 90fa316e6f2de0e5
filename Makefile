# ds-cluster developer targets. `make test` works from a fresh clone: it creates
# .venv when no virtualenv is active and installs the project with its test extras;
# `make run` installs only what running a node and a client needs.
ifdef VIRTUAL_ENV
PY := $(VIRTUAL_ENV)/bin/python
VENV :=
else
PY := .venv/bin/python
VENV := .venv/bin/python
endif
SEEDS ?= 200
MINUTES ?= 10
PYTEST_ARGS ?=
# test files run in this many worker processes (pytest-xdist; a file stays in one
# worker, so its module fixtures are set up once); WORKERS=0 runs them in this one
WORKERS ?= 2

.PHONY: install install-test test test-slow test-kill lint run bench simulate fuzz soak clean

# Only without an active virtualenv: create ./.venv (VENV is empty otherwise).
.venv/bin/python:
	python3 -m venv .venv

# the package alone: run a node, a client, the simulator
install: $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .

# the package with everything the tests, linters and benchmarks use
install-test: $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'

test: install-test
	$(PY) -m pytest -q --durations=25 -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

test-slow: install-test
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# kill -9 during rebalances: every pair of victims and SEEDS seeded runs (about 75 s each)
test-kill: install-test
	KILL_SEEDS=$(SEEDS) $(PY) -m pytest -q -m slow tests/rebalance/test_rebalance_kill.py $(PYTEST_ARGS)

lint: install-test
	$(PY) -m ruff check .
	$(PY) -m mypy dscluster dsclient dscfg ipfs_plugin

run: install
	$(PY) -m dscluster.localcluster

bench: install-test
	$(PY) -m bench

simulate: install
	$(PY) -m dscluster.testing.simulate --seeds $(SEEDS)

# churn soak: short and long-lived clients, a stranger, kill -9 every minute
soak: install-test
	$(PY) -m bench.soak --minutes $(MINUTES)

fuzz: install-test
	$(PY) -m dscluster.testing.fuzz --minutes $(MINUTES)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
