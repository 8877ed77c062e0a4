//! The coordinator's state: object table, index writer, memory, clients, eviction and deferred
//! reclamation. One `Store` per coordinator, behind a mutex held only for the duration of one
//! request (never across an await), which makes the coordinator the index's single writer.

use super::memory::{Alloc, AllocError, FillTarget, Memory, ReadView};
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::index::{
    Entry, IndexRef, IndexWriter, InsertError, FLAG_ARROW, FLAG_EPHEMERAL, FLAG_VALIDATED,
};
use crate::key::Key;
use crate::layout::{hdr, Header};
use crate::pins::{self, Lease, LeaseFault};
use crate::policy::EvictionPolicy;
use crate::proto::{
    ListEntry, PutItem, Status, PUT_ARROW, PUT_DURABLE, PUT_EPHEMERAL, PUT_IPFS, PUT_VERIFY_CID,
};
use crate::shm::{self, human_bytes, Mapping};
use crate::sync::AtomicU64;
use crate::tier::catalog::{Catalog, CatalogEntry, StorageTier};
use crate::tier::ipfs::Ipfs;
use crate::tier::warm::{Loaded, Source, Warm};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;

/// A waiting get (or scan): woken when a key it waits for is sealed, promoted, or abandoned
/// by its creator (aborted, or the creator disconnected before sealing). Thread-safe.
pub(crate) struct Waiter {
    notify: Notify,
    abandoned: std::sync::Mutex<Vec<Key>>,
}

