#!/usr/bin/env bash
# Runs the Plasma compatibility tests against `cidcached plasma`:
#  1. pyarrow 11's own test_plasma.py, with start_plasma_store pointed (by plasma_shim.py) at
#     cidcached-plasma-store, a wrapper that execs `cidcached plasma "$@"`;
#  2. test_cidcached_plasma.py: native + Plasma sharing, killed clients, malformed frames.
# It creates its own venv (target/plasma-venv) with pyarrow==11.0.0, numpy<2, pandas<2.2 and
# pytest unless $PLASMA_VENV names an existing one. Extra arguments go to both pytest runs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${PLASMA_VENV:-$target/plasma-venv}"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

if [ ! -x "$venv/bin/python" ]; then
  echo "+ $python -m venv $venv"
  "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import pyarrow, numpy, pandas, pytest; assert pyarrow.__version__ == "11.0.0"' 2>/dev/null; then
  echo "+ $venv/bin/pip install pyarrow==11.0.0 'numpy<2' 'pandas<2.2' pytest"
  "$venv/bin/pip" install --quiet pyarrow==11.0.0 "numpy<2" "pandas<2.2" pytest
fi

echo "+ cargo build -p cidcache --bins && cargo build -p cidcache-ffi"
(cd "$root" && cargo build -p cidcache --bins && cargo build -p cidcache-ffi)
export CIDCACHED_BIN="$target/debug/cidcached"
export CIDCACHE_BIN="$target/debug/cidcache"
export CIDCACHE_FFI_LIB="$target/debug/libcidcache.so"
export PLASMA_STORE_BIN="$here/cidcached-plasma-store"

site="$("$venv/bin/python" -c 'import os, pyarrow; print(os.path.dirname(pyarrow.__file__))')"
status=0
echo "+ (cd $site/tests && pytest test_plasma.py) against $PLASMA_STORE_BIN"
(cd "$site/tests" && PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" \
  "$venv/bin/python" -m pytest -p plasma_shim -p no:cacheprovider --noconftest test_plasma.py "$@") || status=$?
echo "+ pytest $here/test_cidcached_plasma.py"
(cd "$here" && "$venv/bin/python" -m pytest -p no:cacheprovider "$here/test_cidcached_plasma.py" "$@") || status=$?
exit $status
