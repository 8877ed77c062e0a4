//! Batches: many gets or puts in one call, one status per item.

use crate::client::{cidcache_client, cidcache_object, cidcache_view, timeout_of};
use crate::status::{cidcache_status, fail, guard, set_error, set_item_errors, timed_out};
use crate::util::{bytes, get_ref, invalid};
use cidcache_core::Error;
use std::time::Duration;

use cidcache_status::{CIDCACHE_NOT_FOUND, CIDCACHE_OK, CIDCACHE_TIMEOUT};

/// A key: `len` bytes at `ptr`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cidcache_key {
    /// Key bytes (may be NULL when `len` is 0, which is an invalid key).
    pub ptr: *const u8,
    /// Number of key bytes.
    pub len: usize,
}

/// One object to store with `cidcache_put_many`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cidcache_put_item {
    /// Key bytes.
    pub key: *const u8,
    /// Number of key bytes.
    pub key_len: usize,
    /// Data bytes (may be NULL when `data_len` is 0).
    pub data: *const u8,
    /// Number of data bytes.
    pub data_len: usize,
}

/// Builds a `&[T]` of `n` items; NULL is allowed only when `n` is 0.
///
/// # Safety
/// When `n > 0`, `p` must be valid for reads of `n` items for `'a`.
unsafe fn items<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T], Error> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but the count is {n}")));
    }
    // SAFETY: non-NULL and valid for `n` items per the caller.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// Builds a `&mut [T]` of `n` items; NULL is allowed only when `n` is 0.
///
/// # Safety
/// When `n > 0`, `p` must be valid for writes of `n` items for `'a`, not aliased.
unsafe fn items_mut<'a, T>(p: *mut T, n: usize, what: &str) -> Result<&'a mut [T], Error> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but the count is {n}")));
    }
    // SAFETY: non-NULL, valid for `n` items and unaliased per the caller. The items may be
    // uninitialised pointers/statuses: every element is written before it is read.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, n) })
}

/// Gets `count` keys at once: hits are served locally, the misses in one round trip that waits up
/// to `timeout_ms` milliseconds (0: no wait; negative: without limit) for them.
///
/// For each item i: `statuses[i]` is `CIDCACHE_OK` with `objects[i]` a new pinned object (and
/// `views[i]` its bytes when `views` is not NULL), or another status (`CIDCACHE_NOT_FOUND` for a
/// key missing when `timeout_ms` is 0, `CIDCACHE_TIMEOUT` for a key still missing when the wait
/// expired, `CIDCACHE_INVALID_KEY`, ...) with `objects[i]` NULL.
///
/// Returns `CIDCACHE_OK` when every item was found; else the status of the first item that was
/// not (with its message as the last error). Statuses are filled whenever the arguments are valid;
/// each failed item's message is then `cidcache_item_error(i)`.
///
/// Ownership: the caller owns every non-NULL `objects[i]` and releases each with
/// `cidcache_release`. The input arrays are only read during the call.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `keys` valid for `count` items (each key valid for its
/// length); `objects` and `statuses` valid for `count` writes; `views` NULL or valid for `count`
/// writes.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_many(
    client: *const cidcache_client,
    keys: *const cidcache_key,
    count: usize,
    timeout_ms: i64,
    objects: *mut *mut cidcache_object,
    views: *mut cidcache_view,
    statuses: *mut cidcache_status,
) -> cidcache_status {
    guard(|| {
        set_item_errors(Vec::new());
        // SAFETY: caller contract on each array.
        let (objects, statuses) = unsafe {
            (
                items_mut(objects, count, "objects")?,
                items_mut(statuses, count, "statuses")?,
            )
        };
        objects.fill(std::ptr::null_mut());
        statuses.fill(cidcache_status::CIDCACHE_INVALID_ARGUMENT);
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let keys = unsafe { items(keys, count, "keys") }?;
        let views: &mut [cidcache_view] = if views.is_null() {
            &mut []
        } else {
            // SAFETY: caller contract.
            unsafe { items_mut(views, count, "views") }?
        };
        let mut key_slices = Vec::with_capacity(count);
        for (i, k) in keys.iter().enumerate() {
            // SAFETY: caller contract on each key.
            key_slices.push(unsafe { bytes(k.ptr, k.len, &format!("keys[{i}]")) }?);
        }
        let timeout = timeout_of(timeout_ms).unwrap_or(Duration::from_millis(i64::MAX as u64));
        let results = c.client.get_many(&key_slices, timeout);
        let mut first: Option<(cidcache_status, String)> = None;
        let mut item_errors = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            statuses[i] = match r {
                Ok(Some(obj)) => {
                    if let Some(v) = views.get_mut(i) {
                        *v = cidcache_view::of(&obj);
                    }
                    objects[i] = Box::into_raw(Box::new(cidcache_object { obj }));
                    CIDCACHE_OK
                }
                // Nothing: a miss without a wait, an expired wait with one.
                Ok(None) if timeout_ms == 0 => {
                    let m = format!(
                        "not found: keys[{i}] ({})",
                        cidcache_core::cid::format_key(key_slices[i])
                    );
                    first.get_or_insert_with(|| (CIDCACHE_NOT_FOUND, m.clone()));
                    item_errors.push((i, m));
                    CIDCACHE_NOT_FOUND
                }
                Ok(None) => {
                    let m = format!("keys[{i}]: {}", timed_out(key_slices[i], timeout_ms));
                    first.get_or_insert_with(|| (CIDCACHE_TIMEOUT, m.clone()));
                    item_errors.push((i, m));
                    CIDCACHE_TIMEOUT
                }
                Err(e) => {
                    let s = e.code().into();
                    let m = format!("keys[{i}]: {e}");
                    first.get_or_insert_with(|| (s, m.clone()));
                    item_errors.push((i, m));
                    s
                }
            };
        }
        set_item_errors(item_errors);
        Ok(match first {
            None => CIDCACHE_OK,
            Some((s, m)) => set_error(s, &m),
        })
    })
}

