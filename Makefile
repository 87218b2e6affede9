# milepost: `make demo` runs the whole system on the local stack; `make test` runs the tests.
# Both install what they need (Debian packages, TimescaleDB, the virtualenv) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv stack stack-down demo test unit integration lint bench clean

help:
	@echo "make demo        run stack, ingest, api and simulated vans; prints the dashboard URL"
	@echo "make test        provision the stack and run unit and integration tests"
	@echo "make unit        unit tests only (no services)"
	@echo "make lint        ruff and mypy --strict"
	@echo "make bench       benchmarks (ratios against same-run baselines)"
	@echo "make stack       start the local TimescaleDB and Mosquitto under var/"
	@echo "make stack-down  stop them"

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
	  echo "installing python3-venv"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

stack: $(STAMP)
	$(BIN)/milepost stack up

stack-down: $(STAMP)
	$(BIN)/milepost stack down

demo: stack
	$(BIN)/milepost demo

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" -q

test: stack
	$(BIN)/milepost migrate
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: stack
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
