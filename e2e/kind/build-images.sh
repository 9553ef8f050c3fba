#!/usr/bin/env bash
# Build, on this machine, every image a ringkv kind cluster needs, then the ringkv images:
#
#   debian     $IMG/debian:<suite>-<key>     debootstrap (minbase) from the mirror in the
#                                            machine's apt sources
#   python     $IMG/python:3.11-<key>        debian + Debian's python3.11 and pip
#   components registry.k8s.io/kube-{apiserver,controller-manager,scheduler,proxy}:<k8s>,
#              registry.k8s.io/etcd:<etcd>-0, registry.k8s.io/coredns/coredns:<v>,
#              registry.k8s.io/pause:<v>, $IMG/cni, $IMG/local-path-{provisioner,helper}
#   node       $IMG/node:<k8s>-<key>         a kind node: kind's base files, systemd,
#                                            containerd, runc, CNI plugins, crictl,
#                                            kubelet/kubeadm/kubectl, and every component
#                                            image above preloaded in its containerd
#   ringkv     ringkv:0.1.0 and ringkv:0.1.1 the project's Dockerfile on the python image
#
# Go binaries are cached in $KIND_CACHE/bin-<key> and images in podman's store, each keyed
# by a hash of its inputs (pins in lib.sh, e2e/kind/k8s/go.{mod,sum}, the files in
# e2e/kind/node, this script, the Go version): a second run only rebuilds the ringkv image
# (and that from podman's layer cache when src/ is unchanged).
#
# Prints the node image name on the last line of stdout.
# Env: KIND_NICE (default 10) nice level of the Go builds; KIND_FORCE=1 rebuilds all.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
source "$(dirname "$self")/lib.sh"
host_setup
cd "$KIND_DIR"
engine=podman   # the image build uses podman (Docker hosts: see e2e/README.md)

