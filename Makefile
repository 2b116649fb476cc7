# code-exec: `make serve` runs the service, `make test` runs the tests.
# Every target sets up what it needs: system packages (apt-get), .venv, the sandbox runtime.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := .runtime
SYSTEM_STAMP := $(RUNTIME)/.system-deps
VENV_STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(RUNTIME)/python/.installed

.PHONY: serve test bench stress lint setup clean

setup: $(SYSTEM_STAMP) $(VENV_STAMP) $(RUNTIME_STAMP)

$(SYSTEM_STAMP): deploy/install-system-deps.sh
	@mkdir -p $(RUNTIME)
	@bash deploy/install-system-deps.sh
	@touch $@

$(VENV_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench,e2b]'
	@touch $@

# Debian's /usr/bin/python3 so that the runtime depends on nothing outside /usr and itself.
$(RUNTIME_STAMP): deploy/runtime-requirements.txt $(SYSTEM_STAMP)
	@echo "code-exec: building the sandbox Python runtime in $(RUNTIME)/python"
	@/usr/bin/python3 -m venv --clear $(RUNTIME)/python
	@$(RUNTIME)/python/bin/python -m pip install -q --disable-pip-version-check -r deploy/runtime-requirements.txt
	@# A prebuilt matplotlib font cache, copied into each sandbox, spares every plot a rebuild.
	@rm -rf $(RUNTIME)/mplconfig && mkdir -p $(RUNTIME)/mplconfig
	@MPLCONFIGDIR=$(abspath $(RUNTIME))/mplconfig $(RUNTIME)/python/bin/python -c 'import matplotlib.pyplot'
	@touch $@

serve: setup
	$(BIN)/code-exec serve

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run.py

# The long load run alone (it is also part of `make bench`).
stress: setup
	$(BIN)/python -c "import sys, runpy; sys.path.insert(0, '.'); runpy.run_module('bench.load_bench', run_name='__main__')"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(RUNTIME)
