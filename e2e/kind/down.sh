#!/usr/bin/env bash
# Delete the ringkv kind cluster and what a crashed run may have left of it (node
# containers, their /var volumes):  e2e/kind/down.sh   (make kind-down)
# Env: KIND_CLUSTER (default ringkv). --quiet: no message when there is nothing to delete.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
quiet=0; [[ "${1:-}" == --quiet ]] && quiet=1
command -v "$(container_engine)" >/dev/null || { ((quiet)) || log "no container engine"; exit 0; }
engine="$(container_engine)"
label="io.x-k8s.kind.cluster=$KIND_CLUSTER"
left="$($engine ps -a -q --filter "label=$label")"
if [[ -n $left ]]; then
    log "deleting cluster $KIND_CLUSTER"
    kind_cmd delete cluster --name "$KIND_CLUSTER" --kubeconfig "$KIND_KUBECONFIG" >&2 || true
    left="$($engine ps -a -q --filter "label=$label")"
    # kind deletes only containers it can list as nodes; remove the rest by label
    [[ -z $left ]] || $engine rm -f -v $left >/dev/null
elif ((!quiet)); then
    log "no cluster $KIND_CLUSTER"
fi
# the nodes' /var volumes: the podman provider labels each with "<node name>=true"
if [[ $engine == podman ]]; then
    for v in $($engine volume ls -q | xargs -r $engine volume inspect | jq -r --arg c "$KIND_CLUSTER" \
            '.[] | select((.Labels // {}) | keys | any(test("^" + $c + "-(control-plane|worker[0-9]*)$"))) | .Name'); do
        $engine volume rm -f "$v" >/dev/null || true
    done
fi
rm -f "$KIND_KUBECONFIG"
