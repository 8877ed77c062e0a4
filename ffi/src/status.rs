//! Status codes, the thread-local last-error message, and the panic guard of every entry point.

use cidcache_core::{Code, Error};
use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Status of a call. The values are stable and equal to the Rust `cidcache::Code` (they are
/// also the codes of the native wire protocol): never renumbered, only appended.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum cidcache_status {
    /// Success.
    CIDCACHE_OK = 0,
    /// No object with that key is stored (a get that did not wait).
    CIDCACHE_NOT_FOUND = 1,
    /// An object with that key already exists (sealed or being created).
    CIDCACHE_ALREADY_EXISTS = 2,
    /// The shared-memory tier cannot hold the object, even after evicting what it could.
    CIDCACHE_STORE_FULL = 3,
    /// The index has no free slot and nothing could be evicted.
    CIDCACHE_INDEX_FULL = 4,
    /// A get that waited (a non-zero timeout) ended before the object was sealed.
    CIDCACHE_TIMEOUT = 5,
    /// A key is empty, longer than 63 bytes, or not a valid CID where one is required.
    CIDCACHE_INVALID_KEY = 6,
    /// An argument is NULL where it must not be, out of range, or inconsistent.
    CIDCACHE_INVALID_ARGUMENT = 7,
    /// A peer sent a malformed, truncated, oversized or unknown frame.
    CIDCACHE_PROTOCOL = 8,
    /// The connection to the coordinator is gone (it stopped or restarted): connect again.
    CIDCACHE_DISCONNECTED = 9,
    /// This client holds as many pinned objects as its lease page allows: release some.
    CIDCACHE_PINS_EXHAUSTED = 10,
    /// The object exists but is not sealed yet.
    CIDCACHE_NOT_SEALED = 11,
    /// The operation is not allowed for this client (for example a read-only client creating).
    CIDCACHE_PERMISSION_DENIED = 12,
    /// An operating-system call failed.
    CIDCACHE_IO = 13,
    /// A shared-memory segment has an unknown magic or layout version.
    CIDCACHE_INCOMPATIBLE = 14,
    /// The bytes do not hash to the CID they are stored under (a put with
    /// `CIDCACHE_PUT_VERIFY_CID`). Checked before existence: a verified put of wrong bytes under
    /// a key that is already stored is `CIDCACHE_CID_MISMATCH`, not `CIDCACHE_ALREADY_EXISTS`.
    CIDCACHE_CID_MISMATCH = 15,
    /// Another coordinator already serves this store.
    CIDCACHE_ALREADY_RUNNING = 16,
    /// Arrow IPC encoding or decoding, or an Arrow C stream, failed.
    CIDCACHE_ARROW = 17,
    /// An invariant broke inside cidcache (or a panic was caught at the ABI); please report it.
    CIDCACHE_INTERNAL = 18,
    /// A file of a lower tier (Parquet or Arrow IPC) is truncated or corrupt; it was quarantined.
    CIDCACHE_CORRUPT = 19,
    /// The coordinator is at a limit (connections or file descriptors) and refused the
    /// connection; retry later.
    CIDCACHE_BUSY = 20,
    /// No coordinator serves the store: its socket does not exist or nobody listens on it
    /// (start `cidcached`, or check the store name or socket path). A connection that was up
    /// and is gone is `CIDCACHE_DISCONNECTED`.
    CIDCACHE_NOT_RUNNING = 21,
    /// The object exists but was not stored as Arrow (read its bytes with `cidcache_get`). A
    /// NULL or otherwise bad argument is `CIDCACHE_INVALID_ARGUMENT`.
    CIDCACHE_NOT_ARROW = 22,
}

impl From<Code> for cidcache_status {
    fn from(c: Code) -> Self {
        use cidcache_status::*;
        // Exhaustive on purpose: a new Code fails to compile here until it gets a status.
        match c {
            Code::Ok => CIDCACHE_OK,
            Code::NotFound => CIDCACHE_NOT_FOUND,
            Code::AlreadyExists => CIDCACHE_ALREADY_EXISTS,
            Code::StoreFull => CIDCACHE_STORE_FULL,
            Code::IndexFull => CIDCACHE_INDEX_FULL,
            Code::Timeout => CIDCACHE_TIMEOUT,
            Code::InvalidKey => CIDCACHE_INVALID_KEY,
            Code::InvalidArgument => CIDCACHE_INVALID_ARGUMENT,
            Code::Protocol => CIDCACHE_PROTOCOL,
            Code::Disconnected => CIDCACHE_DISCONNECTED,
            Code::PinsExhausted => CIDCACHE_PINS_EXHAUSTED,
            Code::NotSealed => CIDCACHE_NOT_SEALED,
            Code::PermissionDenied => CIDCACHE_PERMISSION_DENIED,
            Code::Io => CIDCACHE_IO,
            Code::Incompatible => CIDCACHE_INCOMPATIBLE,
            Code::CidMismatch => CIDCACHE_CID_MISMATCH,
            Code::AlreadyRunning => CIDCACHE_ALREADY_RUNNING,
            Code::Arrow => CIDCACHE_ARROW,
            Code::Internal => CIDCACHE_INTERNAL,
            Code::Corrupt => CIDCACHE_CORRUPT,
            Code::Busy => CIDCACHE_BUSY,
            Code::NotRunning => CIDCACHE_NOT_RUNNING,
            Code::NotArrow => CIDCACHE_NOT_ARROW,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `msg` as this thread's last error and returns `status`.
pub(crate) fn set_error(status: cidcache_status, msg: &str) -> cidcache_status {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // try_with: during thread teardown the slot may be gone; the status still tells the story.
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = c);
    status
}

thread_local! {
    /// The message of each failed item of the last batch call on this thread (index, message).
    static ITEM_ERRORS: RefCell<Vec<(usize, CString)>> = const { RefCell::new(Vec::new()) };
}

/// Replaces this thread's per-item messages with `items` (a batch call's failed items).
pub(crate) fn set_item_errors(items: Vec<(usize, String)>) {
    let v = items
        .into_iter()
        .map(|(i, m)| (i, CString::new(m.replace('\0', "\\0")).unwrap_or_default()))
        .collect();
    let _ = ITEM_ERRORS.try_with(|e| *e.borrow_mut() = v);
}

/// The message of item `index` of the last batch call (`cidcache_get_many`,
/// `cidcache_put_many`) made on this thread, when that item's status was not `CIDCACHE_OK`; an
/// empty string otherwise (the item succeeded, the index is out of range, or no batch call was
/// made). Every batch call replaces the messages of the one before.
///
/// Ownership and lifetime: the string belongs to the library; it stays valid until the next
/// batch call on the same thread, or until the thread exits. Copy it to keep it.
///
/// Thread safety: thread-safe; each thread has its own messages.
#[no_mangle]
pub extern "C" fn cidcache_item_error(index: usize) -> *const c_char {
    const EMPTY: &[u8] = b"\0";
    let mut ptr = EMPTY.as_ptr() as *const c_char;
    guard_void(|| {
        let _ = ITEM_ERRORS.try_with(|e| {
            let e = e.borrow();
            if let Ok(k) = e.binary_search_by_key(&index, |(i, _)| *i) {
                ptr = e[k].1.as_ptr();
            }
        });
    });
    ptr
}

/// Records `e` as this thread's last error and returns its status.
pub(crate) fn fail(e: &Error) -> cidcache_status {
    set_error(e.code().into(), &e.to_string())
}

/// `CIDCACHE_NOT_FOUND` with a message (a miss is not an error of the call, but it is reported
/// like one so that every non-OK status has a message).
pub(crate) fn not_found(what: &str) -> Result<cidcache_status, Error> {
    Ok(set_error(
        cidcache_status::CIDCACHE_NOT_FOUND,
        &format!("not found: {what}"),
    ))
}

/// The status of a get that found nothing: `CIDCACHE_NOT_FOUND` when it did not wait
/// (`timeout_ms` 0), `CIDCACHE_TIMEOUT` when it waited and the wait expired first. (A wait
/// without limit never ends empty-handed.)
pub(crate) fn missing(key: &[u8], timeout_ms: i64) -> Result<cidcache_status, Error> {
    if timeout_ms == 0 {
        return not_found(&cidcache_core::cid::format_key(key));
    }
    Ok(set_error(
        cidcache_status::CIDCACHE_TIMEOUT,
        &timed_out(key, timeout_ms),
    ))
}

/// The message of an expired wait for `key`.
pub(crate) fn timed_out(key: &[u8], timeout_ms: i64) -> String {
    format!(
        "timed out: {} was not sealed within {timeout_ms} ms",
        cidcache_core::cid::format_key(key)
    )
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".into()
    }
}

/// Runs the body of an entry point: errors become statuses (with the last-error message), and a
/// panic is caught and reported as `CIDCACHE_INTERNAL` instead of unwinding into C.
#[inline(always)]
pub(crate) fn guard<F>(f: F) -> cidcache_status
where
    F: FnOnce() -> Result<cidcache_status, Error>,
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => fail(&e),
        Err(p) => caught_panic(&*p),
    }
}

