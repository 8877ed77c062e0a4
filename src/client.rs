//! The Rust client.
//!
//! A [`Client`] is one connection to a coordinator plus the client's mappings of the store's
//! shared memory. Hits are served from shared memory without a system call or a lock: a seqlock
//! read of the index, a pin in the client's own lease page, a fence, a re-check. Misses, writes
//! and control calls are requests over the socket; many may be in flight at once from several
//! threads (replies are matched to requests by id).
//!
//! `Client` is `Send + Sync` and cheap to clone (it is a handle). Objects returned by gets
//! ([`ObjectRef`]) keep the connection and the mapping they point into alive, and keep the object
//! pinned, until they are dropped.

use crate::error::{Code, Error, Result};
use crate::index::{IndexRef, Slot, FLAG_ARROW, FLAG_VALIDATED};
use crate::key::Key;
use crate::layout::{self, hdr, Header, SegTable};
use crate::pins::{self, Lease};
use crate::proto::{self, HelloInfo, ListEntry, PutItem, Request, Response, Status, HEADER_LEN};
use crate::shm::{self, Access, Mapping};
use crate::sync::AtomicU64;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How to reach a store and in which role.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    socket: PathBuf,
    writer: bool,
}

impl ConnectOptions {
    /// The store named `store` at its default socket path.
    pub fn store(store: &str) -> ConnectOptions {
        ConnectOptions {
            socket: crate::config::default_socket(store),
            writer: true,
        }
    }
    /// The store listening on `socket`.
    pub fn socket(socket: impl AsRef<Path>) -> ConnectOptions {
        ConnectOptions {
            socket: socket.as_ref().to_path_buf(),
            writer: true,
        }
    }
    /// Read-only role: data segments are mapped without write permission and creates are
    /// refused. Hits work exactly as for writers.
    pub fn read_only(mut self) -> ConnectOptions {
        self.writer = false;
        self
    }
}

/// Options of a put.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutOptions<'a> {
    /// Metadata stored after the data (returned by [`ObjectRef::metadata`]).
    pub metadata: &'a [u8],
    /// Drop instead of demoting to a lower tier when evicted.
    pub ephemeral: bool,
    /// Have the coordinator check that the data hashes to the key (a sha2-256 CID) at seal.
    pub verify_cid: bool,
    /// Acknowledge only once the object is in a synced file of the warm tier (as with
    /// `cidcached --durability sync`, for this put alone); an error when the warm tier cannot
    /// write it. The object becomes visible when the put returns.
    pub durable: bool,
    /// Also add the object to the store's IPFS node (`cidcached --ipfs-api`), under the key,
    /// which must be the CID the node computes: [`crate::cid::unixfs_file_cid`] of the data
    /// (the raw CID up to 256 KiB). The put succeeds only once the node holds it, pinned.
    pub ipfs: bool,
}

impl PutOptions<'_> {
    fn flags(&self) -> u32 {
        (if self.ephemeral {
            proto::PUT_EPHEMERAL
        } else {
            0
        }) | (if self.verify_cid {
            proto::PUT_VERIFY_CID
        } else {
            0
        }) | (if self.durable { proto::PUT_DURABLE } else { 0 })
            | (if self.ipfs { proto::PUT_IPFS } else { 0 })
    }
}

/// What a synchronous caller waiting for its reply can be told.
enum SyncMsg {
    Reply(Result<Response>),
    /// The caller that was reading replies left: take over reading.
    Lead,
}

enum Waiter {
    Sync(std::sync::mpsc::Sender<SyncMsg>),
    Async(tokio::sync::oneshot::Sender<Result<Response>>),
}

impl Waiter {
    fn send(self, r: Result<Response>) {
        match self {
            Waiter::Sync(s) => {
                let _ = s.send(SyncMsg::Reply(r));
            }
            Waiter::Async(s) => {
                let _ = s.send(r);
            }
        }
    }
}

/// The socket side: request ids, the writer, the reader, and the replies awaited.
///
/// Replies are read by whoever holds `reader`. A synchronous caller takes it when it is free and
/// reads until its own reply arrives, handing other callers' replies over on the way, so the
/// common single-threaded round trip involves no thread hop. When it leaves, it hands the reading
/// to another waiting synchronous caller, or to the background thread when only async callers
/// wait (they cannot block on a socket).
struct Conn {
    writer: Mutex<UnixStream>,
    reader: Mutex<UnixStream>,
    pending: Mutex<HashMap<u64, Waiter>>,
    next_id: std::sync::atomic::AtomicU64,
    dead: AtomicBool,
    background: (Mutex<bool>, std::sync::Condvar),
}

