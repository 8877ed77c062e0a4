//! Checked conversions of the raw pointers C hands us. Each helper checks for NULL; the rest of
//! the contract (the pointer is valid for the stated length and lifetime) is the caller's, as the
//! header documents for every function.

use cidcache_core::Error;
use std::ffi::{c_char, CStr};

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// `len` bytes at `p`; `p` may be NULL only when `len` is 0.
///
/// # Safety
/// When `len > 0`, `p` must be valid for reads of `len` bytes for `'a`.
#[inline(always)]
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, what: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but its length is {len}")));
    }
    // SAFETY: non-NULL, and the caller guarantees `len` readable bytes for 'a.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A shared reference to `*p`, or an error when `p` is NULL.
///
/// # Safety
/// When not NULL, `p` must point to a live, properly aligned `T` for `'a`, not mutated
/// meanwhile except through interior mutability.
#[inline(always)]
pub(crate) unsafe fn get_ref<'a, T>(p: *const T, what: &str) -> Result<&'a T, Error> {
    // SAFETY: the caller guarantees a valid pointer when it is not NULL.
    unsafe { p.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// An exclusive reference to `*p`, or an error when `p` is NULL.
///
/// # Safety
/// When not NULL, `p` must point to a live, properly aligned `T` for `'a` that nothing else
/// accesses meanwhile.
#[inline(always)]
pub(crate) unsafe fn get_mut<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T, Error> {
    // SAFETY: the caller guarantees a valid, unaliased pointer when it is not NULL.
    unsafe { p.as_mut() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

/// Writes `v` to the output `p` if it is not NULL (for optional outputs).
///
/// # Safety
/// When not NULL, `p` must be valid for writes of a `T` (it may be uninitialised).
#[inline(always)]
pub(crate) unsafe fn write_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: non-NULL and valid for writes per the caller; `write` does not drop the
        // (possibly uninitialised) old value.
        unsafe { p.write(v) }
    }
}

/// A NUL-terminated UTF-8 string at `p`.
///
/// # Safety
/// When not NULL, `p` must point to a NUL-terminated string valid for `'a`.
pub(crate) unsafe fn c_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller.
    unsafe { CStr::from_ptr(p) }
        .to_str()
        .map_err(|_| invalid(format!("{what} is not valid UTF-8")))
}

/// Copies `src` into the caller's buffer `out` of `cap` bytes, storing the length in `out_len`.
/// Too small a buffer is `CIDCACHE_INVALID_ARGUMENT`, with the needed size in `out_len`.
///
/// # Safety
/// `out` must be valid for writes of `cap` bytes (or NULL when `cap` is 0); `out_len` NULL or
/// valid for a write.
pub(crate) unsafe fn copy_out(
    src: &[u8],
    out: *mut u8,
    cap: usize,
    out_len: *mut usize,
    what: &str,
) -> Result<(), Error> {
    // SAFETY: per the caller.
    unsafe { write_opt(out_len, src.len()) };
    if cap < src.len() {
        return Err(invalid(format!(
            "{what} needs {} bytes, the buffer has {cap}",
            src.len()
        )));
    }
    if out.is_null() {
        return Err(invalid(format!("{what} buffer is NULL")));
    }
    // SAFETY: `out` has room for `cap >= src.len()` bytes per the caller; the regions cannot
    // overlap (src is ours).
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), out, src.len()) };
    Ok(())
}