#[cold]
fn caught_panic(p: &(dyn std::any::Any + Send)) -> cidcache_status {
    set_error(
        cidcache_status::CIDCACHE_INTERNAL,
        &format!(
            "internal error: a panic was caught at the C ABI ({}); please report it",
            panic_message(p)
        ),
    )
}

/// Runs the body of an entry point that returns nothing (a release function): a panic is caught
/// and recorded as this thread's last error.
#[inline(always)]
pub(crate) fn guard_void<F: FnOnce()>(f: F) {
    if let Err(p) = catch_unwind(AssertUnwindSafe(f)) {
        caught_panic(&*p);
    }
}

/// The message of the last call on this thread that returned a status other than `CIDCACHE_OK`
/// (an empty string if there was none).
///
/// Ownership and lifetime: the string belongs to the library; it stays valid until the next
/// failing call on the same thread, or until the thread exits. Copy it to keep it.
///
/// Thread safety: thread-safe; each thread has its own message.
#[no_mangle]
pub extern "C" fn cidcache_last_error() -> *const c_char {
    // A NUL-only static string when the thread-local slot is gone (thread teardown).
    const EMPTY: &[u8] = b"\0";
    let mut ptr = EMPTY.as_ptr() as *const c_char;
    guard_void(|| {
        if let Ok(p) = LAST_ERROR.try_with(|e| e.borrow().as_ptr()) {
            ptr = p;
        }
    });
    ptr
}

/// The name of a status value (for example `"CIDCACHE_NOT_FOUND"`), or `"CIDCACHE_UNKNOWN"` for a
/// value this library does not know.
///
/// Ownership and lifetime: a static string; never free it.
///
/// Thread safety: thread-safe.
#[no_mangle]
pub extern "C" fn cidcache_status_name(status: i32) -> *const c_char {
    let s: &'static [u8] = match status {
        0 => b"CIDCACHE_OK\0",
        1 => b"CIDCACHE_NOT_FOUND\0",
        2 => b"CIDCACHE_ALREADY_EXISTS\0",
        3 => b"CIDCACHE_STORE_FULL\0",
        4 => b"CIDCACHE_INDEX_FULL\0",
        5 => b"CIDCACHE_TIMEOUT\0",
        6 => b"CIDCACHE_INVALID_KEY\0",
        7 => b"CIDCACHE_INVALID_ARGUMENT\0",
        8 => b"CIDCACHE_PROTOCOL\0",
        9 => b"CIDCACHE_DISCONNECTED\0",
        10 => b"CIDCACHE_PINS_EXHAUSTED\0",
        11 => b"CIDCACHE_NOT_SEALED\0",
        12 => b"CIDCACHE_PERMISSION_DENIED\0",
        13 => b"CIDCACHE_IO\0",
        14 => b"CIDCACHE_INCOMPATIBLE\0",
        15 => b"CIDCACHE_CID_MISMATCH\0",
        16 => b"CIDCACHE_ALREADY_RUNNING\0",
        17 => b"CIDCACHE_ARROW\0",
        18 => b"CIDCACHE_INTERNAL\0",
        19 => b"CIDCACHE_CORRUPT\0",
        20 => b"CIDCACHE_BUSY\0",
        21 => b"CIDCACHE_NOT_RUNNING\0",
        22 => b"CIDCACHE_NOT_ARROW\0",
        _ => b"CIDCACHE_UNKNOWN\0",
    };
    s.as_ptr() as *const c_char
}

/// The version of this library, as `"MAJOR.MINOR.PATCH"`.
///
/// Ownership and lifetime: a static string; never free it.
///
/// Thread safety: thread-safe.
#[no_mangle]
pub extern "C" fn cidcache_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_equal_codes() {
        for v in 0u16..=22 {
            let code = Code::from_u16(v);
            assert_eq!(code as u16, v);
            assert_eq!(cidcache_status::from(code) as i32, v as i32);
            // SAFETY: cidcache_status_name returns a static NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(cidcache_status_name(v as i32)) };
            assert_ne!(name.to_str().unwrap(), "CIDCACHE_UNKNOWN");
        }
    }

    #[test]
    fn panics_are_caught() {
        let s = guard(|| panic!("boom"));
        assert_eq!(s, cidcache_status::CIDCACHE_INTERNAL);
        // SAFETY: the pointer is this thread's last-error string, valid until the next error.
        let msg = unsafe { std::ffi::CStr::from_ptr(cidcache_last_error()) };
        assert!(msg.to_str().unwrap().contains("boom"));
    }
}
