//! Connections, single-object reads and writes, control calls, CIDs.

use crate::status::{cidcache_status, guard, guard_void, missing};
use crate::util::{bytes, c_str, copy_out, get_mut, get_ref, invalid, write_opt};
use cidcache_core::{Client, ConnectOptions, Error, ObjectRef, PutOptions, WriteObject};
use std::ffi::{c_char, CString};
use std::time::Duration;

use cidcache_status::CIDCACHE_OK;

/// Longest key, in bytes. Keys are 1 to 63 opaque bytes (binary CIDs, Plasma ids, any bytes).
pub const CIDCACHE_MAX_KEY_LEN: usize = 63;
/// Length of a binary CIDv1 with the raw codec and a sha2-256 multihash (what
/// `cidcache_put_content` and `cidcache_cid_compute` produce).
pub const CIDCACHE_CID_V1_RAW_LEN: usize = 36;

/// `cidcache_connect` flag: connect in the read-only role (data is mapped read-only; creates and
/// puts are refused). Hits work exactly as for writers.
pub const CIDCACHE_CONNECT_READ_ONLY: u32 = 1;

/// `cidcache_put_ex` flag: drop the object instead of demoting it to a lower tier on eviction.
pub const CIDCACHE_PUT_EPHEMERAL: u32 = 1;
/// `cidcache_put_ex` flag: have the coordinator check, at seal, that the data hashes to the key
/// (a sha2-256 CID); a mismatch is `CIDCACHE_CID_MISMATCH`.
pub const CIDCACHE_PUT_VERIFY_CID: u32 = 2;
/// `cidcache_put_ex` flag: also add the object to the store's IPFS node (`cidcached
/// --ipfs-api`), pinned, under the key, which must be the CID the node computes for the data
/// (the raw CIDv1 up to 256 KiB and 1 MiB at most, else the UnixFS CIDv1 with raw leaves). The
/// put succeeds only once the node holds it; a wrong key is `CIDCACHE_CID_MISMATCH`.
pub const CIDCACHE_PUT_IPFS: u32 = 4;
/// `cidcache_put_ex` flag: return only once the object is in a synced file of the warm tier
/// (as with `cidcached --durability sync`, for this put alone); an error (`CIDCACHE_IO`) when
/// the warm tier cannot write it, `CIDCACHE_INVALID_ARGUMENT` when the store has none.
pub const CIDCACHE_PUT_DURABLE: u32 = 8;

/// `cidcache_view.flags` bit: the object was stored as Arrow IPC (read it with
/// `cidcache_get_arrow` or `cidcache_object_to_arrow`).
pub const CIDCACHE_OBJECT_ARROW: u32 = 1;

/// A connection to a store (opaque). Create with `cidcache_connect`, free with
/// `cidcache_disconnect`. One handle may be used from several threads at once.
pub struct cidcache_client {
    pub(crate) client: Client,
}

/// A pinned, sealed object in shared memory (opaque). Its bytes stay valid and unchanged until
/// `cidcache_release`, whatever other processes do.
pub struct cidcache_object {
    pub(crate) obj: ObjectRef,
}

/// An object being written in place (opaque). Fill it, then `cidcache_seal` or `cidcache_abort`.
pub struct cidcache_writer {
    pub(crate) w: WriteObject,
}

/// Where a pinned object's bytes are: zero-copy pointers into the shared mapping, valid until the
/// object is released. Filled by the get functions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cidcache_view {
    /// First data byte (64-byte aligned). Not NULL, even when `data_len` is 0.
    pub data: *const u8,
    /// Number of data bytes.
    pub data_len: usize,
    /// First metadata byte (right after the data).
    pub metadata: *const u8,
    /// Number of metadata bytes.
    pub metadata_len: usize,
    /// `CIDCACHE_OBJECT_*` bits.
    pub flags: u32,
}

