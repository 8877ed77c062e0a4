//! Arrow objects: RecordBatches stored as Arrow IPC (file format) in shared memory and decoded in
//! place.
//!
//! Objects are written with 64-byte buffer alignment and start 64-byte aligned, so the decoder
//! runs with `require_alignment = true`: every buffer of the returned batches points into the
//! shared mapping (nothing is copied), and a misaligned object is an error rather than a silent
//! copy. The batches keep the object pinned for as long as any of their buffers lives.

use crate::client::{Client, ObjectRef};
use crate::error::{Error, Result};
use crate::proto::PUT_ARROW;
use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::writer::{FileWriter, IpcWriteOptions};
use arrow_schema::{Schema, SchemaRef};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An Arrow object read zero-copy from shared memory.
///
/// `batches` (and any array sliced from them) reference the shared mapping directly and keep the
/// object pinned until the last buffer is dropped.
#[derive(Debug, Clone)]
pub struct ArrowObject {
    /// The schema stored in the IPC footer.
    pub schema: SchemaRef,
    /// The record batches, in order.
    pub batches: Vec<RecordBatch>,
}

/// Encodes `batches` (all of `schema`) as an Arrow IPC file with 64-byte alignment.
pub fn encode_ipc_file(schema: &Schema, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let opts = IpcWriteOptions::try_new(64, false, arrow_ipc::MetadataVersion::V5)?;
    let mut out = Vec::with_capacity(
        batches
            .iter()
            .map(|b| b.get_array_memory_size())
            .sum::<usize>()
            + 1024,
    );
    let mut w = FileWriter::try_new_with_options(&mut out, schema, opts)?;
    for b in batches {
        if b.schema().as_ref() != schema {
            return Err(Error::InvalidArgument(
                "all record batches of an Arrow object must share one schema".into(),
            ));
        }
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(out)
}

/// An upper bound of the size of [`encode_ipc_file`]'s output for `batches` (all buffers of the
/// batches' slices, each padded to 64 bytes, plus generous room for the messages).
pub(crate) fn ipc_size_bound(schema: &Schema, batches: &[RecordBatch]) -> usize {
    fn buffers(d: &arrow_data::ArrayData) -> usize {
        d.buffers().len() + 1 + d.child_data().iter().map(buffers).sum::<usize>()
    }
    let per_field = 256 + 64 * schema.fields().len();
    batches
        .iter()
        .map(|b| {
            b.columns()
                .iter()
                .map(|c| {
                    let d = c.to_data();
                    // Bitmaps of slices may be re-aligned: a byte more each.
                    d.get_slice_memory_size()
                        .unwrap_or(d.get_buffer_memory_size())
                        + 72 * buffers(&d)
                        + 64
                })
                .sum::<usize>()
                + 1024
                + per_field
        })
        .sum::<usize>()
        + 64 * 1024
        + 4 * per_field
}

/// Encodes like [`encode_ipc_file`] straight into `out`; returns the bytes written, or an error
/// when `out` is too small.
pub(crate) fn encode_ipc_into(
    schema: &Schema,
    batches: &[RecordBatch],
    out: &mut [u8],
) -> Result<usize> {
    let opts = IpcWriteOptions::try_new(64, false, arrow_ipc::MetadataVersion::V5)?;
    let mut cur = std::io::Cursor::new(out);
    let mut w = FileWriter::try_new_with_options(&mut cur, schema, opts)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    drop(w);
    Ok(cur.position() as usize)
}

/// Full validations done on read by this process (see [`full_validations`]).
static FULL_VALIDATIONS: AtomicU64 = AtomicU64::new(0);

/// How many Arrow IPC files this process has decoded with arrow-rs's full validation (through
/// [`decode_ipc_file`], or a get of an object the coordinator did not validate at seal). Tests
/// and benchmarks use it to see which path a read took.
#[doc(hidden)]
pub fn full_validations() -> u64 {
    FULL_VALIDATIONS.load(Ordering::Relaxed)
}

/// Decodes an Arrow IPC file held in `buf` without copying, with `require_alignment = true`,
/// validating every array fully (offsets, UTF-8, dictionary keys, ...): the cost is
/// proportional to the bytes. For untrusted bytes.
pub fn decode_ipc_file(buf: &Buffer) -> Result<ArrowObject> {
    FULL_VALIDATIONS.fetch_add(1, Ordering::Relaxed);
    decode(buf, false)
}

/// Decodes like [`decode_ipc_file`] but without validating the arrays: the cost is proportional
/// to the number of buffers and batches, not to the bytes.
///
/// # Safety
/// `buf` must hold bytes that [`decode_ipc_file`] (or [`validate_ipc_file`]) accepted, at an
/// address with the same alignment modulo 64, and they must not change while `buf` or any array
/// decoded from it lives. Otherwise arrays may point outside their buffers or hold invalid UTF-8
/// (undefined behaviour).
pub(crate) unsafe fn decode_validated_ipc_file(buf: &Buffer) -> Result<ArrowObject> {
    decode(buf, true)
}

/// Validates `bytes` as an Arrow IPC file exactly as a reader that maps them 64-byte aligned
/// decodes them with [`decode_ipc_file`] (misaligned input is copied to an aligned buffer
/// first). The coordinator runs it once, when an Arrow object is sealed.
pub(crate) fn validate_ipc_file(bytes: &[u8]) -> Result<()> {
    if !(bytes.as_ptr() as usize).is_multiple_of(64) {
        // Buffers of arrow-rs are allocated at least 64-byte aligned.
        return validate(&Buffer::from(bytes));
    }
    let ptr = NonNull::new(bytes.as_ptr() as *mut u8)
        .ok_or_else(|| Error::Internal("null object pointer".into()))?;
    // SAFETY: `ptr..ptr+len` is `bytes`, borrowed for this whole call; the buffer and every
    // array decoded from it are dropped before it returns, and nothing writes through them.
    let buf = unsafe { Buffer::from_custom_allocation(ptr, bytes.len(), Arc::new(())) };
    validate(&buf)
}

/// [`validate_unguarded`], a panic of the decoder being an error (as in [`decode`]).
fn validate(buf: &Buffer) -> Result<()> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| validate_unguarded(buf)))
        .unwrap_or_else(|_| {
            Err(Error::Arrow(
                "malformed Arrow IPC file (the decoder panicked)".into(),
            ))
        })
}

