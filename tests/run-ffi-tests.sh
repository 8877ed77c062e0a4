#!/usr/bin/env bash
# Builds the C ABI (debug), checks the generated header, and runs the C (dynamic, static,
# valgrind), C++, Go and Python clients' tests, each against a cidcached it starts itself.
# Exits non-zero when anything fails; the last line is "ffi: N passed, N failed" (suites).
#
# Needs: Rust (cargo), gcc/g++, Go >= 1.24, Python 3 with venv, valgrind; network access to
# crates.io (cbindgen, installed on first use), the Go module proxy and PyPI (first run only).
# Environment:
#   CARGO_TARGET_DIR     target directory (default: <repo>/target)
#   CIDCACHE_SKIP_VALGRIND=1, CIDCACHE_SKIP_PYTHON=1, CIDCACHE_SKIP_GO=1   skip a suite
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
export CARGO_TARGET_DIR="$target"
libdir="$target/debug"
out="$target/ffi-tests"
mkdir -p "$out"

passed=0
failed=0
failures=()
daemon_pid=""
daemon_dir=""

log() { printf '\n=== %s\n' "$*"; }

record() { # name status
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
        echo "--- ok: $1"
    else
        failed=$((failed + 1))
        failures+=("$1")
        echo "--- FAILED: $1 (exit $2)"
    fi
}

stop_daemon() {
    if [ -n "$daemon_pid" ]; then
        kill -TERM "$daemon_pid" 2>/dev/null
        for _ in $(seq 1 100); do
            kill -0 "$daemon_pid" 2>/dev/null || break
            sleep 0.05
        done
        kill -KILL "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
        daemon_pid=""
    fi
    if [ -n "$daemon_dir" ]; then
        rm -rf "$daemon_dir"
        daemon_dir=""
    fi
}
trap stop_daemon EXIT

start_daemon() { # suite-name
    stop_daemon
    daemon_dir="$(mktemp -d "${TMPDIR:-/tmp}/cidcache-ffi-$1.XXXXXX")"
    export CIDCACHE_STORE="ffi_$1_$$"
    export CIDCACHE_SOCKET="$daemon_dir/s.sock"
    CIDCACHE_LOG=warn "$libdir/cidcached" --store "$CIDCACHE_STORE" --socket "$CIDCACHE_SOCKET" \
        --data-dir "$daemon_dir/data" -m 64M --arena-size 16M --index-capacity 4096 \
        </dev/null >"$daemon_dir/daemon.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 1 200); do
        [ -S "$CIDCACHE_SOCKET" ] && return 0
        if ! kill -0 "$daemon_pid" 2>/dev/null; then break; fi
        sleep 0.05
    done
    echo "cidcached did not start:" >&2
    cat "$daemon_dir/daemon.log" >&2
    return 1
}

run_suite() { # name command...
    local name="$1"
    shift
    log "$name"
    if start_daemon "${name//[^a-z0-9]/_}"; then
        "$@"
        record "$name" $?
    else
        record "$name (daemon)" 1
    fi
    stop_daemon
}

# ---- build ---------------------------------------------------------------------------------
log "cargo build -p cidcache-ffi -p cidcache (debug)"
if ! cargo build -p cidcache-ffi -p cidcache; then
    record "cargo build" 1
    echo "ffi: $passed passed, $failed failed"
    exit 1
fi
record "cargo build" 0
# libcidcache.so carries the SONAME libcidcache.so.<ABI> (ffi/build.rs): programs linked
# against the build tree look that name up in it.
abi=$(sed -n 's/^const ABI: u32 = \([0-9]*\);/\1/p' ffi/build.rs)
ln -sf libcidcache.so "$libdir/libcidcache.so.$abi"

log "cargo test -p cidcache-ffi (unit tests)"
cargo test -p cidcache-ffi --lib
record "rust unit tests" $?

log "header check"
CIDCACHE_INSTALL_CBINDGEN="${CIDCACHE_INSTALL_CBINDGEN:-1}" ffi/check-header.sh
record "header check" $?

# ---- C ---------------------------------------------------------------------------------------
cflags=(-std=c11 -Wall -Wextra -Werror -g -O1 -I"$root/include")
# Native libraries a Rust staticlib needs (rustc --print native-static-libs).
static_libs=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)

log "C build (dynamic and static)"
c_build=0
gcc "${cflags[@]}" tests/c/test_ffi.c -o "$out/test_c_dynamic" \
    -L"$libdir" -Wl,-rpath,"$libdir" -lcidcache -lpthread || c_build=1
gcc "${cflags[@]}" tests/c/test_ffi.c -o "$out/test_c_static" \
    "$libdir/libcidcache.a" "${static_libs[@]}" || c_build=1
if ldd "$out/test_c_static" 2>/dev/null | grep -q libcidcache; then
    echo "the static test binary links libcidcache dynamically" >&2
    c_build=1
fi
record "C build" $c_build

