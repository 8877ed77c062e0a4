//! The C ABI of cidcache: `libcidcache.so` / `libcidcache.a`, described by `include/cidcache.h`
//! (generated from this crate by cbindgen; see `ffi/check-header.sh`).
//!
//! Conventions, for every exported function:
//! - Fallible functions return a [`cidcache_status`]; `CIDCACHE_OK` is success. Any other status
//!   sets this thread's last-error message ([`cidcache_last_error`]).
//! - No Rust panic crosses the ABI: every entry point runs under `catch_unwind` and reports a
//!   caught panic as `CIDCACHE_INTERNAL`.
//! - Every pointer argument is checked: a NULL where one is required is `CIDCACHE_INVALID_ARGUMENT`
//!   (a pointer with a length may be NULL when the length is 0). Pointers that are not NULL must
//!   be valid for what the documentation says; that, the ABI cannot check.
//! - Output pointers are set on success; on failure, handle outputs are set to NULL.
//! - Handles (`cidcache_client`, `cidcache_object`, `cidcache_writer`, `cidcache_get_op`) are
//!   opaque and freed by their own function, exactly once.
//!
//! `unsafe` is confined to this crate's edge: dereferencing the pointers C hands us (helpers in
//! this module) and the Arrow C stream hand-over.

#![allow(non_camel_case_types)]
#![warn(missing_docs)]

mod arrow;
mod batch;
mod client;
mod getop;
mod status;
mod util;

pub use arrow::*;
pub use batch::*;
pub use client::*;
pub use getop::*;
pub use status::*;
