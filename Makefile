# chat: `make run` to chat in a browser, `make test` to run the whole suite.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FERRETDB_BIN ?= .cache/bin/ferretdb
TOXIPROXY_BIN ?= .cache/bin/toxiproxy-server
NPM ?= npm
NODE_DEPS := node_modules/.installed
PYTEST_ARGS ?=
# Tests run on this many workers: most of their time is spent waiting on
# servers, timeouts and browsers, so more workers than cores pays. Each worker
# starts its own FerretDB and Redis; 0 runs everything in this process.
PYTEST_WORKERS ?= 4
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist worksteal)
# Tests marked `serial` bound a latency, which the other workers' load on 2
# cores would move: they run after the rest, by themselves. Exit status 5 is
# pytest's "nothing selected" (PYTEST_ARGS="-k ..." matching none of them).
NOTHING_SELECTED_IS_FINE := || [ $$? -eq 5 ]
BENCH_ARGS ?= --targets chat,baseline --room-sizes 10,100,1000 --window 8

.PHONY: help run test test-fast lint format venv test-venv node-deps ferretdb toxiproxy bench clean

help:
	@echo "make run       start one chat server on the embedded default (SQLite + in-process broker)"
	@echo "make test      install what the tests need and run them all"
	@echo "make test-fast the inner loop: unit and integration tests, no browsers, process groups, soaks or slow ones"
	@echo "make lint      ruff (lint and format check) and mypy --strict; CI runs it before the tests"
	@echo "make format    reformat the code with ruff"
	@echo "make ferretdb  build the FerretDB server the MongoDB tests use (needs Go)"
	@echo "make toxiproxy build Toxiproxy, the fault-injecting proxy the network-fault tests use (needs Go)"
	@echo "make node-deps install the test suite's npm packages (axe-core for the accessibility tests; needs npm)"
	@echo "make cluster   start the process group under supervisord behind nginx (MongoDB + Redis)"
	@echo "make cluster-stop, make cluster-ctl ARGS=status   stop it, or talk to supervisorctl"
	@echo "make soak      run the soak test (faults + report); SOAK_ARGS=\"--seconds 300\" to change it"
	@echo "make bench     fan-out benchmark with a report in .cache/bench; BENCH_ARGS=\"--targets cluster,baseline ...\""
	@echo "make clean     remove the virtualenv, caches and local data"

$(VENV)/.run-deps: requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "chat needs Python >= 3.11 (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.test-deps: $(VENV)/.run-deps requirements-test.txt requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	@touch $@

# The JavaScript the browser tests inject (axe-core), pinned by package-lock.json.
$(NODE_DEPS): package.json package-lock.json
	$(NPM) ci --no-audit --no-fund --silent
	@touch $@

venv: $(VENV)/.run-deps
test-venv: $(VENV)/.test-deps
node-deps: $(NODE_DEPS)

run: venv
	@$(PY) -m chat.tools.secret --ensure .env
	$(PY) -m chat

$(FERRETDB_BIN):
	bash .ci/install-ferretdb $(FERRETDB_BIN)

ferretdb: $(FERRETDB_BIN)

$(TOXIPROXY_BIN):
	bash .ci/install-toxiproxy $(TOXIPROXY_BIN)

toxiproxy: $(TOXIPROXY_BIN)

test: test-venv
	@if command -v go >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory ferretdb toxiproxy; \
	else \
		echo "Go is not installed: the MongoDB-backend and network-fault tests will be skipped (under CI=true they fail)."; \
	fi
	@if command -v $(NPM) >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory node-deps; \
	else \
		echo "npm is not installed: the accessibility tests will be skipped (under CI=true they fail)."; \
	fi
	$(PY) -m pytest -m "not serial" $(PYTEST_PARALLEL) $(PYTEST_ARGS)
	$(PY) -m pytest -m serial $(PYTEST_ARGS) $(NOTHING_SELECTED_IS_FINE)

# The inner loop: unit and integration tests without browsers, process groups,
# soaks and the slow ones (CI runs them all with `make test`).
FAST_MARKERS := not browser and not cluster and not soak and not slow

test-fast: test-venv
	$(PY) -m pytest tests/unit tests/integration -m "$(FAST_MARKERS) and not serial" $(PYTEST_PARALLEL) $(PYTEST_ARGS)
	$(PY) -m pytest tests/unit tests/integration -m "$(FAST_MARKERS) and serial" $(PYTEST_ARGS) $(NOTHING_SELECTED_IS_FINE)

lint: test-venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy chat devtools

bench: test-venv
	$(PY) -m chat.tools.bench $(BENCH_ARGS)

format: test-venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .cache .pytest_cache data var test-artifacts node_modules

# -- distributed mode: supervisord runs the process group, nginx balances it ---
# Needs CHAT_DATABASE_URL=mongodb://... and CHAT_BROKER_URL=redis://... (in .env
# or the environment), nginx on PATH; see README, "Distributed mode".
CLUSTER_PROCESSES ?= 2
CLUSTER_BASE_PORT ?= 8001
CLUSTER_LISTEN ?= 8080
CLUSTER_RUN_DIR ?= var/cluster
ARGS ?= status

.PHONY: cluster cluster-stop cluster-ctl

cluster: venv
	@$(PY) -m chat.tools.secret --ensure .env
	$(PY) -m chat.tools.cluster start --processes $(CLUSTER_PROCESSES) --base-port $(CLUSTER_BASE_PORT) \
		--listen $(CLUSTER_LISTEN) --run-dir $(CLUSTER_RUN_DIR)

cluster-stop: venv
	$(PY) -m chat.tools.cluster stop --run-dir $(CLUSTER_RUN_DIR)

cluster-ctl: venv
	@$(PY) -m chat.tools.cluster ctl --run-dir $(CLUSTER_RUN_DIR) -- $(ARGS)

# -- soak: clients through nginx while faults are injected; prints a report ---
SOAK_ARGS ?= --clients 10 --rooms 3 --seconds 60

.PHONY: soak

soak: test-venv ferretdb
	$(PY) -m devtools.soak $(SOAK_ARGS)
