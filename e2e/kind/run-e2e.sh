#!/usr/bin/env bash
# The e2e suite on a fresh kind cluster, removed afterwards (also on failure and Ctrl-C):
#   e2e/kind/run-e2e.sh [pytest args...]        (make kind-e2e)
# Default tests: the README's newcomer steps (e2e/kind) and the operator suite
# (e2e/operator). KIND_KEEP=1 keeps the cluster for a look afterwards (make kind-down).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"
# One cluster of a name per machine: a second run (another checkout) waits for the first. The
# lock is held by flock(1) itself (--close): processes the run starts must not inherit it, or a
# daemon that outlives the run (podman's DNS server, after a teardown that failed) would keep
# every later run waiting.
if [[ "${RINGKV_KIND_LOCK_HELD:-}" != "$KIND_CLUSTER" ]]; then
    export RINGKV_KIND_LOCK_HELD="$KIND_CLUSTER"
    exec flock --close "/tmp/ringkv-kind-$KIND_CLUSTER.lock" bash "$KIND_DIR/run-e2e.sh" "$@"
fi
py="${PYTHON:-.venv/bin/python}"
cleanup() {
    log "pytest: $((SECONDS - tests_at)) s; total so far: $SECONDS s"
    if [[ "${KIND_KEEP:-0}" == 1 ]]; then log "keeping cluster $KIND_CLUSTER (make kind-down)"; return; fi
    "$KIND_DIR/down.sh" --quiet || true
    log "down; total: $SECONDS s"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
tests_at=$SECONDS
"$KIND_DIR/up.sh"
tests_at=$SECONDS
log "up (images and cluster): $SECONDS s"
(($#)) || set -- e2e/kind e2e/operator
rc=0
# KIND_ENGINE: the tests stop and start node containers (a machine failing)
KIND_ENGINE="$(container_engine)" PATH="$KIND_CACHE/bin:$PATH" \
    "$py" -m pytest --cluster=kind --kubeconfig="$KIND_KUBECONFIG" -p no:cacheprovider "$@" || rc=$?
exit "$rc"