impl Waiter {
    pub(crate) fn new() -> Arc<Waiter> {
        Arc::new(Waiter {
            notify: Notify::new(),
            abandoned: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn notify_one(&self) {
        self.notify.notify_one();
    }

    /// Resolves at the next wake-up (one stored if it came before this was polled).
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Keys whose creation was abandoned since the last call.
    pub(crate) fn take_abandoned(&self) -> Vec<Key> {
        std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

enum State {
    /// Allocated, being written by its creator; invisible to readers.
    Created { owner: u64 },
    /// Sealed and published in the index at `slot`.
    Sealed { slot: u32 },
}

struct Object {
    key: Key,
    alloc: Alloc,
    data_len: u64,
    meta_len: u64,
    flags: u32,
    state: State,
    /// Created through the Plasma front-end: its life (eviction, deletion) is decided by the
    /// Plasma state machine, never by the native policy.
    plasma_owned: bool,
    /// A native object that Plasma clients currently hold: not evictable or deletable natively.
    plasma_held: bool,
    /// Promoted from the warm tier, which still holds the same bytes: evicting it writes nothing.
    from_warm: bool,
    /// Written to the warm tier by its put (durable or write-through): evicting it writes
    /// nothing either.
    written: bool,
    /// When it was published (or adopted): background eviction spares young objects, so that
    /// a get that just promoted an object finds it.
    sealed_at: std::time::Instant,
    /// Fetched from IPFS (read-through): the catalog records its source as "ipfs".
    from_ipfs: bool,
    /// An Arrow object whose bytes the coordinator validated in full, once no client could
    /// legitimately write them any more: published with [`FLAG_VALIDATED`].
    validated: bool,
    /// Non-zero while its creator's seal waits for the validation of its bytes outside the store
    /// lock (the token of that seal): the creator can no longer abort it, and its disconnection
    /// does not free it.
    sealing: u64,
}

/// How long background eviction leaves a newly published object alone.
const YOUNG: std::time::Duration = std::time::Duration::from_millis(250);

/// A put whose acknowledgement waits for its synced warm-tier write: await `ticket` outside
/// the store lock, then call [`Store::finish_persist`].
pub(crate) struct Persist {
    pub id: u64,
    pub key: Key,
    pub ticket: crate::tier::warm::Ticket,
}

/// What a demotion did.
enum Demoted {
    /// The warm tier holds the object (queued or in a file).
    Held,
    /// The object is not demoted (ephemeral, Plasma-owned, no warm tier).
    NotNeeded,
    /// The warm tier refused it: it cannot write now (the reason).
    Refused(String),
}

/// Owner recorded for objects being created through the Plasma front-end.
const PLASMA_OWNER: u64 = u64::MAX;
/// Owner recorded for objects being promoted from the warm tier.
const PROMOTER: u64 = u64::MAX - 1;

/// What the warm tier can do for a key missing from shared memory.
pub(crate) enum Promotion {
    /// The warm tier does not hold it (or it may not be tried again).
    No,
    /// A promotion of it is under way; its end notifies the key's waiters.
    InProgress,
    /// Load it with this (outside the store lock), then call [`Store::finish_promotion`].
    Start(Source),
    /// No tier holds it, but it is a CID: fetch it from IPFS (outside the store lock), then
    /// [`Store::begin_ipfs_fill`] and [`Store::finish_ipfs_fill`], or [`Store::fail_fetch`].
    Fetch(Arc<Ipfs>, ::cid::Cid),
}

/// Why recent fetches from IPFS failed, kept for the gets that waited for them (at most this
/// many keys; a later get of the key fetches again).
const MAX_FETCH_FAILURES: usize = 4096;

/// Prefetch bookkeeping: fetches no get asked for, and whether one did later.
#[derive(Default)]
struct Prefetched {
    /// Keys being prefetched that no get has asked for yet.
    pending: HashSet<Key>,
    /// Objects published by a prefetch that no get has hit yet.
    unused: HashSet<u64>,
}

/// Where a Plasma allocation lives, with what the Plasma front-end needs to map it.
pub(crate) struct PlasmaPlace {
    pub alloc: Alloc,
    pub seg_size: u64,
}

/// A sealed native object as the Plasma front-end sees it.
pub(crate) struct PlasmaForeign {
    pub place: PlasmaPlace,
    pub data_len: u64,
    pub meta_len: u64,
}

/// Why a Plasma allocation failed.
pub(crate) enum PlasmaAllocError {
    Exists,
    NoSpace,
}

/// What happened to a key, as the Plasma front-end needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyEvent {
    /// A native client sealed it.
    Sealed,
    /// Its native creator aborted it, or disconnected before sealing it.
    Abandoned,
}

/// Called (under the store lock) when a native client seals or abandons an object whose key
/// could be a Plasma id; must not block or take the store lock.
pub(crate) type SealHook = Box<dyn Fn(Key, KeyEvent) + Send>;

/// An object whose slot is retired but whose memory may still be pinned.
struct Retired {
    alloc: Alloc,
    pin: u64,
}

struct ClientState {
    lease_name: String,
    lease_map: Mapping,
    /// Pin and hit-ring words of the lease page, as the coordinator created it (the page's own
    /// header is client-writable and never taken as the truth).
    pins: usize,
    hits: usize,
    hits_seen: u64,
    writer: bool,
    creating: HashSet<Key>,
    /// Told when the store ends the session (a bad lease page): the connection's task closes it.
    revoked: Arc<Notify>,
}

impl ClientState {
    fn lease(&self) -> Lease<'_> {
        // SAFETY: the mapping is the whole lease page (page-aligned, a multiple of 8 bytes), of
        // `lease_bytes(pins, hits)` bytes, created at connect and alive as long as `self`. The
        // client writes it concurrently: every word is read with an atomic load.
        let words = unsafe {
            std::slice::from_raw_parts(
                self.lease_map.as_ptr() as *const AtomicU64,
                self.lease_map.len() / 8,
            )
        };
        Lease::with_sizes(words, self.pins, self.hits).expect("the page was created this size")
    }
}

/// Counters reported by `stats`.
#[derive(Default)]
pub(crate) struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    pub deletes: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub deferred_frees: u64,
    pub aborted: u64,
    pub store_full: u64,
    /// Gets of keys missing from shared memory that the warm tier held.
    pub warm_hits: u64,
    /// Gets of keys that no tier held.
    pub warm_misses: u64,
    /// Catalog checkpoints written.
    pub catalog_checkpoints: u64,
    /// Objects taken over from the previous coordinator's shared memory at start.
    pub adopted: u64,
    /// Sessions the coordinator ended because the client's lease page was invalid.
    pub revoked_sessions: u64,
    /// Objects fetched from IPFS and published (prefetched ones included), and their bytes.
    pub ipfs_fetches: u64,
    pub ipfs_fetched_bytes: u64,
    /// Fetches from IPFS that failed (nothing was cached).
    pub ipfs_fetch_errors: u64,
    /// Objects added to the IPFS node by puts, and adds that failed.
    pub ipfs_adds: u64,
    pub ipfs_add_errors: u64,
    /// Objects prefetched from IPFS; of those, asked for by a get later (used) or evicted or
    /// deleted without one (wasted).
    pub prefetched: u64,
    pub prefetch_used: u64,
    pub prefetch_wasted: u64,
    /// Arrow objects validated in full at seal (and their bytes).
    pub arrow_validated: u64,
    pub arrow_validated_bytes: u64,
    /// Arrow objects refused at seal (or, from a lower tier, published as raw bytes) because
    /// they failed validation.
    pub arrow_rejected: u64,
    /// Time spent validating created objects at seal, in microseconds.
    pub arrow_validation_us: u64,
}

/// Most entries in one `List` reply (about 100 bytes each).
pub(crate) const LIST_PAGE: usize = 1024;
/// Most index slots one `List` request reads (128 bytes each).
pub(crate) const LIST_SLOTS: usize = 16 << 10;

/// Catalog access counts sampled per hit harvest (every few milliseconds).
const CATALOG_TOUCHES: u64 = 1024;
/// How often every lease page's pins are checked when no reclamation or eviction did it.
const LEASE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often the catalog's changes are written.
const CATALOG_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn no_catalog() -> Error {
    Error::InvalidArgument(
        "this store keeps no catalog (it runs without a warm tier: --no-warm or plasma mode)"
            .into(),
    )
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A client's upsert `new` of a key the catalog already holds as `old` (see
/// [`Store::catalog_upsert`]).
fn merge_entry(old: &CatalogEntry, mut new: CatalogEntry) -> CatalogEntry {
    new.added_at = old.added_at;
    new.last_accessed = old.last_accessed.max(new.last_accessed);
    new.access_count = old.access_count;
    new.heat_score = old.heat_score;
    new.mimetype = new.mimetype.or_else(|| old.mimetype.clone());
    new.filename = new.filename.or_else(|| old.filename.clone());
    new.source = new.source.or_else(|| old.source.clone());
    if new.properties.is_empty() {
        new.properties = old.properties.clone();
    }
    new
}

/// How a scan request proceeds.
pub(crate) enum ScanStart {
    /// The object is in shared memory: the client scans it there, zero-copy.
    Hot,
    /// No tier holds it.
    Missing,
    /// The result of the same scan is already published under this key.
    Ready(Key),
    /// The same scan is under way; its result will be published under this key.
    InProgress(Key),
    /// Run this (outside the store lock), then [`Store::finish_scan`].
    Start(Source, Key),
}

/// What a seal needs next.
pub(crate) enum Sealing {
    /// Published.
    Done,
    /// A durable put: published once its warm-tier write is synced (await it outside the
    /// store lock, then [`Store::finish_persist`]).
    Persist(Persist),
    /// An Arrow object: run [`PendingSeal::validate`] outside the store lock, then
    /// [`Store::finish_seal`].
    Validate(PendingSeal),
}

/// An Arrow object whose creator asked to seal it, waiting for its validation. It must reach
/// [`Store::finish_seal`] (until then the object is neither published nor freed).
pub(crate) struct PendingSeal {
    key: Key,
    id: u64,
    /// Tells this seal from a later one of an object that reused the key (and so the id).
    token: u64,
    view: ReadView,
    /// How long the validation took.
    micros: u64,
}

impl PendingSeal {
    /// Validates the object's data in full (any thread, no lock held).
    pub(crate) fn validate(&mut self) -> Result<()> {
        let t = std::time::Instant::now();
        self.view.populate();
        let r = validate_arrow(self.view.bytes());
        self.micros = t.elapsed().as_micros() as u64;
        r
    }
}

/// Validates `bytes` as an Arrow IPC file (see [`crate::arrow::validate_ipc_file`]).
pub(crate) fn validate_arrow(bytes: &[u8]) -> Result<()> {
    crate::arrow::validate_ipc_file(bytes)
}

/// Bytes from a lower tier (or a scan) to publish, with the outcome of their validation.
pub(crate) struct Checked {
    pub(crate) loaded: Loaded,
    /// An Arrow object whose data validated in full.
    pub(crate) arrow_valid: bool,
}

/// Validates an object loaded from a lower tier, outside the store lock (on the coordinator's
/// private copy of the bytes). An Arrow object that fails is published as raw bytes when
/// `strict` is false (bytes read from a warm file: `get` still returns them, `get_arrow` says
/// they are not Arrow) and refused when `strict` (a table the coordinator encoded itself).
pub(crate) fn check_loaded(mut l: Loaded, key: &Key, strict: bool) -> Result<Checked> {
    if l.flags & PUT_ARROW == 0 {
        return Ok(Checked {
            loaded: l,
            arrow_valid: false,
        });
    }
    match validate_arrow(&l.bytes[..l.data_len]) {
        Ok(()) => Ok(Checked {
            loaded: l,
            arrow_valid: true,
        }),
        Err(e) if strict => Err(invalid_arrow(key, e)),
        Err(e) => {
            tracing::warn!("{key}: its Arrow data is invalid, published as raw bytes: {e}");
            l.flags &= !PUT_ARROW;
            Ok(Checked {
                loaded: l,
                arrow_valid: false,
            })
        }
    }
}

/// The error an invalid Arrow object gets at seal.
fn invalid_arrow(key: &Key, e: Error) -> Error {
    Error::Arrow(format!(
        "{key} is not a valid Arrow IPC file and was not stored: {}",
        e.message()
    ))
}

/// Checks an item of an inline put before it reaches the store lock: `Ok(true)` for an Arrow
/// item whose data validated in full, `Ok(false)` for a raw item, `Err` for an invalid Arrow
/// item (refused). The bytes are the request's own copy, which no other process can write.
pub(crate) fn check_put_item(it: &PutItem<'_>) -> Result<bool> {
    if it.flags & PUT_ARROW == 0 {
        return Ok(false);
    }
    validate_arrow(it.data)
        .map(|_| true)
        .map_err(|e| invalid_arrow(&it.key, e))
}

/// Hits per thousand lookups (0 when there were none).
fn ratio(hits: u64, misses: u64) -> u64 {
    (hits * 1000).checked_div(hits + misses).unwrap_or(0)
}

/// Outcome of a get on the coordinator.
pub(crate) enum Lookup {
    Present,
    Missing,
}

pub(crate) struct Store {
    pub(crate) store: String,
    pub(crate) shm_dir: PathBuf,
    pub(crate) boot_id: u64,
    pub(crate) inline_max: u32,
    mode: u32,
    pins_per_client: usize,
    hit_ring: usize,
    header: Header<'static>,
    index: IndexWriter<'static>,
    memory: Memory,
    keys: HashMap<Key, u64>,
    objects: HashMap<u64, Object>,
    next_object: u64,
    /// Tokens of seals waiting for validation.
    next_seal: u64,
    retired: Vec<Retired>,
    clients: HashMap<u64, ClientState>,
    next_client: u64,
    /// Clients (lease pages) at most: the lease pages' share of the memory limit.
    max_clients: usize,
    waiters: HashMap<Key, Vec<Arc<Waiter>>>,
    policy: Box<dyn EvictionPolicy>,
    live_bytes: u64,
    pub(crate) counters: Counters,
    seal_hook: Option<SealHook>,
    warm: Option<Warm>,
    promoting: HashSet<Key>,
    ipfs: Option<Arc<Ipfs>>,
    fetch_failures: HashMap<Key, Error>,
    prefetched: Prefetched,
    persist_on_exit: bool,
    catalog: Option<Catalog>,
    last_checkpoint: std::time::Instant,
    last_lease_check: std::time::Instant,
    warm_partition: crate::tier::catalog::PartitionStrategy,
    /// Lease pages of clients of a previous coordinator that still hold them (adoption).
    orphans: Vec<super::adopt::Orphan>,
    last_orphan_check: std::time::Instant,
    durability: Durability,
    /// Objects of durable puts waiting for their warm-tier write (invisible until then).
    persisting: HashSet<u64>,
    /// Why the last promotion of a key failed for want of hot memory (told to the gets that
    /// waited for it, instead of a silent miss); cleared when it is tried again.
    promotion_failed: HashMap<Key, (crate::error::Code, String)>,
    /// Objects chosen for eviction whose copy is on its way to a warm file: they stay live in
    /// shared memory (served, and adopted after a crash) until it is there, then retire.
    demoting: HashMap<u64, u64>,
    demoting_bytes: u64,
    /// Adopted Arrow objects that were validated before the crash, waiting to be validated
    /// again (in the background, outside the store lock): until then their index entries
    /// lack [`FLAG_VALIDATED`], so readers validate them.
    revalidate: std::collections::VecDeque<u64>,
}

/// What one eviction step did.
#[derive(Debug, PartialEq, Eq)]
enum Evicted {
    /// An object was retired: its memory is free (or will be once unpinned).
    Freed,
    /// An object's demotion was queued: its memory frees when the write is done.
    Started,
    /// Nothing could be evicted.
    Nothing,
}

/// The longest an allocation waits for demotions in flight to reach the warm tier.
const DEMOTION_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often orphaned lease pages are checked for their holders.
const ORPHAN_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

impl Store {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: String,
        shm_dir: PathBuf,
        boot_id: u64,
        cfg: &crate::config::Config,
        header: Header<'static>,
        index: IndexWriter<'static>,
        memory: Memory,
        policy: Box<dyn EvictionPolicy>,
    ) -> Store {
        Store {
            store,
            shm_dir,
            boot_id,
            inline_max: cfg.inline_max,
            mode: cfg.mode,
            pins_per_client: cfg.pins_per_client,
            hit_ring: cfg.hit_ring,
            header,
            index,
            memory,
            keys: HashMap::new(),
            objects: HashMap::new(),
            next_object: 1,
            next_seal: 0,
            retired: Vec::new(),
            clients: HashMap::new(),
            next_client: 1,
            max_clients: usize::MAX,
            waiters: HashMap::new(),
            policy,
            live_bytes: 0,
            counters: Counters::default(),
            seal_hook: None,
            warm: None,
            promoting: HashSet::new(),
            ipfs: None,
            fetch_failures: HashMap::new(),
            prefetched: Prefetched::default(),
            persist_on_exit: cfg.persist_on_exit,
            catalog: None,
            last_checkpoint: std::time::Instant::now(),
            last_lease_check: std::time::Instant::now(),
            warm_partition: cfg.warm_partition,
            orphans: Vec::new(),
            last_orphan_check: std::time::Instant::now(),
            durability: cfg.durability,
            persisting: HashSet::new(),
            promotion_failed: HashMap::new(),
            demoting: HashMap::new(),
            demoting_bytes: 0,
            revalidate: std::collections::VecDeque::new(),
        }
    }

    // ----- adoption ------------------------------------------------------------------------

    /// Records the objects an adopted index kept (`(slot, key, entry)`, their memory already
    /// claimed) as sealed objects, and tells the policy about them. An entry whose key or
    /// object id an earlier one has is removed (index slot and memory). Returns how many were.
    pub(crate) fn adopt_objects(&mut self, kept: Vec<(u32, Key, Entry)>) -> usize {
        self.keys.reserve(kept.len());
        self.objects.reserve(kept.len());
        let mut duplicates = 0;
        for (slot, key, e) in kept {
            let len = e.data_len + e.meta_len;
            if self.keys.contains_key(&key) || self.objects.contains_key(&e.object_id) {
                self.index.remove(slot);
                self.memory.free(Alloc {
                    seg: e.seg,
                    offset: e.offset,
                    len,
                });
                duplicates += 1;
                continue;
            }
            let mut flags = 0;
            if e.flags & FLAG_ARROW != 0 {
                flags |= PUT_ARROW;
            }
            if e.flags & FLAG_VALIDATED != 0 {
                // Validated before the crash, but the data segments outlived the coordinator
                // and clients may have written them since: not trusted until validated again.
                // In place (pins of the previous run's clients carry the entry's seq).
                self.index
                    .update_flags(slot, e.object_id, 0, FLAG_VALIDATED);
                if e.flags & FLAG_ARROW != 0 {
                    self.revalidate.push_back(e.object_id);
                }
            }
            if e.flags & FLAG_EPHEMERAL != 0 {
                flags |= PUT_EPHEMERAL;
            }
            if e.object_id & (1 << 63) != 0 {
                self.next_object = self.next_object.max((e.object_id & !(1 << 63)) + 1);
            }
            self.keys.insert(key, e.object_id);
            self.objects.insert(
                e.object_id,
                Object {
                    key,
                    alloc: Alloc {
                        seg: e.seg,
                        offset: e.offset,
                        len,
                    },
                    data_len: e.data_len,
                    meta_len: e.meta_len,
                    flags,
                    state: State::Sealed { slot },
                    plasma_owned: false,
                    plasma_held: false,
                    from_warm: false,
                    written: false,
                    sealed_at: std::time::Instant::now(),
                    // Where it came from is in its catalog row, if anywhere.
                    from_ipfs: false,
                    // Clients may have written the bytes since they were validated (before
                    // the crash or after it): validated again before readers may skip it.
                    validated: false,
                    sealing: 0,
                },
            );
            self.live_bytes += len;
            self.policy.on_insert(e.object_id, len);
            self.counters.adopted += 1;
        }
        self.header.set(hdr::LIVE_OBJECTS, self.index.live() as u64);
        self.header.set(hdr::LIVE_BYTES, self.live_bytes);
        duplicates
    }

    /// Takes the lease pages that clients of the previous coordinator still hold: their pins
    /// are honoured, and the adopted free space stays held back until they are all gone.
    /// `max_lease_id` is the highest lease id found, so new clients never reuse a name.
    pub(crate) fn set_orphans(&mut self, orphans: Vec<super::adopt::Orphan>, max_lease_id: u64) {
        self.next_client = self.next_client.max(max_lease_id + 1);
        if !orphans.is_empty() {
            self.memory.taint_free_space();
            tracing::info!(
                "{} client(s) of the previous coordinator still hold their lease pages: their pins are honoured and {} of free space is held back until they are gone",
                orphans.len(),
                human_bytes(self.memory.tainted_bytes())
            );
        }
        self.orphans = orphans;
    }

    /// The next adopted Arrow object to validate again, if any: run [`PendingSeal::validate`]
    /// outside the store lock, then [`Store::finish_revalidation`]. Objects gone or replaced
    /// meanwhile are skipped.
    pub(crate) fn next_revalidation(&mut self) -> Option<PendingSeal> {
        while let Some(id) = self.revalidate.pop_front() {
            let Some(o) = self.objects.get(&id) else {
                continue;
            };
            if o.validated || o.flags & PUT_ARROW == 0 || !matches!(o.state, State::Sealed { .. }) {
                continue;
            }
            return Some(PendingSeal {
                key: o.key,
                id,
                token: 0,
                view: self.memory.read_view(o.alloc, o.data_len),
                micros: 0,
            });
        }
        None
    }

    /// Ends the validation of an adopted Arrow object: when its bytes are valid its index
    /// entry gets [`FLAG_VALIDATED`] back (readers skip their own validation again); when they
    /// are not, it is removed from the hot tier with a log line (a warm copy, if any, serves
    /// it from then on). Nothing happens if the object went away meanwhile.
    pub(crate) fn finish_revalidation(&mut self, p: PendingSeal, valid: Result<()>) {
        self.counters.arrow_validation_us += p.micros;
        let Some(o) = self.objects.get_mut(&p.id) else {
            return;
        };
        let State::Sealed { slot } = o.state else {
            return;
        };
        if o.key != p.key || o.validated {
            return;
        }
        match valid {
            Ok(()) => {
                o.validated = true;
                self.counters.arrow_validated += 1;
                self.counters.arrow_validated_bytes += o.data_len;
                self.index.update_flags(slot, p.id, FLAG_VALIDATED, 0);
            }
            Err(e) => {
                tracing::warn!(
                    "adoption: {} is not a valid Arrow object any more ({e}); removed from the hot tier",
                    p.key
                );
                self.counters.arrow_rejected += 1;
                let in_warm = self.warm.as_ref().is_some_and(|w| w.contains(&p.key));
                if let Some(c) = &mut self.catalog {
                    c.set_tier(
                        &p.key,
                        if in_warm {
                            StorageTier::Warm
                        } else {
                            StorageTier::None
                        },
                    );
                }
                self.retire(p.id);
                self.policy.on_remove(p.id);
                self.reclaim();
            }
        }
    }

    /// Drops orphaned lease pages whose client processes have let go of them; when the last
    /// goes, the held-back space returns to the allocator.
    fn check_orphans(&mut self) {
        if self.orphans.is_empty() || self.last_orphan_check.elapsed() < ORPHAN_CHECK_EVERY {
            return;
        }
        self.last_orphan_check = std::time::Instant::now();
        let dir = self.shm_dir.clone();
        self.orphans.retain(|o| {
            let held = o.held();
            if !held {
                shm::unlink_segment(&dir, &o.name);
            }
            held
        });
        if self.orphans.is_empty() {
            let n = self.memory.release_taint();
            tracing::info!(
                "the clients of the previous coordinator are gone: {} of adopted free space is in use again",
                human_bytes(n)
            );
        }
    }

    // ----- clients -------------------------------------------------------------------------

    /// Bounds the clients connected at once (each holds a lease page in shared memory).
    pub(crate) fn set_max_clients(&mut self, n: usize) {
        self.max_clients = n;
    }

    /// Registers a connection: creates and maps its lease page. Returns (client id, lease name).
    pub(crate) fn connect(&mut self, writer: bool) -> Result<(u64, String)> {
        if self.clients.len() >= self.max_clients {
            return Err(Error::Busy(format!(
                "{} clients are connected, the most this store's memory limit leaves room for (each holds a {} lease page); retry later, or raise --memory or lower --pins-per-client",
                self.clients.len(),
                human_bytes(pins::lease_bytes(self.pins_per_client, self.hit_ring) as u64)
            )));
        }
        let id = self.next_client;
        self.next_client += 1;
        let name = shm::lease_name(&self.store, id);
        let bytes = pins::lease_bytes(self.pins_per_client, self.hit_ring);
        let fd = shm::create_segment(&self.shm_dir, &name, bytes as u64, self.mode)?;
        let map = match Mapping::map(&fd, bytes, shm::Access::ReadWrite, true) {
            Ok(m) => m,
            Err(e) => {
                shm::unlink_segment(&self.shm_dir, &name);
                return Err(e);
            }
        };
        // SAFETY: fresh, zeroed, page-aligned mapping of `bytes` bytes, alive while `map` is.
        let words =
            unsafe { std::slice::from_raw_parts(map.as_ptr() as *const AtomicU64, bytes / 8) };
        Lease::init(words, id, self.pins_per_client, self.hit_ring);
        self.clients.insert(
            id,
            ClientState {
                lease_name: name.clone(),
                lease_map: map,
                pins: self.pins_per_client,
                hits: self.hit_ring,
                hits_seen: 0,
                writer,
                creating: HashSet::new(),
                revoked: Arc::new(Notify::new()),
            },
        );
        Ok((id, name))
    }

    /// Notified (once, with a stored permit) when the store ends `client`'s session because
    /// its lease page is bad; the connection's task then closes the connection.
    pub(crate) fn revocation(&self, client: u64) -> Option<Arc<Notify>> {
        self.clients.get(&client).map(|c| c.revoked.clone())
    }

    /// The connection closed: its pins are dropped with its lease page, and what it created
    /// but never sealed is freed.
    pub(crate) fn disconnect(&mut self, client: u64) {
        let Some(c) = self.clients.remove(&client) else {
            return;
        };
        // Hits it made since the last harvest count like any others (a short-lived client,
        // such as one `cidcache get`, is often gone before the next harvest).
        let mut seen = c.hits_seen;
        let (policy, mut n) = (&mut self.policy, 0u64);
        let (unused, mut used) = (&mut self.prefetched.unused, 0u64);
        if c.lease().check_header(client).is_ok() {
            c.lease().drain_hits(&mut seen, |id| {
                policy.on_hit(id);
                used += unused.remove(&id) as u64;
                n += 1;
            });
        }
        self.counters.hits += n;
        self.counters.prefetch_used += used;
        self.drop_client(c);
        self.reclaim();
    }

    /// Frees what a departed client created but never sealed and discards its lease page
    /// (which drops its pins).
    fn drop_client(&mut self, c: ClientState) {
        for key in &c.creating {
            if let Some(id) = self.keys.remove(key) {
                if let Some(o) = self.objects.remove(&id) {
                    self.memory.free(o.alloc);
                    self.counters.aborted += 1;
                }
                if self.persisting.remove(&id) {
                    // Never acknowledged: its copy on the way to the warm tier goes too.
                    if let Some(w) = &self.warm {
                        w.invalidate(key);
                    }
                }
            }
            self.abandon(*key, true);
        }
        shm::unlink_segment(&self.shm_dir, &c.lease_name);
    }

    /// Ends the session of a client whose lease page failed a check: from now on its pins
    /// count for nothing, its unsealed objects are freed, and its connection is closed by its
    /// task. Nothing else is affected. Does not reclaim (callers are scanning pins).
    fn revoke(&mut self, client: u64, why: &LeaseFault) {
        let Some(c) = self.clients.remove(&client) else {
            return;
        };
        tracing::warn!("client {client}: ending its session, its lease page is invalid: {why}");
        self.counters.revoked_sessions += 1;
        c.revoked.notify_one();
        self.drop_client(c);
    }

    // ----- writes --------------------------------------------------------------------------

    pub(crate) fn check_writer(&self, client: u64) -> Result<()> {
        match self.clients.get(&client) {
            Some(c) if c.writer => Ok(()),
            Some(_) => Err(Error::PermissionDenied(
                "this client connected read-only; connect as a writer to create objects".into(),
            )),
            None => Err(Error::Disconnected("unknown client".into())),
        }
    }

    /// Allocates, evicting as needed.
    fn allocate(&mut self, len: u64) -> Result<Alloc> {
        let mut waited = std::time::Duration::ZERO;
        loop {
            match self.memory.alloc(len) {
                Ok(a) => return Ok(a),
                Err(AllocError::Fatal(e)) => {
                    if matches!(e, Error::StoreFull(_)) {
                        self.counters.store_full += 1;
                    }
                    return Err(e);
                }
                Err(AllocError::NeedSpace) => {
                    if self.reclaim() > 0 || self.settle_demotions() > 0 {
                        continue;
                    }
                    if self.memory.would_need_reservation(len) && self.memory.release_unused() > 0 {
                        continue;
                    }
                    // Evict only while what is already on its way out cannot make the room; and
                    // then a batch of objects at once, so that one warm file (and one fsync)
                    // carries many of them.
                    if self.demoting_bytes < len
                        && self.evict_ahead(len + self.headroom(), false)? != Evicted::Nothing
                    {
                        continue;
                    }
                    if self.memory.release_unused() > 0 || self.wait_for_demotions(&mut waited) {
                        continue;
                    }
                    self.counters.store_full += 1;
                    if let Some(why) = self.warm.as_ref().and_then(|w| w.failing()) {
                        return Err(Error::StoreFull(format!(
                            "no room for {} in the hot tier ({} used of {}), and objects cannot be evicted because {why}; free space for the warm tier or raise --memory",
                            human_bytes(len),
                            human_bytes(self.memory.used()),
                            human_bytes(self.memory.limit())
                        )));
                    }
                    return Err(Error::StoreFull(format!(
                        "no room for {} in the hot tier ({} used of {}, everything left is pinned or being written); release objects or raise --memory",
                        human_bytes(len),
                        human_bytes(self.memory.used()),
                        human_bytes(self.memory.limit())
                    )));
                }
            }
        }
    }

    fn new_object(
        &mut self,
        key: Key,
        data_len: u64,
        meta_len: u64,
        flags: u32,
        owner: u64,
    ) -> Result<u64> {
        if self.keys.contains_key(&key) {
            return Err(Error::AlreadyExists(format!(
                "{key} is already stored or being created"
            )));
        }
        let len = data_len
            .checked_add(meta_len)
            .ok_or_else(|| Error::InvalidArgument("object size overflows".into()))?;
        let alloc = self.allocate(len)?;
        // Ids derived from the key stay the same when a key is stored again, which is what
        // the policies' ghost histories need; a (2^-64) collision falls back to a counter.
        let mut id = key.hash() & !(1 << 63);
        if id == 0 || self.objects.contains_key(&id) {
            id = (1 << 63) | self.next_object;
            self.next_object += 1;
        }
        self.keys.insert(key, id);
        self.objects.insert(
            id,
            Object {
                key,
                alloc,
                data_len,
                meta_len,
                flags,
                state: State::Created { owner },
                plasma_owned: false,
                plasma_held: false,
                from_warm: false,
                written: false,
                sealed_at: std::time::Instant::now(),
                from_ipfs: false,
                validated: false,
                sealing: 0,
            },
        );
        Ok(id)
    }

    /// Create: allocate and hand out a writable location.
    pub(crate) fn create(
        &mut self,
        client: u64,
        key: Key,
        data_len: u64,
        meta_len: u64,
        flags: u32,
    ) -> Result<(u64, u64, u64)> {
        self.check_writer(client)?;
        self.check_warm_writable(flags)?;
        self.persist_wanted(flags)?;
        if flags & PUT_IPFS != 0 && flags & PUT_ARROW != 0 {
            return Err(Error::InvalidArgument(
                "an Arrow object cannot be added to IPFS; store its bytes as a raw object".into(),
            ));
        }
        let id = self.new_object(key, data_len, meta_len, flags, client)?;
        if let Some(c) = self.clients.get_mut(&client) {
            c.creating.insert(key);
        }
        let a = self.objects[&id].alloc;
        let size = self.memory.seg_size(a.seg).unwrap_or(0);
        Ok((a.seg, a.offset, size))
    }

    /// Seal an object the client created: publish it in the index; for an Arrow object, hand
    /// it to the coordinator for validation outside the store lock (then
    /// [`Store::finish_seal`]); for a durable put, start its warm write (the acknowledgement
    /// waits for it).
    pub(crate) fn seal(&mut self, client: u64, key: Key) -> Result<Sealing> {
        let id = *self
            .keys
            .get(&key)
            .ok_or_else(|| Error::NotFound(format!("{key} was never created (or was aborted)")))?;
        let o = &self.objects[&id];
        match o.state {
            State::Created { owner } if owner == client && o.sealing != 0 => {
                return Err(Error::AlreadyExists(format!(
                    "{key} is already being sealed"
                )))
            }
            State::Created { owner } if owner == client => {}
            State::Created { .. } => {
                return Err(Error::PermissionDenied(format!(
                    "{key} was created by another client"
                )))
            }
            State::Sealed { .. } => {
                return Err(Error::AlreadyExists(format!("{key} is already sealed")))
            }
        }
        if o.flags & PUT_VERIFY_CID != 0 {
            let data = &self.memory.bytes(o.alloc)[..o.data_len as usize];
            // On a mismatch the object stays unsealed: the creator may abort or rewrite it.
            crate::cid::verify(key.as_bytes(), data)?;
        }
        if self.persisting.contains(&id) {
            return Err(Error::AlreadyExists(format!(
                "{key} is already sealed and being written to the warm tier"
            )));
        }
        let durable = self.persist_wanted(o.flags)?;
        if o.flags & PUT_ARROW != 0 {
            // From here on the object is the coordinator's: the creator gave up writing it by
            // asking to seal (and its library dropped the only pointer it had). A durable one
            // starts its warm write once validated.
            if let Some(c) = self.clients.get_mut(&client) {
                c.creating.remove(&key);
            }
            return Ok(Sealing::Validate(self.begin_validation(id)));
        }
        if durable {
            // Stays in `creating` until persisted: a disconnect meanwhile frees it.
            return self.start_persist(id).map(Sealing::Persist);
        }
        if let Some(c) = self.clients.get_mut(&client) {
            c.creating.remove(&key);
        }
        self.publish(id).map(|_| Sealing::Done)
    }

    /// Ends the seal of an Arrow object with the outcome of its validation: publishes it (or,
    /// for a durable put, starts its warm write and returns what the acknowledgement waits
    /// for), or frees it and reports why (an invalid Arrow object is never published).
    pub(crate) fn finish_seal(
        &mut self,
        p: PendingSeal,
        valid: Result<()>,
    ) -> Result<Option<Persist>> {
        let PendingSeal {
            key,
            id,
            token,
            micros,
            ..
        } = p;
        self.counters.arrow_validation_us += micros;
        match self.objects.get_mut(&id) {
            Some(o) if o.sealing == token && matches!(o.state, State::Created { .. }) => {
                o.sealing = 0;
                match valid {
                    Ok(()) => {
                        o.validated = true;
                        let flags = o.flags;
                        match self.persist_wanted(flags) {
                            Ok(true) => self.start_persist(id).map(Some),
                            Ok(false) => self.publish(id).map(|_| None),
                            Err(e) => {
                                self.drop_unsealed(id);
                                Err(e)
                            }
                        }
                    }
                    Err(e) => {
                        let o = self.objects.remove(&id).expect("present");
                        self.keys.remove(&key);
                        self.memory.free(o.alloc);
                        self.counters.arrow_rejected += 1;
                        self.counters.aborted += 1;
                        Err(invalid_arrow(&key, e))
                    }
                }
            }
            _ => Err(Error::Internal(format!(
                "the seal of {key} lost its object"
            ))),
        }
    }

    /// Marks object `id` as being sealed and returns what its validation needs.
    fn begin_validation(&mut self, id: u64) -> PendingSeal {
        self.next_seal += 1;
        let token = self.next_seal;
        let o = self.objects.get_mut(&id).expect("present");
        o.sealing = token;
        PendingSeal {
            key: o.key,
            id,
            token,
            view: self.memory.read_view(o.alloc, o.data_len),
            micros: 0,
        }
    }

    /// Whether a put with `flags` is acknowledged only once in a synced warm file.
    fn persist_wanted(&self, flags: u32) -> Result<bool> {
        if flags & PUT_EPHEMERAL != 0 {
            return Ok(false);
        }
        let wanted = flags & PUT_DURABLE != 0 || self.durability == Durability::Sync;
        if wanted && self.warm.is_none() {
            return Err(Error::InvalidArgument(
                "a durable put needs the warm tier, and this store runs without one".into(),
            ));
        }
        Ok(wanted)
    }

    /// Refuses a put up front when its durability needs the warm tier and the tier cannot
    /// write now (the last write failed): a clear error instead of an acknowledgement that
    /// would not hold.
    fn check_warm_writable(&self, flags: u32) -> Result<()> {
        let sync = flags & PUT_DURABLE != 0 || self.durability == Durability::Sync;
        if flags & PUT_EPHEMERAL != 0 || !sync && self.durability == Durability::Memory {
            return Ok(());
        }
        match self.warm.as_ref().and_then(|w| w.failing()) {
            Some(why) => Err(Error::io(
                format!(
                    "the put was refused (durability {})",
                    if sync { "sync" } else { "demote-async" }
                ),
                std::io::Error::other(why),
            )),
            None => Ok(()),
        }
    }

    /// Queues a sealed-to-be object for a synced warm write; it stays invisible until
    /// [`Store::finish_persist`]. On refusal the object is freed and the error returned.
    fn start_persist(&mut self, id: u64) -> Result<Persist> {
        let o = &self.objects[&id];
        let key = o.key;
        let bytes = self.memory.bytes(o.alloc);
        let (d, m) = (o.data_len as usize, o.meta_len as usize);
        let w = self
            .warm
            .as_ref()
            .expect("persist_wanted checked the warm tier");
        let r = w.demote(crate::tier::warm::Demotion {
            key,
            data: &bytes[..d],
            meta: &bytes[d..d + m],
            flags: o.flags & !PUT_DURABLE,
            part: self.warm_part(o),
            catalog: self.catalog_row(o),
            durable: true,
        });
        match r {
            Ok(Some(ticket)) => {
                self.persisting.insert(id);
                Ok(Persist { id, key, ticket })
            }
            Ok(None) => unreachable!("a durable demotion returns a ticket"),
            Err(why) => {
                self.drop_unsealed(id);
                Err(Error::io(
                    format!("{key} was not stored: it cannot be made durable"),
                    std::io::Error::other(why),
                ))
            }
        }
    }

    /// Frees an unsealed object (and forgets it in its creator's list).
    fn drop_unsealed(&mut self, id: u64) {
        if let Some(o) = self.objects.remove(&id) {
            self.keys.remove(&o.key);
            self.memory.free(o.alloc);
            if let State::Created { owner } = o.state {
                if let Some(c) = self.clients.get_mut(&owner) {
                    c.creating.remove(&o.key);
                }
            }
        }
    }

    /// Ends a durable put: publishes the object once its warm write succeeded (it is visible
    /// from now on), or frees it and returns the write's error. An object whose client went
    /// away meanwhile is already gone.
    pub(crate) fn finish_persist(
        &mut self,
        id: u64,
        key: Key,
        r: std::result::Result<(), String>,
    ) -> Result<()> {
        if !self.persisting.remove(&id) || self.objects.get(&id).is_none_or(|o| o.key != key) {
            return Err(Error::Disconnected(format!(
                "{key}: the connection that put it closed before it was durable"
            )));
        }
        match r {
            Ok(()) => {
                let o = self.objects.get_mut(&id).expect("checked above");
                o.written = true;
                if let State::Created { owner } = o.state {
                    if let Some(c) = self.clients.get_mut(&owner) {
                        c.creating.remove(&key);
                    }
                }
                self.publish(id)
            }
            Err(why) => {
                self.drop_unsealed(id);
                Err(Error::io(
                    format!("{key} was not stored: it could not be made durable"),
                    std::io::Error::other(why),
                ))
            }
        }
    }

    /// The catalog row to keep with an object in its warm file: only when it says more than
    /// the file itself (user metadata), so that ordinary objects cost nothing.
    fn catalog_row(&self, o: &Object) -> Option<CatalogEntry> {
        let e = self.catalog.as_ref()?.get(&o.key)?;
        let plain = e.mimetype.is_none()
            && e.filename.is_none()
            && e.properties.is_empty()
            && !e.is_pinned
            && e.source.as_deref().is_none_or(|s| s == "put");
        (!plain).then(|| e.clone())
    }

    fn publish(&mut self, id: u64) -> Result<()> {
        let plasma_owned = self.objects[&id].plasma_owned;
        let (key, entry, size) = {
            let o = &self.objects[&id];
            (
                o.key,
                Entry {
                    seg: o.alloc.seg,
                    offset: o.alloc.offset,
                    data_len: o.data_len,
                    meta_len: o.meta_len,
                    flags: (match (o.flags & PUT_ARROW != 0, o.validated) {
                        (false, _) => 0,
                        (true, true) => FLAG_ARROW | FLAG_VALIDATED,
                        // Plasma objects that are Arrow IPC files: validated at seal, but their
                        // creator keeps a writable buffer, so readers validate them again.
                        (true, false) if o.plasma_owned => FLAG_ARROW,
                        (true, false) => {
                            // Every native path validates first; should one not, the object is
                            // never published as Arrow.
                            debug_assert!(false, "{} reached publish unvalidated", o.key);
                            tracing::error!("{} reached publish unvalidated: stored raw", o.key);
                            0
                        }
                    }) | if o.flags & PUT_EPHEMERAL != 0 {
                        FLAG_EPHEMERAL
                    } else {
                        0
                    },
                    object_id: id,
                },
                o.alloc.len,
            )
        };
        let mut waited = std::time::Duration::ZERO;
        let slot = loop {
            match self.index.insert(&key, entry) {
                Ok(slot) => break slot,
                Err(InsertError::Full) => {
                    if self.settle_demotions() > 0 {
                        continue;
                    }
                    let step = if self.demoting.is_empty() {
                        self.evict_one()?
                    } else {
                        Evicted::Nothing
                    };
                    if step == Evicted::Freed
                        || step == Evicted::Started
                        || self.wait_for_demotions(&mut waited)
                    {
                        continue;
                    }
                    {
                        if plasma_owned {
                            // The Plasma front-end still owns the memory and frees it itself.
                            return Err(Error::IndexFull(format!(
                                "the index holds {} objects and none can be evicted",
                                self.index.live()
                            )));
                        }
                        // Undo: the object cannot be published.
                        let o = self.objects.remove(&id).expect("object exists");
                        self.keys.remove(&key);
                        self.memory.free(o.alloc);
                        return Err(Error::IndexFull(format!(
                            "the index holds {} objects and none can be evicted; restart with a larger --index-capacity",
                            self.index.live()
                        )));
                    }
                }
            }
        };
        if let Some(o) = self.objects.get_mut(&id) {
            o.state = State::Sealed { slot };
            o.sealed_at = std::time::Instant::now();
            if o.validated {
                self.counters.arrow_validated += 1;
                self.counters.arrow_validated_bytes += o.data_len;
            }
        }
        self.live_bytes += size;
        self.header.set(hdr::LIVE_OBJECTS, self.index.live() as u64);
        self.header.set(hdr::LIVE_BYTES, self.live_bytes);
        if let Some(cat) = &mut self.catalog {
            let o = &self.objects[&id];
            // Scan results are derived, not stored objects.
            if !key.as_bytes().starts_with(b"cidcache.scan:") {
                let size = o.data_len + o.meta_len;
                if o.from_warm && cat.set_tier(&key, StorageTier::Hot) {
                    // Promoted: the entry keeps its history.
                } else {
                    let mut e = CatalogEntry::new(key, size, now_us());
                    e.storage_tier = StorageTier::Hot;
                    e.source = Some(
                        if plasma_owned {
                            "plasma"
                        } else if o.from_ipfs {
                            "ipfs"
                        } else {
                            "put"
                        }
                        .into(),
                    );
                    // Stored again: what the catalog knew of the key stays.
                    let e = match cat.get(&key) {
                        Some(old) => merge_entry(old, e),
                        None => e,
                    };
                    cat.upsert(e);
                }
            }
        }
        if !plasma_owned {
            if let Some(w) = &self.warm {
                let o = &self.objects[&id];
                if !o.from_warm && !o.written {
                    // A new object under a key the warm tier holds replaces it there too.
                    w.invalidate(&key);
                }
            }
            if self.durability == Durability::DemoteAsync {
                self.write_through(id);
            }
            self.policy.on_insert(id, size);
            if key.as_bytes().len() == crate::plasma::codec::OBJECT_ID_LEN {
                if let Some(h) = &self.seal_hook {
                    h(key, KeyEvent::Sealed);
                }
            }
        }
        self.counters.puts += 1;
        if let Some(ws) = self.waiters.remove(&key) {
            for w in ws {
                w.notify_one();
            }
        }
        Ok(())
    }

    /// Abort an unsealed object this client created.
    pub(crate) fn abort(&mut self, client: u64, key: Key) -> Result<()> {
        let id = *self
            .keys
            .get(&key)
            .ok_or_else(|| Error::NotFound(format!("{key} is not being created")))?;
        if self.persisting.contains(&id) {
            return Err(Error::AlreadyExists(format!(
                "{key} is sealed and being written to the warm tier"
            )));
        }
        match self.objects[&id].state {
            State::Created { owner } if owner == client && self.objects[&id].sealing != 0 => {
                return Err(Error::NotSealed(format!(
                    "{key} is being sealed (its Arrow data is being validated)"
                )))
            }
            State::Created { owner } if owner == client => {}
            State::Created { .. } => {
                return Err(Error::PermissionDenied(format!(
                    "{key} was created by another client"
                )))
            }
            State::Sealed { .. } => {
                return Err(Error::AlreadyExists(format!(
                    "{key} is sealed; delete it instead"
                )))
            }
        }
        let o = self.objects.remove(&id).expect("object exists");
        self.keys.remove(&key);
        self.memory.free(o.alloc);
        if let Some(c) = self.clients.get_mut(&client) {
            c.creating.remove(&key);
        }
        self.counters.aborted += 1;
        self.abandon(key, true);
        Ok(())
    }

    /// Inline put: create, copy, seal. `arrow_valid` says that the caller validated the data of
    /// an Arrow item in full (outside the store lock, on its private copy of the bytes, see
    /// [`check_put_item`]); an Arrow item without it is refused. A durable put returns what its
    /// acknowledgement waits for.
    pub(crate) fn put(
        &mut self,
        client: u64,
        it: &PutItem<'_>,
        arrow_valid: bool,
    ) -> Result<Option<Persist>> {
        self.check_writer(client)?;
        if it.flags & PUT_IPFS != 0 {
            // The session hands a single put with this flag to `coordinator::ipfs::put`.
            return Err(Error::InvalidArgument(
                "a put that adds to IPFS goes alone (put, or create and seal), not in a batch, and not as Arrow"
                    .into(),
            ));
        }
        if it.flags & PUT_VERIFY_CID != 0 {
            crate::cid::verify(it.key.as_bytes(), it.data)?;
        }
        if it.flags & PUT_ARROW != 0 && !arrow_valid {
            return Err(Error::Internal(format!(
                "the Arrow put of {} reached the store unvalidated",
                it.key
            )));
        }
        self.check_warm_writable(it.flags)?;
        let durable = self.persist_wanted(it.flags)?;
        let id = self.new_object(
            it.key,
            it.data.len() as u64,
            it.meta.len() as u64,
            it.flags & !PUT_VERIFY_CID,
            client,
        )?;
        let o = self.objects.get_mut(&id).expect("just created");
        o.validated = it.flags & PUT_ARROW != 0;
        let a = o.alloc;
        let dst = self.memory.bytes_mut(a);
        dst[..it.data.len()].copy_from_slice(it.data);
        dst[it.data.len()..].copy_from_slice(it.meta);
        if durable {
            if let Some(c) = self.clients.get_mut(&client) {
                c.creating.insert(it.key);
            }
            return self.start_persist(id).map(Some);
        }
        self.publish(id).map(|_| None)
    }

    /// Batch put: one status per item; failures do not stop the batch. `checks` holds, per
    /// item, the outcome of [`check_put_item`]. A durable put's result carries what its
    /// acknowledgement waits for.
    pub(crate) fn put_many(
        &mut self,
        client: u64,
        items: &[PutItem<'_>],
        checks: &[Result<bool>],
    ) -> Vec<Result<Option<Persist>>> {
        items
            .iter()
            .zip(checks)
            .map(|(it, check)| match check {
                Ok(valid) => self.put(client, it, *valid),
                Err(e) => {
                    self.counters.arrow_rejected += 1;
                    Err(Error::from_code(e.code(), e.message()))
                }
            })
            .collect()
    }

    /// Turns put results into wire statuses.
    pub(crate) fn statuses(r: Vec<Result<()>>) -> Vec<Status> {
        r.into_iter()
            .map(|r| r.map_err(|e| (e.code(), e.message())))
            .collect()
    }

    // ----- reads ---------------------------------------------------------------------------

    /// Whether a sealed object is stored under `key`.
    pub(crate) fn lookup(&mut self, key: &Key) -> Lookup {
        match self.keys.get(key).and_then(|id| self.objects.get(id)) {
            Some(Object {
                state: State::Sealed { .. },
                ..
            }) => Lookup::Present,
            _ => Lookup::Missing,
        }
    }

    /// Whether `key` is stored in any tier (never touches the disk).
    pub(crate) fn contains(&mut self, key: &Key) -> bool {
        matches!(self.lookup(key), Lookup::Present)
            || self.warm.as_ref().is_some_and(|w| w.contains(key))
    }

    /// Counts a get that missed shared memory, as a warm hit or a miss of every tier.
    pub(crate) fn count_miss(&mut self, key: &Key) {
        self.counters.misses += 1;
        if self.promoting.contains(key) || self.warm.as_ref().is_some_and(|w| w.contains(key)) {
            self.counters.warm_hits += 1;
        } else {
            self.counters.warm_misses += 1;
        }
    }

    /// Why `key` is known damaged in the warm tier (a get of it answers `Corrupt`), unless a
    /// tier holds it or it is being promoted.
    pub(crate) fn warm_damage(&self, key: &Key) -> Option<String> {
        if self.keys.contains_key(key) || self.promoting.contains(key) {
            return None;
        }
        self.warm.as_ref()?.damage(key)
    }

    /// Why the last promotion of `key` from the cold tier failed, once (see
    /// `Warm::take_cold_failure`).
    pub(crate) fn take_cold_failure(&self, key: &Key) -> Option<String> {
        self.warm.as_ref()?.take_cold_failure(key)
    }

    /// Whether the warm tier holds `key` or is promoting it.
    pub(crate) fn in_warm(&self, key: &Key) -> bool {
        self.promoting.contains(key) || self.warm.as_ref().is_some_and(|w| w.contains(key))
    }

    /// Whether a get of the missing `key` would wait for a lower tier: the warm tier holds it
    /// or is promoting it, or it is a CID this store can fetch from IPFS.
    pub(crate) fn can_supply(&self, key: &Key) -> bool {
        self.in_warm(key) || (self.ipfs.is_some() && crate::tier::ipfs::fetchable(key).is_some())
    }

    /// Starts (or joins) the promotion of `key` from the warm tier. `may_start` is false for a
    /// key this request already tried, so a failed promotion is not retried in a loop.
    pub(crate) fn promotion(&mut self, key: &Key, may_start: bool) -> Promotion {
        if self.promoting.contains(key) {
            // A get joined a prefetch: it was worth it, and the object is a demanded one now.
            if self.prefetched.pending.remove(key) {
                self.counters.prefetch_used += 1;
            }
            return Promotion::InProgress;
        }
        if !may_start || self.keys.contains_key(key) {
            return Promotion::No;
        }
        if let Some(src) = self.warm.as_ref().and_then(|w| w.source(key)) {
            self.promoting.insert(*key);
            self.promotion_failed.remove(key);
            return Promotion::Start(src);
        }
        match (&self.ipfs, crate::tier::ipfs::fetchable(key)) {
            (Some(ipfs), Some(cid)) => {
                self.promoting.insert(*key);
                self.fetch_failures.remove(key);
                Promotion::Fetch(ipfs.clone(), cid)
            }
            _ => Promotion::No,
        }
    }

    /// Why the last promotion of `key` failed, if it did (a get that waited for it reports
    /// this rather than a miss: the object exists, it could not be brought in).
    pub(crate) fn promotion_error(&self, key: &Key) -> Option<Error> {
        self.promotion_failed
            .get(key)
            .map(|(c, m)| Error::from_code(*c, m.clone()))
    }

    fn promotion_failed(&mut self, key: Key, e: &Error) {
        tracing::warn!("cannot promote {key} from the warm tier: {e}");
        // Only a full hot tier (back-pressure from a warm tier that cannot write) is told to
        // the gets here; what a damaged file answers is the warm tier's business.
        if !matches!(e, Error::StoreFull(_)) {
            return;
        }
        // Bounded: only recent failures matter to waiting gets.
        if self.promotion_failed.len() >= 4096 {
            self.promotion_failed.clear();
        }
        self.promotion_failed.insert(key, (e.code(), e.message()));
    }

    /// Publishes a promoted object (unless the key was stored meanwhile) and wakes the key's
    /// waiters whatever happened.
    pub(crate) fn finish_promotion(&mut self, key: Key, r: Result<Checked>) {
        self.promoting.remove(&key);
        let r = r.and_then(
            |Checked {
                 loaded: l,
                 arrow_valid,
             }| {
                if self.keys.contains_key(&key) {
                    return Ok(());
                }
                let meta_len = (l.bytes.len() - l.data_len) as u64;
                let flags = l.flags & !PUT_VERIFY_CID;
                let id = self.new_object(key, l.data_len as u64, meta_len, flags, PROMOTER)?;
                let o = self.objects.get_mut(&id).expect("just created");
                o.from_warm = true;
                o.validated = arrow_valid && flags & PUT_ARROW != 0;
                let a = o.alloc;
                self.memory.bytes_mut(a)[..l.bytes.len()].copy_from_slice(&l.bytes);
                self.publish(id)
            },
        );
        if let Err(e) = r {
            self.promotion_failed(key, &e);
        }
        if let Some(ws) = self.waiters.remove(&key) {
            for w in ws {
                w.notify_one();
            }
        }
    }

    /// Starts (or joins) a scan of the Arrow object `key`, which must not be in shared memory:
    /// its result is published (ephemeral) under a key derived from `key` and the scan.
    pub(crate) fn begin_scan(&mut self, key: &Key, scan: &crate::scan::Scan) -> ScanStart {
        if matches!(self.lookup(key), Lookup::Present) {
            return ScanStart::Hot;
        }
        let mut d = Vec::with_capacity(46);
        d.extend_from_slice(b"cidcache.scan:");
        d.extend_from_slice(format!("{:016x}{:016x}", key.hash(), scan.digest()).as_bytes());
        let derived = Key::new(&d).expect("46 bytes");
        if matches!(self.lookup(&derived), Lookup::Present) {
            return ScanStart::Ready(derived);
        }
        if self.promoting.contains(&derived) {
            return ScanStart::InProgress(derived);
        }
        match self.warm.as_ref().and_then(|w| w.source(key)) {
            Some(src) => {
                self.promoting.insert(derived);
                ScanStart::Start(src, derived)
            }
            None => ScanStart::Missing,
        }
    }

    /// Publishes a scan's result under `derived` (ephemeral: never demoted) and wakes those
    /// waiting for it.
    pub(crate) fn finish_scan(&mut self, derived: Key, r: Result<Checked>) -> Result<()> {
        let mut l = r?;
        l.loaded.flags |= PUT_EPHEMERAL;
        self.finish_promotion(derived, Ok(l));
        match self.lookup(&derived) {
            Lookup::Present => Ok(()),
            Lookup::Missing => Err(Error::StoreFull(format!(
                "the result of the scan does not fit in the hot tier ({} used of {})",
                human_bytes(self.memory.used()),
                human_bytes(self.memory.limit())
            ))),
        }
    }

    /// Whether `key` is being promoted or scanned.
    pub(crate) fn is_promoting(&self, key: &Key) -> bool {
        self.promoting.contains(key)
    }

    /// Reserves `len` bytes for a promoted object `key` (not visible yet) and returns where to
    /// write them from outside the store lock. Then [`Store::finish_fill`] or `abort_fill`.
    pub(crate) fn begin_fill(
        &mut self,
        key: Key,
        len: u64,
        flags: u32,
    ) -> Result<(u64, FillTarget)> {
        if self.keys.contains_key(&key) {
            return Err(Error::AlreadyExists(format!("{key} was stored meanwhile")));
        }
        let id = self.new_object(key, len, 0, flags & !PUT_VERIFY_CID, PROMOTER)?;
        let o = self.objects.get_mut(&id).expect("just created");
        o.from_warm = true;
        Ok((id, self.memory.fill_target(o.alloc)))
    }

    /// Frees a fill that will not be finished; the key stays being promoted.
    pub(crate) fn abort_fill(&mut self, key: Key, id: u64) {
        if self
            .objects
            .get(&id)
            .is_some_and(|o| matches!(o.state, State::Created { owner: PROMOTER }))
        {
            let o = self.objects.remove(&id).expect("present");
            self.keys.remove(&key);
            self.memory.free(o.alloc);
        }
    }

    /// Publishes a filled object with its real lengths (at most what was reserved) and whether
    /// its Arrow data validated in full (checked outside the lock); on `Err` frees it. Wakes the
    /// key's waiters either way.
    pub(crate) fn finish_fill(&mut self, key: Key, id: u64, lens: Result<(u64, u64, bool)>) {
        self.promoting.remove(&key);
        let r = lens.and_then(|(data_len, meta_len, arrow_valid)| {
            let o = self
                .objects
                .get_mut(&id)
                .filter(|o| matches!(o.state, State::Created { owner: PROMOTER }))
                .ok_or_else(|| {
                    Error::Internal(format!("the promotion of {key} lost its object"))
                })?;
            if data_len + meta_len > o.alloc.len {
                return Err(Error::Internal("a fill overran its reservation".into()));
            }
            o.data_len = data_len;
            o.meta_len = meta_len;
            o.validated = arrow_valid && o.flags & PUT_ARROW != 0;
            self.publish(id)
        });
        if let Err(e) = r {
            self.promotion_failed(key, &e);
            self.abort_fill(key, id);
        }
        if let Some(ws) = self.waiters.remove(&key) {
            for w in ws {
                w.notify_one();
            }
        }
    }

    /// Attaches the warm tier: evictions demote into it, misses promote from it.
    pub(crate) fn set_warm(&mut self, w: Warm) {
        self.warm = Some(w);
    }

    // ----- IPFS ----------------------------------------------------------------------------

    /// Attaches an IPFS source: misses on CID keys no other tier holds are fetched from it.
    pub(crate) fn set_ipfs(&mut self, ipfs: Arc<Ipfs>) {
        self.ipfs = Some(ipfs);
    }

    /// The IPFS source, for a put that also adds to it.
    pub(crate) fn ipfs_for_add(&self, client: u64) -> Result<Arc<Ipfs>> {
        self.check_writer(client)?;
        self.ipfs.clone().ok_or_else(|| {
            Error::InvalidArgument(
                "this store has no IPFS source: start cidcached with --ipfs-api to add to IPFS"
                    .into(),
            )
        })
    }

    /// Counts an add to the IPFS node.
    pub(crate) fn count_ipfs_add(&mut self, r: &Result<()>) {
        match r {
            Ok(()) => self.counters.ipfs_adds += 1,
            Err(_) => self.counters.ipfs_add_errors += 1,
        }
    }

    /// Whether `key` is an object `client` created with [`PUT_IPFS`] and has not sealed: its
    /// seal adds it to IPFS first (`coordinator::ipfs::seal`).
    pub(crate) fn seal_adds_to_ipfs(&self, client: u64, key: &Key) -> bool {
        self.keys
            .get(key)
            .and_then(|id| self.objects.get(id))
            .is_some_and(|o| {
                o.flags & PUT_IPFS != 0
                    && matches!(o.state, State::Created { owner } if owner == client)
            })
    }

    /// A copy of the data of the object [`Store::seal_adds_to_ipfs`] names (empty otherwise).
    pub(crate) fn ipfs_seal_data(&self, client: u64, key: &Key) -> bytes::Bytes {
        if !self.seal_adds_to_ipfs(client, key) {
            return bytes::Bytes::new();
        }
        let o = &self.objects[&self.keys[key]];
        bytes::Bytes::copy_from_slice(&self.memory.bytes(o.alloc)[..o.data_len as usize])
    }

    /// Marks `key` as being prefetched when no tier holds it and nothing fetches it; returns
    /// what to fetch it with.
    pub(crate) fn start_prefetch(&mut self, key: &Key) -> Option<(Arc<Ipfs>, ::cid::Cid)> {
        let ipfs = self.ipfs.clone()?;
        if self.keys.contains_key(key)
            || self.promoting.contains(key)
            || self.warm.as_ref().is_some_and(|w| w.contains(key))
        {
            return None;
        }
        let cid = crate::tier::ipfs::fetchable(key)?;
        self.promoting.insert(*key);
        self.prefetched.pending.insert(*key);
        Some((ipfs, cid))
    }

    /// Reserves `len` bytes for `key`, fetched from IPFS (not visible yet), and returns where
    /// to write them from outside the store lock. Then [`Store::finish_ipfs_fill`].
    pub(crate) fn begin_ipfs_fill(&mut self, key: Key, len: u64) -> Result<(u64, FillTarget)> {
        if self.keys.contains_key(&key) {
            return Err(Error::AlreadyExists(format!("{key} was stored meanwhile")));
        }
        let id = self.new_object(key, len, 0, 0, PROMOTER)?;
        let o = self.objects.get_mut(&id).expect("just created");
        o.from_ipfs = true;
        Ok((id, self.memory.fill_target(o.alloc)))
    }

    /// Publishes a fetched object of `len` bytes written in place, or frees it on `Err` (and
    /// tells the key's waiters why). Returns whether it was published.
    pub(crate) fn finish_ipfs_fill(&mut self, key: Key, id: u64, len: Result<u64>) -> bool {
        let prefetch = self.prefetched.pending.remove(&key);
        let r = len.and_then(|len| {
            let o = self
                .objects
                .get_mut(&id)
                .filter(|o| matches!(o.state, State::Created { owner: PROMOTER }))
                .ok_or_else(|| Error::Internal(format!("the fetch of {key} lost its object")))?;
            if len > o.alloc.len {
                return Err(Error::Internal("a fetch overran its reservation".into()));
            }
            o.data_len = len;
            self.publish(id)?;
            Ok(len)
        });
        match r {
            Ok(len) => {
                self.promoting.remove(&key);
                self.counters.ipfs_fetches += 1;
                self.counters.ipfs_fetched_bytes += len;
                if prefetch {
                    self.counters.prefetched += 1;
                    self.prefetched.unused.insert(id);
                }
                // `publish` woke the waiters.
                true
            }
            Err(e) => {
                self.abort_fill(key, id);
                self.fail_fetch(key, e);
                false
            }
        }
    }

    /// Ends a fetch from IPFS that failed: nothing is cached, and the gets that waited for it
    /// are told why.
    pub(crate) fn fail_fetch(&mut self, key: Key, e: Error) {
        tracing::warn!("cannot fetch {key} from IPFS: {e}");
        self.promoting.remove(&key);
        self.prefetched.pending.remove(&key);
        self.counters.ipfs_fetch_errors += 1;
        if self.fetch_failures.len() >= MAX_FETCH_FAILURES {
            self.fetch_failures.clear();
        }
        self.fetch_failures.insert(key, e);
        if let Some(ws) = self.waiters.remove(&key) {
            for w in ws {
                w.notify_one();
            }
        }
    }

    /// Why the last fetch of `key` from IPFS failed, when it did and no fetch of it is under
    /// way (for the gets that waited for that fetch).
    pub(crate) fn fetch_failure(&self, key: &Key) -> Option<Error> {
        if self.promoting.contains(key) {
            return None;
        }
        let e = self.fetch_failures.get(key)?;
        Some(Error::from_code(e.code(), e.message()))
    }

    /// Registers `n` to be notified when `key` is sealed.
    pub(crate) fn wait_for(&mut self, key: Key, n: &Arc<Waiter>) {
        self.waiters.entry(key).or_default().push(n.clone());
    }

    /// Drops `n`'s registrations (a wait timed out).
    pub(crate) fn unwait(&mut self, keys: &[Key], n: &Arc<Waiter>) {
        for k in keys {
            if let Some(v) = self.waiters.get_mut(k) {
                v.retain(|w| !Arc::ptr_eq(w, n));
                if v.is_empty() {
                    self.waiters.remove(k);
                }
            }
        }
    }

    /// The creation of `key` was given up (its creator aborted or disconnected): its waiters
    /// are woken and told, and so is the Plasma front-end when `plasma` (its own waiters wait
    /// for a seal that will not come either).
    fn abandon(&mut self, key: Key, plasma: bool) {
        if let Some(ws) = self.waiters.remove(&key) {
            for w in ws {
                w.abandoned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(key);
                w.notify_one();
            }
        }
        if plasma && key.as_bytes().len() == crate::plasma::codec::OBJECT_ID_LEN {
            if let Some(h) = &self.seal_hook {
                h(key, KeyEvent::Abandoned);
            }
        }
    }

    /// Delete: retire the key now; its memory is reused once no pin remains.
    pub(crate) fn delete(&mut self, client: u64, key: Key) -> Result<()> {
        let Some(&id) = self.keys.get(&key) else {
            return match &self.warm {
                Some(w) if w.delete(&key)? => {
                    self.counters.deletes += 1;
                    if let Some(c) = &mut self.catalog {
                        c.remove(&key);
                    }
                    Ok(())
                }
                // Metadata recorded by a client for a key no tier holds (e.g. a CID known
                // only by name): deleting the key removes that catalog row.
                _ if self
                    .catalog
                    .as_mut()
                    .is_some_and(|c| c.remove(&key).is_some()) =>
                {
                    Ok(())
                }
                _ => Err(Error::NotFound(format!("{key} is not stored"))),
            };
        };
        let o = &self.objects[&id];
        if o.plasma_owned || o.plasma_held {
            return Err(Error::PermissionDenied(format!(
                "{key} is {} the Plasma store; delete it through a Plasma client",
                if o.plasma_owned {
                    "owned by"
                } else {
                    "held by a client of"
                }
            )));
        }
        match o.state {
            State::Sealed { .. } => {}
            State::Created { owner } if owner == client => return self.abort(client, key),
            State::Created { .. } => {
                return Err(Error::NotSealed(format!(
                    "{key} is still being written by another client"
                )))
            }
        }
        if let Some(w) = &self.warm {
            w.delete(&key)?;
        }
        if let Some(c) = &mut self.catalog {
            c.remove(&key);
        }
        self.retire(id);
        self.policy.on_remove(id);
        self.counters.deletes += 1;
        self.reclaim();
        Ok(())
    }

    /// Removes a sealed object from the index and queues its memory for reuse.
    fn retire(&mut self, id: u64) {
        if let Some(len) = self.demoting.remove(&id) {
            self.demoting_bytes -= len;
        }
        let o = self.objects.remove(&id).expect("object exists");
        if self.prefetched.unused.remove(&id) {
            self.counters.prefetch_wasted += 1;
        }
        self.keys.remove(&o.key);
        let State::Sealed { slot } = o.state else {
            unreachable!("only sealed objects are retired");
        };
        let seq = self.index.remove(slot);
        self.live_bytes -= o.alloc.len;
        self.header.set(hdr::LIVE_OBJECTS, self.index.live() as u64);
        self.header.set(hdr::LIVE_BYTES, self.live_bytes);
        self.retired.push(Retired {
            alloc: o.alloc,
            pin: pins::pin_word(slot, seq),
        });
    }

    /// Every pin of every client whose lease page passes its checks; the sessions of the
    /// others end here (their pins count for nothing).
    fn pinned_words(&mut self) -> HashSet<u64> {
        let slots = u32::try_from(self.index.reader().capacity()).unwrap_or(u32::MAX);
        let mut v = Vec::new();
        let mut bad = Vec::new();
        for (&id, c) in &self.clients {
            let lease = c.lease();
            let mark = v.len();
            let r = lease
                .check_header(id)
                .and_then(|()| lease.collect_pins_checked(slots, &mut v));
            if let Err(f) = r {
                v.truncate(mark);
                bad.push((id, f));
            }
        }
        for (id, f) in bad {
            self.revoke(id, &f);
        }
        // Pages of the previous coordinator's clients are checked the same way; a bad one is
        // dropped (its pins count for nothing) and its name removed.
        let dir = self.shm_dir.clone();
        let mut dropped = 0;
        self.orphans.retain(|o| match o.collect_pins(slots, &mut v) {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(
                    "lease page {} of a client of the previous coordinator is invalid ({why}); its pins are no longer honoured",
                    o.name
                );
                shm::unlink_segment(&dir, &o.name);
                dropped += 1;
                false
            }
        });
        self.counters.revoked_sessions += dropped;
        if dropped > 0 && self.orphans.is_empty() {
            self.memory.release_taint();
        }
        v.into_iter().collect()
    }

    /// Frees retired objects no client pins any more. Returns how many were freed.
    pub(crate) fn reclaim(&mut self) -> usize {
        if self.retired.is_empty() {
            return 0;
        }
        pins::retire_fence();
        let pinned = self.pinned_words();
        let mut freed = 0;
        let mut keep = Vec::new();
        for r in std::mem::take(&mut self.retired) {
            if pinned.contains(&r.pin) {
                keep.push(r);
            } else {
                self.memory.free(r.alloc);
                freed += 1;
            }
        }
        self.counters.deferred_frees += keep.len() as u64 * (freed == 0) as u64;
        self.retired = keep;
        freed
    }

    /// Evicts one unpinned sealed object chosen by the policy. An object the warm tier must
    /// take first is not retired yet: its demotion is queued and it stays live in shared
    /// memory until its file is written ([`Store::settle_demotions`]), so a coordinator crash
    /// meanwhile never loses it (the next one adopts it).
    fn evict_one(&mut self) -> Result<Evicted> {
        self.evict(1, false)
    }

    /// Evicts objects worth `need` bytes at once (see [`Store::evict_one`]); `background`
    /// spares objects published in the last [`YOUNG`].
    fn evict(&mut self, need: u64, background: bool) -> Result<Evicted> {
        let now = std::time::Instant::now();
        self.harvest_hits();
        pins::retire_fence();
        let pinned = self.pinned_words();
        let objects = &self.objects;
        let demoting = &self.demoting;
        let index = self.index.reader();
        // While the warm tier cannot write, only objects that need no demotion may go:
        // the others stay (back-pressure) rather than being dropped.
        let warm_failing = self.warm.as_ref().is_some_and(|w| w.failing().is_some());
        let mut victims = Vec::new();
        self.policy.evict_into(
            need,
            &mut |id| match objects.get(&id) {
                Some(
                    o @ Object {
                        state: State::Sealed { slot },
                        plasma_owned: false,
                        plasma_held: false,
                        ..
                    },
                ) => {
                    !demoting.contains_key(&id)
                        && (!background || now.duration_since(o.sealed_at) >= YOUNG)
                        && (!warm_failing
                            || o.flags & PUT_EPHEMERAL != 0
                            || o.from_warm
                            || o.written)
                        && !pinned.contains(&pins::pin_word(*slot, index.seq(*slot)))
                }
                _ => false,
            },
            &mut victims,
        );
        let mut step = Evicted::Nothing;
        for id in victims {
            let Some(o) = self.objects.get(&id) else {
                continue;
            };
            let (len, key) = (o.alloc.len, o.key);
            match self.demote(id) {
                Demoted::NotNeeded => {
                    if let Some(c) = &mut self.catalog {
                        c.set_tier(&key, StorageTier::None);
                    }
                    self.retire_evicted(id);
                    step = Evicted::Freed;
                }
                Demoted::Held => {
                    if let Some(o) = self.objects.get_mut(&id) {
                        o.written = true;
                    }
                    self.demoting.insert(id, len);
                    self.demoting_bytes += len;
                    if step == Evicted::Nothing {
                        step = Evicted::Started;
                    }
                }
                Demoted::Refused(why) => {
                    // The tier failed since the check above: keep the object.
                    tracing::debug!("not evicting {key}: {why}");
                    self.policy.on_insert(id, len);
                }
            }
        }
        if step == Evicted::Started && self.settle_demotions() > 0 {
            step = Evicted::Freed;
        }
        Ok(step)
    }

    /// Bytes the hot tier keeps free ahead of demand when it has a warm tier (1/8 of the limit,
    /// at most 64 MiB): evictions then wait for the warm writer in batches, or not at all.
    fn headroom(&self) -> u64 {
        (self.memory.limit() / 8).min(64 << 20)
    }

    /// Evicts until `target` bytes are on their way out (or freed).
    fn evict_ahead(&mut self, target: u64, background: bool) -> Result<Evicted> {
        if self.demoting_bytes >= target {
            return Ok(Evicted::Nothing);
        }
        self.evict(target - self.demoting_bytes, background)
    }

    /// Starts demotions in the background when free memory runs below the headroom, so that
    /// puts find room without waiting for the warm writer.
    fn keep_headroom(&mut self) {
        let healthy = self.warm.as_ref().is_some_and(|w| w.failing().is_none());
        if !healthy {
            return;
        }
        let free = self.memory.limit().saturating_sub(self.memory.used());
        let room = self.headroom();
        if free + self.demoting_bytes < room {
            let _ = self.evict_ahead(room - free, true);
        }
    }

    /// Retires an evicted object and counts it.
    fn retire_evicted(&mut self, id: u64) {
        let len = self.objects[&id].alloc.len;
        self.retire(id);
        self.counters.evictions += 1;
        self.counters.evicted_bytes += len;
        self.reclaim();
    }

    /// Retires the evicted objects whose warm-tier copy is now in a file. Returns how many.
    pub(crate) fn settle_demotions(&mut self) -> usize {
        let Some(w) = &self.warm else {
            return 0;
        };
        if self.demoting.is_empty() {
            return 0;
        }
        use crate::tier::warm::Held;
        let mut done = Vec::new();
        let mut again = Vec::new();
        for &id in self.demoting.keys() {
            match self.objects.get(&id).map(|o| w.state_of(&o.key)) {
                None | Some(Held::Written) => done.push(id),
                Some(Held::Queued) => {}
                // Its copy is gone (a file dropped for the warm capacity): write it again.
                Some(Held::Absent) => again.push(id),
            }
        }
        for id in again {
            if let Some(o) = self.objects.get_mut(&id) {
                o.written = false;
                o.from_warm = false;
            }
            if let Demoted::Held = self.demote(id) {
                if let Some(o) = self.objects.get_mut(&id) {
                    o.written = true;
                }
            }
        }
        for id in &done {
            let len = self.demoting.remove(id).unwrap_or(0);
            self.demoting_bytes -= len;
            let Some(o) = self.objects.get(id) else {
                continue;
            };
            let key = o.key;
            if let Some(c) = &mut self.catalog {
                c.set_tier(&key, StorageTier::Warm);
            }
            self.retire_evicted(*id);
        }
        done.len()
    }

    /// Waits a little for demotions in flight to reach the warm tier (under the store lock:
    /// the writer needs none). False when there is nothing to wait for, the tier cannot
    /// write, or the allocation has waited long enough.
    fn wait_for_demotions(&mut self, waited: &mut std::time::Duration) -> bool {
        let Some(w) = &self.warm else {
            return false;
        };
        if self.demoting.is_empty() || w.failing().is_some() || *waited >= DEMOTION_WAIT {
            return false;
        }
        let step = std::time::Duration::from_millis(20);
        w.wait_progress(step);
        *waited += step;
        true
    }

    /// Hands a sealed object's bytes to the warm tier (unless it is ephemeral or the warm tier
    /// already holds the same bytes).
    fn demote(&self, id: u64) -> Demoted {
        let (Some(w), Some(o)) = (&self.warm, self.objects.get(&id)) else {
            return Demoted::NotNeeded;
        };
        if o.flags & PUT_EPHEMERAL != 0 || o.plasma_owned {
            return Demoted::NotNeeded;
        }
        if o.from_warm || o.written {
            return Demoted::Held;
        }
        let bytes = self.memory.bytes(o.alloc);
        let (d, m) = (o.data_len as usize, o.meta_len as usize);
        let r = w.demote(crate::tier::warm::Demotion {
            key: o.key,
            data: &bytes[..d],
            meta: &bytes[d..d + m],
            flags: o.flags & !PUT_DURABLE,
            part: self.warm_part(o),
            catalog: self.catalog_row(o),
            durable: false,
        });
        match r {
            Ok(_) => Demoted::Held,
            Err(why) => Demoted::Refused(why),
        }
    }

    /// `--durability demote-async`: queues a just-published object for the warm tier at once.
    /// Refused (the tier cannot write), it stays an ordinary hot object that eviction demotes
    /// later, when the tier writes again.
    fn write_through(&mut self, id: u64) {
        if let Demoted::Held = self.demote(id) {
            if let Some(o) = self.objects.get_mut(&id) {
                o.written = true;
            }
        }
    }

    /// The warm-tier partition directory of an object (by the store's strategy, from what the
    /// catalog knows of it).
    fn warm_part(&self, o: &Object) -> String {
        use crate::tier::catalog::PartitionStrategy;
        if self.warm_partition == PartitionStrategy::None {
            return String::new();
        }
        let mut e = match self.catalog.as_ref().and_then(|c| c.get(&o.key)) {
            Some(e) => e.clone(),
            None => CatalogEntry::bare(o.key, o.data_len + o.meta_len, now_us()),
        };
        if e.mimetype.is_none() && o.flags & PUT_ARROW != 0 {
            e.mimetype = Some("application/vnd.apache.arrow.file".into());
        }
        self.warm_partition.partition_of(&e)
    }

    /// Feeds the clients' hit rings to the policy (at most a ring's worth per client); ends
    /// the sessions of clients whose lease page header was overwritten.
    pub(crate) fn harvest_hits(&mut self) {
        let policy = &mut self.policy;
        let objects = &self.objects;
        let mut catalog = self.catalog.as_mut();
        let (unused, mut used) = (&mut self.prefetched.unused, 0u64);
        let now = now_us();
        let mut n = 0u64;
        let mut bad = Vec::new();
        for (&cid, c) in self.clients.iter_mut() {
            if let Err(f) = c.lease().check_header(cid) {
                bad.push((cid, f));
                continue;
            }
            let mut seen = c.hits_seen;
            c.lease().drain_hits(&mut seen, |id| {
                policy.on_hit(id);
                used += unused.remove(&id) as u64;
                // The catalog's access counts are a sample: at most this many per harvest.
                if n < CATALOG_TOUCHES {
                    if let (Some(cat), Some(o)) = (catalog.as_mut(), objects.get(&id)) {
                        cat.touch(&o.key, now);
                    }
                }
                n += 1;
            });
            c.hits_seen = seen;
        }
        self.counters.hits += n;
        self.counters.prefetch_used += used;
        for (id, f) in bad {
            self.revoke(id, &f);
        }
    }

    /// Attaches the catalog and makes it agree with the tiers as they are now: every row's
    /// tier is set to where the object is (the files and the adopted hot tier are the truth),
    /// and every object without a row (a crash before the catalog's checkpoint, a damaged
    /// catalog file) gets one back, rebuilt from the row its warm file carries, or else from
    /// what the tier knows of it (size, Arrow type, when its file was written).
    pub(crate) fn set_catalog(&mut self, mut cat: Catalog) {
        let stale: Vec<(Key, StorageTier)> = cat
            .iter()
            .filter_map(|e| {
                let actual = if self.keys.contains_key(&e.key) {
                    StorageTier::Hot
                } else if let Some(w) = &self.warm {
                    w.tier_of(&e.key)
                } else {
                    StorageTier::None
                };
                (actual != e.storage_tier).then_some((e.key, actual))
            })
            .collect();
        for (k, t) in stale {
            cat.set_tier(&k, t);
        }
        let arrow_type = |flags: u32| {
            (flags & PUT_ARROW != 0).then(|| "application/vnd.apache.arrow.file".to_string())
        };
        let mut rebuilt = (0, 0);
        if let Some(w) = &self.warm {
            let missing: Vec<(Key, u64, u32, i64)> = w
                .records()
                .into_iter()
                .filter(|r| !cat.contains(&r.0) && !self.keys.contains_key(&r.0))
                .collect();
            if !missing.is_empty() {
                let want: HashSet<Key> = missing.iter().map(|r| r.0).collect();
                let mut kept: HashMap<Key, CatalogEntry> = w
                    .catalog_rows(&want)
                    .into_iter()
                    .map(|e| (e.key, e))
                    .collect();
                for (key, size, flags, written) in missing {
                    let mut e = kept.remove(&key).unwrap_or_else(|| {
                        let mut e = CatalogEntry::new(key, size, written);
                        e.mimetype = arrow_type(flags);
                        e.source = Some("put".into());
                        e
                    });
                    e.storage_tier = StorageTier::Warm;
                    cat.upsert(e);
                    rebuilt.0 += 1;
                }
            }
        }
        let now = now_us();
        for o in self.objects.values() {
            if matches!(o.state, State::Sealed { .. })
                && !o.key.as_bytes().starts_with(b"cidcache.scan:")
                && !cat.contains(&o.key)
            {
                let mut e = CatalogEntry::new(o.key, o.data_len + o.meta_len, now);
                e.mimetype = arrow_type(o.flags);
                e.source = Some("put".into());
                e.storage_tier = StorageTier::Hot;
                cat.upsert(e);
                rebuilt.1 += 1;
            }
        }
        if rebuilt != (0, 0) {
            tracing::warn!(
                "catalog: rebuilt {} row(s) from the warm tier's files and {} from the hot tier (lost in a crash or with a damaged catalog file)",
                rebuilt.0,
                rebuilt.1
            );
        }
        self.catalog = Some(cat);
    }

    /// Writes the catalog's changes (every few seconds, and at shutdown).
    fn checkpoint_catalog(&mut self, force: bool) {
        let Some(cat) = &mut self.catalog else { return };
        // Objects the warm tier moved to the cold tier meanwhile.
        if let Some(w) = &self.warm {
            for k in w.take_cold_moves() {
                if !self.keys.contains_key(&k) && w.tier_of(&k) == StorageTier::Cold {
                    cat.set_tier(&k, StorageTier::Cold);
                }
            }
        }
        if cat.pending_changes() == 0
            || (!force && self.last_checkpoint.elapsed() < CATALOG_CHECKPOINT_EVERY)
        {
            return;
        }
        self.last_checkpoint = std::time::Instant::now();
        match cat.checkpoint() {
            Ok(_) => self.counters.catalog_checkpoints += 1,
            Err(e) => tracing::warn!("catalog checkpoint failed (will retry): {e}"),
        }
    }

    /// Upserts entries sent by a client; `storage_tier` always reflects where the object is.
    /// An entry for a key the catalog knows is merged into it: what the store itself records
    /// (when it was first added, accesses, heat) stays, and the client's descriptive fields
    /// (file name, MIME type, source, properties) replace the old ones only where given, so a
    /// second put of the same bytes (or an import) never erases what the first recorded.
    pub(crate) fn catalog_upsert(&mut self, entries: Vec<CatalogEntry>) -> Result<usize> {
        let keys = &self.keys;
        let warm = self.warm.as_ref();
        let sync = self.durability == Durability::Sync;
        let cat = self.catalog.as_mut().ok_or_else(no_catalog)?;
        let merged: Vec<CatalogEntry> = entries
            .into_iter()
            .map(|mut e| {
                e.storage_tier = if keys.contains_key(&e.key) {
                    StorageTier::Hot
                } else if let Some(w) = warm {
                    w.tier_of(&e.key)
                } else {
                    StorageTier::None
                };
                match cat.get(&e.key) {
                    Some(old) => merge_entry(old, e),
                    None => e,
                }
            })
            .collect();
        let n = cat.upsert_batch(merged);
        if sync {
            // Acknowledged means on disk in this mode, for the catalog too.
            cat.checkpoint()?;
            self.last_checkpoint = std::time::Instant::now();
            self.counters.catalog_checkpoints += 1;
        }
        Ok(n)
    }

    /// The catalog, for queries.
    pub(crate) fn catalog(&self) -> Result<&Catalog> {
        self.catalog.as_ref().ok_or_else(no_catalog)
    }

    /// Periodic work: hits, deferred frees, catalog checkpoints, and (every
    /// [`LEASE_CHECK_EVERY`]) a check of every lease page's pins even when nothing is reclaimed.
    pub(crate) fn maintain(&mut self) {
        self.harvest_hits();
        self.check_orphans();
        self.settle_demotions();
        self.keep_headroom();
        self.reclaim();
        if self.last_lease_check.elapsed() >= LEASE_CHECK_EVERY {
            self.last_lease_check = std::time::Instant::now();
            self.pinned_words();
        }
        self.checkpoint_catalog(false);
    }

    // ----- the Plasma front-end ------------------------------------------------------------

    /// Installs the hook told about native seals of 20-byte keys.
    pub(crate) fn set_seal_hook(&mut self, hook: SealHook) {
        self.seal_hook = Some(hook);
    }

    /// Allocates `len` bytes for a Plasma object `key` and reserves the key (native creates of
    /// it now fail with AlreadyExists). Native objects are evicted by the native policy to make
    /// room; Plasma objects never are (the Plasma state machine evicts its own). With
    /// `overflow`, a segment is created beyond the memory limit rather than failing: the Plasma
    /// accounting has already allowed the object.
    pub(crate) fn plasma_alloc(
        &mut self,
        key: Key,
        len: u64,
        overflow: bool,
    ) -> std::result::Result<PlasmaPlace, PlasmaAllocError> {
        if self.keys.contains_key(&key) {
            return Err(PlasmaAllocError::Exists);
        }
        let alloc = if overflow {
            self.reclaim();
            match self.memory.alloc(len) {
                Ok(a) => a,
                Err(_) => self
                    .memory
                    .alloc_overflow(len)
                    .map_err(|_| PlasmaAllocError::NoSpace)?,
            }
        } else {
            self.allocate(len).map_err(|_| PlasmaAllocError::NoSpace)?
        };
        let mut id = key.hash() & !(1 << 63);
        if id == 0 || self.objects.contains_key(&id) {
            id = (1 << 63) | self.next_object;
            self.next_object += 1;
        }
        self.keys.insert(key, id);
        self.objects.insert(
            id,
            Object {
                key,
                alloc,
                data_len: len,
                meta_len: 0,
                flags: 0,
                state: State::Created {
                    owner: PLASMA_OWNER,
                },
                plasma_owned: true,
                plasma_held: false,
                from_warm: false,
                written: false,
                sealed_at: std::time::Instant::now(),
                from_ipfs: false,
                validated: false,
                sealing: 0,
            },
        );
        let seg_size = self.memory.seg_size(alloc.seg).unwrap_or(0);
        Ok(PlasmaPlace { alloc, seg_size })
    }

    /// A Plasma object was sealed: publish it in the index (data and metadata lengths as
    /// Plasma reports them), so native clients can read it zero-copy. Data framed as an Arrow
    /// IPC file is first validated outside the lock (then [`Store::plasma_finish_publish`]).
    pub(crate) fn plasma_publish(
        &mut self,
        key: Key,
        data_len: u64,
        meta_len: u64,
    ) -> Result<Sealing> {
        let Some(&id) = self.keys.get(&key) else {
            return Err(Error::NotFound(format!("{key} is not being created")));
        };
        let o = self.objects.get_mut(&id).expect("keys and objects agree");
        if !o.plasma_owned || !matches!(o.state, State::Created { .. }) || o.sealing != 0 {
            return Err(Error::AlreadyExists(format!("{key} is already sealed")));
        }
        if data_len.checked_add(meta_len) == Some(o.alloc.len) {
            o.data_len = data_len;
            o.meta_len = meta_len;
        }
        let (a, n) = (o.alloc, o.data_len as usize);
        if crate::arrow::has_ipc_file_magic(&self.memory.bytes(a)[..n]) {
            return Ok(Sealing::Validate(self.begin_validation(id)));
        }
        self.publish(id).map(|_| Sealing::Done)
    }

    /// Publishes a Plasma object whose data was framed as an Arrow IPC file: as Arrow when it
    /// validated (without [`FLAG_VALIDATED`]: its creator keeps a writable buffer, so readers
    /// validate it again), else as raw bytes. Nothing happens if the Plasma store dropped the
    /// object meanwhile.
    pub(crate) fn plasma_finish_publish(
        &mut self,
        p: PendingSeal,
        valid: Result<()>,
    ) -> Result<()> {
        let id = p.id;
        self.counters.arrow_validation_us += p.micros;
        match self.objects.get_mut(&id) {
            Some(o) if o.sealing == p.token && o.plasma_owned => {
                o.sealing = 0;
                match valid {
                    Ok(()) => o.flags |= PUT_ARROW,
                    Err(e) => {
                        self.counters.arrow_rejected += 1;
                        tracing::debug!("Plasma object {} is published as raw bytes: {e}", p.key);
                    }
                }
                self.publish(id)
            }
            _ => Ok(()),
        }
    }

    /// The Plasma state machine dropped `key` (aborted, deleted or evicted): an unsealed object
    /// is freed at once; a sealed one is retired from the index and its memory reused only once
    /// no native reader pins it.
    pub(crate) fn plasma_free(&mut self, key: Key) {
        let Some(&id) = self.keys.get(&key) else {
            return;
        };
        let o = &self.objects[&id];
        if !o.plasma_owned {
            return;
        }
        match o.state {
            State::Created { .. } => {
                let o = self.objects.remove(&id).expect("object exists");
                self.keys.remove(&key);
                self.memory.free(o.alloc);
                // Native waiters of a Plasma object: the Plasma side wakes its own.
                self.abandon(key, false);
            }
            State::Sealed { .. } => {
                self.retire(id);
                self.counters.deletes += 1;
                self.reclaim();
            }
        }
    }

    /// A sealed native object under `key` (never a Plasma-owned one), optionally marking it held
    /// by the Plasma front-end (`Some(true)`) or releasing that mark (`Some(false)`).
    pub(crate) fn plasma_foreign(
        &mut self,
        key: &Key,
        hold: Option<bool>,
    ) -> Option<PlasmaForeign> {
        let id = *self.keys.get(key)?;
        let o = self.objects.get_mut(&id)?;
        if o.plasma_owned || !matches!(o.state, State::Sealed { .. }) {
            return None;
        }
        if let Some(h) = hold {
            o.plasma_held = h;
        }
        let (alloc, data_len, meta_len) = (o.alloc, o.data_len, o.meta_len);
        Some(PlasmaForeign {
            place: PlasmaPlace {
                alloc,
                seg_size: self.memory.seg_size(alloc.seg).unwrap_or(0),
            },
            data_len,
            meta_len,
        })
    }

    /// Deletes a native object for a Plasma client (not while Plasma clients hold it).
    pub(crate) fn plasma_delete_foreign(&mut self, key: &Key) -> bool {
        let Some(&id) = self.keys.get(key) else {
            return false;
        };
        match self.objects.get(&id) {
            Some(o)
                if !o.plasma_owned && !o.plasma_held && matches!(o.state, State::Sealed { .. }) => {
            }
            _ => return false,
        }
        self.retire(id);
        self.policy.on_remove(id);
        self.counters.deletes += 1;
        self.reclaim();
        true
    }

    /// Sealed native objects whose keys are 20 bytes long: `(key, data_len, meta_len)`.
    pub(crate) fn plasma_list_foreign(&self) -> Vec<(Key, u64, u64)> {
        self.objects
            .values()
            .filter(|o| {
                !o.plasma_owned
                    && matches!(o.state, State::Sealed { .. })
                    && o.key.as_bytes().len() == crate::plasma::codec::OBJECT_ID_LEN
            })
            .map(|o| (o.key, o.data_len, o.meta_len))
            .collect()
    }

    /// A segment's descriptor (duplicated), mapping base and size, for the Plasma front-end.
    pub(crate) fn plasma_segment(
        &self,
        seg: u64,
    ) -> Option<(rustix::fd::OwnedFd, std::ptr::NonNull<u8>, u64)> {
        self.memory.segment_handle(seg)
    }

    /// Ids of the segments that exist now.
    pub(crate) fn segment_ids(&self) -> Vec<u64> {
        self.memory.segment_ids()
    }

    // ----- queries -------------------------------------------------------------------------

    /// One page of the index from slot `cursor`: at most [`LIST_PAGE`] entries, and at most
    /// [`LIST_SLOTS`] slots read (a page may come back short, or empty, with a cursor to go
    /// on), so that one request's work under the store lock and its reply are bounded.
    pub(crate) fn list(&self, cursor: u64, limit: u32) -> (Vec<ListEntry>, u64) {
        let r: IndexRef<'_> = self.index.reader();
        let start = usize::try_from(cursor).unwrap_or(usize::MAX);
        let (items, next) = r.scan_slots(start, (limit as usize).clamp(1, LIST_PAGE), LIST_SLOTS);
        let entries = items
            .into_iter()
            .map(|(key, e)| ListEntry {
                key,
                data_len: e.data_len,
                meta_len: e.meta_len,
                flags: e.flags,
            })
            .collect();
        (entries, next.map_or(0, |n| n as u64))
    }

    pub(crate) fn stats(&self) -> Vec<(String, u64)> {
        let live = self.index.live() as u64;
        let cap = self.index.reader().capacity() as u64;
        let requested: u64 = self.live_bytes
            + self
                .objects
                .values()
                .filter(|o| matches!(o.state, State::Created { .. }))
                .map(|o| o.alloc.len)
                .sum::<u64>();
        let c = &self.counters;
        let v = vec![
            ("hot.objects", live),
            ("hot.bytes", self.live_bytes),
            ("hot.memory_limit", self.memory.limit()),
            ("hot.memory_reserved", self.memory.reserved()),
            ("hot.memory_allocated", self.memory.used()),
            (
                "hot.alignment_waste_bytes",
                self.memory.alignment_waste(requested),
            ),
            ("hot.segments", self.memory.segment_count() as u64),
            ("hot.hits", c.hits),
            ("hot.misses", c.misses),
            ("hot.puts", c.puts),
            ("hot.deletes", c.deletes),
            ("hot.evictions", c.evictions),
            ("hot.evicted_bytes", c.evicted_bytes),
            ("hot.aborted", c.aborted),
            ("hot.store_full_errors", c.store_full),
            ("arrow.validated", c.arrow_validated),
            ("arrow.validated_bytes", c.arrow_validated_bytes),
            ("arrow.rejected", c.arrow_rejected),
            ("arrow.validation_us", c.arrow_validation_us),
            ("hot.deferred_frees_pending", self.retired.len() as u64),
            ("hot.adopted_objects", c.adopted),
            ("arrow.revalidation_pending", self.revalidate.len() as u64),
            ("hot.demoting_objects", self.demoting.len() as u64),
            ("hot.orphan_clients", self.orphans.len() as u64),
            ("hot.held_back_bytes", self.memory.tainted_bytes()),
            ("index.capacity", cap),
            ("index.max_live", self.index.max_live() as u64),
            ("index.tombstones", self.index.tombstones() as u64),
            ("index.load_factor_permille", live * 1000 / cap.max(1)),
            ("index.bytes", cap * crate::index::SLOT_BYTES as u64),
            (
                "index.bytes_per_object",
                (cap * crate::index::SLOT_BYTES as u64)
                    .checked_div(live)
                    .unwrap_or(0),
            ),
            ("hot.hit_ratio_permille", ratio(c.hits, c.misses)),
            ("warm.hits", c.warm_hits),
            ("warm.misses", c.warm_misses),
            ("warm.hit_ratio_permille", ratio(c.warm_hits, c.warm_misses)),
            ("clients", self.clients.len() as u64),
            ("clients.revoked", c.revoked_sessions),
            (
                "clients.max",
                self.max_clients.min(u32::MAX as usize) as u64,
            ),
            (
                "clients.lease_bytes",
                (self.clients.len() * pins::lease_bytes(self.pins_per_client, self.hit_ring))
                    as u64,
            ),
            (
                "pins",
                self.clients
                    .values()
                    .map(|c| c.lease().pinned() as u64)
                    .sum(),
            ),
        ];
        let warm = self.warm.as_ref().map(|w| w.stats()).unwrap_or_default();
        let catalog = self
            .catalog
            .as_ref()
            .map(|cat| {
                vec![
                    ("catalog.entries", cat.len() as u64),
                    ("catalog.pending_changes", cat.pending_changes() as u64),
                    ("catalog.checkpoints", c.catalog_checkpoints),
                ]
            })
            .unwrap_or_default();
        let ipfs = match self.ipfs {
            Some(_) => vec![
                ("ipfs.fetches", c.ipfs_fetches),
                ("ipfs.fetched_bytes", c.ipfs_fetched_bytes),
                ("ipfs.fetch_errors", c.ipfs_fetch_errors),
                ("ipfs.adds", c.ipfs_adds),
                ("ipfs.add_errors", c.ipfs_add_errors),
                ("ipfs.prefetched", c.prefetched),
                ("ipfs.prefetch_used", c.prefetch_used),
                ("ipfs.prefetch_wasted", c.prefetch_wasted),
            ],
            None => Vec::new(),
        };
        v.into_iter()
            .chain(warm)
            .chain(catalog)
            .chain(ipfs)
            .map(|(k, n)| (k.to_string(), n))
            .collect()
    }

    /// Name of the eviction policy.
    pub(crate) fn policy_name(&self) -> &'static str {
        self.policy.kind().as_str()
    }

    /// Removes the data segments (a start that failed after creating them).
    pub(crate) fn remove_segments(&mut self) {
        self.memory.remove_all();
    }

    /// Shutdown: tell clients through the header (they answer `Disconnected` from now on),
    /// demote the hot tier unless `--no-persist-on-exit`, write what is queued, and remove the
    /// segments. When objects could not be written to the warm tier and adoption is allowed,
    /// the hot tier is left in shared memory for the next coordinator instead (those still in
    /// it are then not lost). Returns what could not be persisted.
    pub(crate) fn shutdown(&mut self, keep_for_adoption: bool) -> ShutdownReport {
        self.header.set(hdr::RUN_TOKEN, 0);
        self.header.set(hdr::STATE, crate::layout::STATE_STOPPED);
        let mut rep = ShutdownReport::default();
        let mut refused: u64 = 0;
        if self.persist_on_exit && self.warm.is_some() {
            let sealed: Vec<u64> = self
                .objects
                .iter()
                .filter(|(_, o)| matches!(o.state, State::Sealed { .. }))
                .map(|(&id, _)| id)
                .collect();
            for id in sealed {
                if let Demoted::Refused(why) = self.demote(id) {
                    refused += 1;
                    rep.reason.get_or_insert(why);
                }
            }
        }
        // Writes what is queued and stops the writer; what it could not write is counted.
        let mut unwritten = Vec::new();
        if let Some(w) = &mut self.warm {
            tracing::info!("warm tier: writing queued objects to {}", w.dir().display());
            unwritten = w.finish();
            if !unwritten.is_empty() {
                rep.reason
                    .get_or_insert_with(|| w.failing().unwrap_or_default());
            }
        }
        rep.kept_in_shm = keep_for_adoption && refused + unwritten.len() as u64 > 0;
        // Hot objects whose copy did not reach a file stay in the kept shared memory; the
        // objects already evicted whose writes failed are lost.
        let in_hot = |k: &Key| self.keys.contains_key(k);
        rep.unwritten = unwritten
            .iter()
            .filter(|k| !rep.kept_in_shm || !in_hot(k))
            .count() as u64;
        rep.refused = refused
            + unwritten
                .iter()
                .filter(|k| rep.kept_in_shm && in_hot(k))
                .count() as u64;
        if let Some(c) = &mut self.catalog {
            for (k, _) in self.keys.iter() {
                // The hot tier goes away (unless it is kept); what was demoted above is warm.
                let warm = self.warm.as_ref().is_some_and(|w| w.contains(k));
                c.set_tier(
                    k,
                    if warm {
                        StorageTier::Warm
                    } else if rep.kept_in_shm {
                        StorageTier::Hot
                    } else {
                        StorageTier::None
                    },
                );
            }
        }
        self.checkpoint_catalog(true);
        self.warm = None;
        for c in self.clients.values() {
            shm::unlink_segment(&self.shm_dir, &c.lease_name);
        }
        self.clients.clear();
        for o in self.orphans.drain(..) {
            shm::unlink_segment(&self.shm_dir, &o.name);
        }
        if !rep.kept_in_shm {
            self.memory.remove_all();
        }
        rep
    }
}

/// What a shutdown could not persist.
#[derive(Debug, Default)]
pub(crate) struct ShutdownReport {
    /// Hot objects that did not reach the warm tier (refused, or their writes failed); they
    /// are kept when `kept_in_shm`, lost otherwise.
    pub refused: u64,
    /// Objects that exist nowhere any more: evicted, their writes failed to the end (and,
    /// unless the hot tier is kept, the hot objects that were not written either).
    pub unwritten: u64,
    /// Why.
    pub reason: Option<String>,
    /// The hot tier was left in shared memory for the next coordinator to adopt.
    pub kept_in_shm: bool,
}
