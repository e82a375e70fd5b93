# The two commands of the README. Each sets up everything it needs in .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: example test bench clean

PLUGINS := $(wildcard plugins/*/setup.cfg)

$(BIN)/rulecrm: setup.cfg pyproject.toml $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(BIN)/rulecrm

example: $(BIN)/rulecrm
	$(BIN)/rulecrm check rules/tea-shop
	$(BIN)/rulecrm replay --rules rules/tea-shop --events rules/tea-shop/events.jsonl --until 2026-12-31T00:00:00 --out -

test: $(BIN)/rulecrm
	$(BIN)/python -m pytest -q tests $(wildcard plugins/*/tests)

bench: $(BIN)/rulecrm
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) build *.egg-info