impl cidcache_view {
    pub(crate) fn of(o: &ObjectRef) -> cidcache_view {
        cidcache_view {
            data: o.data().as_ptr(),
            data_len: o.data().len(),
            metadata: o.metadata().as_ptr(),
            metadata_len: o.metadata().len(),
            flags: if o.is_arrow() {
                CIDCACHE_OBJECT_ARROW
            } else {
                0
            },
        }
    }
}

/// Timeout convention of the C API: a negative value waits without limit.
pub(crate) fn timeout_of(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

/// Hands a found object to C: a new handle in `*out`, its view in `*view` (if not NULL). Nothing
/// found is `CIDCACHE_NOT_FOUND`, or `CIDCACHE_TIMEOUT` after a wait (`timeout_ms` not 0).
///
/// # Safety
/// `out` must be valid for a write; `view` NULL or valid for a write.
#[inline(always)]
pub(crate) unsafe fn hand_out(
    o: Option<ObjectRef>,
    out: *mut *mut cidcache_object,
    view: *mut cidcache_view,
    key: &[u8],
    timeout_ms: i64,
) -> Result<cidcache_status, Error> {
    match o {
        Some(obj) => {
            // SAFETY: per the caller.
            unsafe { write_opt(view, cidcache_view::of(&obj)) };
            // SAFETY: per the caller.
            unsafe { out.write(Box::into_raw(Box::new(cidcache_object { obj }))) };
            Ok(CIDCACHE_OK)
        }
        None => missing(key, timeout_ms),
    }
}

/// Connects to the coordinator listening on the Unix socket `socket_path` (as given to
/// `cidcached --socket`), or, when `socket_path` is NULL, to the store named `store` at its
/// default socket path (`store` NULL means `$CIDCACHE_STORE` when it is set and not empty, as for
/// `cidcached` and `cidcache`, else the store `"default"`). `flags`: `CIDCACHE_CONNECT_*` bits.
///
/// No coordinator serving the store (no socket, or nobody listening on it) is
/// `CIDCACHE_NOT_RUNNING`.
///
/// Ownership: on success `*out` is a new handle owned by the caller, to be freed with
/// `cidcache_disconnect`; on failure `*out` is set to NULL. The strings are only read during the
/// call.
///
/// Thread safety: thread-safe. The handle may then be used from several threads at once.
///
/// # Safety
/// `socket_path` and `store` must each be NULL or a NUL-terminated string; `out` must be valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_connect(
    socket_path: *const c_char,
    store: *const c_char,
    flags: u32,
    out: *mut *mut cidcache_client,
) -> cidcache_status {
    guard(|| {
        // SAFETY: `out` is NULL or valid for a write (caller contract).
        let out = unsafe { get_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        if flags & !CIDCACHE_CONNECT_READ_ONLY != 0 {
            return Err(invalid(format!("unknown connect flags {flags:#x}")));
        }
        let mut opts = if socket_path.is_null() {
            let name = if store.is_null() {
                cidcache_core::config::store_from_env()
            } else {
                // SAFETY: not NULL, NUL-terminated per the caller.
                unsafe { c_str(store, "store") }?.to_string()
            };
            ConnectOptions::store(&name)
        } else {
            // SAFETY: not NULL, NUL-terminated per the caller.
            ConnectOptions::socket(unsafe { c_str(socket_path, "socket_path") }?)
        };
        if flags & CIDCACHE_CONNECT_READ_ONLY != 0 {
            opts = opts.read_only();
        }
        let client = Client::connect_with(opts)?;
        *out = Box::into_raw(Box::new(cidcache_client { client }));
        Ok(CIDCACHE_OK)
    })
}

/// Closes a connection and frees its handle. NULL is ignored.
///
/// Objects (`cidcache_object`), writers and Arrow streams obtained from the client stay valid:
/// each keeps what it needs alive until it is released; the connection closes when the last of
/// them goes.
///
/// Ownership: takes `client`; the handle is invalid afterwards.
///
/// Thread safety: must not run concurrently with any other call on the same handle (every other
/// call on it must have returned); other handles are unaffected.
///
/// # Safety
/// `client` must be NULL or a handle from `cidcache_connect` not yet disconnected.
#[no_mangle]
pub unsafe extern "C" fn cidcache_disconnect(client: *mut cidcache_client) {
    guard_void(|| {
        if !client.is_null() {
            // SAFETY: a live handle made by Box::into_raw in cidcache_connect, freed only here.
            drop(unsafe { Box::from_raw(client) });
        }
    })
}

/// Stores `data` under `key` (small objects travel inline in one round trip; large ones are
/// created, written in place and sealed). Same as `cidcache_put_ex` with no metadata and no
/// flags. An existing key is `CIDCACHE_ALREADY_EXISTS` (objects are immutable).
///
/// Ownership: nothing is retained; the buffers are only read during the call.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `data` valid for `data_len`
/// bytes (each may be NULL when its length is 0).
#[no_mangle]
pub unsafe extern "C" fn cidcache_put(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    data_len: usize,
) -> cidcache_status {
    // SAFETY: forwarded with the same contract (no metadata).
    unsafe { cidcache_put_ex(client, key, key_len, data, data_len, std::ptr::null(), 0, 0) }
}

/// Stores `data` and `metadata` under `key`. `flags`: `CIDCACHE_PUT_*` bits.
///
/// Ownership: nothing is retained; the buffers are only read during the call.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; each buffer valid for its length (NULL allowed for length 0).
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cidcache_put_ex(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    data_len: usize,
    metadata: *const u8,
    metadata_len: usize,
    flags: u32,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract: a live handle or NULL.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract on the three buffers.
        let (key, data, metadata) = unsafe {
            (
                bytes(key, key_len, "key")?,
                bytes(data, data_len, "data")?,
                bytes(metadata, metadata_len, "metadata")?,
            )
        };
        if flags
            & !(CIDCACHE_PUT_EPHEMERAL
                | CIDCACHE_PUT_VERIFY_CID
                | CIDCACHE_PUT_IPFS
                | CIDCACHE_PUT_DURABLE)
            != 0
        {
            return Err(invalid(format!("unknown put flags {flags:#x}")));
        }
        let opts = PutOptions {
            metadata,
            ephemeral: flags & CIDCACHE_PUT_EPHEMERAL != 0,
            verify_cid: flags & CIDCACHE_PUT_VERIFY_CID != 0,
            ipfs: flags & CIDCACHE_PUT_IPFS != 0,
            durable: flags & CIDCACHE_PUT_DURABLE != 0,
        };
        c.client.put_with(key, data, opts)?;
        Ok(CIDCACHE_OK)
    })
}

