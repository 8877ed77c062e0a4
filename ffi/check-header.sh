#!/usr/bin/env bash
# Regenerates include/cidcache.h from ffi/src with cbindgen and compares it with the committed
# header. Exits non-zero (and prints the diff) when they differ.
#
#   ffi/check-header.sh          check (what CI runs)
#   ffi/check-header.sh --write  regenerate include/cidcache.h in place
#
# Needs the cbindgen CLI, version 0.29 (`cargo install cbindgen --locked --version '^0.29'`);
# set CIDCACHE_INSTALL_CBINDGEN=1 to have this script install it when it is missing.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
header="$root/include/cidcache.h"
want_major_minor="0.29"

if ! command -v cbindgen >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cbindgen" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cbindgen >/dev/null 2>&1; then
    if [ "${CIDCACHE_INSTALL_CBINDGEN:-0}" = 1 ]; then
        cargo install cbindgen --locked --version "^$want_major_minor" >&2
        PATH="$HOME/.cargo/bin:$PATH"
    else
        echo "check-header: cbindgen is not installed; run: cargo install cbindgen --locked --version '^$want_major_minor'" >&2
        exit 2
    fi
fi
version="$(cbindgen --version | awk '{print $2}')"
case "$version" in
    "$want_major_minor".*) ;;
    *)
        echo "check-header: cbindgen $version found, $want_major_minor.x needed (output differs between versions)" >&2
        exit 2
        ;;
esac

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
