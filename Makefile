# otelpeers: `sudo make run` starts the agent, `sudo make test` runs every test.
# Both run scripts/setup.sh first (idempotent; a second run takes well under a second).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: setup run check test lint bench dga-model dga-eval

setup:
	scripts/setup.sh

## run: the agent in the foreground; extra options via ARGS="--duration 60 ..."
run: setup
	$(VENV)/bin/otelpeers run $(ARGS)

## check: can this host run the agent?
check: setup
	$(VENV)/bin/otelpeers check $(ARGS)

## test: unit, kernel and end-to-end tests; "no tests collected" (pytest status 5) is a failure
test: setup
	@rc=0; $(PY) -m pytest -v tests || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

lint:
	@test -x $(VENV)/bin/ruff || { echo "make lint: $(VENV)/bin/ruff missing; run sudo make setup" >&2; exit 1; }
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) -m bench.run $(ARGS)

## dga-model: retrain the shipped DGA model (seeded: same data, same bytes); DATA=corpus dir
## dga-eval: leave-families-out and per-process evaluation -> bench/results/dga_eval.json
DATA ?= ../shared/data/dns
dga-model:
	$(PY) scripts/train_dga.py $(DATA)/benign-train.txt $(DATA)/dga-dev.tsv

dga-eval:
	$(PY) scripts/eval_dga.py $(DATA)/benign-train.txt $(DATA)/dga-dev.tsv
	$(PY) -m bench.detect.eval_dga_actor $(DATA)/benign-train.txt $(DATA)/dga-dev.tsv
