PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean-venv

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# test-only reference networks (the publishers' FourCastNet code), without their dependencies
	$(BIN)/python -m pip install --quiet --no-deps ai-models-fourcastnetv2==0.0.3 ai-models-fourcastnet==0.0.7
	@touch $(STAMP)

demo: $(STAMP)
	@if [ -d ../shared/data/cartopy ]; then export CARTOPY_DATA_DIR=$$(cd ../shared/data/cartopy && pwd); fi; \
	$(BIN)/forecast demo --workdir work/demo

# the suite on two worker processes, each test file on one of them (its module fixtures built once)
test: $(STAMP)
	@if [ -d ../shared/data/cartopy ]; then export CARTOPY_DATA_DIR=$$(cd ../shared/data/cartopy && pwd); fi; \
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean-venv:
	rm -rf $(VENV)
