#!/usr/bin/env bash
# Build (or reuse) the S3-compatible object store of the backup tests: the Versity S3 Gateway
# (github.com/versity/versitygw, Apache-2.0; `versitygw posix DIR` serves DIR's subdirectories
# as buckets) from the Go module in this directory (go.mod/go.sum pin every version).
#
# The binary is cached outside the repository in
#   ${RINGKV_S3_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv/s3}/versitygw-<version>/
# and rebuilt only when go.mod, go.sum, this script or the Go version change (a stamp file
# records a hash of all four). Prints the binary's path on the last line of stdout.
#
# Uses the machine's own Go settings (GOPROXY etc.); no registry address is written here.
# Env: S3_FORCE=1 rebuilds; S3_NICE (default 10) is the nice level.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOWORK=off
export GOFLAGS="-mod=readonly -buildvcs=false"

version="$(go list -m -f '{{.Version}}' github.com/versity/versitygw)"
go_version="$(go env GOVERSION)"
cache_root="${RINGKV_S3_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv/s3}"
out="$cache_root/versitygw-${version}"
stamp_want="$(cat go.mod go.sum build.sh <(echo "$go_version") | sha256sum | cut -d' ' -f1)"

if [[ "${S3_FORCE:-0}" != 1 && -x "$out/versitygw" && -f "$out/.stamp" \
      && "$(cat "$out/.stamp")" == "$stamp_want" ]]; then
    echo "s3: reusing $out/versitygw" >&2
    echo "$out/versitygw"
    exit 0
fi

echo "s3: building versitygw $version with $go_version into $out" >&2
mkdir -p "$out"
tmp="$(mktemp -d "$cache_root/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
nice -n "${S3_NICE:-10}" go build -trimpath -ldflags "-s -w" -o "$tmp/versitygw" \
    github.com/versity/versitygw/cmd/versitygw
mv -f "$tmp/versitygw" "$out/versitygw"
echo "$stamp_want" > "$out/.stamp"
echo "$out/versitygw"
