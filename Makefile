# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true

.PHONY: setup demo test lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

## Run the example training notebook locally, tracked in ./mlflow.db
demo: setup
	$(BIN)/batcat run notebooks/train_diabetes.ipynb -p alpha 0.05 -y 'l1_ratio: 0.5'

lint: setup
	$(BIN)/ruff check batcat_nb tests bench magics/00-batcat.py
	$(BIN)/ruff format --check batcat_nb tests bench magics/00-batcat.py
	$(BIN)/mypy

## Lint, type-check and run the whole test suite (as root on Debian it first installs and
## starts what the tests need: the browser)
test: lint
	@if [ "$$(id -u)" = 0 ]; then scripts/provision_browser.sh; fi
	$(BIN)/pytest
