# The template's own tasks. `make demo` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
BUILD := build
DEMO_DIR := $(BUILD)/demo
BENCH_DIR := $(BUILD)/bench
BAKE_DIR ?= $(BUILD)/dev
PYTEST_ARGS ?=

.PHONY: install demo test bake bench lint lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

# The tooling's versions are locked in uv.lock, as the generated projects' are in theirs.
$(VENV)/.installed: pyproject.toml uv.lock | $(BIN)/python
	$(BIN)/uv sync --locked --extra test --quiet
	touch $@

install: $(VENV)/.installed ## The template's tooling: cookiecutter, pytest-cookies, cruft, ruff, mypy

demo: install ## Bake the defaults afresh into build/demo (no data kept) and serve them; PORT=8000 by default
	@echo "Baking the defaults afresh into $(DEMO_DIR): nothing from an earlier demo is kept."
	rm -rf $(DEMO_DIR)
	$(BIN)/cookiecutter . --no-input --output-dir $(DEMO_DIR)
	$(MAKE) -C $(DEMO_DIR)/chat-service run UV=$(CURDIR)/$(BIN)/uv

test: install ## Bake every supported option set, lint, type-check and test each bake
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bake: install ## Bake the defaults into $(BAKE_DIR) (for working on the template)
	rm -rf $(BAKE_DIR)
	$(BIN)/cookiecutter . --no-input --output-dir $(BAKE_DIR)

bench: install ## Bake the defaults into build/bench and run their benchmark (`make bench` there)
	rm -rf $(BENCH_DIR)
	$(BIN)/cookiecutter . --no-input --output-dir $(BENCH_DIR)
	$(MAKE) -C $(BENCH_DIR)/chat-service bench UV=$(CURDIR)/$(BIN)/uv

# The generated project's uv.lock is templates/uv-py<version>.lock with its own name and version left to Jinja.
PYTHON_VERSIONS := 3.11 3.12 3.13
LOCK_DIR := $(BUILD)/lock
LOCK_ARGS ?= --upgrade

lock: install ## Upgrade uv.lock and the generated projects' (templates/uv-py*.lock); LOCK_ARGS= keeps versions
	$(BIN)/uv lock $(LOCK_ARGS) --quiet
	for version in $(PYTHON_VERSIONS); do \
	  rm -rf $(LOCK_DIR)/$$version && \
	  $(BIN)/cookiecutter . --no-input --output-dir $(LOCK_DIR)/$$version python_version=$$version && \
	  (cd $(LOCK_DIR)/$$version/chat-service && $(CURDIR)/$(BIN)/uv lock $(LOCK_ARGS) --quiet) && \
	  sed -e '/^name = "chat-service"$$/{s//name = "{{ cookiecutter.project_slug }}"/;n;s/^version = .*/version = "{{ cookiecutter.version }}"/}' \
	    $(LOCK_DIR)/$$version/chat-service/uv.lock > templates/uv-py$$version.lock || exit 1; \
	done

lint: install ## Lint the template's own code (hooks and tests)
	$(BIN)/ruff check hooks tests
	$(BIN)/ruff format --check hooks tests

clean:
	rm -rf $(VENV) $(BUILD) .pytest_cache .ruff_cache
