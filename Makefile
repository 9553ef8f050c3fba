# Two entry points: `make run` (a local 3-node cluster) and `make test` (the whole suite).
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck clean e2e-selftest

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ringkv local up

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The e2e harness (e2e/localkube): build or reuse the control plane built from Go modules
# (~10 min cold on 2 cores, cached in ~/.cache/ringkv/localkube), then its self-tests.
.PHONY: e2e-selftest
e2e-selftest: $(STAMP)
	bash e2e/localkube/build.sh
	$(VENV)/bin/python -m pytest e2e/tests -p no:cacheprovider
