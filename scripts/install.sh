#!/usr/bin/env bash
# Builds and installs cidcache for C, C++ and Go programs, and the daemon and CLI:
#
#   scripts/install.sh [--prefix DIR] [--destdir DIR] [--profile release|dev] [--no-build]
#   (or: make install PREFIX=DIR DESTDIR=DIR)
#
# Installs, under PREFIX (default /usr/local):
#   bin/cidcached, bin/cidcache
#   lib/libcidcache.so.VERSION, lib/libcidcache.so.ABI (the SONAME), lib/libcidcache.so,
#   lib/libcidcache.a, lib/pkgconfig/cidcache.pc, lib/cmake/cidcache/cidcache-config*.cmake
#   include/cidcache.h, include/cidcache.hpp, share/cidcache/valgrind.supp
# Installed binaries and libraries carry no debug information; it is kept beside them in
# lib/.debug/ and bin/.debug/ (linked with .gnu_debuglink, which gdb and perf follow).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix=/usr/local
destdir=""
profile=release
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="$2"; shift 2 ;;
        --prefix=*) prefix="${1#*=}"; shift ;;
        --destdir) destdir="$2"; shift 2 ;;
        --destdir=*) destdir="${1#*=}"; shift ;;
        --profile) profile="$2"; shift 2 ;;
        --profile=*) profile="${1#*=}"; shift ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 64 ;;
    esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be absolute" >&2; exit 64 ;; esac

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/ffi/Cargo.toml" | head -n1)
abi=$(sed -n 's/^const ABI: u32 = \([0-9]*\);/\1/p' "$root/ffi/build.rs")
target="${CARGO_TARGET_DIR:-$root/target}"
case "$profile" in dev) out="$target/debug" ;; *) out="$target/$profile" ;; esac

if [ $build = 1 ]; then
    (cd "$root" && cargo build --profile "$profile" -p cidcache-ffi -p cidcache --bins)
fi

d="$destdir$prefix"
install -d "$d/bin/.debug" "$d/lib/.debug" "$d/lib/pkgconfig" "$d/lib/cmake/cidcache" \
    "$d/include" "$d/share/cidcache"

# install_stripped SRC DIR NAME: DIR/NAME without debug info, DIR/.debug/NAME.debug with it.
install_stripped() {
    local tmp
    tmp="$(mktemp -d)"
    cp "$1" "$tmp/$3"
    objcopy --only-keep-debug "$tmp/$3" "$tmp/$3.debug"
    (cd "$tmp" && objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$3.debug" "$3")
    install -m 0755 "$tmp/$3" "$2/$3"
    install -m 0644 "$tmp/$3.debug" "$2/.debug/$3.debug"
    rm -rf "$tmp"
}

for b in cidcached cidcache; do
    install_stripped "$out/$b" "$d/bin" "$b"
done
install_stripped "$out/libcidcache.so" "$d/lib" "libcidcache.so.$version"
ln -sf "libcidcache.so.$version" "$d/lib/libcidcache.so.$abi"
ln -sf "libcidcache.so.$abi" "$d/lib/libcidcache.so"
# The archive keeps its symbol table (a linker needs it) but not its debug sections.
install -m 0644 "$out/libcidcache.a" "$d/lib/libcidcache.a"
objcopy --strip-debug "$d/lib/libcidcache.a"
install -m 0644 "$root/include/cidcache.h" "$root/include/cidcache.hpp" "$d/include/"
install -m 0644 "$root/ffi/cidcache.supp" "$d/share/cidcache/valgrind.supp"

# What a Rust staticlib needs from the system (rustc --print native-static-libs).
static_libs="-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@STATIC_LIBS@|$static_libs|g" \
    "$root/ffi/cidcache.pc.in" > "$d/lib/pkgconfig/cidcache.pc"
sed -e "s|@VERSION@|$version|g" -e "s|@ABI@|$abi|g" -e "s|@STATIC_LIBS@|$static_libs|g" \
    "$root/ffi/cidcache-config.cmake.in" > "$d/lib/cmake/cidcache/cidcache-config.cmake"
sed -e "s|@VERSION@|$version|g" -e "s|@ABI@|$abi|g" \
    "$root/ffi/cidcache-config-version.cmake.in" > "$d/lib/cmake/cidcache/cidcache-config-version.cmake"
echo "installed cidcache $version (C ABI $abi) under $d"