fn disconnected() -> Error {
    Error::Disconnected(
        "the coordinator closed the connection (it stopped or restarted); connect again".into(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    fn fail_all(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let pending = std::mem::take(&mut *lock(&self.pending));
        for (_, w) in pending {
            w.send(Err(disconnected()));
        }
        self.wake_background();
    }

    /// Reads one reply frame. An error means the connection is unusable.
    fn read_one(stream: &mut UnixStream) -> std::io::Result<(u64, Result<Response>)> {
        let mut hdr = [0u8; HEADER_LEN];
        stream.read_exact(&mut hdr)?;
        let h = proto::Header::parse(&hdr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let mut body = vec![0u8; h.body_len as usize];
        stream.read_exact(&mut body)?;
        Ok((h.request_id, Response::decode(h.msg_type, &body)))
    }

    fn dispatch(&self, id: u64, r: Result<Response>) {
        let w = lock(&self.pending).remove(&id);
        if let Some(w) = w {
            w.send(r);
        }
    }

    /// Called by a reader that stops reading: someone must read for the callers still waiting.
    fn handoff(&self) {
        let pending = lock(&self.pending);
        if pending.is_empty() {
            return;
        }
        for w in pending.values() {
            if let Waiter::Sync(tx) = w {
                if tx.send(SyncMsg::Lead).is_ok() {
                    return;
                }
            }
        }
        drop(pending);
        self.wake_background();
    }

    fn wake_background(&self) {
        *lock(&self.background.0) = true;
        self.background.1.notify_one();
    }

    /// Reads for async callers (and for sync callers while it holds the reader).
    fn background_loop(self: Arc<Self>) {
        loop {
            {
                let mut wake = lock(&self.background.0);
                while !*wake {
                    wake = self
                        .background
                        .1
                        .wait(wake)
                        .unwrap_or_else(|p| p.into_inner());
                }
                *wake = false;
            }
            if self.dead.load(Ordering::SeqCst) {
                return;
            }
            loop {
                {
                    let mut rd = lock(&self.reader);
                    while !lock(&self.pending).is_empty() {
                        match Self::read_one(&mut rd) {
                            Ok((id, r)) => self.dispatch(id, r),
                            Err(_) => {
                                drop(rd);
                                self.fail_all();
                                return;
                            }
                        }
                    }
                }
                // An async caller that registered while we still held the reader saw it
                // locked and counted on us: look again now that it is released.
                if lock(&self.pending).is_empty() || self.dead.load(Ordering::SeqCst) {
                    break;
                }
            }
        }
    }

    fn send(&self, frame: &[u8], id: u64, w: Waiter) -> Result<()> {
        if self.dead.load(Ordering::Relaxed) {
            return Err(disconnected());
        }
        lock(&self.pending).insert(id, w);
        let mut s = lock(&self.writer);
        if s.write_all(frame).is_err() {
            drop(s);
            lock(&self.pending).remove(&id);
            return Err(disconnected());
        }
        Ok(())
    }

    fn call(&self, req: &Request<'_>) -> Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Unbounded: a reply must never be dropped because lead messages filled the channel.
        let (tx, rx) = std::sync::mpsc::channel();
        self.send(&req.encode(id), id, Waiter::Sync(tx))?;
        loop {
            if let Ok(mut rd) = self.reader.try_lock() {
                // Whatever was dispatched to us before we took the reader is in the channel;
                // nothing more can be while we hold it.
                while let Ok(m) = rx.try_recv() {
                    if let SyncMsg::Reply(r) = m {
                        drop(rd);
                        self.handoff();
                        return r;
                    }
                }
                loop {
                    match Self::read_one(&mut rd) {
                        Ok((rid, r)) if rid == id => {
                            lock(&self.pending).remove(&id);
                            drop(rd);
                            self.handoff();
                            return r;
                        }
                        Ok((rid, r)) => self.dispatch(rid, r),
                        Err(_) => {
                            drop(rd);
                            self.fail_all();
                            return Err(disconnected());
                        }
                    }
                }
            }
            match rx.recv() {
                Ok(SyncMsg::Reply(r)) => {
                    // A lead message queued behind the reply must not be lost.
                    if rx.try_iter().any(|m| matches!(m, SyncMsg::Lead)) {
                        self.handoff();
                    }
                    return r;
                }
                Ok(SyncMsg::Lead) => continue,
                Err(_) => return Err(disconnected()),
            }
        }
    }

    async fn call_async(&self, req: &Request<'_>) -> Result<Response> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(&req.encode(id), id, Waiter::Async(tx))?;
        // If nobody is reading, the background thread must; if someone is, they will either
        // read our reply or hand the reading over when they leave.
        if self.reader.try_lock().is_ok() {
            self.wake_background();
        }
        rx.await.map_err(|_| disconnected())?
    }
}

/// This client's cached mapping of one segment-table position.
///
/// Hits read `id` and `base` without a lock; `users` counts live objects using the mapping so
/// that a retired segment is unmapped only when none does (the slow path, under `slow`, sets
/// `id` to 0 first and then checks `users`; a hit increments `users` first and then checks `id`;
/// both with SeqCst, so one of them sees the other).
struct SegCache {
    id: std::sync::atomic::AtomicU64,
    base: AtomicPtr<u8>,
    len: AtomicUsize,
    users: AtomicUsize,
    slow: Mutex<Option<Mapping>>,
}

/// Where a found object's bytes are mapped, kept alive by the holder.
enum Backing {
    Cached(usize),
    // Held only to keep the mapping alive while the object is in use.
    Owned(#[allow(dead_code)] Arc<Mapping>),
}

struct Inner {
    conn: Arc<Conn>,
    info: HelloInfo,
    shm_dir: PathBuf,
    writer: bool,
    // Views below point into `ctl` and `lease`, declared after them so they are dropped first
    // (they are plain references; Inner never hands them out beyond its own lifetime).
    header: Header<'static>,
    segtable: SegTable<'static>,
    index: IndexRef<'static>,
    lease: Lease<'static>,
    segs: Box<[SegCache]>,
    pin_hint: AtomicUsize,
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// How this connection was made, for [`Client::reconnect`].
    opts: ConnectOptions,
    _ctl: Mapping,
    _lease: Mapping,
    // Holds the shared lock on the lease page (see `connect_with`).
    _lease_lock: rustix::fd::OwnedFd,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the socket ends the lease; a reader sees EOF; the background thread exits.
        if let Ok(s) = self.conn.writer.lock() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.conn.dead.store(true, Ordering::SeqCst);
        self.conn.wake_background();
        // Joined so that no thread of ours outlives the last handle (leak checkers, fork).
        if let Some(t) = lock(&self.background).take() {
            let _ = t.join();
        }
    }
}

/// A handle to a store. Cloning is cheap and shares the connection.
///
/// Thread safety: `Send + Sync`; every method may be called from any thread concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A pinned, sealed object in shared memory.
///
/// The bytes stay valid and unchanged for the life of this value, whatever other processes do:
/// the coordinator will not reuse the memory while the pin exists. Dropping it unpins (one store
/// to the lease page, no system call). `Send + Sync`.
pub struct ObjectRef {
    inner: Arc<Inner>,
    pin: usize,
    backing: Backing,
    ptr: *const u8,
    data_len: usize,
    meta_len: usize,
    flags: u64,
    key: Key,
}

// SAFETY: the pointed-to bytes are sealed (immutable) shared memory kept mapped by `backing` and
// kept from reuse by the pin; reading them from any thread is sound.
unsafe impl Send for ObjectRef {}
// SAFETY: see above; ObjectRef only hands out shared references.
unsafe impl Sync for ObjectRef {}

impl ObjectRef {
    /// The object's data bytes (zero-copy view into shared memory).
    pub fn data(&self) -> &[u8] {
        // SAFETY: ptr..ptr+data_len was bounds-checked against the mapping at get time; the
        // mapping is kept alive by `backing` and the bytes are immutable while pinned.
        unsafe { std::slice::from_raw_parts(self.ptr, self.data_len) }
    }
    /// The object's metadata bytes.
    pub fn metadata(&self) -> &[u8] {
        // SAFETY: as for `data`; metadata follows the data inside the checked range.
        unsafe { std::slice::from_raw_parts(self.ptr.add(self.data_len), self.meta_len) }
    }
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }
    /// Whether the object was stored as Arrow IPC.
    pub fn is_arrow(&self) -> bool {
        self.flags & FLAG_ARROW != 0
    }
    /// Whether the coordinator validated this Arrow object in full when it was sealed, so that
    /// [`Client::get_arrow`] decodes it without validating it again.
    pub fn is_validated_arrow(&self) -> bool {
        self.flags & (FLAG_ARROW | FLAG_VALIDATED) == FLAG_ARROW | FLAG_VALIDATED
    }
}

impl std::ops::Deref for ObjectRef {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data()
    }
}

impl AsRef<[u8]> for ObjectRef {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl std::fmt::Debug for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectRef")
            .field("key", &self.key)
            .field("data_len", &self.data_len)
            .field("meta_len", &self.meta_len)
            .finish()
    }
}

impl Drop for ObjectRef {
    fn drop(&mut self) {
        self.inner.lease.unpin(self.pin);
        if let Backing::Cached(pos) = self.backing {
            self.inner.segs[pos].users.fetch_sub(1, Ordering::Release);
        }
    }
}

