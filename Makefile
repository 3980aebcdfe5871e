# examgate — the two commands: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXAMGATE := $(BIN)/examgate
DEMO_CANDIDATES ?= 2000
PORT ?= 8080

export EXAMGATE_SECRETS_FILE ?= $(CURDIR)/.run/secrets.json

.PHONY: help venv services services-stop system-deps migrate seed demo demo-stop test bench lint clean

help:
	@echo "make demo           set everything up and start gateway, worker and payment simulator"
	@echo "make demo-stop      stop what make demo started"
	@echo "make test           set everything up, then run the whole test suite"
	@echo "make bench          run the benchmarks (writes benchmarks/results/)"
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

test: venv services system-deps
	$(BIN)/python -m pytest

bench: venv services system-deps
	@scripts/bench-deps.sh
	$(BIN)/python -m benchmarks

clean: demo-stop services-stop
	rm -rf .run $(VENV)
