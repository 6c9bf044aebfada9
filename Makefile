# One entry point per job; each target installs what it needs on a fresh machine.
#   make demo   - the main job: anvil nodes, the enclave signer, the service, a bot, a reorg
#   make test   - lint, type checks and the whole test suite (end-to-end against real anvil,
#                 Prometheus and PostgreSQL)
#   make bench  - the DESIGN.md section 8 figures, side by side with the peers
#   make reliability      - chaos, crash, fault and bad-input suites, short form (also in `make test`)
#   make reliability-long - the same with many trials and a long soak (docs/reliability.md)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
ANVIL_VERSION := 1.7.1
ANVIL  := $(TOOLS)/anvil/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
# ethers v6 and viem, unchanged from npm: the API's client tests drive them (tests/clients/*.mjs)
ETHERS_VERSION := 6.17.0
VIEM_VERSION   := 2.57.20
JS_CLIENTS := $(TOOLS)/js-clients/.installed-ethers-$(ETHERS_VERSION)-viem-$(VIEM_VERSION)

export ANVIL_BIN := $(abspath $(ANVIL))
export JS_CLIENTS_DIR := $(abspath $(TOOLS)/js-clients/node_modules)
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup prometheus postgresql demo test lint typecheck unit bench reliability reliability-long clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

$(ANVIL):
	mkdir -p $(TOOLS)/anvil
	npm install --silent --no-save --no-audit --no-fund --prefix $(TOOLS)/anvil \
		@foundry-rs/anvil-linux-amd64@$(ANVIL_VERSION)
	$(ANVIL) --version

$(JS_CLIENTS):
	mkdir -p $(TOOLS)/js-clients
	npm install --silent --no-save --no-audit --no-fund --prefix $(TOOLS)/js-clients \
		ethers@$(ETHERS_VERSION) viem@$(VIEM_VERSION)
	node -e 'require("$(abspath $(TOOLS))/js-clients/node_modules/ethers"); require("$(abspath $(TOOLS))/js-clients/node_modules/viem")'
	touch $@

# Prometheus server + promtool (Debian package): the scrape test and the alert-rule checks.
prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; \
	}
	@promtool --version | head -n 1

# PostgreSQL server binaries (Debian package): the tests start their own server as the
# `postgres` user in a temp dir (tests/postgres.py); nothing is started or enabled here.
postgresql:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	}
	@ls -d /usr/lib/postgresql/*/bin | tail -n 1

setup: $(BIN)/.installed $(ANVIL) $(JS_CLIENTS) prometheus postgresql

demo: setup
	$(BIN)/broadcaster demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/pytest -q

unit: $(BIN)/.installed
	$(BIN)/pytest -q -m "not e2e"

bench: setup
	$(BIN)/python -m bench

# Knobs (docs/reliability.md): RELIABILITY_SEED (default: random, printed), RELIABILITY_TRIALS
# (kill -9 trials), RELIABILITY_CHAOS_ROUNDS (reorgs under client chaos), RELIABILITY_SIGNER_ROUNDS,
# RELIABILITY_SOAK_SECONDS, RELIABILITY_EXAMPLES (hypothesis examples per fuzz test),
# RELIABILITY_FAILOVERS (kill -9 failovers between two [ha] instances on PostgreSQL).
reliability: setup
	$(BIN)/pytest -q -s tests/reliability tests/e2e/test_crash_recovery.py tests/e2e/test_failover.py

reliability-long: setup
	RELIABILITY_TRIALS=$${RELIABILITY_TRIALS:-25} \
	RELIABILITY_CHAOS_ROUNDS=$${RELIABILITY_CHAOS_ROUNDS:-200} \
	RELIABILITY_SIGNER_ROUNDS=$${RELIABILITY_SIGNER_ROUNDS:-60} \
	RELIABILITY_SOAK_SECONDS=$${RELIABILITY_SOAK_SECONDS:-600} \
	RELIABILITY_EXAMPLES=$${RELIABILITY_EXAMPLES:-5000} \
	RELIABILITY_FAILOVERS=$${RELIABILITY_FAILOVERS:-20} \
	$(BIN)/pytest -q -s -o timeout=0 tests/reliability tests/e2e/test_crash_recovery.py \
		tests/e2e/test_failover.py

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache
