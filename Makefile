# examgate — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMGATE := $(BIN)/examgate
DEMO_CANDIDATES ?= 2000
PORT ?= 8080

export EXAMGATE_SECRETS_FILE ?= $(CURDIR)/.run/secrets.json

# make loadtest: each run's length (empty: loadtest/targets.toml's) and which scenarios (empty: every one there).
LOADTEST_DURATION ?=
LOADTEST_SCENARIOS ?=

.PHONY: help venv services services-stop system-deps migrate seed demo demo-stop test test-fast bench loadtest lint clean

help:
	@echo "make demo           set everything up and start gateway, worker, payment and SMS simulators"
	@echo "make demo-stop      stop what make demo started"
	@echo "make test           set everything up, run make lint, then the whole test suite"
	@echo "make test-fast      only the tests marked unit: no PostgreSQL, Redis, subprocess or network"
	@echo "make lint           ruff check, mypy on the packages, lint-imports (the layer contracts)"
	@echo "make bench          run the benchmarks (writes benchmarks/results/)"
	@echo "make loadtest       rehearse the peak scenarios against make demo with the committed targets (loadtest/reports/)"
	@echo "make services       reuse or start Redis and PostgreSQL"
	@echo "make services-stop  stop the private Redis/PostgreSQL started under .run/"
	@echo "make system-deps    install the ticket PDF font and pdftotext with apt if missing"

$(BIN)/.installed: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test,bench]'
	@touch $@

venv: $(BIN)/.installed

services:
	@scripts/services.sh up

services-stop:
	@scripts/services.sh down

system-deps:
	@scripts/system-deps.sh

migrate: venv services
	$(EXAMGATE) migrate

seed: migrate
	$(EXAMGATE) seed --candidates $(DEMO_CANDIDATES)

demo: seed system-deps
	@scripts/demo.sh start

demo-stop:
	@scripts/demo.sh stop

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint services system-deps
	@scripts/test-lanes.sh $(BIN)/python

test-fast: venv
	$(BIN)/python -m pytest -m unit

bench: venv services system-deps
	@scripts/bench-deps.sh
	$(BIN)/python -m benchmarks

loadtest: venv
	@curl -fsS -o /dev/null "http://127.0.0.1:$(PORT)/readyz" 2>/dev/null || \
		{ echo "loadtest: no ready gateway on http://127.0.0.1:$(PORT); start it with make demo" >&2; exit 4; }
	$(EXAMGATE) rehearse --host "http://127.0.0.1:$(PORT)" --candidates $(DEMO_CANDIDATES) \
		$(if $(LOADTEST_DURATION),--duration $(LOADTEST_DURATION)) $(if $(LOADTEST_SCENARIOS),--scenarios "$(LOADTEST_SCENARIOS)")

clean: demo-stop services-stop
	rm -rf .run $(VENV)
