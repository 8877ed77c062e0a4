#!/usr/bin/env bash
# Runs every check and test of cidcache on a fresh machine. Exits non-zero on the first failure.
#
# Needs (checked first, with a clear message when something is missing):
#   Rust >= 1.88 (cargo, rustfmt, clippy), Go >= 1.25, Python 3.11 with venv and pip (pyarrow 11,
#   for the Plasma tests, has no wheels for newer Pythons), gcc and g++, valgrind.
# Missing Debian packages (python3.11-venv, gcc, g++, valgrind) are installed with apt-get when
# the script runs as root on a Debian-like system; otherwise it stops and names them.
# Everything else the tests need is installed into the build tree only: Python venvs and
# cbindgen under target/, Go modules in the Go module cache, the kubo binary of the IPFS tests
# and the MinIO binary of the cold-tier tests in ${XDG_CACHE_HOME:-~/.cache}/cidcache
# (scripts/kubo.sh and scripts/minio.sh: about 13 and 12 minutes on a loaded 2-core machine the
# first time, nothing after). Network: crates.io, PyPI, the Go module proxy (first run only).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
step() { printf '\n==== %s ====\n' "$*"; }
start=$(date +%s)

step "requirements"
scripts/requirements.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

if [ -x tests/python/plasma/run.sh ]; then
  step "Plasma compatibility: unmodified pyarrow 11 against cidcached plasma (creates the venv that the Rust tests compare against too)"
  tests/python/plasma/run.sh
fi

step "kubo v0.43.1 for the IPFS tests (built once from the Go module proxy, then cached outside the repository)"
kubo_start=$(date +%s)
CIDCACHE_KUBO=$(scripts/kubo.sh)
export CIDCACHE_KUBO
echo "kubo ready in $(( $(date +%s) - kubo_start ))s: $CIDCACHE_KUBO"

step "MinIO for the cold-tier tests (built once from the Go module proxy, then cached outside the repository)"
minio_start=$(date +%s)
CIDCACHE_MINIO=$(scripts/minio.sh)
export CIDCACHE_MINIO
echo "MinIO ready in $(( $(date +%s) - minio_start ))s: $CIDCACHE_MINIO"

step "Rust unit, integration and multi-process tests"
cargo test --workspace

step "loom model checks (seqlock read, pin/retire race)"
# Only the cidcache library is rebuilt, with the loom cfg and optimised (the dependencies of the
# debug build above are reused), then its loom_tests run.
loom_bin=$(cargo rustc -q -p cidcache --lib --profile test --message-format=json \
  -- --cfg cidcache_loom -C opt-level=2 |
  python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cidcache":
        print(m["executable"])')
"$loom_bin" loom_tests

if [ -x tests/run-ffi-tests.sh ]; then
  step "C ABI: header check, C (dynamic, static, valgrind), C++, Go, Python"
  tests/run-ffi-tests.sh
fi

step "Python package: pip install ./python (PyO3, dev profile) into target/py-venv, pytest against real daemons, mypy --strict on the tests"
tests/run-python-tests.sh

step "shared-dataset examples, smoke: Python and C loaders, N worker processes (examples/run-examples.sh)"
examples/run-examples.sh --smoke

step "shared-dataset benchmark, smoke (small dataset, N=1,2; debug build; Plasma where target/plasma-venv exists)"
CIDCACHED=target/debug/cidcached target/py-venv/bin/python benches/shared_datasets.py \
  --size 8M --workers 1,2 --json target/shared-datasets-smoke.json

step "benchmark harness smoke run (debug build, short)"
cargo bench -p cidcache --profile dev --bench spine -- --quick

step "cidcache bench --suite smoke (debug build, seconds): table, JSON report and plots"
cargo build -q -p cidcache --bins
target/debug/cidcache bench --spawn --suite smoke --quiet \
  --json target/bench-smoke.json --plot target/bench-smoke-plots
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["workloads"] and all(w["ops_per_s"] > 0 for w in r["workloads"]), r' target/bench-smoke.json

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - start ))"