/// An object being written: fill [`WriteObject::data_mut`] and [`WriteObject::metadata_mut`],
/// then [`WriteObject::seal`]. Dropped without sealing, it is aborted.
pub struct WriteObject {
    inner: Arc<Inner>,
    key: Key,
    backing: Backing,
    ptr: *mut u8,
    data_len: usize,
    meta_len: usize,
    done: bool,
}

// SAFETY: the range is owned by this creator until seal; no other process writes it.
unsafe impl Send for WriteObject {}

impl WriteObject {
    /// Writable data bytes.
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: the coordinator allocated this range for us alone; it is inside a writable
        // mapping kept alive by `backing` and nobody reads it before seal.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.data_len) }
    }
    /// Writable metadata bytes.
    pub fn metadata_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `data_mut`; metadata follows the data inside the allocation.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(self.data_len), self.meta_len) }
    }
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }
    /// Publishes the object; afterwards it is immutable and visible to every client.
    pub fn seal(mut self) -> Result<()> {
        self.done = true;
        expect_done(self.inner.conn.call(&Request::Seal { key: self.key })?)
    }
    /// Async [`WriteObject::seal`].
    pub async fn seal_async(mut self) -> Result<()> {
        self.done = true;
        expect_done(
            self.inner
                .conn
                .call_async(&Request::Seal { key: self.key })
                .await?,
        )
    }
    /// Abandons the object and frees its memory.
    pub fn abort(mut self) -> Result<()> {
        self.done = true;
        expect_done(self.inner.conn.call(&Request::Abort { key: self.key })?)
    }
}

impl Drop for WriteObject {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.inner.conn.call(&Request::Abort { key: self.key });
        }
        if let Backing::Cached(pos) = self.backing {
            self.inner.segs[pos].users.fetch_sub(1, Ordering::Release);
        }
    }
}

fn expect_done(r: Response) -> Result<()> {
    match r {
        Response::Done => Ok(()),
        other => Err(unexpected(other)),
    }
}

/// One wait shared by the requests a batch is split into.
struct Deadline(Option<std::time::Instant>, i64);

impl Deadline {
    fn after(timeout: Duration) -> Deadline {
        let ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        Deadline(std::time::Instant::now().checked_add(timeout), ms)
    }

    /// What is left of the wait, in milliseconds (the whole wait when it cannot be dated).
    fn left_ms(&self) -> i64 {
        match self.0 {
            Some(d) => d
                .saturating_duration_since(std::time::Instant::now())
                .as_millis()
                .min(i64::MAX as u128) as i64,
            None => self.1,
        }
    }
}

fn unexpected(r: Response) -> Error {
    match r {
        Response::Error { code, message } => Error::from_code(code, message),
        other => Error::Protocol(format!("unexpected reply {other:?}")),
    }
}

fn status_to_result(s: Status) -> Result<()> {
    s.map_err(|(c, m)| Error::from_code(c, m))
}

/// Why a connection could not be made: no socket, or nobody listening on it, means no
/// coordinator serves the store ([`Error::NotRunning`]); anything else is reported as it is.
fn connect_error(socket: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind;
    let at = socket.display();
    match e.kind() {
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => Error::NotRunning(format!(
            "no cidcached serves {at} ({e}); start it (cidcached --store NAME) or check the store name or socket path"
        )),
        ErrorKind::PermissionDenied => Error::PermissionDenied(format!(
            "cannot connect to {at} ({e}); the socket belongs to another user"
        )),
        _ => Error::io(format!("cannot connect to {at}"), e),
    }
}

/// A verified put reports wrong bytes before an existing key, whatever its size: an inline put
/// is checked by the coordinator before it looks the key up, and a large one, refused at create
/// for an existing key, is checked here (only on that error path; the coordinator still checks
/// every seal itself).
fn mismatch_first(e: Error, key: &Key, data: &[u8], flags: u32) -> Error {
    if matches!(e, Error::AlreadyExists(_)) && flags & proto::PUT_VERIFY_CID != 0 {
        if let Err(m) = crate::cid::verify(key.as_bytes(), data) {
            return m;
        }
    }
    e
}

fn catalog_query_request<'a>(
    filters: &[&str],
    columns: Option<&str>,
    limit: Option<usize>,
    format: crate::tier::catalog::OutputFormat,
) -> Request<'a> {
    use crate::tier::catalog::OutputFormat;
    Request::CatalogQuery {
        filters: filters.iter().map(|f| f.to_string()).collect(),
        columns: columns.unwrap_or("").to_string(),
        limit: limit.unwrap_or(0) as u64,
        format: match format {
            OutputFormat::Table => 0,
            OutputFormat::Ipc => 1,
            OutputFormat::Parquet => 2,
        },
    }
}

/// Retries of the miss path when an object is evicted between the coordinator's answer and our
/// lock-free read (rare; bounded so a pathological churn cannot loop forever).
const MISS_RETRIES: usize = 8;

impl Client {
    /// Connects to the store named `store` (default socket path).
    pub fn connect(store: &str) -> Result<Client> {
        Client::connect_with(ConnectOptions::store(store))
    }

    /// Connects to the store listening on `socket`.
    pub fn connect_socket(socket: impl AsRef<Path>) -> Result<Client> {
        Client::connect_with(ConnectOptions::socket(socket))
    }