/// Whether `bytes` are framed as an Arrow IPC file (the magic at both ends); says nothing of
/// what lies between.
pub(crate) fn has_ipc_file_magic(bytes: &[u8]) -> bool {
    const MAGIC: &[u8] = b"ARROW1";
    bytes.len() >= 2 * MAGIC.len() + 8 && bytes.starts_with(MAGIC) && bytes.ends_with(MAGIC)
}

/// The decoder shared by both paths. `skip_validation` must only be true under the conditions
/// of [`decode_validated_ipc_file`]. arrow-rs's reader panics on some malformed files (slices
/// past a buffer's end): such a panic is an error here, never a crash of the caller.
fn decode(buf: &Buffer, skip_validation: bool) -> Result<ArrowObject> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unguarded(buf, skip_validation)
    }))
    .unwrap_or_else(|_| {
        Err(Error::Arrow(
            "malformed Arrow IPC file (the decoder panicked)".into(),
        ))
    })
}

fn decode_unguarded(buf: &Buffer, skip_validation: bool) -> Result<ArrowObject> {
    let f = open(buf, skip_validation)?;
    let mut batches = Vec::with_capacity(f.blocks.len());
    for (block, data) in &f.blocks {
        if let Some(b) = f.decoder.read_record_batch(block, data)? {
            batches.push(b);
        }
    }
    Ok(ArrowObject {
        schema: f.schema,
        batches,
    })
}

/// An IPC file with its footer parsed and its dictionaries read: what is left is decoding the
/// record batches, each independently of the others.
struct Opened {
    schema: SchemaRef,
    decoder: FileDecoder,
    /// Each record batch's block and bytes.
    blocks: Vec<(arrow_ipc::Block, Buffer)>,
}