/// Stores `data` under its CIDv1 (raw codec, sha2-256) and writes the binary CID
/// (`CIDCACHE_CID_V1_RAW_LEN` bytes) to `cid_out`, its length to `*cid_len` (if not NULL).
/// Content that is already stored is a success.
///
/// Ownership: nothing is retained.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `data` valid for `data_len` bytes; `cid_out` valid for
/// `cid_cap` bytes of writes; `cid_len` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_content(
    client: *const cidcache_client,
    data: *const u8,
    data_len: usize,
    cid_out: *mut u8,
    cid_cap: usize,
    cid_len: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let data = unsafe { bytes(data, data_len, "data") }?;
        if cid_cap < CIDCACHE_CID_V1_RAW_LEN || cid_out.is_null() {
            return Err(invalid(format!(
                "cid_out must have room for CIDCACHE_CID_V1_RAW_LEN ({CIDCACHE_CID_V1_RAW_LEN}) bytes"
            )));
        }
        let cid = c.client.put_content(data)?;
        // SAFETY: caller contract on cid_out / cid_len.
        unsafe { copy_out(&cid, cid_out, cid_cap, cid_len, "the CID") }?;
        Ok(CIDCACHE_OK)
    })
}

/// Gets `key` if it is sealed now, without waiting. A hit is served from shared memory with no
/// system call and no lock; a miss asks the coordinator once (which may promote the object from a
/// lower tier).
///
/// Returns `CIDCACHE_OK` with `*out` a new pinned object (and `*view` its bytes, when `view` is
/// not NULL), or `CIDCACHE_NOT_FOUND` with `*out` NULL.
///
/// Ownership: the caller owns `*out` and must free it with `cidcache_release`; the pointers in
/// the view are valid until then (zero-copy: they point into the shared mapping, read-only).
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `out` valid for a write;
/// `view` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    out: *mut *mut cidcache_object,
    view: *mut cidcache_view,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out_ref = unsafe { get_mut(out, "out") }?;
        *out_ref = std::ptr::null_mut();
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        let o = c.client.get(key)?;
        // SAFETY: `out` checked above; `view` per the caller.
        unsafe { hand_out(o, out, view, key, 0) }
    })
}

