//! Gives `libcidcache.so` its SONAME, `libcidcache.so.<ABI>`: programs linked against it record
//! that name, so an installed library can be replaced by an ABI-compatible build
//! (`scripts/install.sh` installs `libcidcache.so.<version>` with the SONAME link beside it).

/// The C ABI's major version: raised on any change that breaks programs linked against an
/// earlier `libcidcache.so` (removed or changed functions, structs or status values).
const ABI: u32 = 0;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcidcache.so.{ABI}");
    println!("cargo:rustc-env=CIDCACHE_ABI={ABI}");
    println!("cargo:rerun-if-changed=build.rs");
}