k8s_version="$(cd k8s && GOWORK=off go list -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_version="$(cd k8s && GOWORK=off go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
go_version="$(go env GOVERSION)"
hash_of() { cat "$@" | sha256sum | cut -c1-12; }
pins="$(declare -p KIND_VERSION CONTAINERD_VERSION CRICTL_VERSION CNI_PLUGINS_VERSION \
    COREDNS_VERSION LOCAL_PATH_VERSION PAUSE_VERSION DEBIAN_SUITE)"
bin_key="$(hash_of k8s/go.mod k8s/go.sum <(echo "$pins $go_version") \
    <(sed -n '/^# -- go binaries/,/^# -- end go binaries/p' "$self"))"
deb_key="$(hash_of <(echo "$DEBIAN_SUITE") <(sed -n '/^# -- debian/,/^# -- end debian/p' "$self"))"
node_key="$(hash_of <(echo "$bin_key $deb_key") node/* \
    <(sed -n '/^# -- component images/,/^# -- end node/p' "$self"))"
[[ "${KIND_FORCE:-0}" == 1 ]] && force=1 || force=0
mkdir -p "$KIND_CACHE"
work="$(mktemp -d "$KIND_CACHE/.work.XXXXXX")"
trap 'rm -rf "$work"' EXIT
have_image() { [[ $force == 0 ]] && $engine image exists "$1"; }

# -- go binaries ------------------------------------------------------------------------
bin="$KIND_CACHE/bin-$bin_key"
if [[ $force == 1 || ! -f $bin/.done ]]; then
    log "building Go binaries into $bin (k8s $k8s_version, etcd $etcd_version, $go_version)"
    rm -rf "$bin.tmp" && mkdir -p "$bin.tmp/cni"
    # Kubernetes: one go build so the binaries share compiled packages; version ldflags
    # as the Kubernetes release build sets them (kubeadm checks its own version).
    k8s_info="$(cd k8s && GOWORK=off go mod download -json "k8s.io/kubernetes@$k8s_version")"
    k8s_commit="$(jq -r '.Origin.Hash // ""' <<<"$k8s_info")"
    build_date="$(jq -r .Info <<<"$k8s_info" | xargs jq -r .Time)"
    ver="${k8s_version#v}"
    ld="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=${ver%%.*}"
        ld+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$ver") -X $pkg.gitCommit=$k8s_commit"
        ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
    done
    (cd k8s && CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" \
        nice -n "${KIND_NICE:-10}" go build -trimpath -ldflags "$ld" -o "$bin.tmp/" \
        go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubelet \
        k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubectl)
    for n in server v3; do [[ -e $bin.tmp/$n ]] && mv "$bin.tmp/$n" "$bin.tmp/etcd"; done
    go_tool_install "$bin.tmp" \
        "-X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
        "no_aufs no_zfs no_btrfs no_devmapper" \
        "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION"
    go_tool_install "$bin.tmp" "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION" "" \
        "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
    go_tool_install "$bin.tmp/cni" "" "" \
        "github.com/containernetworking/plugins/plugins/ipam/host-local@$CNI_PLUGINS_VERSION" \
        "github.com/containernetworking/plugins/plugins/main/loopback@$CNI_PLUGINS_VERSION" \
        "github.com/containernetworking/plugins/plugins/main/ptp@$CNI_PLUGINS_VERSION" \
        "github.com/containernetworking/plugins/plugins/meta/portmap@$CNI_PLUGINS_VERSION"
    go_tool_install "$bin.tmp" "" "" "github.com/coredns/coredns@$COREDNS_VERSION"
    go_tool_install "$bin.tmp" "-X main.VERSION=$LOCAL_PATH_VERSION" "" \
        "github.com/rancher/local-path-provisioner@$LOCAL_PATH_VERSION"
    # pause: the C program from the Kubernetes source, linked statically.
    k8s_src="$(jq -r .Dir <<<"$k8s_info")"
    cc -Os -static -DVERSION="v$PAUSE_VERSION" -o "$bin.tmp/pause" "$k8s_src/build/pause/linux/pause.c"
    strip "$bin.tmp/pause"
    touch "$bin.tmp/.done"
    rm -rf "$bin" && mv "$bin.tmp" "$bin"
fi
# -- end go binaries

# -- debian: a minbase root filesystem from the mirror this machine's apt uses -------------
apt_mirror() {  # first Debian archive URI for the suite, from one-line or deb822 sources
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f $f ]] || continue
        awk -v s="$DEBIAN_SUITE" '$1=="deb" && $0 ~ " "s" " {for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; exit}}' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -f $f ]] || continue
        awk -v s="$DEBIAN_SUITE" 'BEGIN{RS=""} $0 ~ "Suites:[^\n]*(^| )"s"( |\n|$)" && $0 !~ /security/ {
            for(i=1;i<=NF;i++) if($i=="URIs:"){print $(i+1); exit}}' "$f"
    done
}
debian="$IMG/debian:$DEBIAN_SUITE-$deb_key"
if ! have_image "$debian"; then
    mirror="$(apt_mirror | head -1)"
    [[ -n $mirror ]] || { log "no Debian $DEBIAN_SUITE mirror in /etc/apt"; exit 1; }
    log "debootstrap $DEBIAN_SUITE (minbase)"
    root="$work/rootfs"
    debootstrap --variant=minbase "$DEBIAN_SUITE" "$root" "$mirror" >&2
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | $engine import --change 'CMD ["/bin/bash"]' - "$debian" >&2
    rm -rf "$root"
fi
# -- end debian

build() {  # tag context [build-arg...]: podman build of $context/Containerfile
    local tag="$1" ctx="$2"; shift 2
    local args=()
    for a in "$@"; do args+=(--build-arg "$a"); done
    $engine build --network host --layers "${args[@]}" -t "$tag" -f "$ctx/Containerfile" "$ctx" >&2
}

# -- python
python_key="$(hash_of <(echo "$deb_key") <(sed -n '/^# -- python/,/^# -- end python/p' "$self"))"
python="$IMG/python:3.11-$python_key"
if ! have_image "$python"; then
    log "python image"
    mkdir -p "$work/python"
    # Like python:3.11-slim for the Dockerfile's purposes: python, pip (installing into
    # the system, as that image allows), no caches.
    cat > "$work/python/Containerfile" <<EOF
FROM $debian
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED \
    && ln -s /usr/bin/python3 /usr/local/bin/python
ENV LANG=C.UTF-8
CMD ["python3"]
EOF
    build "$python" "$work/python"