/// Like `cidcache_get`, but waits up to `timeout_ms` milliseconds for the object to be sealed
/// (0: do not wait; negative: wait without limit). The calling thread blocks; for event loops use
/// `cidcache_get_async`. Returns `CIDCACHE_TIMEOUT` when the object was not sealed in time
/// (`CIDCACHE_NOT_FOUND` with a timeout of 0, as `cidcache_get`).
///
/// Ownership: as `cidcache_get`.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// As `cidcache_get`.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_timeout(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    timeout_ms: i64,
    out: *mut *mut cidcache_object,
    view: *mut cidcache_view,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out_ref = unsafe { get_mut(out, "out") }?;
        *out_ref = std::ptr::null_mut();
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        let o = match timeout_of(timeout_ms) {
            Some(t) => c.client.get_timeout(key, t)?,
            None => Some(c.client.get_blocking(key)?),
        };
        // SAFETY: `out` checked above; `view` per the caller.
        unsafe { hand_out(o, out, view, key, timeout_ms) }
    })
}

/// Fills `*view` with where `object`'s bytes are (the same view the get functions return).
///
/// Ownership: nothing changes hands; the view is valid until `object` is released.
///
/// Thread safety: thread-safe; an object may be read from several threads at once.
///
/// # Safety
/// `object` must be a live object handle; `view` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_object_view(
    object: *const cidcache_object,
    view: *mut cidcache_view,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let o = unsafe { get_ref(object, "object") }?;
        // SAFETY: caller contract.
        let v = unsafe { get_mut(view, "view") }?;
        *v = cidcache_view::of(&o.obj);
        Ok(CIDCACHE_OK)
    })
}

/// Unpins and frees an object (one store to the client's lease page; no system call). NULL is
/// ignored. The object's bytes must not be read afterwards.
///
/// Ownership: takes `object`.
///
/// Thread safety: thread-safe with respect to other handles; must not run concurrently with
/// another use of the same object.
///
/// # Safety
/// `object` must be NULL or a live object handle, released only once.
#[no_mangle]
pub unsafe extern "C" fn cidcache_release(object: *mut cidcache_object) {
    guard_void(|| {
        if !object.is_null() {
            // SAFETY: a live handle made by Box::into_raw in a get function, freed only here.
            drop(unsafe { Box::from_raw(object) });
        }
    })
}

/// Creates an object of `data_len` data bytes and `metadata_len` metadata bytes, to be written in
/// place (zero-copy) and then sealed with `cidcache_seal` (or abandoned with `cidcache_abort`).
/// Other clients do not see it before it is sealed. If the client disconnects (or the process
/// dies) first, the coordinator frees it.
///
/// Ownership: on success `*out` is a new writer owned by the caller, to be passed exactly once
/// to `cidcache_seal` or `cidcache_abort`; on failure `*out` is NULL.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed. The writer itself
/// must be used by one thread at a time (it may move between threads).
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_create(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    data_len: usize,
    metadata_len: usize,
    out: *mut *mut cidcache_writer,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out = unsafe { get_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        let w = c.client.create(key, data_len, metadata_len)?;
        *out = Box::into_raw(Box::new(cidcache_writer { w }));
        Ok(CIDCACHE_OK)
    })
}

