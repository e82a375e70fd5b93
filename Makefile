# The two commands of the README. Each sets up everything it needs in .venv on a fresh machine,
# installing the exact versions pinned in constraints.txt (refresh them with `make lock`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.3

.PHONY: example lint test servers bench lock clean

PLUGINS := $(wildcard plugins/*/setup.cfg)

$(BIN)/rulecrm: setup.cfg pyproject.toml constraints.txt $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet 'pip==$(PIP_VERSION)'
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,dask,console,redis]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $(BIN)/rulecrm

example: $(BIN)/rulecrm
	$(BIN)/rulecrm check rules/tea-shop
	$(BIN)/rulecrm replay --rules rules/tea-shop --events rules/tea-shop/events.jsonl --until 2026-12-31T00:00:00 --out -

# ruff (lint and import order) over the checkout, mypy over the public API; both configured in pyproject.toml
lint: $(BIN)/rulecrm
	$(BIN)/ruff check .
	$(BIN)/mypy

# The real servers the tests start on 127.0.0.1 (redis-server for the redis source, headless Chromium
# and its driver for the console), from Debian's packages, with a CJK font so that the console's
# Chinese pages show in its screenshots; the tests fail, never skip, without them.
SERVER_COMMANDS := redis-server chromium chromedriver
SERVER_PACKAGES := redis-server chromium chromium-driver fonts-noto-cjk
CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
servers:
	@missing=""; for c in $(SERVER_COMMANDS); do command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	[ -e $(CJK_FONT) ] || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian's $(SERVER_PACKAGES) (missing:$$missing)"; \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then SUDO=; \
	    elif command -v sudo >/dev/null; then SUDO=sudo; \
	    else echo "make test needs$$missing: install Debian's $(SERVER_PACKAGES) (apt-get as root)" >&2; exit 1; fi; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	        $(SERVER_PACKAGES) >/dev/null || \
	        { echo "make test: could not install $(SERVER_PACKAGES) with apt-get" >&2; exit 1; }; \
	fi

test: lint servers
	$(BIN)/python -m pytest -q tests $(wildcard plugins/*/tests)

bench: $(BIN)/rulecrm
	$(BIN)/python -m bench.run_all

# Re-resolve the newest versions that setup.cfg's ranges allow and pin them (first-party plugins
# depend only on rulecrm and its extras, so the core's dependencies and its extras are the whole set).
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet pip-tools
	$(VENV)-lock/bin/pip-compile --quiet --upgrade --extra test --extra dask --extra console --extra redis --strip-extras --allow-unsafe \
	    --no-emit-index-url --no-emit-find-links -o constraints.txt setup.cfg
	rm -rf $(VENV)-lock

clean:
	rm -rf $(VENV) $(VENV)-lock build *.egg-info
