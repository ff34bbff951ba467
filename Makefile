# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: setup demo test lint provision mutate

# Two installs: what the demo runs (batcat_nb, the MLflow UI, the examples' packages) and, for
# the tests, everything (JupyterLab, Playwright, moto, linters...). Each is a stamp in the venv.
DEMO := $(VENV)/.demo-installed
DEV := $(VENV)/.installed

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(DEMO): pyproject.toml notebooks/requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[ui]' -r notebooks/requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

$(DEV): pyproject.toml notebooks/requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]' -r notebooks/requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@ $(DEMO)

setup: $(DEV)

## Run the example training notebook locally, tracked in ./mlflow-store/
demo: $(DEMO)
	$(BIN)/batcat run notebooks/train_diabetes.ipynb -p alpha 0.05 -y 'l1_ratio: 0.5'

lint: setup
	$(BIN)/ruff check batcat_nb tests bench scripts magics/00-batcat.py
	$(BIN)/ruff format --check batcat_nb tests bench scripts magics/00-batcat.py
	$(BIN)/mypy
	$(BIN)/python scripts/check_imports.py

## Lint, type-check, a smoke run of the wheel on every Python the project admits, and the
## whole test suite (as root on Debian it first installs and starts what the tests need)
test: lint provision
	scripts/smoke_versions.sh
	$(BIN)/pytest

# What the Docker, registry and browser tests need, as root on Debian: a running dockerd
# (Debian's docker.io), a base image (python:3.11-slim if it can be pulled, else
# batcat-base:bookworm from debootstrap + docker import), docker-registry on 127.0.0.1 and
# Chromium. Idempotent; about a second when all is there.
provision:
	@if [ "$$(id -u)" = 0 ] && [ -f /etc/debian_version ]; then \
		scripts/provision_docker.sh && scripts/provision_registry.sh && scripts/provision_browser.sh; \
	fi

## Mutation testing of the core against its fast tests (slow: not part of `make test` or CI).
## `make mutate MODULES="parameters notebook"` narrows it; `$(BIN)/mutmut browse` shows survivors.
MODULES ?= api parameters notebook tracking manifest worker sweeps contract storage
mutate: setup
	rm -rf mutants
	$(BIN)/mutmut run --max-children $$(nproc) $(foreach m,$(MODULES),"batcat_nb.$(m).*")
	$(BIN)/mutmut results