/// The writable data bytes of a writer (in shared memory), or NULL when `writer` is NULL. The
/// length is stored in `*len` when `len` is not NULL.
///
/// Ownership: the bytes belong to the writer; valid until `cidcache_seal` or `cidcache_abort`.
///
/// Thread safety: not for concurrent use on the same writer.
///
/// # Safety
/// `writer` must be NULL or a live writer; `len` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_writer_data(
    writer: *mut cidcache_writer,
    len: *mut usize,
) -> *mut u8 {
    let mut p = std::ptr::null_mut();
    guard_void(|| {
        // SAFETY: caller contract.
        if let Ok(w) = unsafe { get_mut(writer, "writer") } {
            let d = w.w.data_mut();
            // SAFETY: caller contract.
            unsafe { write_opt(len, d.len()) };
            p = d.as_mut_ptr();
        }
    });
    p
}

/// The writable metadata bytes of a writer, or NULL when `writer` is NULL. The length is stored
/// in `*len` when `len` is not NULL.
///
/// Ownership: the bytes belong to the writer; valid until `cidcache_seal` or `cidcache_abort`.
///
/// Thread safety: not for concurrent use on the same writer.
///
/// # Safety
/// `writer` must be NULL or a live writer; `len` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_writer_metadata(
    writer: *mut cidcache_writer,
    len: *mut usize,
) -> *mut u8 {
    let mut p = std::ptr::null_mut();
    guard_void(|| {
        // SAFETY: caller contract.
        if let Ok(w) = unsafe { get_mut(writer, "writer") } {
            let d = w.w.metadata_mut();
            // SAFETY: caller contract.
            unsafe { write_opt(len, d.len()) };
            p = d.as_mut_ptr();
        }
    });
    p
}

/// Seals a writer's object: it becomes immutable and visible to every client.
///
/// Ownership: takes `writer` whatever the result (on failure the object is abandoned); the
/// writer and its byte pointers are invalid afterwards.
///
/// Thread safety: thread-safe with respect to other handles; not concurrently with another use of
/// the same writer.
///
/// # Safety
/// `writer` must be a live writer, used only once with `cidcache_seal` or `cidcache_abort`.
#[no_mangle]
pub unsafe extern "C" fn cidcache_seal(writer: *mut cidcache_writer) -> cidcache_status {
    guard(|| {
        if writer.is_null() {
            return Err(invalid("writer is NULL"));
        }
        // SAFETY: a live handle made by Box::into_raw in cidcache_create, consumed only here.
        let w = unsafe { Box::from_raw(writer) };
        w.w.seal()?;
        Ok(CIDCACHE_OK)
    })
}

/// Abandons a writer's object and frees its memory. NULL is ignored (`CIDCACHE_OK`).
///
/// Ownership: takes `writer` whatever the result.
///
/// Thread safety: thread-safe with respect to other handles; not concurrently with another use of
/// the same writer.
///
/// # Safety
/// `writer` must be NULL or a live writer, used only once with `cidcache_seal` or
/// `cidcache_abort`.
#[no_mangle]
pub unsafe extern "C" fn cidcache_abort(writer: *mut cidcache_writer) -> cidcache_status {
    guard(|| {
        if writer.is_null() {
            return Ok(CIDCACHE_OK);
        }
        // SAFETY: a live handle made by Box::into_raw in cidcache_create, consumed only here.
        let w = unsafe { Box::from_raw(writer) };
        w.w.abort()?;
        Ok(CIDCACHE_OK)
    })
}

/// Stores in `*out` whether a sealed object is stored under `key` (in any tier).
///
/// Ownership: nothing is retained.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_contains(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    out: *mut bool,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out = unsafe { get_mut(out, "out") }?;
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        *out = c.client.contains(key)?;
        Ok(CIDCACHE_OK)
    })
}

/// Deletes `key`. New gets miss at once; readers holding the object keep reading it until they
/// release it (its memory is reused after the last pin goes). A missing key is
/// `CIDCACHE_NOT_FOUND`.
///
/// Ownership: nothing is retained.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn cidcache_delete(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        c.client.delete(key)?;
        Ok(CIDCACHE_OK)
    })
}

