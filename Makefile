# The two commands of the README: `make demo` and `make test`. Both install into .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast coverage record-histories lint format proto bench chaos ui-check clean

install: $(STAMP)

# requirements.lock pins every transitive version that was tested; pyproject.toml states the ranges.
# Prometheus and promtool, which PyPI lacks, come from Debian's package, unpacked into the venv without
# root (cidsync_tooling/debian.py): the alert rules' tests and the alerting e2e test run them.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	$(BIN)/python -m cidsync_tooling.debian promtool prometheus
	@touch $@

demo: install
	$(BIN)/cidsync demo

# Six workers on two cores: most of an integration test is waiting for servers, and each worker starts its
# own (tests/conftest.py), so the suite fits its 6-minute budget. `make test-fast`: the unit tests alone.
TEST_WORKERS ?= 6
test: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: install
	$(BIN)/pytest -m "not integration" -n 2

# The product's line coverage over the whole suite (the figure the house-in-order issue compares).
coverage: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --cov=cidsync --cov=workflows --cov=activities \
		--cov=workers --cov=starters --cov-report=term:skip-covered

# The replay gate's histories of this release (tests/helpers/histories.py): the whole suite is run, and one
# history of each path every workflow took is kept in tests/workflows/histories/<version>/. Commit them
# before a change to a workflow; make test replays every release's histories on the new code.
VERSION = $(shell $(BIN)/python -c "import importlib.metadata as m; print(m.version('cidsync'))")
record-histories: install
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -q \
		--record-histories tests/workflows/histories/$(VERSION)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cidsync cidsync_tooling workflows activities workers starters tests chaos uicheck

# Regenerate the Bridge's Python code from proto/ (tests/bridge/test_codegen.py fails when it is stale).
proto: install
	$(BIN)/python -m cidsync_tooling.codegen

# Ingestion against its ceilings, 3 fresh rounds, written to bench/RESULTS.md (bench/run.py says how).
# Then busy pairs (bench/busy_pairs.py): a pair reconciled and followed while core changes it at 1, 5 and
# 20 changes/s. Then the Bridge's cost (bench/bridge_chain.py): direct to the simulator vs through bridge serve
# and the DICT API, per call and for a 1M-CID file. The Bridge and reconciliation have benches of their own: bench/bridge_pages.py, bench/reconciliation.py.
bench: install
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.busy_pairs
	$(BIN)/python -m bench.bridge_chain

# Every fault at once on the embedded stack, 10,000+ events, and the checks (chaos/run.py says which).
# SEED=N replays a run; REPLICAS=2 runs two workers and two starters; `make test` runs the reduced
# version of both (tests/chaos/test_chaos.py).
chaos: install
	$(BIN)/python -m chaos.run $(if $(SEED),--seed $(SEED)) $(if $(REPLICAS),--replicas $(REPLICAS))

# A reconciliation's page in the Web UI, opened in headless Chromium (Debian's package: installed as root,
# unpacked into the venv without root), must show its input, result and summaries decoded and no codec
# banner (uicheck/run.py). SCREENSHOT=PATH keeps the picture elsewhere than .cidsync/ui-check.png.
ui-check: install
	$(BIN)/python -m uicheck.run $(if $(SCREENSHOT),--screenshot $(SCREENSHOT))

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .cidsync .pytest_cache .mypy_cache .ruff_cache build *.egg-info
