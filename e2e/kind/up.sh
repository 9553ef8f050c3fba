#!/usr/bin/env bash
# Docker hosts only (not runnable on the project's CI machines, which have no Docker
# engine): create a 3-worker kind cluster with zone labels, then build the ringkv
# image from the project's Dockerfile and load it into the nodes.
#   e2e/kind/up.sh            # cluster "ringkv-e2e", image ringkv:e2e
# Needs: docker, kind (https://kind.sigs.k8s.io), kubectl.
set -euo pipefail
cd "$(dirname "$0")/../.."
name="${KIND_CLUSTER:-ringkv-e2e}"
image="${RINGKV_IMAGE:-ringkv:e2e}"
node_image=()
# Same Kubernetes minor as localkube by default; override with KIND_NODE_IMAGE.
[[ -n "${KIND_NODE_IMAGE:-}" ]] && node_image=(--image "$KIND_NODE_IMAGE")
if ! kind get clusters | grep -qx "$name"; then
    kind create cluster --name "$name" --config e2e/kind/kind-config.yaml "${node_image[@]}" --wait 120s
fi
docker build -t "$image" -f Dockerfile .
kind load docker-image "$image" --name "$name"
kind get kubeconfig --name "$name" > "e2e/kind/.kubeconfig"
echo "KUBECONFIG=$PWD/e2e/kind/.kubeconfig"