/// Stores in `*out` the number of objects this client currently pins (live objects, writers not
/// included, plus Arrow streams and arrays not yet released).
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `client` must be a live handle; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_pinned(
    client: *const cidcache_client,
    out: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out = unsafe { get_mut(out, "out") }?;
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        *out = c.client.pinned();
        Ok(CIDCACHE_OK)
    })
}

/// One object of a listing.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct cidcache_list_entry {
    /// The key bytes (`key_len` of them; the rest is zero).
    pub key: [u8; 64],
    /// Number of key bytes (1 to `CIDCACHE_MAX_KEY_LEN`).
    pub key_len: usize,
    /// Data length in bytes.
    pub data_len: u64,
    /// Metadata length in bytes.
    pub metadata_len: u64,
    /// `CIDCACHE_OBJECT_*` bits.
    pub flags: u32,
}

/// Lists every sealed object of the hot tier: `*entries` receives an array of `*count` entries.
///
/// Ownership: the caller owns the array and must free it with `cidcache_list_free` (with the same
/// count). On failure `*entries` is NULL and `*count` 0. An empty listing may be NULL.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `entries` and `count` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cidcache_list(
    client: *const cidcache_client,
    entries: *mut *mut cidcache_list_entry,
    count: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let entries = unsafe { get_mut(entries, "entries") }?;
        *entries = std::ptr::null_mut();
        // SAFETY: caller contract.
        let count = unsafe { get_mut(count, "count") }?;
        *count = 0;
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        let list = c.client.list()?;
        let v: Box<[cidcache_list_entry]> = list
            .iter()
            .map(|e| {
                let k = e.key.as_bytes();
                let mut key = [0u8; 64];
                key[..k.len()].copy_from_slice(k);
                cidcache_list_entry {
                    key,
                    key_len: k.len(),
                    data_len: e.data_len,
                    metadata_len: e.meta_len,
                    flags: if e.flags & cidcache_core::index::FLAG_ARROW != 0 {
                        CIDCACHE_OBJECT_ARROW
                    } else {
                        0
                    },
                }
            })
            .collect();
        if !v.is_empty() {
            *count = v.len();
            *entries = Box::into_raw(v) as *mut cidcache_list_entry;
        }
        Ok(CIDCACHE_OK)
    })
}

/// Frees an array returned by `cidcache_list`. NULL is ignored.
///
/// Ownership: takes `entries`.
///
/// Thread safety: thread-safe (the array must not be in use elsewhere).
///
/// # Safety
/// `entries` must be NULL or an array from `cidcache_list` with its `count`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn cidcache_list_free(entries: *mut cidcache_list_entry, count: usize) {
    guard_void(|| {
        if !entries.is_null() {
            // SAFETY: made by Box::<[_]>::into_raw with this length in cidcache_list.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(entries, count)) });
        }
    })
}

/// One named counter of the store.
#[repr(C)]
#[derive(Debug)]
pub struct cidcache_stat {
    /// Counter name (NUL-terminated, owned by the array).
    pub name: *mut c_char,
    /// Value.
    pub value: u64,
}

/// Reads the store's named counters: `*stats` receives an array of `*count` entries.
///
/// Ownership: the caller owns the array (names included) and must free it with
/// `cidcache_stats_free`. On failure `*stats` is NULL and `*count` 0.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; `stats` and `count` valid for writes.
#[no_mangle]
pub unsafe extern "C" fn cidcache_stats(
    client: *const cidcache_client,
    stats: *mut *mut cidcache_stat,
    count: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let stats = unsafe { get_mut(stats, "stats") }?;
        *stats = std::ptr::null_mut();
        // SAFETY: caller contract.
        let count = unsafe { get_mut(count, "count") }?;
        *count = 0;
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        let v: Box<[cidcache_stat]> = c
            .client
            .stats()?
            .into_iter()
            .map(|(name, value)| cidcache_stat {
                name: CString::new(name.replace('\0', "?"))
                    .unwrap_or_default()
                    .into_raw(),
                value,
            })
            .collect();
        if !v.is_empty() {
            *count = v.len();
            *stats = Box::into_raw(v) as *mut cidcache_stat;
        }
        Ok(CIDCACHE_OK)
    })
}

