# Two commands: `make run` (set up everything and start the service) and `make test` (the test suite).
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: run test setup lint bench api ui system-deps

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: setup
	$(BIN)/rag model
	$(BIN)/rag ingest
	bash scripts/run-services.sh $(BIN)

test: setup system-deps
	$(BIN)/ruff check .
	$(BIN)/pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/rag bench

system-deps:
	bash scripts/ensure-system-deps.sh
