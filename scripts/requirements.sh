#!/usr/bin/env bash
# Checks what the test command needs and installs the Debian packages that are missing when it
# can (root, apt-get). Prints what it found; exits non-zero with the missing pieces named.
set -uo pipefail

missing=()     # what we cannot install here
apt_pkgs=()    # what apt-get can install

version_ge() { # have want: "1.2.3" >= "1.2"
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

check_cmd() { # command, Debian package (or "" if not installable here), what it is for
    if command -v "$1" >/dev/null 2>&1; then return 0; fi
    if [ -n "$2" ]; then apt_pkgs+=("$2"); else missing+=("$1 ($3)"); fi
    return 1
}

if check_cmd cargo "" "Rust toolchain, https://rustup.rs"; then
    v=$(rustc --version | awk '{print $2}')
    version_ge "$v" 1.88 || missing+=("rustc >= 1.88 (found $v; rustup update)")
    cargo fmt --version >/dev/null 2>&1 || missing+=("rustfmt (rustup component add rustfmt)")
    cargo clippy --version >/dev/null 2>&1 || missing+=("clippy (rustup component add clippy)")
    echo "rust: $(rustc --version)"
fi
if check_cmd go "" "Go >= 1.25 for the Go client tests, https://go.dev/dl"; then
    v=$(go env GOVERSION | sed 's/^go//')
    version_ge "$v" 1.25 || missing+=("go >= 1.25 (found $v; ffi/go/go.mod asks for 1.25)")
    echo "go: $v"
fi
py=""
for c in python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
        py=$c
        break
    fi
done
if [ -z "$py" ]; then
    missing+=("python3.11 (pyarrow 11, which the Plasma tests run, has wheels only up to 3.11)")
else
    echo "python: $($py --version) ($(command -v $py))"
    "$py" -c 'import ensurepip, venv' 2>/dev/null || apt_pkgs+=(python3.11-venv)
fi
check_cmd gcc gcc "C compiler" && echo "gcc: $(gcc -dumpfullversion)"
check_cmd g++ g++ "C++ compiler" && echo "g++: $(g++ -dumpfullversion)"
check_cmd valgrind valgrind "memory checks of the C client" && echo "valgrind: $(valgrind --version)"

if [ ${#apt_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing with apt-get: ${apt_pkgs[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}" >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}" >/dev/null; } ||
            missing+=("${apt_pkgs[@]} (apt-get install failed)")
    else
        missing+=("Debian packages: ${apt_pkgs[*]} (run as root, or: sudo apt-get install ${apt_pkgs[*]})")
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "the test command needs what is missing here:" >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi
echo "requirements: ok"