fi
# -- end python

# -- component images (all FROM the debian image, except pause) -------------------------
etcd_tag="${etcd_version#v}-0"
cni_image="$IMG/cni:$node_key"
prov_image="$IMG/local-path-provisioner:$LOCAL_PATH_VERSION-$node_key"
helper_image="$IMG/local-path-helper:$node_key"
declare -A comp=(
    [registry.k8s.io/kube-apiserver:$k8s_version]=kube-apiserver
    [registry.k8s.io/kube-controller-manager:$k8s_version]=kube-controller-manager
    [registry.k8s.io/kube-scheduler:$k8s_version]=kube-scheduler
    [registry.k8s.io/kube-proxy:$k8s_version]=kube-proxy
    [registry.k8s.io/etcd:$etcd_tag]=etcd
    [registry.k8s.io/coredns/coredns:$COREDNS_VERSION]=coredns
    [registry.k8s.io/pause:$PAUSE_VERSION]=pause
    [$cni_image]=kubectl
    [$prov_image]=local-path-provisioner
    [$helper_image]=
)
node="$IMG/node:$k8s_version-$node_key"
if ! have_image "$node"; then
    for tag in "${!comp[@]}"; do
        b="${comp[$tag]}"
        ctx="$work/img-${b:-helper}"
        mkdir -p "$ctx"
        case "$b" in
            pause)  # the sandbox's first process: nothing else in the image
                cp "$bin/pause" "$ctx/"
                printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' > "$ctx/Containerfile" ;;
            kube-proxy)  # programs iptables, as the release image (distroless-iptables)
                cp "$bin/kube-proxy" "$ctx/"
                printf 'FROM %s\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables conntrack ipset kmod && rm -rf /var/lib/apt/lists/*\nCOPY kube-proxy /usr/local/bin/\n' "$debian" > "$ctx/Containerfile" ;;
            kubectl)  # the pod network daemon: iproute2 + kubectl + ringkv-cni.sh
                cp "$bin/kubectl" "$ctx/"; install -m 0755 node/ringkv-cni.sh "$ctx/ringkv-cni"
                printf 'FROM %s\nRUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 procps && rm -rf /var/lib/apt/lists/*\nCOPY kubectl ringkv-cni /usr/local/bin/\n' "$debian" > "$ctx/Containerfile" ;;
            "")  # local-path helper: runs the setup/teardown shell scripts
                printf 'FROM %s\n' "$debian" > "$ctx/Containerfile" ;;
            coredns)
                cp "$bin/coredns" "$ctx/"
                printf 'FROM %s\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n' "$debian" > "$ctx/Containerfile" ;;
            *)
                cp "$bin/$b" "$ctx/"
                printf 'FROM %s\nCOPY %s /usr/local/bin/\n' "$debian" "$b" > "$ctx/Containerfile" ;;
        esac
        log "image $tag"
        build "$tag" "$ctx"
    done

    # -- the node image: kind's base image recipe (images/base/Dockerfile) on Debian ----
    log "node image $node"
    ctx="$work/node"
    kind_src="$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kind@$KIND_VERSION" | jq -r .Dir)"
    mkdir -p "$ctx/files" "$ctx/bin" "$ctx/cni" "$ctx/manifests"
    cp -r "$kind_src/images/base/files/." "$ctx/files/"
    chmod -R u+w,go-w "$ctx/files" && chmod -R a+rX "$ctx/files"
    chmod 0755 "$ctx"/files/usr/local/bin/* "$ctx"/files/kind/bin/*
    # the sandbox image this node's containerd uses is the pause built above
    sed -i "s#registry.k8s.io/pause:[0-9.]*#registry.k8s.io/pause:$PAUSE_VERSION#" "$ctx/files/etc/containerd/config.toml"
    for b in containerd ctr containerd-shim-runc-v2 crictl kubelet kubeadm kubectl; do cp "$bin/$b" "$ctx/bin/"; done
    cp "$bin"/cni/* "$ctx/cni/"
    sed "s#@CNI_IMAGE@#$cni_image#" node/default-cni.yaml > "$ctx/manifests/default-cni.yaml"
    sed "s#@PROVISIONER_IMAGE@#$prov_image#; s#@HELPER_IMAGE@#$helper_image#" \
        node/default-storage.yaml > "$ctx/manifests/default-storage.yaml"
    cat > "$ctx/Containerfile" <<EOF
FROM $debian
COPY files/ /
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz e2fsprogs bash ca-certificates curl jq procps runc \
    && rm -rf /var/lib/apt/lists/* \
    && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
    && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \
       /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \
       /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
    && ln -sf /usr/lib/systemd/systemd /sbin/init \
    && rm -f /etc/systemd/system/containerd-fuse-overlayfs.service
RUN systemctl enable kubelet.service containerd.service undo-mount-hacks.service \
    && systemctl mask systemd-binfmt.service \
    && mkdir -p /etc/kubernetes/manifests /opt/cni/bin /kind/manifests
COPY bin/containerd bin/ctr bin/containerd-shim-runc-v2 bin/crictl /usr/local/bin/
COPY bin/kubelet bin/kubeadm bin/kubectl /usr/bin/
COPY cni/ /opt/cni/bin/
COPY manifests/ /kind/manifests/
RUN echo "$k8s_version" > /kind/version \
    && ctr oci spec \
       | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
       | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
    stage="$IMG/node-stage:$node_key"
    build "$stage" "$ctx"

    # Preload the component images into the node's containerd, as `kind build node-image`
    # does: containerd in a build container, `ctr images import --no-unpack`, commit.
    cid="$($engine run -d --privileged --entrypoint sleep "$stage" infinity)"
    trap '$engine rm -f "$cid" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
    $engine exec "$cid" bash -c 'nohup containerd >/var/log/containerd-build.log 2>&1 &'
    for i in $(seq 30); do $engine exec "$cid" ctr version >/dev/null 2>&1 && break; sleep 1; done
    for tag in "${!comp[@]}"; do
        log "preloading $tag"
        $engine save --format docker-archive "$tag" \
            | $engine exec -i "$cid" ctr --namespace=k8s.io images import \
                --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >&2
    done
    # (its parent is `sleep`, which reaps nothing: wait for it to be a zombie, not gone)
    $engine exec "$cid" bash -c 'pkill -x containerd
        for i in $(seq 150); do ps -C containerd -o stat= | grep -qv "^Z" || break; sleep 0.2; done
        rm -f /var/log/containerd-build.log'
    $engine commit --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
        --change 'CMD []' "$cid" "$node" >&2
    $engine rm -f "$cid" >/dev/null
    $engine rmi "$stage" >/dev/null || true
fi
# -- end node

# -- ringkv: the project's Dockerfile, FROM the python image -------------------------------
# pip inside the build trusts what this machine trusts (its CA bundle, mounted for the
# build only: a TLS-inspecting proxy's CA is not baked into the image).
trust=()
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$work/pip.conf"
    trust=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
           -v "$work/pip.conf:/etc/pip.conf:ro")
fi
log "ringkv image (Dockerfile, BASE_IMAGE=$python)"
$engine build --network host --layers "${trust[@]}" --build-arg "BASE_IMAGE=$python" \
    -t "docker.io/library/ringkv:${RINGKV_TAGS[0]}" -f "$REPO_DIR/Dockerfile" "$REPO_DIR" >&2
for t in "${RINGKV_TAGS[@]:1}"; do
    $engine tag "docker.io/library/ringkv:${RINGKV_TAGS[0]}" "docker.io/library/ringkv:$t"
done
# expose the built kubectl for the scripts (same version as the cluster)
ln -sfn "$bin" "$KIND_CACHE/bin"
# drop what earlier keys built (an image a running cluster still uses stays)
for ref in $($engine images --format '{{.Repository}}:{{.Tag}}' | grep "^$IMG/" || true); do
    case "$ref" in
        "$debian" | "$python" | "$node" | "$cni_image" | "$prov_image" | "$helper_image") ;;
        *) $engine rmi "$ref" >/dev/null 2>&1 || true ;;
    esac
done
for d in "$KIND_CACHE"/bin-*; do
    [[ $d == "$bin" ]] || rm -rf "$d"
done
echo "$node"
