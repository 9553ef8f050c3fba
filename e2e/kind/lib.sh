# Sourced by the e2e/kind scripts: pinned versions, cache paths, host set-up.
#
# Everything the kind cluster runs is built on this machine (no image registry is
# reachable): Go binaries from the Go module proxy, root filesystems from the Debian
# mirror named in this machine's apt sources. Nothing here names a registry host.

# -- pins (changing one changes the cache keys below) -------------------------------
KIND_VERSION=v0.33.0                 # sigs.k8s.io/kind: the CLI and the node base files
CONTAINERD_VERSION=v2.3.4            # github.com/containerd/containerd/v2 (as kind v0.33's base)
CRICTL_VERSION=v1.34.0               # sigs.k8s.io/cri-tools
CNI_PLUGINS_VERSION=v1.9.1           # github.com/containernetworking/plugins (as kind's base)
COREDNS_VERSION=v1.12.1              # github.com/coredns/coredns (kubeadm 1.34's default)
LOCAL_PATH_VERSION=v0.0.30           # github.com/rancher/local-path-provisioner
PAUSE_VERSION=3.10.1                 # kubeadm 1.34's default; built from k8s.io/kubernetes/build/pause
DEBIAN_SUITE=bookworm
# k8s.io/kubernetes and etcd come from e2e/kind/k8s/go.mod.

KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$KIND_DIR/../.." && pwd)"
KIND_CACHE="${RINGKV_KIND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv/kind}"
KIND_CLUSTER="${KIND_CLUSTER:-ringkv}"
KIND_KUBECONFIG="${KIND_KUBECONFIG:-$KIND_DIR/.kubeconfig}"
IMG=localhost/ringkv-kind           # prefix of the locally built helper images
RINGKV_TAGS=(0.1.0 0.1.1)           # the manifests' tag, and the upgrade test's second tag

log() { echo "kind: $*" >&2; }

# The container engine: docker where a Docker daemon answers (kind's usual host), else
# podman (this project's machines: installed from Debian by host_setup). KIND_ENGINE overrides.
container_engine() {
    if [[ -n "${KIND_ENGINE:-}" ]]; then echo "$KIND_ENGINE"; return; fi
    if command -v docker >/dev/null && timeout 20 docker info >/dev/null 2>&1; then
        echo docker
    else
        echo podman
    fi
}

# Idempotent host set-up for podman-based kind (Debian, root); nothing on Docker hosts.
host_setup() {
    [[ "$(container_engine)" == podman ]] || return 0
    local need=()
    command -v podman >/dev/null || need+=(podman)
    command -v runc >/dev/null || need+=(runc)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v jq >/dev/null || need+=(jq)
    if ((${#need[@]})); then
        log "installing ${need[*]} (apt)"
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2
    fi
    # crun (podman's default here) refuses a hybrid cgroup layout; podman's default
    # nofile=1048576 is above what a process without CAP_SYS_RESOURCE may ask for. podman
    # runs conmon (and so the container) with nproc at most 32768 when it cannot raise it.
    local conf=/etc/containers/containers.conf.d/50-ringkv-kind.conf
    local want nofile nproc
    nofile="$(ulimit -Hn)"; nproc="$(ulimit -Hu)"
    [[ $nofile == unlimited ]] && nofile=1048576
    [[ $nproc == unlimited || $nproc -gt 32768 ]] && nproc=32768
    want="$(printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n\n[engine]\nruntime = "runc"\n' \
        "$nofile" "$nofile" "$nproc" "$nproc")"
    if [[ ! -f $conf || "$(cat "$conf")" != "$want" ]]; then
        mkdir -p "$(dirname "$conf")"
        printf '%s\n' "$want" > "$conf"
    fi
    # kind mounts /lib/modules into every node; a kernel without modules has none.
    [[ -d /lib/modules ]] || mkdir -p /lib/modules
}

# Build (or reuse) a Go main package at a version into $1 (go install, CGO off).
go_tool_install() {  # outdir ldflags tags pkg@version...
    local out="$1" ldflags="$2" tags="$3"; shift 3
    GOBIN="$out" CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS=-buildvcs=false \
        nice -n "${KIND_NICE:-10}" go install -trimpath -tags "$tags" -ldflags "-s -w $ldflags" "$@"
}

# The kind CLI from its Go module, cached by version.
kind_bin() {
    local dir="$KIND_CACHE/kind-$KIND_VERSION-$(go env GOVERSION)"
    if [[ ! -x $dir/kind ]]; then
        log "building kind $KIND_VERSION"
        mkdir -p "$dir"
        go_tool_install "$dir" "" "" "sigs.k8s.io/kind@$KIND_VERSION" >&2
    fi
    echo "$dir/kind"
}

kind_cmd() {
    local k; k="$(kind_bin)"
    if [[ "$(container_engine)" == podman ]]; then
        KIND_EXPERIMENTAL_PROVIDER=podman "$k" "$@"
    else
        "$k" "$@"
    fi
}
