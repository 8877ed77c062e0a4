//! A synchronous Rust Plasma client with libplasma (Arrow 11) semantics.
//!
//! * Connects with retries (default 80 × 100 ms), then Connect/ConnectReply.
//! * Segment fds arrive after replies and are mapped once per segment id
//!   (`mmap_size - 8` bytes, `MAP_SHARED`, read-write); mappings live as
//!   long as the client *or any buffer handed out by it*.
//! * Local per-object use counts exactly like libplasma: Create counts 2
//!   (buffer + seal), Get counts 1 per returned buffer; a `ReleaseRequest` is
//!   sent only when the count reaches 0; Deletes of locally used objects are
//!   deferred until that release.
//! * Seal computes the digest as libplasma does ([`compute_object_digest`]).
//! * Every reply is validated (type, ids, offsets against mapping bounds);
//!   a misbehaving store yields a typed [`ClientError`], never UB.
//!
//! The client is single-threaded (`!Send`): buffers share its state via `Rc`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::Duration;

use rustix::mm::{MapFlags, ProtFlags};
use thiserror::Error;
use xxhash_rust::xxh64::{xxh64, Xxh64};

use super::codec::{
    decode_header, decode_notification, decode_reply, CodecError, MessageType, ObjectId,
    ObjectInfo, ObjectSpec, PlasmaError, Reply, Request, DIGEST_LEN, HEADER_LEN,
};
use super::fdpass::{recv_fd, send_fd, FdPassError};

/// Default number of connection attempts (libplasma uses 80 for `-1`).
pub const DEFAULT_CONNECT_RETRIES: u32 = 80;
/// Delay between connection attempts.
pub const CONNECT_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Largest reply body the client accepts.
pub const MAX_REPLY_BODY: u64 = 1 << 32;
const MMAP_GAP: u64 = 8;
const HASH_THRESHOLD: usize = 1 << 20;
const HASH_CONCURRENCY: usize = 8;
const HASH_BLOCK: usize = 64;

