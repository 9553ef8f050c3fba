#!/usr/bin/env bash
# Delete the kind cluster made by up.sh (Docker hosts only).
set -euo pipefail
cd "$(dirname "$0")/../.."
kind delete cluster --name "${KIND_CLUSTER:-ringkv-e2e}"
rm -f e2e/kind/.kubeconfig
