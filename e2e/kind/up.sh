#!/usr/bin/env bash
# Create the ringkv kind cluster on this machine:
#   e2e/kind/up.sh            (make kind-up)
# 1. sets up the host (podman, runc, containers.conf, /lib/modules; see lib.sh),
# 2. builds or reuses every image (build-images.sh; ~cold: see e2e/README.md),
# 3. removes a cluster of the same name left over (a crash, an earlier run),
# 4. creates one control plane and three workers labelled topology.kubernetes.io/zone
#    zone-a/b/c and a spare zone-c worker tainted ringkv.io/spare (kind-config.yaml), from
#    the locally built node image: nothing is pulled,
# 5. loads ringkv:0.1.0 and ringkv:0.1.1 into the nodes,
# 6. writes the kubeconfig and prints how to use it.
# Env: KIND_CLUSTER (default ringkv), KIND_KUBECONFIG (default e2e/kind/.kubeconfig).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
host_setup
engine="$(container_engine)"
started=$SECONDS
if [[ $engine == podman ]]; then
    node_image="$(bash "$KIND_DIR/build-images.sh" | tail -1)"
    image_args=(--image "$node_image")
else
    # Docker hosts: kind's published node image (KIND_NODE_IMAGE to pin one) and the
    # Dockerfile on its public base image.
    node_image="${KIND_NODE_IMAGE:-the default of kind}"
    image_args=()
    [[ -z "${KIND_NODE_IMAGE:-}" ]] || image_args=(--image "$KIND_NODE_IMAGE")
    docker build -t "docker.io/library/ringkv:${RINGKV_TAGS[0]}" "$REPO_DIR" >&2
    for t in "${RINGKV_TAGS[@]:1}"; do
        docker tag "docker.io/library/ringkv:${RINGKV_TAGS[0]}" "docker.io/library/ringkv:$t"
    done
fi

log "images ready after $((SECONDS - started)) s"
"$KIND_DIR/down.sh" --quiet

KUBE_VERSION="$(cd "$KIND_DIR/k8s" && GOWORK=off go list -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_tag="$(cd "$KIND_DIR/k8s" && GOWORK=off go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
config="$(mktemp)"
archive="$(mktemp --suffix=.tar)"
trap 'rm -f "$config" "$archive"' EXIT
sed "s#@ETCD_TAG@#${etcd_tag#v}-0#" "$KIND_DIR/kind-config.yaml" > "$config"
log "creating cluster $KIND_CLUSTER from $node_image"
mkdir -p "$(dirname "$KIND_KUBECONFIG")"
kind_cmd create cluster --name "$KIND_CLUSTER" "${image_args[@]}" --config "$config" \
    --kubeconfig "$KIND_KUBECONFIG" --wait 5m

# kind only warns when --wait runs out: a cluster whose nodes are not Ready is an error
kubectl_bin="$KIND_CACHE/bin/kubectl"
[[ -x $kubectl_bin ]] || kubectl_bin=kubectl
"$kubectl_bin" --kubeconfig "$KIND_KUBECONFIG" wait --for=condition=Ready nodes --all \
    --timeout=5m >&2

log "loading ringkv:${RINGKV_TAGS[*]}"
if [[ $engine == podman ]]; then
    $engine save --format docker-archive --multi-image-archive -o "$archive" \
        "${RINGKV_TAGS[@]/#/docker.io/library/ringkv:}" >&2
else
    docker save -o "$archive" "${RINGKV_TAGS[@]/#/docker.io/library/ringkv:}"
fi
kind_cmd load image-archive "$archive" --name "$KIND_CLUSTER" >&2

log "cluster up after $((SECONDS - started)) s (images included)"
echo "cluster $KIND_CLUSTER is up; to use it:"
echo "  export KUBECONFIG=$KIND_KUBECONFIG"
if [[ -x $KIND_CACHE/bin/kubectl ]]; then
    echo "  export PATH=$KIND_CACHE/bin:\$PATH    # kubectl $KUBE_VERSION, built with the cluster"
fi
echo "KUBECONFIG=$KIND_KUBECONFIG"
