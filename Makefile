# Every target installs what it needs: a venv with the project, and missing Debian packages.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench deps debs clean

$(STAMP): pyproject.toml collectors/_expfmt.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

debs:
	./scripts/install-debs.sh

deps: debs $(STAMP)

demo: deps
	$(BIN)/sandmeter demo

test: deps
	$(BIN)/python -m pytest -q

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/vulture

# BENCH_ARGS=--full: the API benchmark at the issue's 1,000 tenants (adds about 15 minutes)
bench: deps
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .sandmeter .pytest_cache .mypy_cache .ruff_cache
