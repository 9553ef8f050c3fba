#!/usr/bin/env bash
# Create the ringkv kind cluster on this machine:
#   e2e/kind/up.sh            (make kind-up)
# 1. sets up the host (podman, runc, containers.conf, /lib/modules; see lib.sh),
# 2. builds or reuses every image (build-images.sh; ~cold: see e2e/README.md),
# 3. removes a cluster of the same name left over (a crash, an earlier run),
# 4. creates one control plane and three workers labelled topology.kubernetes.io/zone
#    zone-a/b/c (kind-config.yaml) from the locally built node image: nothing is pulled,
# 5. loads ringkv:0.1.0 and ringkv:0.1.1 into the nodes,
# 6. writes the kubeconfig and prints how to use it.
# Env: KIND_CLUSTER (default ringkv), KIND_KUBECONFIG (default e2e/kind/.kubeconfig).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
host_setup
node_image="$(bash "$KIND_DIR/build-images.sh" | tail -1)"
engine="$(container_engine)"

"$KIND_DIR/down.sh" --quiet

etcd_tag="$(cd "$KIND_DIR/k8s" && GOWORK=off go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
config="$(mktemp)"
archive="$(mktemp --suffix=.tar)"
trap 'rm -f "$config" "$archive"' EXIT
sed "s#@ETCD_TAG@#${etcd_tag#v}-0#" "$KIND_DIR/kind-config.yaml" > "$config"
log "creating cluster $KIND_CLUSTER from $node_image"
mkdir -p "$(dirname "$KIND_KUBECONFIG")"
kind_cmd create cluster --name "$KIND_CLUSTER" --image "$node_image" --config "$config" \
    --kubeconfig "$KIND_KUBECONFIG" --wait 5m

log "loading ringkv:${RINGKV_TAGS[*]}"
$engine save --format docker-archive --multi-image-archive -o "$archive" \
    "${RINGKV_TAGS[@]/#/docker.io/library/ringkv:}" >&2
kind_cmd load image-archive "$archive" --name "$KIND_CLUSTER" >&2

bin="$KIND_CACHE/bin"
echo "cluster $KIND_CLUSTER is up; to use it:"
echo "  export KUBECONFIG=$KIND_KUBECONFIG"
echo "  export PATH=$bin:\$PATH    # kubectl $("$bin/kubectl" version --client -o json | jq -r .clientVersion.gitVersion), as the cluster"
echo "KUBECONFIG=$KIND_KUBECONFIG"
