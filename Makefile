# Developer entry points. Services run locally without Docker: see deploy/stack.sh.
PY ?= .venv/bin/python
PYTEST_ARGS ?=
# The suite on three pytest-xdist workers over the two cores: most of its time is spent waiting on Kafka,
# child processes and deliberate outages (a full run on this 2-core machine: 11:34 on two workers, 8:23 on
# three). Each module runs on one worker (its module-scoped fixtures set up once), in collection order
# (tests/conftest.py puts the modules with slow tests first); PYTEST_WORKERS=0 runs it in one process.
# Not --dist loadgroup: with pytest 9.2 xdist 3.8 no longer sees xdist_group marks (they are ignored).
PYTEST_WORKERS ?= 3
# The suite starts hundreds of `leaderboard ...` child processes: with PYTHONDONTWRITEBYTECODE set (some CI
# images do) each of them, and each worker's assertion rewriting, compiles the project from source again.
# Empty means unset to Python: the tests write __pycache__ (git-ignored) like any local run.
TEST_ENV := PYTHONDONTWRITEBYTECODE=
DEMO_ARGS ?=
STACK := deploy/stack.sh

.PHONY: install up down status tools test test-cluster lint demo bench bench-quick bench-growth bench-close clean-stack

install: .venv/.installed

.venv/bin/python:
	python3 -m venv .venv || { sudo=$$(command -v sudo || true); $$sudo apt-get update -q && $$sudo apt-get install -y -q python3-venv && python3 -m venv .venv; }

# Re-install only when the dependency declarations change.
.venv/.installed: pyproject.toml constraints.txt | .venv/bin/python
	.venv/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

up:
	$(STACK) up

down:
	$(STACK) down

status:
	$(STACK) status

# promtool + prometheus and chromium, for the observability and live-page tests.
tools:
	$(STACK) tools

test: install up tools
	$(TEST_ENV) $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# G1+G2 (one test) and G5 against a local Redis Cluster of 3 masters + 3 replicas (deploy/stack.sh up
# redis-cluster, nodes on REDIS_CLUSTER_PORT..+5), Kafka and PostgreSQL as for `make test`. One process: G5
# flushes every master. CLUSTER_TESTS=... for more (G3 and G4 run there too; G3 starts clusters of its own).
CLUSTER_TESTS ?= tests/test_g1_g2_chaos.py tests/test_g5_redis_loss.py
REDIS_CLUSTER_PORT ?= 7000
test-cluster: install up
	REDIS_CLUSTER_PORT=$(REDIS_CLUSTER_PORT) $(STACK) up redis-cluster
	$(TEST_ENV) LEADERBOARD_REDIS_CLUSTER=true LEADERBOARD_REDIS_URL=redis://127.0.0.1:$(REDIS_CLUSTER_PORT)/0 \
		$(PY) -m pytest $(PYTEST_ARGS) $(CLUSTER_TESTS)

lint: install
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

demo: install up
	.venv/bin/leaderboard demo $(DEMO_ARGS)

bench: install up tools
	$(PY) bench/run.py

bench-quick: install up tools
	$(PY) bench/run.py --quick

# Costs that grow with history (issue 13) at the issue's sizes (hours); scale down with GROWTH_ARGS, e.g.
# make bench-growth GROWTH_ARGS="--events 1000000 --players 100000 --board-players 1000000"
GROWTH_ARGS ?=
bench-growth: install up
	$(PY) bench/growth.py $(GROWTH_ARGS)

# A day of 5M events closing while 2 consumers serve 5,000 events/s: event-to-visible and commit gaps
# (~10 min a run); smaller: CLOSE_ARGS="--events 500000 --players 100000".
bench-close: install up
	$(PY) bench/close_live.py $(CLOSE_ARGS)

clean-stack: down
	rm -rf .stack
