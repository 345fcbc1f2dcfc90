# Two commands on a fresh clone:  `make demo` (set-up + dvc repro + leaderboard)
# and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
# The torch build to install; override elsewhere, e.g. TORCH="torch torchvision".
TORCH ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# pytest-xdist workers (the built workspaces of the end-to-end tests are shared within a
# worker group: tests/conftest.py); `make test TEST_WORKERS=0` runs in one process
TEST_WORKERS ?= logical
PYTEST := python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

.PHONY: setup demo test test-all lint clean-demo

$(BIN)/oodbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[demo,clip,faiss,dev]"
	touch $@

setup: $(BIN)/oodbench

demo: setup
	PATH="$(abspath $(BIN)):$$PATH" dvc repro
	PATH="$(abspath $(BIN)):$$PATH" oodbench report

test: setup
	PATH="$(abspath $(BIN)):$$PATH" $(PYTEST)

# also the exhaustive sweeps whose representative cases `make test` runs (README)
test-all: setup
	PATH="$(abspath $(BIN)):$$PATH" $(PYTEST) -m ""

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/lint-imports
	PATH="$(abspath $(BIN)):$$PATH" oodbench pipeline --check
