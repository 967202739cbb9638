# wardgate: the two commands the README promises, each self-sufficient on a fresh machine
# with Python 3.11+ and make. Each creates .venv and installs the pinned dependencies.

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.wardgate-installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,demo,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/wardgate demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q -n 2 -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) wardgate-data .pytest_cache
