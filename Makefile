# The two commands in the README: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest soak docs bench clean install

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The Redis store tests start private throwaway redis-servers.
	command -v redis-server >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q redis-server)
	# The dashboard tests drive Debian's chromium through Playwright (never `playwright install`).
	command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q chromium)
	# WeasyPrint (render kind) needs Pango, HarfBuzz and a font from Debian.
	if command -v dpkg >/dev/null && ! dpkg -s libpango-1.0-0 libpangoft2-1.0-0 \
	    libharfbuzz-subset0 fonts-dejavu-core >/dev/null 2>&1; then \
	  apt-get update -q && apt-get install -y -q libpango-1.0-0 libpangoft2-1.0-0 \
	    libharfbuzz-subset0 fonts-dejavu-core; fi
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	CONVEYOR_HOME=$${CONVEYOR_HOME:-./.conveyor} $(BIN)/conveyor up --demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "not soak"

# Long suites (fault soak, nightly reliability tiers): not part of `make test`.
soak: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m soak

test: lint typecheck pytest

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) .conveyor site .mypy_cache .ruff_cache
