# The two commands in the README: `make run` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every package of the development and CI environment, pinned (`make lock` refreshes them). The
# library's own ranges in pyproject.toml stay ranges for users; `make drift` checks the newest.
LOCK := requirements/dev.lock
LINKAGE_LOCK := requirements/linkage-client.lock
# PIP_CONSTRAINT (not -c) so that packages built from source get the locked build tools too.
PIP_LOCKED = PIP_CONSTRAINT=$(CURDIR)/$(LOCK) $(BIN)/pip install -q --disable-pip-version-check

.PHONY: run test lint typecheck pytest soak docs cli-doc bench bench-peers bench-pg-claims clean install
.PHONY: lock drift
.PHONY: chaos

$(STAMP): pyproject.toml $(LOCK) $(LINKAGE_LOCK)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(PIP_LOCKED) pip
	# The Redis store tests start private throwaway redis-servers.
	command -v redis-server >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q redis-server)
	# The PostgreSQL store tests start private throwaway servers (initdb + postgres binaries).
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  ! command -v apt-get >/dev/null || (apt-get update -q && apt-get install -y -q postgresql)
	# WeasyPrint (render kind) needs Pango, HarfBuzz and a font from Debian.
	if command -v dpkg >/dev/null && ! dpkg -s libpango-1.0-0 libpangoft2-1.0-0 \
	    libharfbuzz-subset0 fonts-dejavu-core >/dev/null 2>&1; then \
	  apt-get update -q && apt-get install -y -q libpango-1.0-0 libpangoft2-1.0-0 \
	    libharfbuzz-subset0 fonts-dejavu-core; fi
	# The alert rules are checked and unit-tested with promtool (Debian's prometheus package).
	command -v promtool >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q --no-install-recommends prometheus)
	# The dashboard tests drive Debian's chromium through Playwright (never `playwright install`).
	command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q chromium)
	$(PIP_LOCKED) -e '.[dev]'
	# The linkage tests drive the real anonlink-client, whose pins (pydantic<2, numpy<2,
	# cryptography<41) clash with conveyor's: it gets a venv of its own, as a data holder's.
	test -x $(VENV)/linkage-client/bin/pip || $(PY) -m venv $(VENV)/linkage-client
	$(VENV)/linkage-client/bin/pip install -q --disable-pip-version-check -r $(LINKAGE_LOCK)
	touch $(STAMP)

install: $(STAMP)

# Every built-in workload (render, allocation, kge, linkage, the Swiss AI examples) and the demo
# kinds, with what they need installed as for `make test` (kge: `install-kge`).
run: $(STAMP) install-kge
	CONVEYOR_HOME=$${CONVEYOR_HOME:-./.conveyor} $(BIN)/conveyor up --demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# install-kge: the kge extra (CPU torch from this machine's wheel, then PyKEEN) so its tests run.
pytest: $(STAMP) install-kge
	$(BIN)/pytest -q -p no:cacheprovider -m "not soak and not image"

# Long suites (fault soak, nightly reliability tiers): not part of `make test`.
soak: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m soak

# Reliability suite, nightly tier: every fault scenario in tests/reliability including the soak
# ones (S10 needs root for `ip netns`, and socat; S6 needs libfaketime from Debian's faketime);
# each writes its row to bench/results/reliability.json, rendered into docs/reliability.md even
# when a scenario fails. The 30-minute S20 soak is part of it.
chaos: $(STAMP)
	command -v socat >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q socat iproute2)
	command -v faketime >/dev/null || ! command -v apt-get >/dev/null || \
	  (apt-get update -q && apt-get install -y -q faketime)
	CHAOS_TIER=nightly $(BIN)/pytest -q -p no:cacheprovider -m "not image" tests/reliability; \
	  status=$$?; $(BIN)/python bench/reliability_table.py; exit $$status

test: lint typecheck pytest

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

# docs/reference/cli.md from the typer app (tests/unit/test_cli_doc.py fails when it is stale).
cli-doc: $(STAMP)
	(printf '%s\n\n' "$$(head -1 docs/reference/cli.md)"; \
	  $(BIN)/typer conveyor.cli.app utils docs --name conveyor --title "CLI reference") \
	  > docs/reference/cli.md.new && mv docs/reference/cli.md.new docs/reference/cli.md

bench: $(STAMP)
	$(BIN)/python bench/engine.py

# PostgreSQL claim latency, empty table vs 1,000,000 finished jobs (a private throwaway server).
bench-pg-claims: $(STAMP)
	$(BIN)/python bench/postgres_claims.py

# The peer queues (celery, rq, dramatiq, huey, ...) and conveyor's three stores, in one run.
bench-peers: $(STAMP)
	bash bench/peers/run.sh

