# code-exec: `make serve` runs the service, `make test` runs the tests.
# Every target sets up what it needs: system packages (apt-get), .venv, the sandbox runtime.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The sandbox runtime lives beside the installation, where ExecutorSettings looks by default.
RUNTIME := $(VENV)/share/code-exec/runtime
SYSTEM_STAMP := $(VENV)/.system-deps
VENV_STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(RUNTIME)/python/.installed
NPM_DIR := tests/clients/npm
NPM_STAMP := $(NPM_DIR)/node_modules/.installed

.PHONY: serve test test-fast test-vm bench stress lint setup clean

# Some machines set PYTHONDONTWRITEBYTECODE=1 for everything; the tests would then compile every
# module (and pytest rewrite every test) again on each run. __pycache__/ is ignored by git.
unexport PYTHONDONTWRITEBYTECODE

setup: $(SYSTEM_STAMP) $(VENV_STAMP) $(RUNTIME_STAMP)

$(SYSTEM_STAMP): deploy/install-system-deps.sh
	@mkdir -p $(VENV)
	@bash deploy/install-system-deps.sh
	@touch $@

$(VENV_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev,bench,e2b]'
	@touch $@

# `code-exec setup` builds it (from Debian's /usr/bin/python3, so that the runtime depends on
# nothing outside /usr and itself), as it does for a pip/pipx/uv install; it writes the stamp.
$(RUNTIME_STAMP): executor/backends/local/runtime-requirements.txt $(SYSTEM_STAMP) $(VENV_STAMP)
	@$(BIN)/code-exec --log-level warning setup --runtime-dir $(RUNTIME) --force

# The npm clients the tests drive (the MCP conformance suite, the MCP Inspector, and the
# Node 22 they need), as package-lock.json pins them: nothing is downloaded at test time.
$(NPM_STAMP): $(NPM_DIR)/package.json $(NPM_DIR)/package-lock.json $(SYSTEM_STAMP)
	@bash deploy/install-system-deps.sh --with-npm
	@echo "code-exec: installing the pinned npm test clients in $(NPM_DIR)"
	@cd $(NPM_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

serve: setup
	$(BIN)/code-exec serve

test: setup $(NPM_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The fast tier: no real sandbox or process (the fake backend, in-process apps).
test-fast: setup $(NPM_STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# The local backend's isolation, limit and escape tests in a Debian VM with cgroup v2 only, as
# root and rootless (tests/vm/run.py; needs root and /dev/kvm; the image is cached).
test-vm: setup
	@bash deploy/install-system-deps.sh --with-vm
	$(BIN)/python -m tests.vm.run $(VM_ARGS)

bench: setup
	$(BIN)/python bench/run.py

# The long load run and the hostile mix (both are also part of `make bench`).
stress: setup
	$(BIN)/python -c "import sys, runpy; sys.path.insert(0, '.'); runpy.run_module('bench.load_bench', run_name='__main__')"
	$(BIN)/python -c "import sys, runpy; sys.path.insert(0, '.'); runpy.run_module('bench.hostile_bench', run_name='__main__')"

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(NPM_DIR)/node_modules
