# consent-gate: two commands do everything on a fresh machine.
#   make run   create .venv, install, verify models, run the narrated demo
#   make test  install dev dependencies, run the whole test suite (and linters)
# Others: make serve [HOST=...] [PORT=...], make bench, make lock, make clean.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
STAMP  := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
# Pinned versions (requirements/*.txt, made by `make lock`) install first; then the
# package itself, editable and without dependencies. Its build bundles the CC0 age model.
LOCK_SOURCES := pyproject.toml setup.py

.PHONY: test-milvus run test install install-dev serve lint typecheck bench clean browser lock deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24"

$(STAMP): $(LOCK_SOURCES) requirements/run.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/run.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(DEV_STAMP): $(LOCK_SOURCES) requirements/dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@ $(STAMP)

install: $(STAMP)
install-dev: $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/gate models verify
	$(BIN)/gate demo

serve: $(STAMP)
	$(BIN)/gate models verify
	$(BIN)/gate serve --host $(HOST) --port $(PORT)

lint: $(DEV_STAMP)
	$(BIN)/ruff check gate tests benchmarks
	$(BIN)/mypy --strict gate

# Declared dependencies match imports (deptry; configuration in pyproject.toml).
deps: $(DEV_STAMP)
	$(BIN)/deptry gate

test: $(DEV_STAMP) browser
	$(BIN)/gate models verify > /dev/null
	$(BIN)/ruff check gate tests benchmarks
	$(BIN)/mypy --strict gate
	$(BIN)/deptry gate
	$(BIN)/pytest -q --cov=gate --cov-report=term:skip-covered --cov-report=json:.coverage.json
	$(MAKE) --no-print-directory test-milvus

# The engine suites and the efficacy harness again on the shared Milvus index (Milvus
# Lite in-process; tests/conftest.py keeps one server up for the session).
MILVUS_SUITES := tests/unit/test_engine.py tests/unit/test_fail_closed.py \
	tests/real/test_efficacy.py tests/real/test_pipeline.py \
	tests/consent/test_erasure_everywhere.py
test-milvus: $(DEV_STAMP)
	GATE_INDEX=milvus $(BIN)/pytest -q -p no:cacheprovider $(MILVUS_SUITES)

# The consent portal's browser test drives Debian's Chromium; install it when apt can
# (best effort: without it that one test skips and says why).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1; }; \
	  } || echo "chromium not installed: the portal browser test will skip"; }

bench: $(STAMP)
	$(BIN)/python benchmarks/check_latency.py

# Re-pin requirements/*.txt from pyproject.toml (needs the package index).
lock: $(DEV_STAMP)
	$(BIN)/pip install --quiet "uv==0.13.9"
	for spec in "run:--extra server --extra video --extra demo" \
	            "server:--extra server --extra video --extra milvus" "dev:--extra dev"; do \
	  name=$${spec%%:*}; extras=$${spec#*:}; \
	  $(BIN)/uv pip compile pyproject.toml $$extras --python-version 3.11 \
	    --python-platform x86_64-manylinux_2_28 --no-header --annotation-style line \
	    -q -o requirements/$$name.txt; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.json
