//! Arrow through the Arrow C stream interface: export a stored object zero-copy, import a stream
//! and store it as Arrow IPC.

use crate::client::{cidcache_client, cidcache_object};
use crate::status::{cidcache_status, guard, not_found};
use crate::util::{bytes, get_ref, invalid};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_buffer::Buffer;
use arrow_schema::{ArrowError, SchemaRef};
use cidcache_core::arrow::arrow_from_object_pinned;
use cidcache_core::{Error, ObjectRef};

use cidcache_status::CIDCACHE_OK;

/// The reader behind an exported stream. It holds the buffer over the whole object, so the
/// object stays pinned until the stream itself is released, as documented, even once every batch
/// was read and released (and for a table with no batch).
struct PinnedReader {
    batches: std::vec::IntoIter<RecordBatch>,
    schema: SchemaRef,
    _pin: Buffer,
}

impl Iterator for PinnedReader {
    type Item = Result<RecordBatch, ArrowError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.batches.next().map(Ok)
    }
}

impl RecordBatchReader for PinnedReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// Decodes `obj` and writes an exported stream over it into `out`.
///
/// # Safety
/// `out` must be valid for a write of an `ArrowArrayStream` (its old content is not dropped).
unsafe fn export(obj: ObjectRef, out: *mut FFI_ArrowArrayStream) -> Result<(), Error> {
    let (arrow, pin) = arrow_from_object_pinned(obj)?;
    let reader = PinnedReader {
        batches: arrow.batches.into_iter(),
        schema: arrow.schema,
        _pin: pin,
    };
    let stream = FFI_ArrowArrayStream::new(Box::new(reader));
    // SAFETY: per the caller; `write` moves the stream in without reading the old bytes.
    unsafe { out.write(stream) };
    Ok(())
}

/// Exports the Arrow object `key` (stored with `cidcache_put_arrow` or the Rust `put_arrow`) as
/// an Arrow C stream (`struct ArrowArrayStream`, Arrow C stream interface), without waiting and
/// without copying: every buffer of every exported array points into the shared mapping.
///
/// Returns `CIDCACHE_OK` with `*out` initialised, `CIDCACHE_NOT_FOUND` (with `out->release` set
/// to NULL), or an error (`CIDCACHE_NOT_ARROW` when the object was not stored as Arrow,
/// `CIDCACHE_ARROW` when it does not decode in place, `CIDCACHE_INVALID_ARGUMENT` for a NULL
/// argument).
///
/// Ownership: the caller owns the stream and must call `out->release(out)` (or move it to a
/// consumer that will, such as pyarrow's `RecordBatchReader._import_from_c` or arrow-go's
/// `cdata.ImportCRecordReader`). The object stays pinned until the stream and every array
/// obtained from it are released (reading the stream to its end does not unpin it); releasing
/// the last one unpins it.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed. The stream follows the
/// Arrow C stream interface: one consumer thread at a time; arrays it yields may be released from
/// any thread.
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `out` valid for a write of a
/// `struct ArrowArrayStream` (it need not be initialised).
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_arrow(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    out: *mut FFI_ArrowArrayStream,
) -> cidcache_status {
    guard(|| {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: `out` is valid for a write per the caller; mark it released until filled.
        unsafe { out.write(FFI_ArrowArrayStream::empty()) };
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        match c.client.get(key)? {
            // SAFETY: `out` is valid for a write (checked and written above).
            Some(obj) => unsafe { export(obj, out) }?,
            None => return not_found(&cidcache_core::cid::format_key(key)),
        }
        Ok(CIDCACHE_OK)
    })
}

/// Exports an object already obtained (from `cidcache_get`, `cidcache_get_timeout`,
/// `cidcache_get_many` or an asynchronous get) as an Arrow C stream, zero-copy, as
/// `cidcache_get_arrow` does.
///
/// Ownership: takes `object` whatever the result (do not release it afterwards): on success its
/// pin moves into the stream, which the caller owns and releases as for `cidcache_get_arrow`; on
/// failure the object is released and `out->release` is NULL. An object not stored as Arrow is
/// `CIDCACHE_NOT_ARROW`; a NULL argument `CIDCACHE_INVALID_ARGUMENT`.
///
/// Thread safety: thread-safe with respect to other handles; not concurrently with another use of
/// the same object.
///
/// # Safety
/// `object` must be a live object handle; `out` valid for a write of a `struct ArrowArrayStream`.
#[no_mangle]
pub unsafe extern "C" fn cidcache_object_to_arrow(
    object: *mut cidcache_object,
    out: *mut FFI_ArrowArrayStream,
) -> cidcache_status {
    guard(|| {
        let obj = if object.is_null() {
            None
        } else {
            // SAFETY: a live handle made by Box::into_raw in a get function; consumed here.
            Some(unsafe { Box::from_raw(object) })
        };
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: valid for a write per the caller.
        unsafe { out.write(FFI_ArrowArrayStream::empty()) };
        let obj = obj.ok_or_else(|| invalid("object is NULL"))?;
        // SAFETY: `out` is valid for a write (checked and written above).
        unsafe { export(obj.obj, out) }?;
        Ok(CIDCACHE_OK)
    })
}

/// Reads every record batch of the Arrow C stream `stream` and stores them under `key` as one
/// Arrow IPC object (64-byte aligned, so that readers decode it in place). An empty stream keeps
/// its schema. An existing key is `CIDCACHE_ALREADY_EXISTS`; a stream error is `CIDCACHE_ARROW`.
///
/// Ownership: the stream is moved in, whatever the result: when this returns, `stream->release`
/// is NULL and the producer's release callback has been called (Arrow's "move" semantics). A
/// stream that is already released is `CIDCACHE_INVALID_ARGUMENT`.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed. The stream is consumed
/// on the calling thread.
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `stream` a valid
/// `struct ArrowArrayStream` (released or not).
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_arrow(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    stream: *mut FFI_ArrowArrayStream,
) -> cidcache_status {
    guard(|| {
        if stream.is_null() {
            return Err(invalid("stream is NULL"));
        }
        // SAFETY: a valid stream per the caller; `from_raw` moves it out and leaves a released
        // (empty) stream in its place, so the caller's copy can no longer be released twice.
        let owned = unsafe { FFI_ArrowArrayStream::from_raw(stream) };
        if owned.release().is_none() {
            return Err(invalid("stream is already released"));
        }
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?;
        let reader = RecordBatchStreamReader::try_new(owned)?;
        let schema = reader.schema();
        let batches = reader
            .collect::<Result<Vec<RecordBatch>, _>>()
            .map_err(|e| Error::Arrow(format!("reading the input stream: {e}")))?;
        c.client.put_arrow(key, &schema, &batches)?;
        Ok(CIDCACHE_OK)
    })
}