# The HTTP API: single and batched submits, latency through SSE, 500 SSE watchers.
bench-api: $(STAMP)
	$(BIN)/python bench/api.py

clean:
	rm -rf $(VENV) .conveyor site .mypy_cache .ruff_cache

# Refresh the locks: resolve the newest versions pyproject.toml's ranges allow in a scratch venv
# (CPU torch first, as install-kge does) and pin them. Review the diff and commit it with the
# fixes it needs: an upgrade is a reviewed commit, never a surprise in CI.
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-linkage && $(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q --upgrade pip hatchling editables
	$(LOCK_VENV)/bin/pip install -q torch==2.13.0
	$(LOCK_VENV)/bin/pip install -q -e '.[dev,kge]'
	mkdir -p requirements
	(echo "# make lock: the development and CI environment (.[dev,kge]), $$(date -u +%F)"; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable | grep -v '^-e ') > $(LOCK).new
	$(PY) -m venv $(LOCK_VENV)-linkage
	$(LOCK_VENV)-linkage/bin/pip install -q --upgrade pip
	$(LOCK_VENV)-linkage/bin/pip install -q anonlink-client==0.1.5 anonlink==0.15.3 'recordlinkage>=0.16'
	(echo "# make lock: the anonlink-client venv the linkage tests drive, $$(date -u +%F)"; \
	  $(LOCK_VENV)-linkage/bin/pip freeze --all) > $(LINKAGE_LOCK).new
	mv $(LOCK).new $(LOCK) && mv $(LINKAGE_LOCK).new $(LINKAGE_LOCK)
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-linkage

# Drift: install conveyor with the newest versions its ranges allow (no lock) in a venv of its
# own, import it and type-check it. CI runs it after `make test` and reports it on its own
# (it never blocks a landing); when it fails, see docs/howto/upgrade-dependencies.md.
DRIFT_VENV := .drift-venv
drift:
	rm -rf $(DRIFT_VENV) && $(PY) -m venv $(DRIFT_VENV)
	$(DRIFT_VENV)/bin/pip install -q --upgrade pip
	$(DRIFT_VENV)/bin/pip install -q --upgrade --upgrade-strategy eager \
	  '.[postgres,redis,s3,swissai,render,allocation,linkage,otel]' 'mypy>=1.10' 'pytest>=8.0'
	cd /tmp && $(CURDIR)/$(DRIFT_VENV)/bin/python -c \
	  "import conveyor, conveyor.cli, conveyor.api.app, conveyor.store.postgres, conveyor.store.redis; print('drift: imports ok')"
	$(DRIFT_VENV)/bin/pip freeze | grep -v '^conveyor ' | diff <(grep -v '^#' $(LOCK) | sort) <(sort -) \
	  | grep '^>' | sed 's/^> /drift: newer than the lock: /' || true
	$(DRIFT_VENV)/bin/mypy --cache-dir $(DRIFT_VENV)/.mypy_cache

# -- deployment: the image, compose and the Helm chart (docs/deploy/) ---------------------------
.PHONY: image compose-check helm-check test-deploy deploy-tools
IMAGE ?= localhost/conveyor:latest

# podman (with runc: crun fails on cgroup v1 hosts) and debootstrap for the local base image.
deploy-tools:
	@missing=""; for tool in podman runc debootstrap; do \
	  command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap; \
	  else echo "!!! cannot install$$missing (no apt-get): the image test will be SKIPPED"; fi; fi

# Build deploy/Dockerfile (BASE_IMAGE=... to build on a registry image instead of the local one).
image: $(STAMP) deploy-tools
	$(BIN)/python -m tests.deploy.podman $(IMAGE) $(BASE_IMAGE)

compose-check: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/deploy/test_compose.py

helm-check: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider tests/deploy/test_helm.py tests/deploy/test_dockerfile.py

# Everything, including the slow image test (builds and runs containers; minutes).
test-deploy: $(STAMP) deploy-tools
	$(BIN)/pytest -q -p no:cacheprovider -s tests/deploy

# -- knowledge-graph embeddings (the `kge` extra: torch + PyKEEN, ~5 min to install; not in dev) -
.PHONY: install-kge test-kge bench-kge
# CPU torch first: this machine provides torch 2.13.0+cpu; a plain requirement pulls a CUDA build.
install-kge: $(STAMP)
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP_LOCKED) torch==2.13.0
	$(BIN)/python -c "import pykeen, hnswlib, rdflib" 2>/dev/null || \
	  $(PIP_LOCKED) -e '.[dev,kge]'

# tests/kge are reported SKIPPED by `make test` unless the extra is installed; this runs them.
test-kge: install-kge
	$(BIN)/pytest -q -p no:cacheprovider tests/kge

bench-kge: install-kge
	$(BIN)/python bench/kge.py