/// Stores `count` objects at once: small ones travel inline, batched into as few round trips as
/// the frame limit allows; large ones are created and sealed one by one. Partial success is
/// normal: `statuses[i]` tells each item's outcome (`CIDCACHE_ALREADY_EXISTS` for a key that is
/// already stored, ...).
///
/// Returns `CIDCACHE_OK` when every item was stored; else the status of the first item that was
/// not (with its message as the last error). Each failed item's message is
/// `cidcache_item_error(i)`.
///
/// Ownership: nothing is retained; the buffers are only read during the call.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `items` valid for `count` items (each buffer valid for its
/// length); `statuses` valid for `count` writes.
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_many(
    client: *const cidcache_client,
    items_ptr: *const cidcache_put_item,
    count: usize,
    statuses: *mut cidcache_status,
) -> cidcache_status {
    guard(|| {
        set_item_errors(Vec::new());
        // SAFETY: caller contract.
        let statuses = unsafe { items_mut(statuses, count, "statuses") }?;
        statuses.fill(cidcache_status::CIDCACHE_INVALID_ARGUMENT);
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let list = unsafe { items(items_ptr, count, "items") }?;
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(count);
        for (i, it) in list.iter().enumerate() {
            // SAFETY: caller contract on each item's buffers.
            let (k, d) = unsafe {
                (
                    bytes(it.key, it.key_len, &format!("items[{i}].key"))?,
                    bytes(it.data, it.data_len, &format!("items[{i}].data"))?,
                )
            };
            pairs.push((k, d));
        }
        let mut first = None;
        let mut item_errors = Vec::new();
        for (i, r) in c.client.put_many(&pairs).into_iter().enumerate() {
            statuses[i] = match r {
                Ok(()) => CIDCACHE_OK,
                Err(e) => {
                    let item = Error::from_code(e.code(), format!("items[{i}]: {}", e.message()));
                    item_errors.push((i, item.to_string()));
                    if first.is_none() {
                        first = Some(item);
                    }
                    e.code().into()
                }
            };
        }
        set_item_errors(item_errors);
        Ok(match first {
            None => CIDCACHE_OK,
            Some(e) => fail(&e),
        })
    })
}
