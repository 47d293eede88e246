PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test demo lint typecheck pytest clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

demo: $(VENV)/.installed
	$(BIN)/python -m meigen_async demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
