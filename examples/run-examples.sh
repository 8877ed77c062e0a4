#!/usr/bin/env bash
# Runs the shared-dataset examples end to end, one command:
#   1. examples/shared_loader.py --spawn: N Python worker processes load one dataset (cold: one
#      puts it from Parquet; after a daemon restart: the first touch promotes it from the warm
#      tier; hot: all hit shared memory), zero-copy;
#   2. examples/c/shared_loader.c: the same dataset read by N C worker processes through the C
#      ABI: first while hot, then after a daemon restart (the first touch promotes it).
# Each prints what it measured and exits non-zero when a worker read different data, a private
# copy, or kept a pin. `--smoke` uses a small dataset (the test command runs it so they cannot
# rot); without it, 5 million rows (~150 MB of Parquet) with the release build.
#
# Needs: the cidcache Python package with pyarrow and numpy in $PYTHON (default: target/py-venv,
# made by tests/run-python-tests.sh), gcc; builds cidcached and libcidcache with cargo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
python="${PYTHON:-$target/py-venv/bin/python}"
workers=4
rows=5000000
profile=release
if [ "${1:-}" = "--smoke" ]; then
    rows=100000
    profile=debug
fi
if [ "$profile" = release ]; then
    cargo build -q --release -p cidcache --bins -p cidcache-ffi
else
    cargo build -q -p cidcache --bins -p cidcache-ffi
fi
bin="$target/$profile"
export CIDCACHED="$bin/cidcached"

echo "== Python: $workers worker processes, examples/shared_loader.py"
"$python" examples/shared_loader.py --spawn --workers "$workers" --rows "$rows"

echo
echo "== C: $workers worker processes, examples/c/shared_loader.c"
tmp="$(mktemp -d /tmp/cidcache-examples.XXXXXX)"
pid=""
stop() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    pid=""
}
trap 'stop; rm -rf "$tmp"' EXIT
# libcidcache.so carries the SONAME libcidcache.so.<ABI> (ffi/build.rs): link it under that
# name in a directory of our own.
mkdir "$tmp/lib"
soname="$(readelf -d "$bin/libcidcache.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')"
ln -s "$bin/libcidcache.so" "$tmp/lib/libcidcache.so"
ln -s "$bin/libcidcache.so" "$tmp/lib/$soname"
gcc -std=c11 -O2 -Wall -Wextra -Werror -I include examples/c/shared_loader.c \
    -o "$tmp/shared_loader" -L "$tmp/lib" -Wl,-rpath,"$tmp/lib" -lcidcache
store="examples_$$_$RANDOM"
sock="$tmp/s.sock"
start() {
    CIDCACHE_LOG=warn "$CIDCACHED" --store "$store" --socket "$sock" --data-dir "$tmp/data" \
        -m 1G >>"$tmp/daemon.log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do [ -S "$sock" ] && return 0; sleep 0.1; done
    echo "cidcached did not start:"; cat "$tmp/daemon.log"; exit 1
}
start
# The dataset, put by Python (pyarrow) under a name; the C workers read it by that name.
"$python" - "$sock" "$rows" <<'EOF'
import sys, os
sys.path.insert(0, "examples")
import pyarrow.parquet as pq, tempfile, cidcache
from shared_loader import make_parquet
with tempfile.TemporaryDirectory() as d:
    make_parquet(os.path.join(d, "p.parquet"), int(sys.argv[2]))
    with cidcache.Client(socket=sys.argv[1]) as c:
        c.put_arrow("datasets/example", pq.read_table(os.path.join(d, "p.parquet")))
EOF
echo "-- hot: every worker hits shared memory"
"$tmp/shared_loader" "$sock" datasets/example "$workers"
stop
rm -f "$sock"
start
echo "-- after a daemon restart: the first touch promotes the dataset from the warm tier"
"$tmp/shared_loader" "$sock" datasets/example "$workers"
stop
echo
echo "examples passed"