/// Errors returned by [`PlasmaClient`].
#[derive(Debug, Error)]
pub enum ClientError {
    /// Socket I/O failed (including the store closing the connection).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A reply could not be decoded.
    #[error("malformed reply: {0}")]
    Codec(#[from] CodecError),
    /// Receiving a segment fd failed.
    #[error("fd passing failed: {0}")]
    FdPass(#[from] FdPassError),
    /// All connection attempts failed.
    #[error("Could not connect to socket {0}")]
    ConnectFailed(PathBuf),
    /// The object already exists (`PlasmaObjectExists`).
    #[error("object already exists in the plasma store")]
    ObjectExists,
    /// The object does not exist (`PlasmaObjectNotFound`).
    #[error("object does not exist in the plasma store")]
    ObjectNotFound,
    /// No room in the store (`PlasmaStoreFull`).
    #[error("object does not fit in the plasma store")]
    StoreFull,
    /// Seal of an already sealed object.
    #[error("Seal() called on an already sealed object")]
    AlreadySealed,
    /// The store sent an error code the client does not accept here.
    #[error("unexpected plasma error code {0:?}")]
    UnexpectedError(PlasmaError),
    /// The store replied with the wrong message type.
    #[error("expected reply type {expected:?}, got {got}")]
    UnexpectedReply {
        /// Expected type.
        expected: MessageType,
        /// Received raw type.
        got: i64,
    },
    /// The reply violates the protocol (bad id echo, offsets outside mapping...).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// A local precondition failed (like libplasma's `Status::Invalid`).
    #[error("invalid operation: {0}")]
    Invalid(&'static str),
    /// `get_notification` without `subscribe`.
    #[error("not subscribed")]
    NotSubscribed,
}

type Result<T> = std::result::Result<T, ClientError>;

fn status(e: PlasmaError) -> Result<()> {
    match e {
        PlasmaError::Ok => Ok(()),
        PlasmaError::ObjectExists => Err(ClientError::ObjectExists),
        PlasmaError::ObjectNotFound => Err(ClientError::ObjectNotFound),
        PlasmaError::OutOfMemory => Err(ClientError::StoreFull),
        other => Err(ClientError::UnexpectedError(other)),
    }
}

/// Computes the object digest exactly like libplasma 11: XXH64 (seed 0) over
/// the data then the metadata, except that data of at least 1 MiB is first
/// split into 8 equal chunks of whole 64-byte blocks plus a suffix; each part
/// is hashed separately (seed 0) and the 9 hashes (native-endian u64s) are
/// fed to the outer hash in place of the data. The digest is the u64 in
/// native byte order.
pub fn compute_object_digest(data: &[u8], metadata: &[u8]) -> [u8; DIGEST_LEN] {
    let mut outer = Xxh64::new(0);
    if data.len() >= HASH_THRESHOLD {
        let blocks = data.len() / HASH_BLOCK;
        let chunk = (blocks / HASH_CONCURRENCY) * HASH_BLOCK;
        let mut parts = [0u64; HASH_CONCURRENCY + 1];
        for (i, p) in parts.iter_mut().take(HASH_CONCURRENCY).enumerate() {
            *p = xxh64(&data[i * chunk..(i + 1) * chunk], 0);
        }
        parts[HASH_CONCURRENCY] = xxh64(&data[chunk * HASH_CONCURRENCY..], 0);
        let mut raw = Vec::with_capacity(8 * parts.len());
        for p in parts {
            raw.extend_from_slice(&p.to_ne_bytes());
        }
        outer.update(&raw);
    } else {
        outer.update(data);
    }
    outer.update(metadata);
    outer.digest().to_ne_bytes()
}

/// A shared, read-write mapping of one store segment.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: OwnedFd, mmap_size: i64) -> Result<Mapping> {
        let len = u64::try_from(mmap_size)
            .ok()
            .and_then(|s| s.checked_sub(MMAP_GAP))
            .filter(|l| *l > 0 && *l <= isize::MAX as u64)
            .ok_or(ClientError::Protocol("invalid mmap_size"))? as usize;
        // SAFETY: a new shared mapping with a kernel-chosen address (null
        // hint), so it aliases no Rust object. The fd is dropped (closed)
        // afterwards, which keeps the mapping valid.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        drop(fd);
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or(ClientError::Protocol("mmap returned null"))?;
        Ok(Mapping { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region created in `Mapping::new`. All
        // buffers pointing into it hold an `Rc` to the client state that owns
        // this mapping, so none can outlive it.
        unsafe {
            let _ = rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

struct InUse {
    count: u32,
    spec: ObjectSpec,
    sealed: bool,
}

struct Inner {
    sock: UnixStream,
    mmaps: HashMap<i32, Mapping>,
    in_use: HashMap<ObjectId, InUse>,
    deletion_cache: HashSet<ObjectId>,
    capacity: i64,
    notif: Option<UnixStream>,
    pending_notifications: VecDeque<ObjectInfo>,
    disconnected: bool,
}

impl Inner {
    fn send(&mut self, req: &Request<'_>) -> Result<()> {
        let frame = req.encode_frame();
        self.sock.write_all(&frame)?;
        Ok(())
    }

    fn recv(&mut self, expected: MessageType) -> Result<Reply> {
        let mut h = [0u8; HEADER_LEN];
        self.sock.read_exact(&mut h)?;
        let hdr = decode_header(&h, MAX_REPLY_BODY)?;
        let mut body = vec![0u8; hdr.body_len as usize];
        self.sock.read_exact(&mut body)?;
        if hdr.msg_type != expected as i64 {
            return Err(ClientError::UnexpectedReply {
                expected,
                got: hdr.msg_type,
            });
        }
        Ok(decode_reply(hdr.msg_type, &body)?)
    }

    fn roundtrip(&mut self, req: &Request<'_>, expected: MessageType) -> Result<Reply> {
        self.send(req)?;
        self.recv(expected)
    }

    /// Ensures segment `store_fd` is mapped, receiving its fd if new.
    fn ensure_mapped(&mut self, store_fd: i32, mmap_size: i64) -> Result<()> {
        if self.mmaps.contains_key(&store_fd) {
            return Ok(());
        }
        let fd = recv_fd(self.sock.as_fd())?;
        let m = Mapping::new(fd, mmap_size)?;
        self.mmaps.insert(store_fd, m);
        Ok(())
    }

    /// Pointer to the object's data, after checking bounds against the mapping.
    fn object_ptr(&self, spec: &ObjectSpec) -> Result<NonNull<u8>> {
        let m = self
            .mmaps
            .get(&spec.segment_index)
            .ok_or(ClientError::Protocol("object in unmapped segment"))?;
        let end = spec
            .data_offset
            .checked_add(spec.data_size)
            .and_then(|e| e.checked_add(spec.metadata_size))
            .ok_or(ClientError::Protocol("object size overflow"))?;
        if end > m.len as u64 || spec.metadata_offset != spec.data_offset + spec.data_size {
            return Err(ClientError::Protocol("object outside its segment"));
        }
        // SAFETY: `data_offset <= end <= m.len`, so the result stays inside
        // (or one past) the mapping.
        Ok(unsafe { m.ptr.add(spec.data_offset as usize) })
    }

    fn increment(&mut self, id: ObjectId, spec: ObjectSpec, sealed: bool) {
        self.in_use
            .entry(id)
            .or_insert(InUse {
                count: 0,
                spec,
                sealed,
            })
            .count += 1;
    }

    fn release(&mut self, id: &ObjectId) -> Result<()> {
        if self.disconnected {
            return Ok(());
        }
        let Some(e) = self.in_use.get_mut(id) else {
            return Err(ClientError::Invalid(
                "Trying to release a non-existing object.",
            ));
        };
        e.count -= 1;
        if e.count == 0 {
            self.in_use.remove(id);
            self.send(&Request::Release { object_id: *id })?;
            if self.deletion_cache.remove(id) {
                self.delete(&[*id])?;
            }
        }
        Ok(())
    }

    fn delete(&mut self, ids: &[ObjectId]) -> Result<()> {
        let mut not_in_use = Vec::new();
        for id in ids {
            if self.in_use.contains_key(id) {
                self.deletion_cache.insert(*id);
            } else {
                not_in_use.push(*id);
            }
        }
        if !not_in_use.is_empty() {
            let r = self.roundtrip(
                &Request::Delete {
                    object_ids: not_in_use,
                },
                MessageType::DeleteReply,
            )?;
            // Like libplasma, per-object error codes are read and ignored.
            let Reply::Delete { .. } = r else {
                return Err(ClientError::Protocol("bad delete reply"));
            };
        }
        Ok(())
    }
}

/// A connection to a Plasma store. Cheap handles to objects
/// ([`ObjectBuffer`], [`MutableObjectBuffer`]) keep it alive.
pub struct PlasmaClient {
    inner: Rc<RefCell<Inner>>,
}

/// A read-only view of a sealed object returned by [`PlasmaClient::get`].
/// Dropping it releases one local reference (sending `ReleaseRequest` when
/// the client's count for the object reaches 0).
pub struct ObjectBuffer {
    inner: Rc<RefCell<Inner>>,
    id: ObjectId,
    ptr: NonNull<u8>,
    data_len: usize,
    meta_len: usize,
}

impl ObjectBuffer {
    /// The object id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }
    /// The object's data bytes (inside the shared mapping).
    pub fn data(&self) -> &[u8] {
        // SAFETY: bounds were validated against the mapping when the buffer
        // was created; the mapping is owned by `inner`, which this buffer
        // keeps alive, and mappings are only unmapped when `inner` drops.
        // Sealed objects are immutable by protocol.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.data_len) }
    }
    /// The object's metadata bytes.
    pub fn metadata(&self) -> &[u8] {
        // SAFETY: as in `data`; metadata immediately follows the data and
        // was included in the bounds check.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(self.data_len), self.meta_len) }
    }
}

impl Drop for ObjectBuffer {
    fn drop(&mut self) {
        if let Ok(mut i) = self.inner.try_borrow_mut() {
            let _ = i.release(&self.id);
        }
    }
}

/// The writable data buffer of an object being created. Dropping it
/// releases one local reference (the other one is dropped by `seal`).
pub struct MutableObjectBuffer {
    inner: Rc<RefCell<Inner>>,
    id: ObjectId,
    ptr: NonNull<u8>,
    len: usize,
}

impl MutableObjectBuffer {
    /// The object id.
    pub fn id(&self) -> &ObjectId {
        &self.id
    }
    /// Writable data bytes (inside the shared mapping).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: bounds validated at creation; the mapping lives as long as
        // `inner`; `&mut self` gives exclusive access among Rust references,
        // and only this buffer hands out the unsealed object's data.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
    /// Read access to the data bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: as in `as_mut_slice`, shared access.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for MutableObjectBuffer {
    fn drop(&mut self) {
        if let Ok(mut i) = self.inner.try_borrow_mut() {
            let _ = i.release(&self.id);
        }
    }
}

impl PlasmaClient {
    /// Connects to the store socket at `path`, retrying `retries` times
    /// (`None` = 80) with 100 ms sleeps, then performs the Connect handshake.
    pub fn connect(path: impl AsRef<Path>, retries: Option<u32>) -> Result<PlasmaClient> {
        let path = path.as_ref();
        let attempts = retries.unwrap_or(DEFAULT_CONNECT_RETRIES).max(1);
        let mut sock = None;
        for i in 0..attempts {
            match UnixStream::connect(path) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(_) if i + 1 < attempts => std::thread::sleep(CONNECT_RETRY_DELAY),
                Err(_) => {}
            }
        }
        let sock = sock.ok_or_else(|| ClientError::ConnectFailed(path.to_path_buf()))?;
        let mut inner = Inner {
            sock,
            mmaps: HashMap::new(),
            in_use: HashMap::new(),
            deletion_cache: HashSet::new(),
            capacity: 0,
            notif: None,
            pending_notifications: VecDeque::new(),
            disconnected: false,
        };
        match inner.roundtrip(&Request::Connect, MessageType::ConnectReply)? {
            Reply::Connect { memory_capacity } => inner.capacity = memory_capacity,
            _ => return Err(ClientError::Protocol("bad connect reply")),
        }
        Ok(PlasmaClient {
            inner: Rc::new(RefCell::new(inner)),
        })
    }

    /// The store's capacity from the ConnectReply.
    pub fn store_capacity(&self) -> i64 {
        self.inner.borrow().capacity
    }

    /// Creates an object of `data_size` bytes with `metadata`, writing the
    /// metadata into the mapping and returning the writable data buffer.
    /// The object must later be sealed (or aborted).
    pub fn create(
        &self,
        id: &ObjectId,
        data_size: u64,
        metadata: &[u8],
    ) -> Result<MutableObjectBuffer> {
        let mut i = self.inner.borrow_mut();
        let r = i.roundtrip(
            &Request::Create {
                object_id: *id,
                evict_if_full: true,
                data_size,
                metadata_size: metadata.len() as u64,
                device_num: 0,
            },
            MessageType::CreateReply,
        )?;
        let Reply::Create {
            object,
            error,
            store_fd,
            mmap_size,
            ..
        } = r
        else {
            return Err(ClientError::Protocol("bad create reply"));
        };
        status(error)?;
        if object.data_size != data_size
            || object.metadata_size != metadata.len() as u64
            || object.segment_index != store_fd
        {
            return Err(ClientError::Protocol("create reply does not match request"));
        }
        i.ensure_mapped(store_fd, mmap_size)?;
        let ptr = i.object_ptr(&object)?;
        // SAFETY: object_ptr validated data+metadata lie inside the mapping;
        // the metadata region belongs to this new object.
        unsafe {
            std::ptr::copy_nonoverlapping(
                metadata.as_ptr(),
                ptr.as_ptr().add(data_size as usize),
                metadata.len(),
            );
        }
        i.increment(*id, object, false);
        i.increment(*id, object, false);
        Ok(MutableObjectBuffer {
            inner: self.inner.clone(),
            id: *id,
            ptr,
            len: data_size as usize,
        })
    }

    /// Seals an object this client created: computes its digest from the
    /// mapping, sends SealRequest, checks the reply, drops one local count.
    pub fn seal(&self, id: &ObjectId) -> Result<()> {
        let mut i = self.inner.borrow_mut();
        let spec = match i.in_use.get_mut(id) {
            None => return Err(ClientError::ObjectNotFound),
            Some(e) if e.sealed => return Err(ClientError::AlreadySealed),
            Some(e) => {
                e.sealed = true;
                e.spec
            }
        };
        let ptr = i.object_ptr(&spec)?;
        // SAFETY: bounds validated by object_ptr; the mapping is owned by `i`.
        let all = unsafe {
            std::slice::from_raw_parts(ptr.as_ptr(), (spec.data_size + spec.metadata_size) as usize)
        };
        let (data, meta) = all.split_at(spec.data_size as usize);
        let digest = compute_object_digest(data, meta);
        let r = i.roundtrip(
            &Request::Seal {
                object_id: *id,
                digest,
            },
            MessageType::SealReply,
        )?;
        let Reply::Seal { object_id, error } = r else {
            return Err(ClientError::Protocol("bad seal reply"));
        };
        if object_id != *id {
            return Err(ClientError::Protocol("seal reply for another id"));
        }
        status(error)?;
        i.release(id)
    }

    /// Aborts an unsealed object this client created. The data buffer must
    /// have been dropped (local count 1), like libplasma.
    pub fn abort(&self, id: &ObjectId) -> Result<()> {
        let mut i = self.inner.borrow_mut();
        match i.in_use.get(id) {
            None => {
                return Err(ClientError::Invalid(
                    "abort on an object without a reference",
                ))
            }
            Some(e) if e.sealed => return Err(ClientError::Invalid("abort on a sealed object")),
            Some(e) if e.count > 1 => {
                return Err(ClientError::Invalid(
                    "client still holds a buffer of the object",
                ))
            }
            Some(_) => {}
        }
        i.send(&Request::Abort { object_id: *id })?;
        i.in_use.remove(id);
        match i.recv(MessageType::AbortReply)? {
            Reply::Abort { .. } => Ok(()),
            _ => Err(ClientError::Protocol("bad abort reply")),
        }
    }

    /// Creates and seals an object in one message (data travels in the body).
    pub fn create_and_seal(&self, id: &ObjectId, data: &[u8], metadata: &[u8]) -> Result<()> {
        let digest = compute_object_digest(data, metadata);
        let r = self.inner.borrow_mut().roundtrip(
            &Request::CreateAndSeal {
                object_id: *id,
                evict_if_full: true,
                data,
                metadata,
                digest,
            },
            MessageType::CreateAndSealReply,
        )?;
        match r {
            Reply::CreateAndSeal { error } => status(error),
            _ => Err(ClientError::Protocol("bad create-and-seal reply")),
        }
    }

    /// Creates and seals several objects atomically (all or none). Digests are
    /// computed per object (libplasma 11 hashes the wrong bytes here; the store
    /// treats digests as opaque, so correct digests are compatible).
    pub fn create_and_seal_batch(
        &self,
        ids: &[ObjectId],
        data: &[&[u8]],
        metadata: &[&[u8]],
    ) -> Result<()> {
        if ids.len() != data.len() || ids.len() != metadata.len() {
            return Err(ClientError::Invalid("batch vectors differ in length"));
        }
        let digests = data
            .iter()
            .zip(metadata)
            .map(|(d, m)| compute_object_digest(d, m))
            .collect();
        let r = self.inner.borrow_mut().roundtrip(
            &Request::CreateAndSealBatch {
                object_ids: ids.to_vec(),
                evict_if_full: true,
                data: data.to_vec(),
                metadata: metadata.to_vec(),
                digests,
            },
            MessageType::CreateAndSealBatchReply,
        )?;
        match r {
            Reply::CreateAndSealBatch { error } => status(error),
            _ => Err(ClientError::Protocol("bad batch reply")),
        }
    }

    /// Gets objects, waiting up to `timeout_ms` (-1 = forever, 0 = no wait).
    /// Entries are `None` for objects not available in time.
    pub fn get(&self, ids: &[ObjectId], timeout_ms: i64) -> Result<Vec<Option<ObjectBuffer>>> {
        let mut i = self.inner.borrow_mut();
        let mut out: Vec<Option<(ObjectSpec, NonNull<u8>)>> = vec![None; ids.len()];
        let mut all_present = true;
        for (k, id) in ids.iter().enumerate() {
            match i.in_use.get(id) {
                None => all_present = false,
                Some(e) if !e.sealed => {
                    if timeout_ms == -1 {
                        return Err(ClientError::Invalid(
                            "get with infinite timeout on an unsealed object this client created",
                        ));
                    }
                    all_present = false;
                }
                Some(e) => {
                    let spec = e.spec;
                    let p = i.object_ptr(&spec)?;
                    out[k] = Some((spec, p));
                }
            }
        }
        for (k, id) in ids.iter().enumerate() {
            if let Some((spec, _)) = out[k] {
                i.increment(*id, spec, true);
            }
        }
        if !all_present {
            let r = i.roundtrip(
                &Request::Get {
                    object_ids: ids.to_vec(),
                    timeout_ms,
                },
                MessageType::GetReply,
            )?;
            let Reply::Get {
                object_ids,
                objects,
                store_fds,
                mmap_sizes,
            } = r
            else {
                return Err(ClientError::Protocol("bad get reply"));
            };
            if object_ids.len() < ids.len() || objects.len() < ids.len() {
                return Err(ClientError::Protocol("get reply too short"));
            }
            for (fd, size) in store_fds.iter().zip(&mmap_sizes) {
                i.ensure_mapped(*fd, *size)?;
            }
            for (k, id) in ids.iter().enumerate() {
                if out[k].is_some() {
                    continue;
                }
                let spec = objects[k];
                if spec.is_missing() {
                    continue;
                }
                if object_ids[k] != *id {
                    return Err(ClientError::Protocol("get reply ids out of order"));
                }
                let p = i.object_ptr(&spec)?;
                out[k] = Some((spec, p));
                i.increment(*id, spec, true);
            }
        }
        drop(i);
        Ok(out
            .into_iter()
            .zip(ids)
            .map(|(o, id)| {
                o.map(|(spec, ptr)| ObjectBuffer {
                    inner: self.inner.clone(),
                    id: *id,
                    ptr,
                    data_len: spec.data_size as usize,
                    meta_len: spec.metadata_size as usize,
                })
            })
            .collect())
    }

    /// Drops one local reference to `id` (as libplasma's `Release`). Only
    /// for references not owned by a buffer object; buffers release on drop.
    pub fn release(&self, id: &ObjectId) -> Result<()> {
        self.inner.borrow_mut().release(id)
    }

    /// True if the object is sealed in the store (or held locally).
    pub fn contains(&self, id: &ObjectId) -> Result<bool> {
        let mut i = self.inner.borrow_mut();
        if i.in_use.contains_key(id) {
            return Ok(true);
        }
        match i.roundtrip(
            &Request::Contains { object_id: *id },
            MessageType::ContainsReply,
        )? {
            Reply::Contains { has_object, .. } => Ok(has_object),
            _ => Err(ClientError::Protocol("bad contains reply")),
        }
    }

    /// Deletes objects; ids this client uses are deleted on their release.
    pub fn delete(&self, ids: &[ObjectId]) -> Result<()> {
        self.inner.borrow_mut().delete(ids)
    }

    /// Lists every object in the store.
    pub fn list(&self) -> Result<Vec<ObjectInfo>> {
        match self
            .inner
            .borrow_mut()
            .roundtrip(&Request::List, MessageType::ListReply)?
        {
            Reply::List { objects } => Ok(objects),
            _ => Err(ClientError::Protocol("bad list reply")),
        }
    }

    /// Asks the store to evict at least `num_bytes`; returns bytes evicted.
    pub fn evict(&self, num_bytes: u64) -> Result<u64> {
        match self
            .inner
            .borrow_mut()
            .roundtrip(&Request::Evict { num_bytes }, MessageType::EvictReply)?
        {
            Reply::Evict { num_bytes } => Ok(num_bytes),
            _ => Err(ClientError::Protocol("bad evict reply")),
        }
    }

    /// Moves the listed objects to the most-recently-used end of the LRU.
    pub fn refresh_lru(&self, ids: &[ObjectId]) -> Result<()> {
        match self.inner.borrow_mut().roundtrip(
            &Request::RefreshLru {
                object_ids: ids.to_vec(),
            },
            MessageType::RefreshLruReply,
        )? {
            Reply::RefreshLru => Ok(()),
            _ => Err(ClientError::Protocol("bad refresh reply")),
        }
    }

    /// Sets the client name and output memory quota.
    pub fn set_client_options(&self, name: &str, quota: i64) -> Result<()> {
        match self.inner.borrow_mut().roundtrip(
            &Request::SetOptions {
                client_name: name.as_bytes(),
                output_memory_quota: quota,
            },
            MessageType::SetOptionsReply,
        )? {
            Reply::SetOptions { error } => status(error),
            _ => Err(ClientError::Protocol("bad set-options reply")),
        }
    }

    /// The store's debug string.
    pub fn debug_string(&self) -> Result<String> {
        match self
            .inner
            .borrow_mut()
            .roundtrip(&Request::GetDebugString, MessageType::GetDebugStringReply)?
        {
            Reply::DebugString { debug_string } => {
                Ok(String::from_utf8_lossy(&debug_string).into_owned())
            }
            _ => Err(ClientError::Protocol("bad debug-string reply")),
        }
    }

    /// The digest of a sealed object (a Get with timeout 0, hashed locally).
    pub fn hash(&self, id: &ObjectId) -> Result<[u8; DIGEST_LEN]> {
        let mut v = self.get(std::slice::from_ref(id), 0)?;
        let b = v.pop().flatten().ok_or(ClientError::ObjectNotFound)?;
        Ok(compute_object_digest(b.data(), b.metadata()))
    }

    /// Subscribes to seal/deletion notifications: sends SubscribeRequest and
    /// then one end of a fresh socketpair (non-blocking on the store side).
    pub fn subscribe(&self) -> Result<()> {
        let (ours, theirs) = UnixStream::pair()?;
        theirs.set_nonblocking(true)?;
        let mut i = self.inner.borrow_mut();
        i.send(&Request::Subscribe)?;
        send_fd(i.sock.as_fd(), theirs.as_fd())?;
        drop(theirs);
        i.notif = Some(ours);
        Ok(())
    }

    /// The client's end of the notification socket, for polling.
    pub fn notification_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.inner.borrow().notif.as_ref().map(|s| s.as_raw_fd())
    }

    /// Blocks for the next notification: `(id, data_size, metadata_size)`,
    /// with sizes `-1` for deletions.
    pub fn get_notification(&self) -> Result<(ObjectId, i64, i64)> {
        let mut i = self.inner.borrow_mut();
        if let Some(info) = i.pending_notifications.pop_front() {
            return Ok(notification_tuple(&info));
        }
        loop {
            let n = i.notif.as_mut().ok_or(ClientError::NotSubscribed)?;
            let mut len = [0u8; 8];
            n.read_exact(&mut len)?;
            let len = i64::from_ne_bytes(len);
            if !(0..=MAX_REPLY_BODY as i64).contains(&len) {
                return Err(ClientError::Protocol("bad notification length"));
            }
            let mut body = vec![0u8; len as usize];
            n.read_exact(&mut body)?;
            let infos = decode_notification(&body)?;
            i.pending_notifications.extend(infos);
            if let Some(info) = i.pending_notifications.pop_front() {
                return Ok(notification_tuple(&info));
            }
        }
    }

    /// True if this client currently holds a local reference to `id`.
    pub fn is_in_use(&self, id: &ObjectId) -> bool {
        self.inner.borrow().in_use.contains_key(id)
    }

    /// Closes the connection (the store then releases this client's holds
    /// and destroys its unsealed creations). Later releases are ignored.
    pub fn disconnect(&self) -> Result<()> {
        let mut i = self.inner.borrow_mut();
        i.disconnected = true;
        i.notif = None;
        i.sock.shutdown(std::net::Shutdown::Both)?;
        Ok(())
    }
}

fn notification_tuple(info: &ObjectInfo) -> (ObjectId, i64, i64) {
    if info.is_deletion {
        (info.object_id, -1, -1)
    } else {
        (info.object_id, info.data_size, info.metadata_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_small_is_plain_xxh64() {
        let d = compute_object_digest(b"hello", b"meta");
        assert_eq!(d, xxh64(b"hellometa", 0).to_ne_bytes());
        assert_eq!(compute_object_digest(b"", b""), xxh64(b"", 0).to_ne_bytes());
    }

    #[test]
    fn digest_large_uses_chunks() {
        let data: Vec<u8> = (0..(1usize << 20) + 100).map(|i| (i * 7) as u8).collect();
        let d = compute_object_digest(&data, b"m");
        assert_ne!(d, xxh64(&[&data[..], b"m"].concat(), 0).to_ne_bytes());
        // Independent re-derivation of the chunk layout.
        let chunk = ((data.len() / 64) / 8) * 64;
        let mut raw = Vec::new();
        for k in 0..8 {
            raw.extend_from_slice(&xxh64(&data[k * chunk..(k + 1) * chunk], 0).to_ne_bytes());
        }
        raw.extend_from_slice(&xxh64(&data[8 * chunk..], 0).to_ne_bytes());
        raw.extend_from_slice(b"m");
        assert_eq!(d, xxh64(&raw, 0).to_ne_bytes());
    }
}
