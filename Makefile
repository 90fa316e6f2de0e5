# ds-cluster developer targets. `make test` works from a fresh clone: it creates
# .venv when no virtualenv is active and installs the project with its test extras.
ifdef VIRTUAL_ENV
PY := python
else
PY := .venv/bin/python
endif
SEEDS ?= 200
MINUTES ?= 10
PYTEST_ARGS ?=

.PHONY: install test test-slow test-kill lint run bench simulate fuzz soak clean

$(PY):
	python3 -m venv .venv

install: $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# kill -9 during rebalances: every pair of victims and SEEDS seeded runs (about 75 s each)
test-kill: install
	KILL_SEEDS=$(SEEDS) $(PY) -m pytest -q -m slow tests/rebalance/test_rebalance_kill.py $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy dscluster/core dscluster/wire

run: install
	$(PY) -m dscluster.localcluster

bench: install
	$(PY) -m bench

simulate: install
	$(PY) -m dscluster.testing.simulate --seeds $(SEEDS)

# churn soak: short and long-lived clients, a stranger, kill -9 every minute
soak: install
	$(PY) -m bench.soak --minutes $(MINUTES)

fuzz: install
	$(PY) -m dscluster.testing.fuzz --minutes $(MINUTES)

clean:
	rm -rf .venv build *.egg-info .pytest_cache
