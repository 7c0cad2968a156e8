# analytics-exports: `make run` (everything, locally) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test focus-validator tools lint typecheck openapi openapi-check unit house integration e2e faults services bench bench-paths bench-scale bench-restatements bench-daily clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP)

## The FinOps Foundation's FOCUS validator, in a venv of its own (its pins clash with ours).
FOCUS_VENV  := .venv-focus
FOCUS_STAMP := $(FOCUS_VENV)/.installed-1.0.0
$(FOCUS_STAMP):
	test -x $(FOCUS_VENV)/bin/python || $(PYTHON) -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/python -m pip install --quiet 'focus-validator==1.0.0' 'multimethod<1.11'
	touch $@

focus-validator: $(FOCUS_STAMP)

## Start PostgreSQL and RabbitMQ on this machine if they are down.
services:
	ops/start-services.sh

## Machine tools the tests need beyond the venv: docker-compose (to validate docker-compose.yml) and
## Chromium (the browser tests of the page).
tools:
	ops/install-tools.sh

## Everything on embedded defaults: local S3 (moto), database, migrations, demo data, API + worker + scheduler.
run: $(STAMP) services
	$(BIN)/python -m devtools

## The whole suite: lint, types, OpenAPI drift, unit, integration and end-to-end tests.
test: $(STAMP) $(FOCUS_STAMP) tools services lint typecheck openapi-check
	$(BIN)/pytest -q --durations=15 tests

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## The house rules (imports, names) and the files that are not code (compose, alerts, docs).
house: $(STAMP) tools
	$(BIN)/pytest -q tests/house

integration: $(STAMP) services
	$(BIN)/pytest -q tests/integration

e2e: $(STAMP) $(FOCUS_STAMP) tools services
	$(BIN)/pytest -q tests/e2e

faults: $(STAMP) services
	$(BIN)/pytest -q tests/faults

lint: $(STAMP)
	$(BIN)/ruff check service actors cli devtools bench tests
	$(BIN)/ruff format --check service actors cli devtools bench tests

typecheck: $(STAMP)
	$(BIN)/mypy

## Regenerate openapi/openapi.json from the code (commit the result).
openapi: $(STAMP)
	$(BIN)/analytics-exports openapi

openapi-check: $(STAMP)
	$(BIN)/analytics-exports openapi --check

## Benchmarks (not part of make test; see docs/performance.md). The headline: exports through the
## real API, worker and scheduler processes beside psql's limit.
bench: $(STAMP) services
	$(BIN)/python -m bench.end_to_end

## The exporter in-process beside every baseline path (formats, cursor, naive, without S3).
bench-paths: $(STAMP) services
	$(BIN)/python -m bench.run

## Scale-out (not part of make test): 40 mid-size exports through the API with 1, then 2 worker processes.
bench-scale: $(STAMP) services
	$(BIN)/python -m bench.scale_out

## Restatement checks (not part of make test): period_totals beside the bare aggregate and a re-export's COPY.
bench-restatements: $(STAMP) services
	$(BIN)/python -m bench.restatement_check

## Daily exports (not part of make test): the COPY of a daily UTC export, before and now, beside the whole days alone.
bench-daily: $(STAMP) services
	$(BIN)/python -m bench.daily_export

clean:
	rm -rf $(VENV) $(FOCUS_VENV) .pytest_cache .mypy_cache .ruff_cache
