# The two commands of the README. Each sets up everything it needs in .venv on a fresh machine,
# installing the exact versions pinned in constraints.txt (refresh them with `make lock`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.3

.PHONY: example lint test bench lock clean

PLUGINS := $(wildcard plugins/*/setup.cfg)

$(BIN)/rulecrm: setup.cfg pyproject.toml constraints.txt $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'pip==$(PIP_VERSION)'
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dask]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(BIN)/rulecrm

example: $(BIN)/rulecrm
	$(BIN)/rulecrm check rules/tea-shop
	$(BIN)/rulecrm replay --rules rules/tea-shop --events rules/tea-shop/events.jsonl --until 2026-12-31T00:00:00 --out -

# ruff (lint and import order) over the checkout, mypy over the public API; both configured in pyproject.toml
lint: $(BIN)/rulecrm
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q tests $(wildcard plugins/*/tests)

bench: $(BIN)/rulecrm
	$(BIN)/python -m bench.run_all

# Re-resolve the newest versions that setup.cfg's ranges allow and pin them (first-party plugins
# depend only on rulecrm, so the core's dependencies and its test and dask extras are the whole set).
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet pip-tools
	$(VENV)-lock/bin/pip-compile --quiet --upgrade --extra test --extra dask --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links -o constraints.txt setup.cfg
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) $(VENV)-lock build *.egg-info