if [ $c_build -eq 0 ]; then
    run_suite "c-dynamic" "$out/test_c_dynamic"
    run_suite "c-static" "$out/test_c_static"
    if [ "${CIDCACHE_SKIP_VALGRIND:-0}" != 1 ]; then
        run_suite "c-valgrind" valgrind -q --error-exitcode=3 \
            --suppressions="$root/ffi/cidcache.supp" --leak-check=full \
            --show-leak-kinds=definite,indirect,possible \
            --errors-for-leak-kinds=definite,indirect,possible --num-callers=40 \
            "$out/test_c_dynamic"
    fi
fi

# ---- installed library: layout, SONAME, no debug info, pkg-config and CMake consumers -----------
log "install into a temporary prefix (scripts/install.sh --profile dev)"
prefix="$out/prefix"
rm -rf "$prefix"
install_ok=0
scripts/install.sh --profile dev --no-build --prefix "$prefix" || install_ok=1
if [ $install_ok -eq 0 ]; then
    so="$prefix/lib/libcidcache.so"
    readelf -d "$so" | grep -q "SONAME.*\[libcidcache.so.$abi\]" ||
        { echo "no SONAME libcidcache.so.$abi"; install_ok=1; }
    if readelf -S "$so" | grep -q '\.debug_info'; then
        echo "the installed library carries debug info"; install_ok=1
    fi
    readelf -S "$so" | grep -q '\.gnu_debuglink' || { echo "no .gnu_debuglink"; install_ok=1; }
    [ -s "$prefix/lib/.debug/$(readlink -f "$so" | xargs basename).debug" ] ||
        { echo "no separate debug file"; install_ok=1; }
    [ -f "$prefix/share/cidcache/valgrind.supp" ] || { echo "no valgrind.supp"; install_ok=1; }
    export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
    # shellcheck disable=SC2046
    gcc -std=c11 -Wall -Werror tests/install/consumer.c -o "$out/consumer_pkgconfig" \
        $(pkg-config --cflags --libs cidcache) -Wl,-rpath,"$prefix/lib" || install_ok=1
    # shellcheck disable=SC2046
    gcc -std=c11 -Wall -Werror tests/install/consumer.c -o "$out/consumer_pkgconfig_static" \
        $(pkg-config --cflags cidcache) "$prefix/lib/libcidcache.a" \
        $(pkg-config --static --libs-only-l cidcache | sed 's/-lcidcache//') || install_ok=1
    rm -rf "$out/cmake-consumer"
    { cmake -S tests/install -B "$out/cmake-consumer" -DCMAKE_PREFIX_PATH="$prefix" \
        -DCMAKE_BUILD_RPATH="$prefix/lib" >/dev/null &&
        cmake --build "$out/cmake-consumer" >/dev/null; } || install_ok=1
    unset PKG_CONFIG_PATH
fi
record "install, pkg-config and CMake builds" $install_ok
if [ $install_ok -eq 0 ]; then
    run_suite "installed-consumers" bash -c "
        set -e
        ldd '$out/consumer_pkgconfig' | grep -q '$prefix/lib/libcidcache.so.$abi'
        '$out/consumer_pkgconfig'
        '$out/consumer_pkgconfig_static'
        '$out/cmake-consumer/consumer_shared'
        '$out/cmake-consumer/consumer_static'"
fi

# ---- C++ -------------------------------------------------------------------------------------
log "C++ build"
if g++ -std=c++17 -Wall -Wextra -Werror -g -O1 -I"$root/include" tests/cpp/test_ffi.cpp \
    -o "$out/test_cpp" -L"$libdir" -Wl,-rpath,"$libdir" -lcidcache -lpthread; then
    record "C++ build" 0
    run_suite "cpp" "$out/test_cpp"
else
    record "C++ build" 1
fi

# ---- Go --------------------------------------------------------------------------------------
if [ "${CIDCACHE_SKIP_GO:-0}" != 1 ]; then
    export CGO_ENABLED=1
    # The Go package finds the library with pkg-config: here, the one installed above.
    export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
    export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export GOFLAGS="${GOFLAGS:--buildvcs=false}"
    # arrow-go and its dependencies (go.mod / go.sum) come from the Go module proxy on the first
    # run ($GOPROXY, default proxy.golang.org); fetched here so that a network failure says so.
    log "go mod download"
    (cd ffi/go && go mod download)
    record "go mod download" $?
    log "go vet"
    (cd ffi/go && go vet ./...)
    record "go vet" $?
    run_suite "go" bash -c "cd '$root/ffi/go' && go test -count=1 ./..."
fi

# ---- Python ------------------------------------------------------------------------------------
if [ "${CIDCACHE_SKIP_PYTHON:-0}" != 1 ]; then
    venv="$target/ffi-venv"
    log "python venv ($venv)"
    venv_ok=0
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pyarrow, pytest' 2>/dev/null; then
        python3 -m venv "$venv" && "$venv/bin/pip" install -q --disable-pip-version-check pyarrow pytest || venv_ok=1
    fi
    record "python venv" $venv_ok
    if [ $venv_ok -eq 0 ]; then
        export CIDCACHE_LIB="$libdir/libcidcache.so"
        run_suite "python" "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/python/test_ffi.py
    fi
fi

echo
if [ $failed -ne 0 ]; then
    echo "failed: ${failures[*]}"
fi
echo "ffi: $passed passed, $failed failed"
[ $failed -eq 0 ]
