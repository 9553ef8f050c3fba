#!/usr/bin/env bash
# Run the e2e suite against the kind cluster (Docker hosts only):
#   e2e/kind/up.sh && e2e/kind/run-e2e.sh [pytest args...]
# Tests marked localkube_only (the harness self-tests) are skipped on kind.
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${PYTHON:-.venv/bin/python}"
exec "$py" -m pytest e2e --cluster=kind --kubeconfig="$PWD/e2e/kind/.kubeconfig" "$@"
