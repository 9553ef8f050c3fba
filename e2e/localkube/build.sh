#!/usr/bin/env bash
# Build (or reuse) the localkube control-plane binaries:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
# from the Go module in this directory (go.mod/go.sum pin every version).
#
# Binaries are cached outside the repository in
#   ${RINGKV_LOCALKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv/localkube}/<k8s>-etcd-<etcd>/
# and are rebuilt only when go.mod, go.sum, this script or the Go version change
# (a stamp file in that directory records a hash of all four).
#
# Prints the binary directory on the last line of stdout.
#
# Uses the machine's own Go settings (GOPROXY etc.); no registry address is
# written here. The committed go.sum is complete, so the build verifies every
# module against it and does not need the checksum database. If that database
# is unreachable while go.sum is being *changed*, scope the exception to this
# module's dependencies, e.g. GONOSUMDB=k8s.io,go.etcd.io,... rather than GONOSUMCHECK/GOSUMDB=off.
#
# Env: LOCALKUBE_FORCE=1 rebuilds; LOCALKUBE_NICE (default 15) is the nice level;
#      LOCALKUBE_TIME=1 wraps the build in /usr/bin/time -v (peak memory).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off
# -mod=readonly: go.mod/go.sum are the pins; a build never edits them.
export GOFLAGS="-mod=readonly -buildvcs=false"

k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
etcd_version="$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)"
go_version="$(go env GOVERSION)"
cache_root="${RINGKV_LOCALKUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv/localkube}"
out="$cache_root/${k8s_version}-etcd-${etcd_version}"
stamp_want="$(cat go.mod go.sum build.sh <(echo "$go_version") | sha256sum | cut -d' ' -f1)"
bins=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl)

have_all=1
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || have_all=0; done
if [[ "${LOCALKUBE_FORCE:-0}" != 1 && $have_all == 1 && -f "$out/.stamp" \
      && "$(cat "$out/.stamp")" == "$stamp_want" ]]; then
    echo "localkube: reusing binaries in $out" >&2
    echo "$out"
    exit 0
fi

echo "localkube: building k8s $k8s_version, etcd $etcd_version with $go_version into $out" >&2
mkdir -p "$out"
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# Commit hash and date of the pinned tags, for the version ldflags (from the
# module proxy's records; the hash is left unset if the proxy has none).
mod_field() {  # module version field: Origin.Hash or Time
    go mod download -json "$1@$2" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
if sys.argv[1] == "Time":
    print(json.load(open(d["Info"])).get("Time", ""))
else:
    print((d.get("Origin") or {}).get("Hash", ""))' "$3" || true
}
k8s_commit="$(mod_field k8s.io/kubernetes "$k8s_version" Hash)"
etcd_commit="$(mod_field go.etcd.io/etcd/server/v3 "$etcd_version" Hash)"
build_date="$(mod_field k8s.io/kubernetes "$k8s_version" Time)"
ver="${k8s_version#v}"; major="${ver%%.*}"; rest="${ver#*.}"; minor="${rest%%.*}"

ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version"
    ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit=$k8s_commit -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=$build_date"
done
if [[ -n "$etcd_commit" ]]; then
    ldflags+=" -X go.etcd.io/etcd/api/v3/version.GitSHA=${etcd_commit:0:9}"
fi

timer=()
if [[ "${LOCALKUBE_TIME:-0}" == 1 ]]; then timer=(/usr/bin/time -v); fi
nice -n "${LOCALKUBE_NICE:-15}" "${timer[@]}" \
    go build -trimpath -ldflags "$ldflags" -o "$tmp/" \
        go.etcd.io/etcd/server/v3 \
        k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager \
        k8s.io/kubernetes/cmd/kube-scheduler \
        k8s.io/kubernetes/cmd/kubectl
# go build names the etcd main package after its import path ("server", as the
# trailing /v3 is a major-version suffix).
for n in server v3; do [[ -e "$tmp/$n" ]] && mv "$tmp/$n" "$tmp/etcd"; done
for b in "${bins[@]}"; do mv -f "$tmp/$b" "$out/$b"; done
echo "$stamp_want" > "$out/.stamp"
"$out/kube-apiserver" --version >&2
"$out/etcd" --version | sed -n 1p >&2  # not head: its early exit is a SIGPIPE under pipefail
echo "$out"
