PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test test-lowest quick demo docs bench screenshot clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,cli,bots,docs,redis,otel]'
	touch $@

# Python may cache bytecode while the tests run, whatever $PYTHONDONTWRITEBYTECODE says: the
# suite starts about a hundred Python processes (the command line, the docs' programs, the
# multi-process caches), and without the cache each compiled the package again, and pytest
# rewrote every test module's asserts anew in each worker (measured from a fresh clone: 84 s
# of CPU against 74 s, 66 s of wall time against 60 s).
NO_PYC_OPT_OUT := env -u PYTHONDONTWRITEBYTECODE
PYTEST := $(NO_PYC_OPT_OUT) $(BIN)/python -m pytest
# Once, before the workers start: the package compiled, the tests' asserts rewritten (each of
# three workers did it all again at once in a fresh clone: 61 s of pytest against about 50).
WARM_CACHES := $(NO_PYC_OPT_OUT) $(BIN)/python -m compileall -q meigen_async \
	&& $(PYTEST) --collect-only -qq -p no:randomly > /dev/null

# Three workers on 2 cores: the tests that time several processes run in one of them
# (`--dist loadgroup`), mostly waiting, while the other two keep both cores busy (measured:
# 58 s with two workers, 48-51 s with three).
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(WARM_CACHES)
	MEIGEN_BUILT_SITE=$(CURDIR)/site $(PYTEST) -n 3 --dist loadgroup

# The test suite on the lowest versions pyproject.toml declares (.ci/constraints-lowest.txt),
# in a venv of its own, so that a minimum that no longer works is caught. Only pytest: the
# linters and the docs do not depend on these versions.
LOWEST := .venv-lowest
LOWEST_CONSTRAINTS := .ci/constraints-lowest.txt

$(LOWEST)/.installed: pyproject.toml $(LOWEST_CONSTRAINTS)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -c $(LOWEST_CONSTRAINTS) -e '.[test,cli,bots,redis]'
	touch $@

test-lowest: $(LOWEST)/.installed
	$(NO_PYC_OPT_OUT) $(LOWEST)/bin/python -m pytest -n 3 --dist loadgroup

# The tests not marked slow (no subprocesses, Redis processes, big hypothesis runs, real
# waits, mkdocs builds or aiogram imports): under 15 s on 2 cores, for every edit. The rule
# for the marker is in pyproject.toml; `make test` still runs everything.
quick: $(VENV)/.installed
	$(PYTEST) -n 2 --dist loadgroup -m "not slow"

demo: $(VENV)/.installed
	$(BIN)/python -m meigen_async demo

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

# The peers (aiohttp-client-cache, hishel, ...) are installed only for this target.
bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8000

# The home page, the API reference and the command line's page, as headless Chromium shows
# them, in build/screenshots/.
# Needs chromium (apt-get install -y chromium); nothing in `make test` does.
screenshot: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python tools/screenshot.py site build/screenshots

clean:
	rm -rf $(VENV) $(LOWEST) .mypy_cache .ruff_cache .pytest_cache site build
