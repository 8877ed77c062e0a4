#!/usr/bin/env bash
# Regenerates include/cidcache.h from ffi/src with cbindgen and compares it with the committed
# header. Exits non-zero (and prints the diff) when they differ.
#
#   ffi/check-header.sh          check (what CI runs)
#   ffi/check-header.sh --write  regenerate include/cidcache.h in place
#
# Needs the cbindgen CLI, version 0.29 (`cargo install cbindgen --locked --version '^0.29'`);
# set CIDCACHE_INSTALL_CBINDGEN=1 to have this script install it, when it is missing, into the
# build tree (`$CARGO_TARGET_DIR/tools`, default `target/tools`), never into ~/.cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
header="$root/include/cidcache.h"
want_major_minor="0.29"
tools="${CARGO_TARGET_DIR:-$root/target}/tools"

has_cbindgen() { # the cbindgen on PATH is of the version wanted
    command -v cbindgen >/dev/null 2>&1 \
        && cbindgen --version | awk '{print $2}' | grep -q "^$want_major_minor\."
}
PATH="$tools/bin:$PATH"
if ! has_cbindgen; then
    if [ "${CIDCACHE_INSTALL_CBINDGEN:-0}" = 1 ]; then
        cargo install cbindgen --locked --version "^$want_major_minor" --root "$tools" >&2
    else
        echo "check-header: cbindgen $want_major_minor.x is not installed; run: cargo install cbindgen --locked --version '^$want_major_minor' (or set CIDCACHE_INSTALL_CBINDGEN=1)" >&2
        exit 2
    fi
fi
tmp="$(mktemp "${TMPDIR:-/tmp}/cidcache.h.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(cd "$root" && cbindgen --quiet --config ffi/cbindgen.toml --crate cidcache-ffi --output "$tmp" ffi)

if [ "${1:-}" = "--write" ]; then
    mkdir -p "$(dirname "$header")"
    cp "$tmp" "$header"
    echo "check-header: wrote $header"
    exit 0
fi

if ! diff -u "$header" "$tmp"; then
    echo "check-header: include/cidcache.h is stale; regenerate it with ffi/check-header.sh --write and commit it" >&2
    exit 1
fi
echo "check-header: include/cidcache.h is up to date"
