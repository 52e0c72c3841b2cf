# jobrec: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export JOBREC_HOME ?= $(CURDIR)/data
BENCH_ARGS ?=
SOAK_ARGS ?= --days 30

.PHONY: demo test install check-java lint bench bench-synth soak ui clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(BIN)/.installed

check-java:
	@command -v java >/dev/null 2>&1 || [ -x "$$JAVA_HOME/bin/java" ] || { \
	  echo "Java 17 is required for Spark and was not found."; \
	  echo "Install it with: sudo apt-get install -y openjdk-17-jre-headless"; exit 1; }

## Synthetic marketplace → daily pipeline → recommendations in Redis → a lookup printed.
demo: install check-java
	$(BIN)/jobrec demo

## Lint and the whole test suite (real Redis, local Spark, Airflow dag.test()).
test: install check-java
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .

## Benchmarks at their small default size; BENCH_ARGS="--full" for the issues' sizes.
bench: install check-java
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b $(BENCH_ARGS) || exit 1; done

## Fault-injection soak (issue 15): daily runs with one injected fault per day, invariants checked after each;
## exits 1 on any violation. SOAK_ARGS="--days 5 --seed 2" for another run; bench/out/soak.json has the figures.
soak: install check-java
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

## The Airflow UI with the jobrec DAGs loaded (SQLite metadata DB under $JOBREC_HOME/airflow).
ui: install check-java
	$(BIN)/jobrec demo --ui

## Stop the embedded Redis of $JOBREC_HOME (if running) and delete the data folder.
clean:
	-[ -x $(BIN)/python ] && $(BIN)/python -c "import os, pathlib; from serving_store.connection import stop_embedded; stop_embedded(pathlib.Path(os.environ['JOBREC_HOME']) / 'redis', save=False)"
	rm -rf $(JOBREC_HOME) bench/out .pytest_cache
