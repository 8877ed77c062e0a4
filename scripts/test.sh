#!/usr/bin/env bash
# Runs every check and test of cidcache on a fresh machine (Rust, Go, Python 3.11, gcc/g++,
# valgrind). Installs what the tests need into the build tree only (Python venvs under target/,
# Go modules in the Go module cache). Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
step() { printf '\n==== %s ====\n' "$*"; }
start=$(date +%s)

step "toolchains"
cargo --version; rustc --version
command -v go >/dev/null && go version || true
python3 --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

if [ -x tests/python/plasma/run.sh ]; then
  step "Plasma compatibility: unmodified pyarrow 11 against cidcached plasma (creates the venv that the Rust tests compare against too)"
  tests/python/plasma/run.sh
fi

step "Rust unit, integration and multi-process tests"
cargo test --workspace

step "loom model checks (seqlock read, pin/retire race)"
RUSTFLAGS="--cfg cidcache_loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p cidcache --release --lib loom_tests

if [ -x tests/run-ffi-tests.sh ]; then
  step "C ABI: header check, C (dynamic, static, valgrind), C++, Go, Python"
  tests/run-ffi-tests.sh
fi

step "benchmark harness smoke run (debug build, short)"
cargo bench -p cidcache --profile dev --bench spine -- --quick

step "cidcache bench --suite smoke (debug build, seconds): table, JSON report and plots"
cargo build -q -p cidcache --bins
target/debug/cidcache bench --spawn --suite smoke --quiet \
  --json target/bench-smoke.json --plot target/bench-smoke-plots
python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); assert r["workloads"] and all(w["ops_per_s"] > 0 for w in r["workloads"]), r' target/bench-smoke.json

printf '\nall checks passed in %ss\n' "$(( $(date +%s) - start ))"