fn open(buf: &Buffer, skip_validation: bool) -> Result<Opened> {
    let n = buf.len();
    if n < 10 + 8 {
        return Err(Error::Arrow(
            "object is too short to be an Arrow IPC file".into(),
        ));
    }
    let footer_len = read_footer_length(buf[n - 10..].try_into().expect("10 bytes"))?;
    let footer_start = (n - 10)
        .checked_sub(footer_len)
        .ok_or_else(|| Error::Arrow("IPC footer length exceeds the object".into()))?;
    let footer = arrow_ipc::root_as_footer(&buf[footer_start..n - 10])
        .map_err(|e| Error::Arrow(format!("malformed IPC footer: {e}")))?;
    let schema = Arc::new(arrow_ipc::convert::try_fb_to_schema(
        footer
            .schema()
            .ok_or_else(|| Error::Arrow("IPC footer has no schema".into()))?,
    )?);
    let mut decoder =
        FileDecoder::new(schema.clone(), footer.version()).with_require_alignment(true);
    if skip_validation {
        // SAFETY: only reached through `decode_validated_ipc_file`, whose callers guarantee
        // that these exact bytes passed full validation and cannot change meanwhile.
        decoder = unsafe { decoder.with_skip_validation(true) };
    }
    let block_buf = |b: &arrow_ipc::Block| -> Result<Buffer> {
        let off = usize::try_from(b.offset())
            .map_err(|_| Error::Arrow("negative block offset".into()))?;
        let len = (b.metaDataLength() as i64)
            .checked_add(b.bodyLength())
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| Error::Arrow("invalid block length".into()))?;
        if off.checked_add(len).is_none_or(|e| e > footer_start) {
            return Err(Error::Arrow("IPC block lies outside the object".into()));
        }
        Ok(buf.slice_with_length(off, len))
    };
    for block in footer.dictionaries().iter().flatten() {
        decoder.read_dictionary(block, &block_buf(block)?)?;
    }
    let blocks = footer
        .recordBatches()
        .iter()
        .flatten()
        .map(|b| Ok((*b, block_buf(b)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Opened {
        schema,
        decoder,
        blocks,
    })
}

/// Below this many bytes a file is validated on the calling thread alone.
const PARALLEL_VALIDATION_BYTES: usize = 16 << 20;

/// Full validation of `buf`: the same checks as [`decode_ipc_file`]. The record batches of a
/// large file (they decode independently once the dictionaries are read) are shared with helper
/// threads, which take batches from a common counter, so that the calling thread does whatever
/// the helpers do not get to on a busy machine. Validation uses at most half of the cores (up to
/// four threads): other clients keep the rest.
fn validate_unguarded(buf: &Buffer) -> Result<()> {
    let helpers = if buf.len() < PARALLEL_VALIDATION_BYTES {
        0
    } else {
        (std::thread::available_parallelism().map_or(1, |n| n.get()) / 2)
            .min(4)
            .saturating_sub(1)
    };
    validate_with(buf, helpers)
}

/// [`validate_unguarded`] with `helpers` helper threads.
fn validate_with(buf: &Buffer, helpers: usize) -> Result<()> {
    use std::sync::atomic::AtomicUsize;
    let f = open(buf, false)?;
    let helpers = helpers.min(f.blocks.len().saturating_sub(1));
    if helpers == 0 {
        for (block, data) in &f.blocks {
            f.decoder.read_record_batch(block, data)?;
        }
        return Ok(());
    }
    let next = AtomicUsize::new(0);
    let work = || -> Result<()> {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some((block, data)) = f.blocks.get(i) else {
                return Ok(());
            };
            if let Err(e) = f.decoder.read_record_batch(block, data) {
                // Stop the others too: the file is invalid.
                next.store(f.blocks.len(), Ordering::Relaxed);
                return Err(e.into());
            }
        }
    };
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..helpers).map(|_| s.spawn(work)).collect();
        let mine = work();
        hs.into_iter().fold(mine, |r, h| {
            let theirs = h.join().unwrap_or_else(|_| {
                Err(Error::Arrow(
                    "malformed Arrow IPC file (the decoder panicked)".into(),
                ))
            });
            r.and(theirs)
        })
    })
}

