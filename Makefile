# Oyez: `make demo` speaks a sample announcement, `make test` runs the whole suite.
# Both create .venv with the Python 3.11+ found as $(PYTHON) and install what they need.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SAMPLE := Good evening. The washing machine has finished, and dinner will be ready in ten minutes.
CHECKED := bot integrations

.PHONY: demo test lint format bench clean config-docs

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Oyez needs Python 3.11 or newer; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/oyez say "$(SAMPLE)" -o announcement.ogg

lint: $(VENV)/.installed-test
	$(BIN)/ruff check $(CHECKED) tests bench
	$(BIN)/ruff format --check $(CHECKED) tests bench
	$(BIN)/mypy --strict $(CHECKED) tests bench

# Rewrites what lint would complain about: import order, fixable lint, formatting.
format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix $(CHECKED) tests bench
	$(BIN)/ruff format $(CHECKED) tests bench

test: lint
	$(BIN)/python -m pytest

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

bench: $(VENV)/.installed-bench
	$(BIN)/python bench/say.py --write-readme
	$(BIN)/python bench/memory.py --write-readme
	$(BIN)/python bench/transcode.py --write-readme
	$(BIN)/python bench/poll.py --write-readme
	$(BIN)/python bench/provider_sdk.py --write-readme
	$(BIN)/python bench/ttfa.py --write-readme
	$(BIN)/python bench/dave.py --write-readme
	$(BIN)/python bench/ratelimit.py --write-readme
	$(BIN)/python bench/schedule.py --write-readme
	$(BIN)/python bench/cluster.py --write-readme
	$(BIN)/python bench/shards.py --write-readme
	$(BIN)/python bench/ha.py --write-readme
	$(BIN)/python bench/wyoming_server.py --write-readme

# After a setting changes: config/oyez.schema.json and README.md's configuration reference.
config-docs: $(VENV)/.installed
	$(BIN)/python -m bot.checkconfig --write-schema --write-reference

clean:
	rm -rf $(VENV) announcement.ogg .mypy_cache .ruff_cache .pytest_cache
