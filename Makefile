# Two entry points: `make run` (a local 3-node cluster) and `make test` (the whole suite).
# Both create .venv and install the project on first use.
PYTHON ?= python3
VENV   := .venv
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ringkv local up

# The backup tests' S3 gateway is built (~2 min cold on 2 cores, then cached in
# ~/.cache/ringkv/s3) before pytest, outside the per-test timeout.
test: $(STAMP)
	bash e2e/s3/build.sh >/dev/null
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# The disruption scenarios (e2e/disruption) in three groups, each on a fresh kind cluster
# (durations in e2e/README.md). CI runs the longest, machine and zone failures, every time
# (in `make e2e`); the other two run in the nightly `make e2e-disruption`.
DISRUPTION_FAILURES := e2e/disruption/test_zone_loss_e2e.py e2e/disruption/test_drain_e2e.py \
                       e2e/disruption/test_disk_full_e2e.py
DISRUPTION_LIFECYCLE := e2e/disruption/test_starting_pod_e2e.py \
                        e2e/disruption/test_operator_away_e2e.py \
                        e2e/disruption/test_rebootstrap_e2e.py \
                        e2e/disruption/test_reshard_e2e.py
DISRUPTION_STORAGE := e2e/disruption/test_storage_and_tls_e2e.py

# End-to-end tests on kind with real containers (e2e/kind; podman here, Docker elsewhere): builds
# every image on this machine (cold: see e2e/README.md; cached in ~/.cache/ringkv/kind and the
# container engine's store), creates a cluster, runs the README's newcomer steps and the
# operator suite, and deletes the cluster (also on failure or Ctrl-C); then the failures group
# of the disruption scenarios on a fresh cluster. Needs root.
.PHONY: e2e
e2e: $(STAMP)
	bash e2e/s3/build.sh >/dev/null
	bash e2e/kind/run-e2e.sh
	bash e2e/kind/run-e2e.sh $(DISRUPTION_FAILURES)

# The other disruption groups (a pod deleted while starting, the operator away and upgraded,
# delete and rebootstrap; volume growth, a scaling reversed, certificate rotation), each on a
# fresh kind cluster, deleted afterwards: nightly, as they do not fit in CI's 90 minutes
# beside the rest. Needs root.
.PHONY: e2e-disruption
e2e-disruption: $(STAMP)
	bash e2e/kind/run-e2e.sh $(DISRUPTION_LIFECYCLE)
	bash e2e/kind/run-e2e.sh $(DISRUPTION_STORAGE)

# Kubernetes on kind with real containers (e2e/kind; podman here, Docker elsewhere): every
# image is built on this machine (~30 min cold on 2 cores, see e2e/README.md; cached in
# ~/.cache/ringkv/kind and podman's store). kind-up prints the KUBECONFIG; kind-e2e runs the
# README's newcomer steps and the operator suite on a fresh cluster and deletes it
# afterwards (also on failure or Ctrl-C). Needs root.
.PHONY: kind-images kind-up kind-down kind-e2e
kind-images:
	bash e2e/kind/build-images.sh

kind-up:
	bash e2e/kind/up.sh

kind-down:
	bash e2e/kind/down.sh

kind-e2e: $(STAMP)
	bash e2e/kind/run-e2e.sh