impl Client {
    /// Stores `batches` under `key` as an Arrow IPC file. `schema` is needed so that an empty
    /// table keeps its columns.
    pub fn put_arrow(&self, key: &[u8], schema: &Schema, batches: &[RecordBatch]) -> Result<()> {
        let bytes = encode_ipc_file(schema, batches)?;
        self.put_flags(key, &bytes, &[], PUT_ARROW)
    }

    /// Reads the Arrow object `key` zero-copy. `None` when the key is missing. An object that
    /// was not stored as Arrow is an error.
    pub fn get_arrow(&self, key: &[u8]) -> Result<Option<ArrowObject>> {
        let Some(obj) = self.get(key)? else {
            return Ok(None);
        };
        arrow_from_object(obj).map(Some)
    }

    /// Async [`Client::put_arrow`]: the round trips (and, for a large table, the create and the
    /// seal with the coordinator's validation) are awaited; encoding runs on the calling thread.
    pub async fn put_arrow_async(
        &self,
        key: &[u8],
        schema: &Schema,
        batches: &[RecordBatch],
    ) -> Result<()> {
        let bytes = encode_ipc_file(schema, batches)?;
        self.put_flags_async(key, &bytes, &[], PUT_ARROW).await
    }

    /// Async [`Client::get_arrow`], waiting up to `timeout` (`None`: without limit) for the
    /// object to be sealed; `None` when it was not. A hit completes without waiting.
    pub async fn get_arrow_async(
        &self,
        key: &[u8],
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<ArrowObject>> {
        match self.get_async(key, timeout).await? {
            Some(obj) => arrow_from_object(obj).map(Some),
            None => Ok(None),
        }
    }
}

/// Decodes a pinned object as Arrow; the pin moves into the buffers.
///
/// An object the coordinator validated when it was sealed ([`ObjectRef::is_validated_arrow`])
/// is decoded without validation, at a cost proportional to its buffers and batches; any other
/// Arrow object is validated in full (proportional to its bytes).
pub fn arrow_from_object(obj: ObjectRef) -> Result<ArrowObject> {
    decode_object(obj, true).map(|(a, _)| a)
}

/// [`arrow_from_object`], also returning the buffer over the whole object: while it (or any
/// clone) lives, the object stays pinned, whatever happens to the batches (for a holder that
/// promises a pin for its own lifetime, such as an exported Arrow C stream, and for a table
/// with no batch, whose schema holds nothing of the object).
pub fn arrow_from_object_pinned(obj: ObjectRef) -> Result<(ArrowObject, Buffer)> {
    decode_object(obj, true)
}

/// [`arrow_from_object_pinned`]; `trust_seal` false validates even what the coordinator
/// validated.
fn decode_object(obj: ObjectRef, trust_seal: bool) -> Result<(ArrowObject, Buffer)> {
    if !obj.is_arrow() {
        return Err(Error::NotArrow(format!(
            "{} was not stored as an Arrow object; use get()",
            obj.key()
        )));
    }
    let len = obj.data().len();
    let ptr = NonNull::new(obj.data().as_ptr() as *mut u8)
        .ok_or_else(|| Error::Internal("null object pointer".into()))?;
    // The coordinator validated the bytes at this alignment (objects start 64-byte aligned);
    // anything else is decoded as untrusted.
    let validated =
        trust_seal && obj.is_validated_arrow() && (ptr.as_ptr() as usize).is_multiple_of(64);
    let owner: Arc<ObjectRef> = Arc::new(obj);
    // SAFETY: ptr..ptr+len is the object's data, which stays mapped and immutable while the
    // ObjectRef (now owned by the buffer through `owner`) is alive.
    let buf = unsafe { Buffer::from_custom_allocation(ptr, len, owner) };
    if validated {
        // SAFETY: the entry carries FLAG_VALIDATED, which only the coordinator writes (clients
        // map the control segment read-only) and only after `validate_ipc_file` accepted
        // exactly these bytes (the entry's segment, offset and data length), 64-byte aligned as
        // here, once no client held a legitimate way to write them (docs/operations.md,
        // "Arrow objects: validated once, at seal"). Sealed bytes are immutable, and the pin
        // held by `buf` keeps them from being reused while any decoded array lives.
        unsafe { decode_validated_ipc_file(&buf) }.map(|a| (a, buf))
    } else {
        decode_ipc_file(&buf).map(|a| (a, buf))
    }
}

/// Benchmark support (not a stable API).
#[doc(hidden)]
pub mod bench {
    use super::*;
    use std::time::{Duration, Instant};

