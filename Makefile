# Two commands: `make run` (daemon with a live demo) and `make test` (the whole suite).
# `make conformance` runs all 517 Autobahn TestSuite cases (minutes; `make test` runs 1.* to 10.*).
PYTHON ?= python3
NODE   ?= node
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
LISTEN ?= tcp:18800:interface=127.0.0.1
ARTIFACTS ?= test-artifacts
export ARTIFACTS
LINTED := $(wildcard cpstream tests bench twisted)

.PHONY: run test lint bench conformance soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: $(BIN)/python pyproject.toml setup.py
	$(PIP) install -e . --config-settings editable_mode=compat
	touch $@

$(VENV)/.test-deps: $(BIN)/python pyproject.toml setup.py
	$(PIP) install -e '.[test,bench]' --config-settings editable_mode=compat
	touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/twistd --nodaemon --pidfile= cpstream --demo --listen $(LISTEN)

lint: $(VENV)/.test-deps
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

test: $(VENV)/.test-deps lint
	@$(BIN)/python -m tests.browser
	mkdir -p $(ARTIFACTS)
	$(NODE) --test tests/js/
	$(BIN)/pytest -q -p no:randomly --junitxml=$(ARTIFACTS)/junit.xml

conformance: $(VENV)/.test-deps
	mkdir -p $(ARTIFACTS)
	$(BIN)/pytest -q -p no:randomly -m conformance --junitxml=$(ARTIFACTS)/junit-conformance.xml \
		tests/test_conformance.py

# The hardening battery's long cases (slowloris, never-reading clients, churn) at the full
# sizes of issue 8 (`make test` runs the first two smaller), and the stream-integrity
# checker run long (40 runs of 120 steps). Figures: $(ARTIFACTS)/hardening.json, checker.json.
soak: $(VENV)/.test-deps
	mkdir -p $(ARTIFACTS)
	CPSTREAM_SOAK=1 $(BIN)/pytest -q -p no:randomly -s tests/test_checker.py
	CPSTREAM_SOAK=1 $(BIN)/pytest -q -p no:randomly tests/hardening/test_slowloris.py \
		tests/hardening/test_slow_reader.py tests/hardening/test_churn.py

clean:
	rm -rf $(VENV) $(ARTIFACTS) build *.egg-info

bench: $(VENV)/.test-deps
	$(BIN)/python -m bench.run