/// Frees an array returned by `cidcache_stats`. NULL is ignored.
///
/// Ownership: takes `stats` and its names.
///
/// Thread safety: thread-safe (the array must not be in use elsewhere).
///
/// # Safety
/// `stats` must be NULL or an array from `cidcache_stats` with its `count`, freed only once.
#[no_mangle]
pub unsafe extern "C" fn cidcache_stats_free(stats: *mut cidcache_stat, count: usize) {
    guard_void(|| {
        if !stats.is_null() {
            // SAFETY: made by Box::<[_]>::into_raw with this length in cidcache_stats.
            let v = unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(stats, count)) };
            for s in v.iter() {
                if !s.name.is_null() {
                    // SAFETY: made by CString::into_raw in cidcache_stats, freed only here.
                    drop(unsafe { CString::from_raw(s.name) });
                }
            }
        }
    })
}

/// Parses a text CID (CIDv0 `Qm...`, or CIDv1 in any multibase) into its binary form, written to
/// `out` (`out_cap` bytes; `CIDCACHE_MAX_KEY_LEN` always suffices), its length to `*out_len`.
/// Invalid text is `CIDCACHE_INVALID_KEY`.
///
/// Ownership: nothing is retained.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `text` must be a NUL-terminated string; `out` valid for `out_cap` bytes of writes; `out_len`
/// NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_cid_parse(
    text: *const c_char,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let text = unsafe { c_str(text, "text") }?;
        let bin = cidcache_core::cid::parse(text)?;
        // SAFETY: caller contract.
        unsafe { copy_out(&bin, out, out_cap, out_len, "the binary CID") }?;
        Ok(CIDCACHE_OK)
    })
}

/// Formats a binary CID as text (CIDv0 as base58btc, CIDv1 as base32 lower) into `out`
/// (`out_cap` bytes, NUL included); the text length (without the NUL) goes to `*out_len`. Bytes
/// that are not exactly one CID are `CIDCACHE_INVALID_KEY`; too small a buffer is
/// `CIDCACHE_INVALID_ARGUMENT` with the needed length (without the NUL) in `*out_len`.
///
/// Ownership: nothing is retained.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `cid` valid for `cid_len` bytes; `out` valid for `out_cap` bytes of writes; `out_len` NULL or
/// valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_cid_format(
    cid: *const u8,
    cid_len: usize,
    out: *mut c_char,
    out_cap: usize,
    out_len: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let cid = unsafe { bytes(cid, cid_len, "cid") }?;
        let text = cidcache_core::cid::format(cid)
            .ok_or_else(|| Error::InvalidKey("the bytes are not a binary CID".into()))?;
        let mut z = text.into_bytes();
        let text_len = z.len();
        z.push(0);
        // SAFETY: caller contract.
        let copied = unsafe { copy_out(&z, out as *mut u8, out_cap, out_len, "the text CID") };
        // The length reported is the text's, without the NUL, whether or not it fit (copy_out
        // wrote the length of what it copies, NUL included).
        // SAFETY: caller contract.
        unsafe { write_opt(out_len, text_len) };
        copied?;
        Ok(CIDCACHE_OK)
    })
}

/// Computes the CIDv1 (raw codec, sha2-256) of `data` into `out` (at least
/// `CIDCACHE_CID_V1_RAW_LEN` bytes), its length into `*out_len`. Nothing is stored.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `data` valid for `data_len` bytes; `out` valid for `out_cap` bytes of writes; `out_len` NULL
/// or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_cid_compute(
    data: *const u8,
    data_len: usize,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let data = unsafe { bytes(data, data_len, "data") }?;
        let cid = cidcache_core::cid::cid_v1_raw(data);
        // SAFETY: caller contract.
        unsafe { copy_out(&cid, out, out_cap, out_len, "the CID") }?;
        Ok(CIDCACHE_OK)
    })
}