    /// Stores the Arrow IPC file `ipc` under `key` as [`Client::put_arrow`] stores a table too
    /// large to go inline (create, copy into shared memory, seal) and returns how long the copy
    /// and the seal (which includes the coordinator's validation) took.
    pub fn put_ipc_timed(c: &Client, key: &[u8], ipc: &[u8]) -> Result<(Duration, Duration)> {
        let mut w = create_arrow(c, key, ipc.len())?;
        let t = Instant::now();
        w.data_mut().copy_from_slice(ipc);
        let copy = t.elapsed();
        let t = Instant::now();
        w.seal()?;
        Ok((copy, t.elapsed()))
    }

    /// Creates an Arrow object of `len` bytes to be written and sealed, as `put_arrow` does for a
    /// large table.
    pub fn create_arrow(c: &Client, key: &[u8], len: usize) -> Result<crate::WriteObject> {
        c.create_with(key, len, 0, PUT_ARROW)
    }

    /// Decodes `obj` in place with full validation, as every get did before objects were
    /// validated at seal (the path unvalidated objects still take).
    pub fn decode_validating(obj: ObjectRef) -> Result<ArrowObject> {
        decode_object(obj, false).map(|(a, _)| a)
    }

    /// The coordinator's seal-time validation of `bytes`.
    pub fn validate(bytes: &[u8]) -> Result<()> {
        validate_ipc_file(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};

    /// An IPC file of `batches` batches of 100 rows; the string column of batch `bad`, if any,
    /// holds invalid UTF-8.
    fn file(batches: usize, bad: Option<usize>) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
            arrow_schema::Field::new("s", arrow_schema::DataType::Utf8, false),
        ]));
        let bs: Vec<RecordBatch> = (0..batches)
            .map(|b| {
                let ids = Int64Array::from_iter_values(0..100);
                let s = StringArray::from_iter_values((0..100).map(|i| format!("b{b:03}-r{i:03}")));
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids) as ArrayRef, Arc::new(s)])
                    .unwrap()
            })
            .collect();
        let mut v = encode_ipc_file(&schema, &bs).unwrap();
        if let Some(b) = bad {
            let needle = format!("b{b:03}-r050");
            let at = v
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap();
            v[at] = 0xff;
        }
        v
    }

    #[test]
    fn parallel_validation_finds_a_bad_batch_anywhere() {
        for bad in [None, Some(0), Some(4), Some(9)] {
            let buf = Buffer::from(file(10, bad));
            let parallel = validate_with(&buf, 3);
            let serial = validate_with(&buf, 0);
            let full = decode_ipc_file(&buf).map(drop);
            assert_eq!(parallel.is_ok(), bad.is_none(), "{bad:?}: {parallel:?}");
            assert_eq!(serial.is_ok(), bad.is_none(), "{bad:?}: {serial:?}");
            assert_eq!(full.is_ok(), bad.is_none(), "{bad:?}: {full:?}");
        }
    }

    #[test]
    fn misaligned_bytes_validate_as_readers_see_them() {
        let f = file(3, None);
        let mut v = vec![0u8; f.len() + 1];
        v[1..].copy_from_slice(&f);
        validate_ipc_file(&v[1..]).unwrap();
        assert!(validate_ipc_file(&v[..f.len()]).is_err());
        assert!(has_ipc_file_magic(&f) && !has_ipc_file_magic(&v[..f.len()]));
    }
}
