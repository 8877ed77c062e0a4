#!/usr/bin/env bash
# Prints the path of a kubo v0.43.1 `ipfs` binary, building it first when it is not cached.
#
# The binary lives outside the repository, in ${CIDCACHE_KUBO_CACHE:-${XDG_CACHE_HOME:-~/.cache}/cidcache}/kubo-v0.43.1/ipfs,
# and is reused by later runs. `go install github.com/ipfs/kubo/cmd/ipfs@v0.43.1` is refused by the
# Go module proxy (kubo's go.mod replaces go-libp2p with a fork the proxy does not serve), so the
# build downloads kubo's module, drops that replace, pins go-libp2p v0.50.0 and builds cmd/ipfs.
# The build's module and build caches (about 1.4 GB) are private to this script, in a temporary
# directory deleted afterwards: the machine's own Go caches are neither used nor grown.
# Network: the Go module proxy, on the first run only. Progress goes to stderr; stdout is only
# the path, so callers can write `IPFS=$(scripts/kubo.sh)`.
set -euo pipefail

version=v0.43.1
cache_root=${CIDCACHE_KUBO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cidcache}
dest_dir=$cache_root/kubo-$version
dest=$dest_dir/ipfs

if [ -x "$dest" ] && "$dest" version >/dev/null 2>&1; then
    echo "kubo: using the cached $dest" >&2
    printf '%s\n' "$dest"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "kubo: Go is needed to build kubo $version" >&2; exit 1; }
mkdir -p "$dest_dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/cidcache-kubo-build.XXXXXX")
cleanup() {
    # The module cache is read-only by design; make it writable so it can be removed.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export GOMODCACHE=$work/mod GOCACHE=$work/build GOPATH=$work/gopath GOFLAGS=-buildvcs=false
export GOTOOLCHAIN=local GOTELEMETRY=off
start=$(date +%s)
echo "kubo: building $version into $dest (first run only; a few minutes)" >&2
dir=$(go mod download -json "github.com/ipfs/kubo@$version" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
cp -r "$dir" "$work/src"
chmod -R u+w "$work/src"
cd "$work/src"
go mod edit -dropreplace github.com/libp2p/go-libp2p
go get github.com/libp2p/go-libp2p@v0.50.0 >&2
go build -trimpath -o "$work/ipfs" ./cmd/ipfs
"$work/ipfs" version >&2
mv "$work/ipfs" "$dest.tmp.$$"
mv "$dest.tmp.$$" "$dest"
echo "kubo: built in $(( $(date +%s) - start ))s" >&2
printf '%s\n' "$dest"
