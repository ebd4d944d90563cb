# The two Quick-start commands: `make demo` and `make test`. Both set up .venv first.
# CPU torch by default; CUDA users override, e.g.
#   make test TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.litenext-installed

.PHONY: setup demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/python scripts/demo.py

# Two pytest workers with one torch thread each (2 cores); the tests that assert durations run
# afterwards on an otherwise idle machine.
test: setup
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadfile -m "not timing" $(PYTEST_ARGS)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -m timing $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: none selected

lint: setup
	$(BIN)/ruff check litenext_monai tests scripts

clean:
	rm -rf $(VENV) demo_output .pytest_cache
