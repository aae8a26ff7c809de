# rtkit: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[progress,plot]"
	touch $@

$(VENV)/.test-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.demo-installed
	$(BIN)/rtkit demo

test: $(VENV)/.test-installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(VENV)/.test-installed
	$(BIN)/ruff check .

$(VENV)/.docs-installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/python -m mkdocs build --strict -d build/site

bench: $(VENV)/.test-installed
	$(BIN)/python benchmarks/bench_io.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
