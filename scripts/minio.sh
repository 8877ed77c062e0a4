#!/usr/bin/env bash
# Prints the path of a MinIO server binary (module version v0.0.0-20260212201848-7aac2a2c5b7c),
# building it first when it is not cached. The cold-tier tests use it as a real S3 server.
#
# The binary lives outside the repository, in
# ${CIDCACHE_MINIO_CACHE:-${XDG_CACHE_HOME:-~/.cache}/cidcache}/minio-<version>/minio, and is reused
# by later runs. It is built with `go install github.com/minio/minio@<version>`; the build's module
# and build caches are private to this script, in a temporary directory deleted afterwards: the
# machine's own Go caches are neither used nor grown.
# Network: the Go module proxy, on the first run only. Progress goes to stderr; stdout is only the
# path, so callers can write `MINIO=$(scripts/minio.sh)`.
set -euo pipefail

version=v0.0.0-20260212201848-7aac2a2c5b7c
cache_root=${CIDCACHE_MINIO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cidcache}
dest_dir=$cache_root/minio-$version
dest=$dest_dir/minio

if [ -x "$dest" ] && "$dest" --version >/dev/null 2>&1; then
    echo "minio: using the cached $dest" >&2
    printf '%s\n' "$dest"
    exit 0
fi

command -v go >/dev/null 2>&1 || { echo "minio: Go is needed to build MinIO $version" >&2; exit 1; }
mkdir -p "$dest_dir"
work=$(mktemp -d "${TMPDIR:-/tmp}/cidcache-minio-build.XXXXXX")
cleanup() {
    # The module cache is read-only by design; make it writable so it can be removed.
    chmod -R u+w "$work" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

export GOMODCACHE=$work/mod GOCACHE=$work/build GOPATH=$work/gopath GOFLAGS=-buildvcs=false
export GOTOOLCHAIN=local GOTELEMETRY=off
start=$(date +%s)
echo "minio: building $version into $dest (first run only; several minutes)" >&2
go install -trimpath "github.com/minio/minio@$version" >&2
"$work/gopath/bin/minio" --version >&2
mv "$work/gopath/bin/minio" "$dest.tmp.$$"
mv "$dest.tmp.$$" "$dest"
echo "minio: built in $(( $(date +%s) - start ))s" >&2
printf '%s\n' "$dest"
