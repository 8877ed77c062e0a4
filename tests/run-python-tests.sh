#!/usr/bin/env bash
# Builds the Python package (python/, maturin + PyO3) with `pip install ./python` into a venv
# under the target directory, runs its pytest suite against real cidcached daemons (the fixtures
# start them), and checks the tests against the package's type stubs with mypy --strict.
#
# The extension is built in the dev profile (MATURIN_PEP517_ARGS) in the workspace's target
# directory, so the Rust dependencies the other steps compiled are reused.
# Needs: Rust (cargo), Python 3.9+ with venv; network access to PyPI on the first run (maturin,
# pyarrow, numpy, polars, pytest, mypy, fsspec, pandas, duckdb: current releases).
# Environment: CARGO_TARGET_DIR (default <repo>/target); CIDCACHE_PYTHON (default python3.11 if
# present, else python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TARGET_DIR="$target"
venv="$target/py-venv"
py="${CIDCACHE_PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$venv/bin/python" ] ||
    ! "$venv/bin/python" -c 'import maturin, pyarrow, numpy, polars, pytest, mypy, fsspec, pandas' 2>/dev/null; then
    echo "creating $venv with $py"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade \
        maturin pyarrow numpy polars pytest mypy fsspec pandas
    # DuckDB reads cidcache:// paths in test_fsspec.py; that test is skipped without it.
    "$venv/bin/pip" install -q --disable-pip-version-check --upgrade duckdb ||
        echo "duckdb could not be installed: its fsspec test will be skipped"
fi
"$venv/bin/python" -c 'import pyarrow, numpy, polars, pytest, mypy, sys
print("python", sys.version.split()[0], "pyarrow", pyarrow.__version__, "numpy", numpy.__version__,
      "polars", polars.__version__, "pytest", pytest.__version__)'

echo "building cidcached and installing ./python (dev profile)"
cargo build -q -p cidcache --bins
# No build isolation: maturin is in the venv already (no download per run).
MATURIN_PEP517_ARGS="--profile dev" PATH="$venv/bin:$PATH" \
    "$venv/bin/pip" install -q --disable-pip-version-check --no-build-isolation --force-reinstall \
    --no-deps ./python

# From the repository root, so that `import cidcache` is the installed package, not python/.
export CIDCACHED="$target/debug/cidcached"
"$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
"$venv/bin/mypy" --strict --config-file python/pyproject.toml --no-incremental python/tests