    /// Connects with explicit options.
    pub fn connect_with(opts: ConnectOptions) -> Result<Client> {
        let stream =
            UnixStream::connect(&opts.socket).map_err(|e| connect_error(&opts.socket, e))?;
        let reader = stream
            .try_clone()
            .map_err(|e| Error::io("cannot clone the socket", e))?;
        let conn = Arc::new(Conn {
            writer: Mutex::new(stream),
            reader: Mutex::new(reader),
            pending: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(1),
            dead: AtomicBool::new(false),
            background: (Mutex::new(false), std::sync::Condvar::new()),
        });
        let background = {
            let c = conn.clone();
            std::thread::Builder::new()
                .name("cidcache-client".into())
                .spawn(move || c.background_loop())
                .map_err(|e| Error::io("cannot start the client reader thread", e))?
        };
        // Until Inner owns it, a failed connect must still stop the thread.
        struct StopOnError(Option<(Arc<Conn>, std::thread::JoinHandle<()>)>);
        impl Drop for StopOnError {
            fn drop(&mut self) {
                if let Some((c, t)) = self.0.take() {
                    if let Ok(s) = c.writer.lock() {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                    }
                    c.dead.store(true, Ordering::SeqCst);
                    c.wake_background();
                    let _ = t.join();
                }
            }
        }
        let mut guard = StopOnError(Some((conn.clone(), background)));
        let hello = conn.call(&Request::Hello {
            version: proto::VERSION,
            pid: std::process::id(),
            writer: opts.writer,
        })?;
        let info = match hello {
            Response::Hello(h) => h,
            other => return Err(unexpected(other)),
        };
        let shm_dir = PathBuf::from(&info.shm_dir);

        let (ctl_fd, ctl_len) =
            shm::open_segment(&shm_dir, &shm::ctl_name(&info.store), Access::ReadOnly)?;
        if ctl_len < layout::HEADER_BYTES as u64 {
            return Err(Error::Incompatible("control segment is too small".into()));
        }
        let ctl = Mapping::map(&ctl_fd, ctl_len as usize, Access::ReadOnly, true)?;
        // SAFETY: the mapping is at least HEADER_BYTES long and page-aligned; the header words
        // are 8-byte aligned atomics that the coordinator writes and we only load.
        let header: Header<'static> = Header::new(unsafe {
            std::slice::from_raw_parts(ctl.as_ptr() as *const AtomicU64, hdr::COUNT)
        });
        if header.get(hdr::MAGIC) != layout::MAGIC {
            return Err(Error::Incompatible(
                "control segment has no cidcache magic (not initialised, or not a cidcache store)"
                    .into(),
            ));
        }
        if header.get(hdr::VERSION) != layout::LAYOUT_VERSION {
            return Err(Error::Incompatible(format!(
                "control segment layout version {} is not {}; use a client library matching the daemon",
                header.get(hdr::VERSION),
                layout::LAYOUT_VERSION
            )));
        }
        if header.get(hdr::BOOT_ID) != info.boot_id || header.get(hdr::RUN_TOKEN) != info.boot_id {
            return Err(Error::Incompatible(
                "control segment belongs to another coordinator boot; retry".into(),
            ));
        }
        let cap = header.get(hdr::INDEX_CAPACITY);
        let idx_off = header.get(hdr::INDEX_OFFSET);
        let seg_off = header.get(hdr::SEG_OFFSET);
        let seg_len = header.get(hdr::SEG_LEN);
        let fits = |off: u64, bytes: u64| off.checked_add(bytes).is_some_and(|e| e <= ctl_len);
        if !cap.is_power_of_two()
            || !seg_len.is_power_of_two()
            || !idx_off.is_multiple_of(64)
            || !seg_off.is_multiple_of(8)
            || !fits(idx_off, cap.saturating_mul(crate::index::SLOT_BYTES as u64))
            || !fits(
                seg_off,
                seg_len.saturating_mul(layout::SEG_ENTRY_BYTES as u64),
            )
            || header.get(hdr::HASH_SEED) != layout::HASH_SEED
        {
            return Err(Error::Incompatible(
                "control segment header is inconsistent".into(),
            ));
        }
        // SAFETY: offsets and sizes were checked against the mapping just above; alignment of
        // slots (64) and words (8) was checked too. The views live in Inner next to `ctl`.
        let (segtable, index) = unsafe {
            let base = ctl.as_ptr();
            let segtable = SegTable::new(std::slice::from_raw_parts(
                base.add(seg_off as usize) as *const AtomicU64,
                seg_len as usize * 4,
            ));
            let slots: &'static [Slot] =
                std::slice::from_raw_parts(base.add(idx_off as usize) as *const Slot, cap as usize);
            let max_probe: &'static AtomicU64 =
                &*(base.add(hdr::MAX_PROBE * 8) as *const AtomicU64);
            (segtable, IndexRef::new(slots, max_probe))
        };

        let (lease_fd, lease_len) =
            shm::open_segment(&shm_dir, &info.lease_name, Access::ReadWrite)?;
        let lease_map = Mapping::map(&lease_fd, lease_len as usize, Access::ReadWrite, true)?;
        // A shared lock held as long as this connection's state lives (objects and unsealed
        // writes included) tells a coordinator that adopts the store after a crash that this
        // process may still read what it pinned, or write what it created: it keeps those
        // bytes untouched until the lock is gone (see docs/layout.md, "Restarts").
        rustix::fs::flock(&lease_fd, rustix::fs::FlockOperation::NonBlockingLockShared)
            .map_err(|e| Error::io("cannot lock the lease page", e))?;
        // SAFETY: the lease mapping is page-aligned, `lease_len / 8` words long, and ours to
        // write; other processes only read it.
        let lease = Lease::new(unsafe {
            std::slice::from_raw_parts(
                lease_map.as_ptr() as *const AtomicU64,
                lease_len as usize / 8,
            )
        })
        .filter(|l| l.magic() == pins::LEASE_MAGIC)
        .ok_or_else(|| Error::Incompatible("lease page is malformed".into()))?;

        let segs = (0..seg_len)
            .map(|_| SegCache {
                id: std::sync::atomic::AtomicU64::new(0),
                base: AtomicPtr::new(std::ptr::null_mut()),
                len: AtomicUsize::new(0),
                users: AtomicUsize::new(0),
                slow: Mutex::new(None),
            })
            .collect();
        Ok(Client {
            inner: Arc::new(Inner {
                conn,
                info,
                shm_dir,
                writer: opts.writer,
                header,
                segtable,
                index,
                lease,
                segs,
                pin_hint: AtomicUsize::new(0),
                background: Mutex::new(guard.0.take().map(|(_, t)| t)),
                opts,
                _ctl: ctl,
                _lease: lease_map,
                _lease_lock: lease_fd,
            }),
        })
    }

    /// A new connection made the way this one was (same socket, same role), for a caller that
    /// got [`Error::Disconnected`] because the coordinator stopped or restarted. Objects held
    /// from this connection stay valid; this one keeps answering `Disconnected`.
    pub fn reconnect(&self) -> Result<Client> {
        Client::connect_with(self.inner.opts.clone())
    }

    /// This connection's client id (as the coordinator knows it).
    pub fn client_id(&self) -> u64 {
        self.inner.info.client_id
    }

    /// Name of the store.
    pub fn store_name(&self) -> &str {
        &self.inner.info.store
    }

    /// The shared-memory directory holding the store's segments (and its lock,
    /// `cidcache.NAME.lock`, which names the coordinator's pid).
    pub fn shm_dir(&self) -> &std::path::Path {
        &self.inner.shm_dir
    }

    /// Whether this connection may still use what it reads through its control segment: its
    /// coordinator neither closed the connection nor stopped, and no successor took the
    /// segment over (the run token still names the boot this client connected to).
    fn check_alive(&self) -> Result<()> {
        if self.inner.conn.dead.load(Ordering::Relaxed)
            || self.inner.header.get(hdr::STATE) != layout::STATE_RUNNING
            || self.inner.header.get(hdr::RUN_TOKEN) != self.inner.info.boot_id
        {
            return Err(disconnected());
        }
        Ok(())
    }

    /// Resolves segment `seg` to a mapping usable by one more object. Fast when cached.
    fn segment(&self, seg: u64) -> Result<(Backing, *mut u8, usize)> {
        let inner = &self.inner;
        let pos = inner.segtable.position(seg);
        let c = &inner.segs[pos];
        c.users.fetch_add(1, Ordering::SeqCst);
        if c.id.load(Ordering::SeqCst) == seg {
            let base = c.base.load(Ordering::Acquire);
            if !base.is_null() {
                return Ok((Backing::Cached(pos), base, c.len.load(Ordering::Relaxed)));
            }
        }
        c.users.fetch_sub(1, Ordering::Release);
        self.map_segment(pos, seg)
    }

    /// Slow path: map a segment (and unmap this position's stale mapping if nobody uses it).
    #[cold]
    fn map_segment(&self, pos: usize, seg: u64) -> Result<(Backing, *mut u8, usize)> {
        let inner = &self.inner;
        let e = inner.segtable.get(pos);
        if e.id != seg {
            return Err(Error::NotFound(format!("segment {seg} is gone")));
        }
        let access = if inner.writer {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let (fd, flen) = shm::open_segment(
            &inner.shm_dir,
            &shm::data_name(&inner.info.store, seg),
            access,
        )?;
        if flen < e.size || e.size == 0 {
            return Err(Error::Incompatible(format!(
                "segment {seg} is {flen} bytes, the table says {}",
                e.size
            )));
        }
        let m = Mapping::map(&fd, e.size as usize, access, true)?;
        let c = &inner.segs[pos];
        let mut slot = c.slow.lock().unwrap_or_else(|p| p.into_inner());
        if c.id.load(Ordering::SeqCst) == seg && !c.base.load(Ordering::Acquire).is_null() {
            // Another thread mapped it meanwhile; use theirs.
            drop(m);
            c.users.fetch_add(1, Ordering::SeqCst);
            return Ok((
                Backing::Cached(pos),
                c.base.load(Ordering::Acquire),
                c.len.load(Ordering::Relaxed),
            ));
        }
        // The table position now holds `seg`, so whatever is cached here is a retired segment:
        // stop new users of it, then replace it if nobody still reads through it.
        c.id.store(0, Ordering::SeqCst);
        if c.users.load(Ordering::SeqCst) == 0 {
            let base = m.as_ptr();
            let len = m.len();
            *slot = Some(m); // unmaps the retired mapping, if any
            c.base.store(base, Ordering::Release);
            c.len.store(len, Ordering::Relaxed);
            c.users.fetch_add(1, Ordering::SeqCst);
            c.id.store(seg, Ordering::SeqCst);
            Ok((Backing::Cached(pos), base, len))
        } else {
            // Objects of the retired segment are still in use: this object gets a mapping of
            // its own; the position is reclaimed by a later slow path.
            let m = Arc::new(m);
            let base = m.as_ptr();
            let len = m.len();
            Ok((Backing::Owned(m), base, len))
        }
    }

    /// The lock-free hit path. `Ok(None)` is a possible miss.
    #[inline]
    fn try_hit(&self, key: &Key, hash: u64) -> Result<Option<ObjectRef>> {
        let inner = &self.inner;
        if inner.conn.dead.load(Ordering::Relaxed) {
            return Err(disconnected());
        }
        for _ in 0..64 {
            let Some(f) = inner.index.lookup(key, hash) else {
                return Ok(None);
            };
            let hint = inner.pin_hint.load(Ordering::Relaxed);
            let pin = match pins::pin_snapshot(inner.index, inner.lease, f.slot, f.seq, hint) {
                Ok(p) => p,
                Err(true) => continue,
                Err(false) => {
                    return Err(Error::PinsExhausted(format!(
                        "this client already pins {} objects; drop some ObjectRefs",
                        inner.lease.capacity()
                    )))
                }
            };
            // After the pin and its fence: a successor coordinator clears the token before it
            // scans lease pages, so either it honours this pin or we see the token changed.
            // The word is on the line of the max-probe word the lookup just read.
            if !layout::token_current(&inner.header, inner.info.boot_id) {
                inner.lease.unpin(pin);
                return Err(disconnected());
            }
            inner.pin_hint.store(pin + 1, Ordering::Relaxed);
            let (backing, base, len) = match self.segment(f.entry.seg) {
                Ok(b) => b,
                Err(e) => {
                    inner.lease.unpin(pin);
                    return Err(e);
                }
            };
            let end = f
                .entry
                .offset
                .checked_add(f.entry.data_len)
                .and_then(|v| v.checked_add(f.entry.meta_len));
            if end.is_none_or(|e| e > len as u64) {
                inner.lease.unpin(pin);
                if let Backing::Cached(pos) = backing {
                    inner.segs[pos].users.fetch_sub(1, Ordering::Release);
                }
                return Err(Error::Incompatible(format!(
                    "index entry for {key} points outside its segment"
                )));
            }
            inner.lease.record_hit(f.entry.object_id);
            return Ok(Some(ObjectRef {
                inner: inner.clone(),
                pin,
                backing,
                // SAFETY: offset + lengths were checked against the mapping length above.
                ptr: unsafe { base.add(f.entry.offset as usize) },
                data_len: f.entry.data_len as usize,
                meta_len: f.entry.meta_len as usize,
                flags: f.entry.flags,
                key: *key,
            }));
        }
        Ok(None)
    }

    /// Gets `key` if it is sealed now. A hit takes no lock and makes no system call; a miss asks
    /// the coordinator (which may promote the object from a lower tier).
    pub fn get(&self, key: &[u8]) -> Result<Option<ObjectRef>> {
        self.get_wait(key, 0)
    }

    /// Gets `key` only if it is in shared memory now: the hit path alone, which takes no lock,
    /// makes no system call and never asks the coordinator. `Ok(None)` means "not hot" (absent,
    /// not sealed yet, in a lower tier, or racing with its eviction): call [`Client::get`] to
    /// ask the coordinator. For callers that must not block where a hit is likely (an
    /// interpreter holding its global lock, an event loop).
    pub fn get_hot(&self, key: &[u8]) -> Result<Option<ObjectRef>> {
        let key = Key::new(key)?;
        self.try_hit(&key, key.hash())
    }

    /// Gets `key`, waiting up to `timeout` for it to be sealed. `None` when it did not appear.
    pub fn get_timeout(&self, key: &[u8], timeout: Duration) -> Result<Option<ObjectRef>> {
        self.get_wait(key, timeout.as_millis().min(i64::MAX as u128) as i64)
    }

    /// Gets `key`, waiting for it as long as it takes.
    pub fn get_blocking(&self, key: &[u8]) -> Result<ObjectRef> {
        self.get_wait(key, -1)?
            .ok_or_else(|| Error::Internal("an unbounded wait returned nothing".into()))
    }

    fn get_wait(&self, key: &[u8], timeout_ms: i64) -> Result<Option<ObjectRef>> {
        let key = Key::new(key)?;
        let hash = key.hash();
        if let Some(o) = self.try_hit(&key, hash)? {
            return Ok(Some(o));
        }
        self.check_alive()?;
        for _ in 0..MISS_RETRIES {
            match self.inner.conn.call(&Request::Get { key, timeout_ms })? {
                Response::Bool(true) => {
                    if let Some(o) = self.try_hit(&key, hash)? {
                        return Ok(Some(o));
                    }
                }
                Response::Bool(false) => return Ok(None),
                other => return Err(unexpected(other)),
            }
        }
        Ok(None)
    }

    /// Projects and filters the Arrow object `key` (see [`crate::scan`]). In shared memory
    /// the projection is zero-copy and the filter copies the rows kept; otherwise the
    /// coordinator reads only what the scan needs from the warm tier and publishes the result
    /// (an ephemeral object), which is then read zero-copy. `None` when no tier holds `key`.
    pub fn get_arrow_scan(
        &self,
        key: &[u8],
        scan: &crate::scan::Scan,
    ) -> Result<Option<crate::arrow::ArrowObject>> {
        let k = Key::new(key)?;
        let spec = scan.to_strings();
        for _ in 0..MISS_RETRIES {
            if let Some(o) = self.try_hit(&k, k.hash())? {
                let a = crate::arrow::arrow_from_object(o)?;
                let (schema, batches) = scan.apply(&a.schema, &a.batches)?;
                return Ok(Some(crate::arrow::ArrowObject { schema, batches }));
            }
            self.check_alive()?;
            let req = Request::Scan {
                key: k,
                spec: spec.clone(),
            };
            match self.inner.conn.call(&req)? {
                Response::Bool(true) => continue,
                Response::Bool(false) => return Ok(None),
                Response::Key(d) => {
                    if let Some(o) = self.try_hit(&d, d.hash())? {
                        return crate::arrow::arrow_from_object(o).map(Some);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(None)
    }

    /// Upserts entries into the store's CID catalog, in batches of 10,000 per round trip.
    /// `storage_tier` is set by the store to where each object is.
    pub fn catalog_upsert(&self, entries: &[crate::tier::catalog::CatalogEntry]) -> Result<()> {
        for chunk in entries.chunks(10_000) {
            let ipc = crate::tier::catalog::entries_to_ipc(chunk)?;
            match self
                .inner
                .conn
                .call(&Request::CatalogUpsert { ipc: &ipc })?
            {
                Response::Done => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    /// Queries the store's CID catalog: `filters` as in
    /// [`crate::tier::catalog::Filter::parse`] (ANDed), `columns` a comma-separated projection
    /// (`None` = all), at most `limit` rows. Returns the result formatted as `format`.
    pub fn catalog_query(
        &self,
        filters: &[&str],
        columns: Option<&str>,
        limit: Option<usize>,
        format: crate::tier::catalog::OutputFormat,
    ) -> Result<Vec<u8>> {
        let req = catalog_query_request(filters, columns, limit, format);
        match self.inner.conn.call(&req)? {
            Response::Bytes(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Async [`Client::catalog_query`].
    pub async fn catalog_query_async(
        &self,
        filters: &[&str],
        columns: Option<&str>,
        limit: Option<usize>,
        format: crate::tier::catalog::OutputFormat,
    ) -> Result<Vec<u8>> {
        let req = catalog_query_request(filters, columns, limit, format);
        match self.inner.conn.call_async(&req).await? {
            Response::Bytes(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Async [`Client::catalog_query_batches`].
    pub async fn catalog_query_batches_async(
        &self,
        filters: &[&str],
        columns: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        let b = self
            .catalog_query_async(
                filters,
                columns,
                limit,
                crate::tier::catalog::OutputFormat::Ipc,
            )
            .await?;
        Ok(crate::arrow::decode_ipc_file(&arrow_buffer::Buffer::from(b.as_slice()))?.batches)
    }

    /// Async [`Client::catalog_upsert`].
    pub async fn catalog_upsert_async(
        &self,
        entries: &[crate::tier::catalog::CatalogEntry],
    ) -> Result<()> {
        for chunk in entries.chunks(10_000) {
            let ipc = crate::tier::catalog::entries_to_ipc(chunk)?;
            match self
                .inner
                .conn
                .call_async(&Request::CatalogUpsert { ipc: &ipc })
                .await?
            {
                Response::Done => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    /// Async [`Client::get_arrow_scan`]: the coordinator's scan of a warm object is awaited.
    pub async fn get_arrow_scan_async(
        &self,
        key: &[u8],
        scan: &crate::scan::Scan,
    ) -> Result<Option<crate::arrow::ArrowObject>> {
        let k = Key::new(key)?;
        let spec = scan.to_strings();
        for _ in 0..MISS_RETRIES {
            if let Some(o) = self.try_hit(&k, k.hash())? {
                let a = crate::arrow::arrow_from_object(o)?;
                let (schema, batches) = scan.apply(&a.schema, &a.batches)?;
                return Ok(Some(crate::arrow::ArrowObject { schema, batches }));
            }
            self.check_alive()?;
            let req = Request::Scan {
                key: k,
                spec: spec.clone(),
            };
            match self.inner.conn.call_async(&req).await? {
                Response::Bool(true) => continue,
                Response::Bool(false) => return Ok(None),
                Response::Key(d) => {
                    if let Some(o) = self.try_hit(&d, d.hash())? {
                        return crate::arrow::arrow_from_object(o).map(Some);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok(None)
    }

    /// [`Client::catalog_query`] returning Arrow record batches.
    pub fn catalog_query_batches(
        &self,
        filters: &[&str],
        columns: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        let b = self.catalog_query(
            filters,
            columns,
            limit,
            crate::tier::catalog::OutputFormat::Ipc,
        )?;
        Ok(crate::arrow::decode_ipc_file(&arrow_buffer::Buffer::from(b.as_slice()))?.batches)
    }

    /// Async [`Client::get_timeout`] (`None` timeout = wait forever).
    pub async fn get_async(
        &self,
        key: &[u8],
        timeout: Option<Duration>,
    ) -> Result<Option<ObjectRef>> {
        let key = Key::new(key)?;
        let hash = key.hash();
        if let Some(o) = self.try_hit(&key, hash)? {
            return Ok(Some(o));
        }
        self.check_alive()?;
        let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i64::MAX as u128) as i64);
        for _ in 0..MISS_RETRIES {
            match self
                .inner
                .conn
                .call_async(&Request::Get { key, timeout_ms })
                .await?
            {
                Response::Bool(true) => {
                    if let Some(o) = self.try_hit(&key, hash)? {
                        return Ok(Some(o));
                    }
                }
                Response::Bool(false) => return Ok(None),
                other => return Err(unexpected(other)),
            }
        }
        Ok(None)
    }

    /// Gets many keys: hits are served locally, the misses in one round trip (waiting up to
    /// `timeout` for them). One result per key, in order: `Ok(None)` for a key still missing.
    pub fn get_many(&self, keys: &[&[u8]], timeout: Duration) -> Vec<Result<Option<ObjectRef>>> {
        let (mut out, missing) = self.get_many_local(keys);
        let deadline = Deadline::after(timeout);
        for part in missing.chunks(proto::MAX_GET_MANY) {
            let req = Request::GetMany {
                keys: part.iter().map(|&(_, k)| k).collect(),
                timeout_ms: deadline.left_ms(),
            };
            let resp = self.inner.conn.call(&req);
            self.get_many_finish(&mut out, part, resp);
        }
        out
    }

    /// Async [`Client::get_many`].
    pub async fn get_many_async(
        &self,
        keys: &[&[u8]],
        timeout: Duration,
    ) -> Vec<Result<Option<ObjectRef>>> {
        let (mut out, missing) = self.get_many_local(keys);
        let deadline = Deadline::after(timeout);
        for part in missing.chunks(proto::MAX_GET_MANY) {
            let req = Request::GetMany {
                keys: part.iter().map(|&(_, k)| k).collect(),
                timeout_ms: deadline.left_ms(),
            };
            let resp = self.inner.conn.call_async(&req).await;
            self.get_many_finish(&mut out, part, resp);
        }
        out
    }

    #[allow(clippy::type_complexity)]
    fn get_many_local(
        &self,
        keys: &[&[u8]],
    ) -> (Vec<Result<Option<ObjectRef>>>, Vec<(usize, Key)>) {
        let mut out = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            match Key::new(k) {
                Err(e) => out.push(Err(e)),
                Ok(key) => match self.try_hit(&key, key.hash()) {
                    Ok(Some(o)) => out.push(Ok(Some(o))),
                    Ok(None) => {
                        out.push(Ok(None));
                        missing.push((i, key));
                    }
                    Err(e) => out.push(Err(e)),
                },
            }
        }
        (out, missing)
    }

    fn get_many_finish(
        &self,
        out: &mut [Result<Option<ObjectRef>>],
        missing: &[(usize, Key)],
        resp: Result<Response>,
    ) {
        match resp {
            Ok(Response::Statuses(st)) if st.len() == missing.len() => {
                for (&(i, key), s) in missing.iter().zip(st) {
                    out[i] = match s {
                        Ok(()) => self.try_hit(&key, key.hash()),
                        // Missing; with a reason, the wait ended without it (its creator
                        // gave up): an error.
                        Err((Code::NotFound, m)) if m.is_empty() => Ok(None),
                        Err((c, m)) => Err(Error::from_code(c, m)),
                    };
                }
            }
            Ok(other) => {
                let msg = format!("{:?}", unexpected(other));
                for &(i, _) in missing {
                    out[i] = Err(Error::Protocol(msg.clone()));
                }
            }
            Err(e) => {
                let (c, m) = (e.code(), e.message());
                for &(i, _) in missing {
                    out[i] = Err(Error::from_code(c, m.clone()));
                }
            }
        }
    }

    /// Creates an object of `data_len + meta_len` bytes to be written in place and sealed.
    pub fn create(&self, key: &[u8], data_len: usize, meta_len: usize) -> Result<WriteObject> {
        self.create_with(key, data_len, meta_len, 0)
    }

    /// Async [`Client::create`].
    pub async fn create_async(
        &self,
        key: &[u8],
        data_len: usize,
        meta_len: usize,
    ) -> Result<WriteObject> {
        let key = Key::new(key)?;
        let resp = self
            .inner
            .conn
            .call_async(&Request::Create {
                key,
                data_len: data_len as u64,
                meta_len: meta_len as u64,
                flags: 0,
            })
            .await?;
        self.finish_create(key, data_len, meta_len, resp)
    }

    pub(crate) fn create_with(
        &self,
        key: &[u8],
        data_len: usize,
        meta_len: usize,
        flags: u32,
    ) -> Result<WriteObject> {
        let key = Key::new(key)?;
        let resp = self.inner.conn.call(&Request::Create {
            key,
            data_len: data_len as u64,
            meta_len: meta_len as u64,
            flags,
        })?;
        self.finish_create(key, data_len, meta_len, resp)
    }

    fn finish_create(
        &self,
        key: Key,
        data_len: usize,
        meta_len: usize,
        resp: Response,
    ) -> Result<WriteObject> {
        let Response::Created { seg, offset, .. } = resp else {
            return Err(unexpected(resp));
        };
        let abort = |e: Error| {
            let _ = self.inner.conn.call(&Request::Abort { key });
            e
        };
        if !self.inner.writer {
            return Err(abort(Error::PermissionDenied("read-only client".into())));
        }
        let (backing, base, len) = self.segment(seg).map_err(abort)?;
        let end = offset as usize + data_len + meta_len;
        if end > len {
            if let Backing::Cached(pos) = backing {
                self.inner.segs[pos].users.fetch_sub(1, Ordering::Release);
            }
            return Err(abort(Error::Incompatible(
                "create location outside its segment".into(),
            )));
        }
        Ok(WriteObject {
            inner: self.inner.clone(),
            key,
            backing,
            // SAFETY: offset + lengths checked against the mapping above.
            ptr: unsafe { base.add(offset as usize) },
            data_len,
            meta_len,
            done: false,
        })
    }

    /// Stores `data` under `key`: inline in one round trip when small, else create, write in
    /// place, seal.
    pub fn put(&self, key: &[u8], data: &[u8]) -> Result<()> {
        self.put_with(key, data, PutOptions::default())
    }

    /// [`Client::put`] with metadata and flags.
    pub fn put_with(&self, key: &[u8], data: &[u8], opts: PutOptions<'_>) -> Result<()> {
        self.put_flags(key, data, opts.metadata, opts.flags())
    }

    pub(crate) fn put_flags(&self, key: &[u8], data: &[u8], meta: &[u8], flags: u32) -> Result<()> {
        let k = Key::new(key)?;
        if data.len() + meta.len() <= self.inner.info.inline_max as usize {
            let r = self.inner.conn.call(&Request::Put(PutItem {
                key: k,
                flags,
                meta,
                data,
            }))?;
            return expect_done(r);
        }
        let mut w = self
            .create_with(key, data.len(), meta.len(), flags)
            .map_err(|e| mismatch_first(e, &k, data, flags))?;
        w.data_mut().copy_from_slice(data);
        w.metadata_mut().copy_from_slice(meta);
        w.seal()
    }

    /// Async [`Client::put_with`]. Large objects are written on the calling thread.
    pub async fn put_async(&self, key: &[u8], data: &[u8], opts: PutOptions<'_>) -> Result<()> {
        self.put_flags_async(key, data, opts.metadata, opts.flags())
            .await
    }

    pub(crate) async fn put_flags_async(
        &self,
        key: &[u8],
        data: &[u8],
        meta: &[u8],
        flags: u32,
    ) -> Result<()> {
        let k = Key::new(key)?;
        if data.len() + meta.len() <= self.inner.info.inline_max as usize {
            let r = self
                .inner
                .conn
                .call_async(&Request::Put(PutItem {
                    key: k,
                    flags,
                    meta,
                    data,
                }))
                .await?;
            return expect_done(r);
        }
        let resp = self
            .inner
            .conn
            .call_async(&Request::Create {
                key: k,
                data_len: data.len() as u64,
                meta_len: meta.len() as u64,
                flags,
            })
            .await?;
        let mut w = self
            .finish_create(k, data.len(), meta.len(), resp)
            .map_err(|e| mismatch_first(e, &k, data, flags))?;
        w.data_mut().copy_from_slice(data);
        w.metadata_mut().copy_from_slice(meta);
        w.seal_async().await
    }

    /// Stores many objects. Small ones travel inline, batched into as few round trips as the
    /// frame limit allows; large ones go through create/seal. One result per item: partial
    /// success is normal.
    pub fn put_many(&self, items: &[(&[u8], &[u8])]) -> Vec<Result<()>> {
        let mut out: Vec<Option<Result<()>>> = (0..items.len()).map(|_| None).collect();
        for (batch, idx) in self.plan_batches(items, &mut out) {
            match self.inner.conn.call(&Request::PutMany(batch)) {
                Ok(r) => self.fill_statuses(&mut out, &idx, r),
                Err(e) => fill_err(&mut out, &idx, &e),
            }
        }
        self.finish_put_many(items, out)
    }

    /// Async [`Client::put_many`]: every wait is awaited, including the create and seal of the
    /// large items (above the inline limit), which are written on the calling thread.
    pub async fn put_many_async(&self, items: &[(&[u8], &[u8])]) -> Vec<Result<()>> {
        let mut out: Vec<Option<Result<()>>> = (0..items.len()).map(|_| None).collect();
        for (batch, idx) in self.plan_batches(items, &mut out) {
            match self.inner.conn.call_async(&Request::PutMany(batch)).await {
                Ok(r) => self.fill_statuses(&mut out, &idx, r),
                Err(e) => fill_err(&mut out, &idx, &e),
            }
        }
        let mut done = Vec::with_capacity(items.len());
        for (r, (k, d)) in out.into_iter().zip(items) {
            done.push(match r {
                Some(r) => r,
                None => self.put_async(k, d, PutOptions::default()).await,
            });
        }
        done
    }

    #[allow(clippy::type_complexity)]
    fn plan_batches<'a>(
        &self,
        items: &[(&'a [u8], &'a [u8])],
        out: &mut [Option<Result<()>>],
    ) -> Vec<(Vec<PutItem<'a>>, Vec<usize>)> {
        let budget = proto::MAX_BODY as usize / 2;
        let inline_max = self.inner.info.inline_max as usize;
        let mut batches = Vec::new();
        let (mut cur, mut idx, mut bytes) = (Vec::new(), Vec::new(), 0usize);
        for (i, (k, d)) in items.iter().enumerate() {
            if d.len() > inline_max {
                continue; // put individually below
            }
            let key = match Key::new(k) {
                Ok(k) => k,
                Err(e) => {
                    out[i] = Some(Err(e));
                    continue;
                }
            };
            if (bytes + d.len() + 80 > budget || cur.len() >= proto::MAX_PUT_MANY)
                && !cur.is_empty()
            {
                batches.push((std::mem::take(&mut cur), std::mem::take(&mut idx)));
                bytes = 0;
            }
            bytes += d.len() + 80;
            cur.push(PutItem {
                key,
                flags: 0,
                meta: &[],
                data: d,
            });
            idx.push(i);
        }
        if !cur.is_empty() {
            batches.push((cur, idx));
        }
        batches
    }

    fn fill_statuses(&self, out: &mut [Option<Result<()>>], idx: &[usize], r: Response) {
        match r {
            Response::Statuses(st) if st.len() == idx.len() => {
                for (&i, s) in idx.iter().zip(st) {
                    out[i] = Some(status_to_result(s));
                }
            }
            other => fill_err(out, idx, &unexpected(other)),
        }
    }

    fn finish_put_many(
        &self,
        items: &[(&[u8], &[u8])],
        out: Vec<Option<Result<()>>>,
    ) -> Vec<Result<()>> {
        out.into_iter()
            .zip(items)
            .map(|(r, (k, d))| r.unwrap_or_else(|| self.put(k, d)))
            .collect()
    }

    /// Stores `data` under its CIDv1 (raw codec, sha2-256) and returns the binary CID. Storing
    /// content that is already present is a success.
    pub fn put_content(&self, data: &[u8]) -> Result<Vec<u8>> {
        let cid = crate::cid::cid_v1_raw(data);
        match self.put(&cid, data) {
            Ok(()) | Err(Error::AlreadyExists(_)) => Ok(cid),
            Err(e) => Err(e),
        }
    }

    /// Async [`Client::put_content`].
    pub async fn put_content_async(&self, data: &[u8]) -> Result<Vec<u8>> {
        let cid = crate::cid::cid_v1_raw(data);
        match self.put_async(&cid, data, PutOptions::default()).await {
            Ok(()) | Err(Error::AlreadyExists(_)) => Ok(cid),
            Err(e) => Err(e),
        }
    }

    /// Whether a sealed object is stored under `key` (in any tier).
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        let key = Key::new(key)?;
        if self.inner.index.lookup(&key, key.hash()).is_some() {
            // A stopped or replaced coordinator's index is not an answer.
            self.check_alive()?;
            return Ok(true);
        }
        match self.inner.conn.call(&Request::Contains { key })? {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes `key`. New gets miss at once; the memory is reused when the last pin goes.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let key = Key::new(key)?;
        expect_done(self.inner.conn.call(&Request::Delete { key })?)
    }

    /// Async [`Client::delete`].
    pub async fn delete_async(&self, key: &[u8]) -> Result<()> {
        let key = Key::new(key)?;
        expect_done(self.inner.conn.call_async(&Request::Delete { key }).await?)
    }

    /// Lists every sealed object in the hot tier.
    pub fn list(&self) -> Result<Vec<ListEntry>> {
        let mut all = Vec::new();
        let mut cursor = 0;
        loop {
            match self.inner.conn.call(&Request::List {
                cursor,
                limit: 4096,
            })? {
                Response::List { entries, next } => {
                    all.extend(entries);
                    if next == 0 {
                        return Ok(all);
                    }
                    cursor = next;
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Async [`Client::list`].
    pub async fn list_async(&self) -> Result<Vec<ListEntry>> {
        let mut all = Vec::new();
        let mut cursor = 0;
        loop {
            match self
                .inner
                .conn
                .call_async(&Request::List {
                    cursor,
                    limit: 4096,
                })
                .await?
            {
                Response::List { entries, next } => {
                    all.extend(entries);
                    if next == 0 {
                        return Ok(all);
                    }
                    cursor = next;
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// Named counters of the store (see `docs/operations.md`).
    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        match self.inner.conn.call(&Request::Stats)? {
            Response::Stats(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Async [`Client::stats`].
    pub async fn stats_async(&self) -> Result<Vec<(String, u64)>> {
        match self.inner.conn.call_async(&Request::Stats).await? {
            Response::Stats(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    /// Async [`Client::contains`].
    pub async fn contains_async(&self, key: &[u8]) -> Result<bool> {
        let key = Key::new(key)?;
        if self.inner.index.lookup(&key, key.hash()).is_some() {
            // A stopped or replaced coordinator's index is not an answer.
            self.check_alive()?;
            return Ok(true);
        }
        match self
            .inner
            .conn
            .call_async(&Request::Contains { key })
            .await?
        {
            Response::Bool(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Number of pins this client holds (live [`ObjectRef`]s).
    pub fn pinned(&self) -> usize {
        self.inner.lease.pinned()
    }
}

fn fill_err(out: &mut [Option<Result<()>>], idx: &[usize], e: &Error) {
    for &i in idx {
        out[i] = Some(Err(Error::from_code(e.code(), e.message())));
    }
}
