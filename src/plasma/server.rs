//! The Plasma store's protocol state machine (Arrow 11 semantics), independent
//! of transport and of the memory allocator.
//!
//! The transport feeds decoded [`Request`]s in with [`PlasmaStore::handle`],
//! tells the store about disconnects and timer expiry, and drains
//! [`Output`]s (reply frames with the segment fds to pass after them, and
//! notification messages for subscribers). Memory comes from a
//! [`PlasmaMemory`] implementation; an optional [`StoreEvents`] sink mirrors
//! sealed/removed objects into another index; an optional [`ExternalStore`]
//! receives evicted objects (`-e hashtable://...`).
//!
//! Guarantees:
//! * No method blocks and none panics on any client input: unknown ids,
//!   double seals, releases without a hold, aborts by non-creators etc. are
//!   tolerated (the reference store would abort).
//! * Byte accounting is exact: `allocated()` is the sum of
//!   `data_size + metadata_size` of every object owning memory and never
//!   exceeds the limit.
//! * Replies carry only error codes the client accepts (OK/1/2/3 except in
//!   DeleteReply).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::codec::{
    encode_notification_message, ObjectId, ObjectInfo, ObjectSpec, PlasmaError, Reply, Request,
    DIGEST_LEN,
};

/// Identifies one client connection (assigned by the transport, never reused).
pub type ClientId = u64;

/// Where an allocation lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// Segment id (> 0); doubles as the `store_fd` sent to clients. Must stay
    /// unique for the lifetime of the memory backend.
    pub segment: i32,
    /// Offset from the start of the segment file, 64-byte aligned.
    pub offset: u64,
    /// The segment's `mmap_size` as reported to clients (they map
    /// `mmap_size - 8` bytes from offset 0).
    pub mmap_size: u64,
}

/// Why [`PlasmaMemory::alloc`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// The id is already taken in the shared namespace (e.g. stored by a
    /// native client): the Create is answered with `ObjectExists`.
    Exists,
    /// No room (the caller may evict and retry).
    NoSpace,
}

/// A sealed object stored by another front-end (a native client) that the
/// Plasma store can serve without owning it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignObject {
    /// Where its bytes are (data, then metadata).
    pub loc: Location,
    /// Data length.
    pub data_size: u64,
    /// Metadata length.
    pub metadata_size: u64,
}

/// Memory and namespace provider for object payloads (segments of shared
/// memory, and the id space shared with other front-ends).
///
/// Implementations must guarantee that `[offset, offset + size)` of every
/// returned allocation lies within `[0, mmap_size - 8)` of its segment, that
/// offsets are 64-byte aligned, and that live allocations never overlap.
/// Byte accounting against the `-m` limit is done by the store, not here.
///
/// The foreign-object methods have defaults for a standalone store (nothing
/// foreign exists).
pub trait PlasmaMemory {
    /// Allocates `size` bytes (size may be 0) for object `id`. With
    /// `overflow`, the implementation must not fail for lack of space while
    /// the system can still provide memory (the store calls it so only when
    /// its exact accounting allows the object and nothing is evictable).
    fn alloc(&mut self, id: &ObjectId, size: u64, overflow: bool) -> Result<Location, AllocError>;
    /// Frees the allocation of `id` (made by `alloc(id, size, _)`); if it was
    /// published, readers elsewhere may still use it, so the implementation
    /// must defer reuse until they are done.
    fn free(&mut self, id: &ObjectId, loc: Location, size: u64);
    /// The object `id` at `loc` is sealed: make it visible to other readers.
    fn publish(&mut self, _id: &ObjectId, _loc: Location, _data_size: u64, _metadata_size: u64) {}
    /// Read access to `len` bytes at `loc` (a live allocation).
    fn bytes(&self, loc: Location, len: u64) -> &[u8];
    /// Write access to `len` bytes at `loc` (a live allocation).
    fn bytes_mut(&mut self, loc: Location, len: u64) -> &mut [u8];
    /// The fd to pass to clients for `segment`, if it exists.
    fn segment_fd(&self, segment: i32) -> Option<BorrowedFd<'_>>;
    /// Looks up a sealed foreign object without holding it.
    fn foreign(&mut self, _id: &ObjectId) -> Option<ForeignObject> {
        None
    }
    /// Looks up a sealed foreign object and holds it: until
    /// [`PlasmaMemory::release_foreign`], it must be neither evicted nor
    /// deleted nor its memory reused.
    fn hold_foreign(&mut self, _id: &ObjectId) -> Option<ForeignObject> {
        None
    }
    /// Ends a hold taken with [`PlasmaMemory::hold_foreign`].
    fn release_foreign(&mut self, _id: &ObjectId) {}
    /// Deletes a foreign object that no Plasma client holds.
    fn delete_foreign(&mut self, _id: &ObjectId) -> bool {
        false
    }
    /// Every sealed foreign object with a Plasma-sized (20-byte) id.
    fn list_foreign(&mut self) -> Vec<(ObjectId, u64, u64)> {
        Vec::new()
    }
    /// Periodic housekeeping (called by the event loop about once a second).
    fn maintain(&mut self) {}
}

/// Hooks for mirroring Plasma objects elsewhere. Default methods do nothing.
pub trait StoreEvents: Send {
    /// An object became readable (sealed, or restored from the external store).
    fn sealed(&mut self, _id: &ObjectId, _loc: Location, _data_size: u64, _metadata_size: u64) {}
    /// An object's memory went away (deleted, evicted, aborted, cleaned up).
    fn removed(&mut self, _id: &ObjectId) {}
}

/// Storage for evicted objects (`-e name://endpoint`).
pub trait ExternalStore: Send {
    /// Stores `data` (data ‖ metadata) under `id`.
    fn put(&mut self, id: &ObjectId, data: Vec<u8>);
    /// Removes and returns the bytes stored under `id`.
    fn take(&mut self, id: &ObjectId) -> Option<Vec<u8>>;
    /// Forgets `id` if present.
    fn remove(&mut self, id: &ObjectId);
}

/// The built-in in-memory external store (`hashtable://...`).
#[derive(Debug, Default)]
pub struct HashTableStore {
    map: HashMap<ObjectId, Vec<u8>>,
}

impl ExternalStore for HashTableStore {
    fn put(&mut self, id: &ObjectId, data: Vec<u8>) {
        self.map.insert(*id, data);
    }
    fn take(&mut self, id: &ObjectId) -> Option<Vec<u8>> {
        self.map.remove(id)
    }
    fn remove(&mut self, id: &ObjectId) {
        self.map.remove(id);
    }
}

/// Error from [`external_store_from_endpoint`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExternalStoreError {
    /// The endpoint has no `:`.
    #[error("external store endpoint {0:?} has no ':'")]
    Malformed(String),
    /// No store of that name exists.
    #[error("no such external store \"{0}\"")]
    Unknown(String),
    /// The store exists but cannot be opened.
    #[error("cannot open the external store: {0}")]
    Unusable(String),
}

/// Creates the external store named by `endpoint` (`name://rest`): `hashtable://` (in memory)
/// or `parquet:///DIR` (the Parquet warm tier in `DIR`, which survives restarts).
pub fn external_store_from_endpoint(
    endpoint: &str,
) -> Result<Box<dyn ExternalStore>, ExternalStoreError> {
    let Some((name, _)) = endpoint.split_once(':') else {
        return Err(ExternalStoreError::Malformed(endpoint.to_string()));
    };
    match name {
        "hashtable" => Ok(Box::new(HashTableStore::default())),
        "parquet" => {
            let dir = endpoint
                .strip_prefix("parquet://")
                .filter(|d| d.starts_with('/'))
                .ok_or_else(|| {
                    ExternalStoreError::Unusable(format!(
                        "{endpoint:?}: write parquet:///ABSOLUTE/DIRECTORY"
                    ))
                })?;
            crate::tier::warm::external::ParquetExternalStore::open(dir.into())
                .map(|s| Box::new(s) as Box<dyn ExternalStore>)
                .map_err(|e| ExternalStoreError::Unusable(e.to_string()))
        }
        other => Err(ExternalStoreError::Unknown(other.to_string())),
    }
}

/// Something the transport must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Write `frame` to the client's main socket, then pass the fd of each
    /// segment in `segments`, in order, one per `sendmsg` (1 byte + SCM_RIGHTS).
    Reply {
        /// Target client.
        client: ClientId,
        /// Complete frame (header + body).
        frame: Vec<u8>,
        /// Segment ids whose fds follow the frame.
        segments: Vec<i32>,
    },
    /// Queue `message` (8-byte length + PlasmaNotification) on the client's
    /// notification socket.
    Notify {
        /// Subscribed client.
        client: ClientId,
        /// Length-prefixed notification message.
        message: Vec<u8>,
    },
}

/// What the transport should do with the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The client asked to disconnect (type 0); cleanup has been done.
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Sealed,
    Evicted,
}

#[derive(Debug)]
struct Entry {
    state: State,
    loc: Option<Location>,
    data_size: u64,
    metadata_size: u64,
    holders: HashSet<ClientId>,
    create_time: i64,
    construct_duration: i64,
    digest: Option<[u8; DIGEST_LEN]>,
    /// Key in the LRU this entry is in (global, or its quota owner's).
    lru_key: Option<u64>,
    /// Quota client whose LRU tracks this object, if any.
    quota_owner: Option<ClientId>,
    /// Stored by another front-end: held (never owned) while Plasma clients
    /// hold it, not counted in `allocated`, never in the LRU.
    foreign: bool,
}

impl Entry {
    fn size(&self) -> u64 {
        self.data_size.saturating_add(self.metadata_size)
    }
    fn spec(&self) -> ObjectSpec {
        let loc = self.loc.unwrap_or(Location {
            segment: 0,
            offset: 0,
            mmap_size: 0,
        });
        ObjectSpec {
            segment_index: loc.segment,
            data_offset: loc.offset,
            data_size: self.data_size,
            metadata_offset: loc.offset + self.data_size,
            metadata_size: self.metadata_size,
            device_num: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Quota {
    capacity: u64,
    lru: BTreeMap<u64, ObjectId>,
    /// Sum of sizes of objects tracked by this quota.
    used: u64,
}

#[derive(Debug, Default)]
struct ClientState {
    held: HashSet<ObjectId>,
    sent_segments: HashSet<i32>,
    subscribed: bool,
    name: String,
    quota: Option<Quota>,
}

#[derive(Debug)]
struct PendingGet {
    ids: Vec<ObjectId>,
    found: HashMap<ObjectId, ObjectSpec>,
    waiting: HashSet<ObjectId>,
    deadline: Option<Instant>,
}

/// Counters exposed for debugging and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Objects evicted so far.
    pub num_evictions: u64,
    /// Bytes evicted so far.
    pub bytes_evicted: u64,
}

/// The Plasma store state machine.
pub struct PlasmaStore<M: PlasmaMemory> {
    mem: M,
    limit: u64,
    allocated: u64,
    objects: HashMap<ObjectId, Entry>,
    lru: BTreeMap<u64, ObjectId>,
    lru_seq: u64,
    global_capacity: i64,
    clients: HashMap<ClientId, ClientState>,
    deletion_cache: HashSet<ObjectId>,
    waiting: HashMap<ObjectId, Vec<ClientId>>,
    pending: HashMap<ClientId, PendingGet>,
    external: Option<Box<dyn ExternalStore>>,
    events: Option<Box<dyn StoreEvents>>,
    outputs: VecDeque<Output>,
    stats: StoreStats,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl<M: PlasmaMemory> PlasmaStore<M> {
    /// Creates a store with footprint limit `limit` bytes (the `-m` value).
    pub fn new(mem: M, limit: u64) -> Self {
        PlasmaStore {
            mem,
            limit,
            allocated: 0,
            objects: HashMap::new(),
            lru: BTreeMap::new(),
            lru_seq: 0,
            global_capacity: limit.min(i64::MAX as u64) as i64,
            clients: HashMap::new(),
            deletion_cache: HashSet::new(),
            waiting: HashMap::new(),
            pending: HashMap::new(),
            external: None,
            events: None,
            outputs: VecDeque::new(),
            stats: StoreStats::default(),
        }
    }

    /// Installs an external store for evicted objects.
    pub fn set_external_store(&mut self, ext: Box<dyn ExternalStore>) {
        self.external = Some(ext);
    }

    /// Installs an event sink (sealed/removed hooks).
    pub fn set_event_sink(&mut self, events: Box<dyn StoreEvents>) {
        self.events = Some(events);
    }

    /// The memory backend.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Mutable access to the memory backend.
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Bytes currently accounted (sum of sizes of objects owning memory).
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// The `-m` limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Eviction counters.
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// Number of entries in the object table (any state).
    pub fn num_objects(&self) -> usize {
        self.objects.len()
    }

    /// Registers a new connection. Idempotent.
    pub fn add_client(&mut self, client: ClientId) {
        self.clients.entry(client).or_insert_with(|| ClientState {
            name: "anonymous_client".to_string(),
            ..Default::default()
        });
    }

    /// Removes and returns the next output, if any.
    pub fn pop_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Drains all pending outputs.
    pub fn drain_outputs(&mut self) -> Vec<Output> {
        self.outputs.drain(..).collect()
    }

    /// The earliest pending Get deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().filter_map(|p| p.deadline).min()
    }

    /// Answers every pending Get whose deadline is `<= now`.
    pub fn fire_timers(&mut self, now: Instant) {
        let due: Vec<ClientId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
            .map(|(c, _)| *c)
            .collect();
        for c in due {
            self.finish_get(c);
        }
    }

    /// Handles one decoded request from `client` (registering it if new).
    /// `Subscribe` assumes the transport has already taken the client's
    /// notification fd. Never blocks; replies go to the output queue.
    pub fn handle(&mut self, client: ClientId, req: Request<'_>, now: Instant) -> Flow {
        self.add_client(client);
        match req {
            Request::Disconnect => {
                self.disconnect_client(client);
                return Flow::Close;
            }
            Request::Connect => self.reply(
                client,
                Reply::Connect {
                    memory_capacity: self.limit.min(i64::MAX as u64) as i64,
                },
                vec![],
            ),
            Request::Create {
                object_id,
                evict_if_full,
                data_size,
                metadata_size,
                device_num,
            } => self.handle_create(
                client,
                object_id,
                evict_if_full,
                data_size,
                metadata_size,
                device_num,
            ),
            Request::CreateAndSeal {
                object_id,
                evict_if_full,
                data,
                metadata,
                digest,
            } => {
                let error = self.create_and_seal_batch(
                    client,
                    &[object_id],
                    evict_if_full,
                    &[data],
                    &[metadata],
                    &[digest],
                );
                self.reply(client, Reply::CreateAndSeal { error }, vec![]);
            }
            Request::CreateAndSealBatch {
                object_ids,
                evict_if_full,
                data,
                metadata,
                digests,
            } => {
                let error = self.create_and_seal_batch(
                    client,
                    &object_ids,
                    evict_if_full,
                    &data,
                    &metadata,
                    &digests,
                );
                self.reply(client, Reply::CreateAndSealBatch { error }, vec![]);
            }
            Request::Abort { object_id } => {
                self.handle_abort(client, &object_id);
                self.reply(client, Reply::Abort { object_id }, vec![]);
            }
            Request::Seal { object_id, digest } => {
                self.seal_objects(&[(object_id, digest)]);
                self.reply(
                    client,
                    Reply::Seal {
                        object_id,
                        error: PlasmaError::Ok,
                    },
                    vec![],
                );
            }
            Request::Get {
                object_ids,
                timeout_ms,
            } => self.handle_get(client, object_ids, timeout_ms, now),
            Request::Release { object_id } => self.release(client, &object_id),
            Request::Delete { object_ids } => {
                let errors = object_ids.iter().map(|id| self.delete_one(id)).collect();
                self.reply(client, Reply::Delete { object_ids, errors }, vec![]);
            }
            Request::Contains { object_id } => {
                let has_object = match self.objects.get(&object_id) {
                    Some(e) => e.state != State::Created,
                    None => self.mem.foreign(&object_id).is_some(),
                };
                self.reply(
                    client,
                    Reply::Contains {
                        object_id,
                        has_object,
                    },
                    vec![],
                );
            }
            Request::List => {
                let objects = self
                    .objects
                    .iter()
                    .map(|(id, e)| ObjectInfo {
                        object_id: *id,
                        data_size: e.data_size as i64,
                        metadata_size: e.metadata_size as i64,
                        ref_count: e.holders.len() as i32,
                        create_time: e.create_time,
                        construct_duration: e.construct_duration,
                        digest: Some(e.digest.map(|d| d.to_vec()).unwrap_or_default()),
                        is_deletion: false,
                    })
                    .collect::<Vec<_>>();
                let mut objects = objects;
                let now = unix_now();
                for (id, d, m) in self.mem.list_foreign() {
                    if self.objects.contains_key(&id) {
                        continue;
                    }
                    objects.push(ObjectInfo {
                        object_id: id,
                        data_size: d as i64,
                        metadata_size: m as i64,
                        ref_count: 0,
                        create_time: now,
                        construct_duration: 0,
                        digest: Some(vec![0; DIGEST_LEN]),
                        is_deletion: false,
                    });
                }
                self.reply(client, Reply::List { objects }, vec![]);
            }
            Request::Evict { num_bytes } => {
                let (victims, total) = self.choose_global_victims(num_bytes);
                self.evict_objects(&victims);
                self.reply(client, Reply::Evict { num_bytes: total }, vec![]);
            }
            Request::Subscribe => self.subscribe(client),
            Request::SetOptions {
                client_name,
                output_memory_quota,
            } => {
                let error = self.set_options(client, client_name, output_memory_quota);
                self.reply(client, Reply::SetOptions { error }, vec![]);
            }
            Request::GetDebugString => {
                let s = self.debug_string();
                self.reply(
                    client,
                    Reply::DebugString {
                        debug_string: s.into_bytes(),
                    },
                    vec![],
                );
            }
            Request::RefreshLru { object_ids } => {
                for id in &object_ids {
                    self.refresh_lru(id);
                }
                self.reply(client, Reply::RefreshLru, vec![]);
            }
        }
        Flow::Continue
    }

    /// Marks `client` as subscribed and queues one notification per sealed
    /// object. Called by `handle(Subscribe)`.
    pub fn subscribe(&mut self, client: ClientId) {
        self.add_client(client);
        if let Some(c) = self.clients.get_mut(&client) {
            c.subscribed = true;
        }
        let msgs: Vec<Vec<u8>> = self
            .objects
            .iter()
            .filter(|(_, e)| e.state == State::Sealed)
            .map(|(id, e)| encode_notification_message(&[Self::seal_info(id, e)]))
            .collect();
        for message in msgs {
            self.outputs.push_back(Output::Notify { client, message });
        }
    }

    /// Stops notifications to `client` (e.g. its notification socket broke).
    pub fn unsubscribe(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.subscribed = false;
        }
    }

    /// Connection closed: returns its quota, destroys its unsealed creations,
    /// cancels its pending Get, releases its holds and unsubscribes it (§9.8).
    pub fn disconnect_client(&mut self, client: ClientId) {
        let Some(mut c) = self.clients.remove(&client) else {
            return;
        };
        if let Some(q) = c.quota.take() {
            self.global_capacity += q.capacity as i64;
            // Unpinned quota objects join the global LRU, oldest first.
            for id in q.lru.values() {
                if let Some(e) = self.objects.get_mut(id) {
                    e.lru_key = None;
                }
            }
            for id in q.lru.into_values() {
                self.lru_insert_global(&id);
            }
            for e in self.objects.values_mut() {
                if e.quota_owner == Some(client) {
                    e.quota_owner = None;
                }
            }
        }
        let held: Vec<ObjectId> = c.held.drain().collect();
        let mut sealed = Vec::new();
        for id in held {
            match self.objects.get(&id).map(|e| e.state) {
                Some(State::Created) => self.destroy_unsealed(&id),
                Some(_) => sealed.push(id),
                None => {}
            }
        }
        if let Some(p) = self.pending.remove(&client) {
            self.unregister_waits(client, &p);
        }
        // Re-insert temporarily so release() can find the holder set entry.
        self.clients.insert(client, c);
        for id in sealed {
            self.release(client, &id);
        }
        self.clients.remove(&client);
    }

    // ------------------------------------------------------------------
    // Requests
    // ------------------------------------------------------------------

    fn reply(&mut self, client: ClientId, r: Reply, segments: Vec<i32>) {
        self.outputs.push_back(Output::Reply {
            client,
            frame: r.encode_frame(),
            segments,
        });
    }

    /// Segments among `segs` not yet sent to `client` (marking them sent).
    fn new_segments(&mut self, client: ClientId, segs: &[i32]) -> Vec<i32> {
        let Some(c) = self.clients.get_mut(&client) else {
            return vec![];
        };
        segs.iter()
            .copied()
            .filter(|s| c.sent_segments.insert(*s))
            .collect()
    }

    fn handle_create(
        &mut self,
        client: ClientId,
        object_id: ObjectId,
        evict_if_full: bool,
        data_size: u64,
        metadata_size: u64,
        device_num: i32,
    ) {
        let err_reply = |error| Reply::Create {
            object_id,
            object: ObjectSpec::default(),
            error,
            store_fd: 0,
            mmap_size: 0,
        };
        if device_num != 0 {
            self.reply(client, err_reply(PlasmaError::OutOfMemory), vec![]);
            return;
        }
        match self.create_object(
            client,
            object_id,
            evict_if_full,
            data_size,
            metadata_size,
            true,
        ) {
            Ok(loc) => {
                let spec = self.objects[&object_id].spec();
                let segs = self.new_segments(client, &[loc.segment]);
                self.reply(
                    client,
                    Reply::Create {
                        object_id,
                        object: spec,
                        error: PlasmaError::Ok,
                        store_fd: loc.segment,
                        mmap_size: loc.mmap_size as i64,
                    },
                    segs,
                );
            }
            Err(e) => self.reply(client, err_reply(e), vec![]),
        }
    }

    /// Creates a CREATED entry held by `client`.
    fn create_object(
        &mut self,
        client: ClientId,
        id: ObjectId,
        evict_if_full: bool,
        data_size: u64,
        metadata_size: u64,
        is_create: bool,
    ) -> Result<Location, PlasmaError> {
        if self.objects.contains_key(&id) {
            return Err(PlasmaError::ObjectExists);
        }
        // Sizes must fit in i64 on the wire and must not overflow.
        let size = data_size
            .checked_add(metadata_size)
            .filter(|s| *s <= i64::MAX as u64)
            .ok_or(PlasmaError::OutOfMemory)?;
        let quota_tracked = is_create && self.has_quota(client);
        let loc = self.allocate(&id, size, evict_if_full, Some(client).filter(|_| is_create))?;
        let mut e = Entry {
            state: State::Created,
            loc: Some(loc),
            data_size,
            metadata_size,
            holders: HashSet::new(),
            create_time: unix_now(),
            construct_duration: -1,
            digest: None,
            lru_key: None,
            quota_owner: None,
            foreign: false,
        };
        e.holders.insert(client);
        if quota_tracked {
            e.quota_owner = Some(client);
            if let Some(q) = self.quota_mut(client) {
                q.used += size;
            }
        }
        self.objects.insert(id, e);
        if let Some(c) = self.clients.get_mut(&client) {
            c.held.insert(id);
        }
        Ok(loc)
    }

    fn create_and_seal_batch(
        &mut self,
        client: ClientId,
        ids: &[ObjectId],
        evict_if_full: bool,
        data: &[&[u8]],
        metadata: &[&[u8]],
        digests: &[[u8; DIGEST_LEN]],
    ) -> PlasmaError {
        if data.len() != ids.len() || metadata.len() != ids.len() || digests.len() != ids.len() {
            return PlasmaError::OutOfMemory;
        }
        // Duplicate ids within one batch would collide with themselves.
        let mut created: Vec<ObjectId> = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let r = self.create_object(
                client,
                *id,
                evict_if_full,
                data[i].len() as u64,
                metadata[i].len() as u64,
                true,
            );
            match r {
                Ok(loc) => {
                    let dlen = data[i].len() as u64;
                    let mlen = metadata[i].len() as u64;
                    let buf = self.mem.bytes_mut(loc, dlen + mlen);
                    buf[..dlen as usize].copy_from_slice(data[i]);
                    buf[dlen as usize..].copy_from_slice(metadata[i]);
                    created.push(*id);
                }
                Err(e) => {
                    for id in &created {
                        self.destroy_unsealed(id);
                        if let Some(c) = self.clients.get_mut(&client) {
                            c.held.remove(id);
                        }
                    }
                    return e;
                }
            }
        }
        let pairs: Vec<(ObjectId, [u8; DIGEST_LEN])> =
            ids.iter().copied().zip(digests.iter().copied()).collect();
        self.seal_objects(&pairs);
        for id in ids {
            self.release(client, id);
        }
        PlasmaError::Ok
    }

    fn handle_abort(&mut self, client: ClientId, id: &ObjectId) {
        let ok = self
            .objects
            .get(id)
            .is_some_and(|e| e.state == State::Created && e.holders.contains(&client));
        if !ok {
            return;
        }
        self.destroy_unsealed(id);
        if let Some(c) = self.clients.get_mut(&client) {
            c.held.remove(id);
        }
    }

    fn seal_info(id: &ObjectId, e: &Entry) -> ObjectInfo {
        ObjectInfo {
            object_id: *id,
            data_size: e.data_size as i64,
            metadata_size: e.metadata_size as i64,
            digest: Some(e.digest.unwrap_or_default().to_vec()),
            ..Default::default()
        }
    }

    /// Seals CREATED objects; one notification message for all of them, then
    /// waiting Gets are served. Unknown or already-sealed ids are skipped.
    fn seal_objects(&mut self, items: &[(ObjectId, [u8; DIGEST_LEN])]) {
        let now = unix_now();
        let mut infos = Vec::new();
        let mut sealed = Vec::new();
        for (id, digest) in items {
            let Some(e) = self.objects.get_mut(id) else {
                continue;
            };
            if e.state != State::Created {
                continue;
            }
            e.state = State::Sealed;
            e.digest = Some(*digest);
            e.construct_duration = now - e.create_time;
            infos.push(Self::seal_info(id, e));
            sealed.push(*id);
            if let Some(loc) = e.loc {
                self.mem.publish(id, loc, e.data_size, e.metadata_size);
                if let Some(ev) = self.events.as_mut() {
                    ev.sealed(id, loc, e.data_size, e.metadata_size);
                }
            }
        }
        if infos.is_empty() {
            return;
        }
        self.notify_all(&infos);
        for id in sealed {
            self.serve_waiters(&id);
        }
    }

    fn notify_all(&mut self, infos: &[ObjectInfo]) {
        let subs: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, c)| c.subscribed)
            .map(|(id, _)| *id)
            .collect();
        if subs.is_empty() {
            return;
        }
        let message = encode_notification_message(infos);
        for client in subs {
            self.outputs.push_back(Output::Notify {
                client,
                message: message.clone(),
            });
        }
    }

    fn handle_get(&mut self, client: ClientId, ids: Vec<ObjectId>, timeout_ms: i64, now: Instant) {
        // A client is synchronous; a second Get while one is pending is a
        // protocol violation. Answer the old one first so nothing leaks.
        if self.pending.contains_key(&client) {
            self.finish_get(client);
        }
        let mut p = PendingGet {
            ids,
            found: HashMap::new(),
            waiting: HashSet::new(),
            deadline: None,
        };
        let distinct: Vec<ObjectId> = {
            let mut seen = HashSet::new();
            p.ids
                .iter()
                .copied()
                .filter(|id| seen.insert(*id))
                .collect()
        };
        for id in distinct {
            match self.objects.get(&id).map(|e| e.state) {
                Some(State::Sealed) => {
                    self.add_holder(client, &id);
                    p.found.insert(id, self.objects[&id].spec());
                }
                Some(State::Evicted) if self.restore(&id) => {
                    self.add_holder(client, &id);
                    p.found.insert(id, self.objects[&id].spec());
                }
                None if self.adopt_foreign(&id) => {
                    self.add_holder(client, &id);
                    p.found.insert(id, self.objects[&id].spec());
                }
                _ => {
                    p.waiting.insert(id);
                }
            }
        }
        let done = p.waiting.is_empty() || timeout_ms == 0;
        if !done {
            for id in &p.waiting {
                self.waiting.entry(*id).or_default().push(client);
            }
            if timeout_ms != -1 {
                let ms = timeout_ms.max(0) as u64;
                p.deadline = Some(now + Duration::from_millis(ms));
            }
        }
        self.pending.insert(client, p);
        if done {
            self.finish_get(client);
        }
    }

    fn unregister_waits(&mut self, client: ClientId, p: &PendingGet) {
        for id in &p.waiting {
            if let Some(v) = self.waiting.get_mut(id) {
                v.retain(|c| *c != client);
                if v.is_empty() {
                    self.waiting.remove(id);
                }
            }
        }
    }

    /// Sends the GetReply for `client`'s pending request and removes it.
    fn finish_get(&mut self, client: ClientId) {
        let Some(p) = self.pending.remove(&client) else {
            return;
        };
        self.unregister_waits(client, &p);
        let mut objects = Vec::with_capacity(p.ids.len());
        let mut segs: Vec<i32> = Vec::new();
        let mut sizes: Vec<i64> = Vec::new();
        for id in &p.ids {
            match p.found.get(id) {
                Some(spec) => {
                    objects.push(*spec);
                    if !segs.contains(&spec.segment_index) {
                        segs.push(spec.segment_index);
                        let ms = self
                            .objects
                            .get(id)
                            .and_then(|e| e.loc)
                            .map(|l| l.mmap_size)
                            .unwrap_or(0);
                        sizes.push(ms as i64);
                    }
                }
                None => objects.push(ObjectSpec::missing()),
            }
        }
        let to_send = self.new_segments(client, &segs);
        self.reply(
            client,
            Reply::Get {
                object_ids: p.ids,
                objects,
                store_fds: segs,
                mmap_sizes: sizes,
            },
            to_send,
        );
    }

    /// Called when `id` became available: serves waiting Gets in arrival order.
    fn serve_waiters(&mut self, id: &ObjectId) {
        let Some(waiters) = self.waiting.remove(id) else {
            return;
        };
        for client in waiters {
            let Some(spec) = self.objects.get(id).map(|e| e.spec()) else {
                return;
            };
            let Some(p) = self.pending.get_mut(&client) else {
                continue;
            };
            if !p.waiting.remove(id) {
                continue;
            }
            p.found.insert(*id, spec);
            let complete = p.waiting.is_empty();
            self.add_holder(client, id);
            if complete {
                self.finish_get(client);
            }
        }
    }

    fn add_holder(&mut self, client: ClientId, id: &ObjectId) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if e.holders.insert(client) {
            if e.holders.len() == 1 {
                self.lru_remove(id);
            }
            if let Some(c) = self.clients.get_mut(&client) {
                c.held.insert(*id);
            }
        }
    }

    /// Drops `client`'s hold on `id`; at ref 0 the object enters the LRU or,
    /// if a deletion was deferred, is deleted/evicted now.
    fn release(&mut self, client: ClientId, id: &ObjectId) {
        if let Some(c) = self.clients.get_mut(&client) {
            c.held.remove(id);
        }
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if !e.holders.remove(&client) || !e.holders.is_empty() {
            return;
        }
        if e.foreign {
            self.objects.remove(id);
            self.mem.release_foreign(id);
            if self.deletion_cache.remove(id) && self.mem.delete_foreign(id) {
                self.notify_deleted(id);
            }
            return;
        }
        match e.state {
            State::Sealed => {
                if self.deletion_cache.remove(id) {
                    self.evict_objects(&[*id]);
                } else {
                    self.lru_insert(id);
                }
            }
            // An unsealed object whose creator released it stays until seal
            // or creator disconnect (the creator still owns it).
            State::Created | State::Evicted => {}
        }
    }

    fn delete_one(&mut self, id: &ObjectId) -> PlasmaError {
        let Some(e) = self.objects.get(id) else {
            if self.mem.delete_foreign(id) {
                self.notify_deleted(id);
                return PlasmaError::Ok;
            }
            return PlasmaError::ObjectNotFound;
        };
        if e.state != State::Sealed {
            self.deletion_cache.insert(*id);
            return PlasmaError::ObjectNotSealed;
        }
        if !e.holders.is_empty() {
            self.deletion_cache.insert(*id);
            return PlasmaError::ObjectInUse;
        }
        self.lru_remove(id);
        self.erase_with_notification(id);
        PlasmaError::Ok
    }

    fn set_options(&mut self, client: ClientId, name: &[u8], quota: i64) -> PlasmaError {
        let limit = self.limit as f64;
        let Some(c) = self.clients.get_mut(&client) else {
            return PlasmaError::OutOfMemory;
        };
        c.name = String::from_utf8_lossy(name).into_owned();
        if c.quota.is_some() || quota < 0 {
            return PlasmaError::OutOfMemory;
        }
        if ((self.global_capacity as f64) - (quota as f64)) < 0.3 * limit {
            return PlasmaError::OutOfMemory;
        }
        self.global_capacity -= quota;
        c.quota = Some(Quota {
            capacity: quota as u64,
            ..Default::default()
        });
        PlasmaError::Ok
    }

    fn refresh_lru(&mut self, id: &ObjectId) {
        let in_lru = self.objects.get(id).is_some_and(|e| e.lru_key.is_some());
        if in_lru {
            self.lru_remove(id);
            self.lru_insert(id);
        }
    }

    /// The reference store's debug string format (§5.15).
    pub fn debug_string(&self) -> String {
        let quota_clients: Vec<&ClientState> = self
            .clients
            .values()
            .filter(|c| c.quota.is_some())
            .collect();
        let quota_objs: usize = self
            .objects
            .values()
            .filter(|e| e.quota_owner.is_some())
            .count();
        let pinned_quota = self
            .objects
            .values()
            .filter(|e| e.quota_owner.is_some() && !e.holders.is_empty())
            .count();
        let pinned_bytes: u64 = self
            .objects
            .values()
            .filter(|e| e.quota_owner.is_some() && !e.holders.is_empty())
            .map(|e| e.size())
            .sum();
        let lru_used: u64 = self
            .lru
            .values()
            .filter_map(|id| self.objects.get(id))
            .map(|e| e.size())
            .sum();
        let pct = |used: u64, cap: i64| {
            if cap > 0 {
                100.0 * used as f64 / cap as f64
            } else {
                0.0
            }
        };
        let mut lines = vec![
            format!("num clients with quota: {}", quota_clients.len()),
            format!("quota map size: {quota_objs}"),
            format!("pinned quota map size: {pinned_quota}"),
            format!("allocated bytes: {}", self.allocated),
            format!("allocation limit: {}", self.limit),
            format!("pinned bytes: {pinned_bytes}"),
            format!("(global lru) capacity: {}", self.global_capacity),
            format!(
                "(global lru) used: {}%",
                pct(lru_used, self.global_capacity)
            ),
            format!("(global lru) num objects: {}", self.lru.len()),
            format!("(global lru) num evictions: {}", self.stats.num_evictions),
            format!("(global lru) bytes evicted: {}", self.stats.bytes_evicted),
        ];
        for c in quota_clients {
            let q = c.quota.as_ref().expect("filtered on quota");
            let n = &c.name;
            lines.push(format!("({n}) capacity: {}", q.capacity));
            lines.push(format!("({n}) used: {}%", pct(q.used, q.capacity as i64)));
            lines.push(format!("({n}) num objects: {}", q.lru.len()));
            lines.push(format!("({n}) num evictions: 0"));
            lines.push(format!("({n}) bytes evicted: 0"));
        }
        lines.join("\n")
    }

    // ------------------------------------------------------------------
    // Memory, LRU and eviction
    // ------------------------------------------------------------------

    fn has_quota(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_some_and(|c| c.quota.is_some())
    }

    fn quota_mut(&mut self, client: ClientId) -> Option<&mut Quota> {
        self.clients.get_mut(&client).and_then(|c| c.quota.as_mut())
    }

    /// §9.5: quota enforcement, then allocate with LRU eviction.
    fn allocate(
        &mut self,
        id: &ObjectId,
        size: u64,
        evict_if_full: bool,
        quota_client: Option<ClientId>,
    ) -> Result<Location, PlasmaError> {
        if evict_if_full {
            if let Some(c) = quota_client {
                if self.has_quota(c) {
                    self.enforce_quota(c, size)?;
                }
            }
        }
        loop {
            if self.allocated.saturating_add(size) <= self.limit {
                match self.mem.alloc(id, size, false) {
                    Ok(loc) => {
                        self.allocated += size;
                        return Ok(loc);
                    }
                    Err(AllocError::Exists) => return Err(PlasmaError::ObjectExists),
                    Err(AllocError::NoSpace) => {}
                }
                // Accounting allows it but the backend cannot place it
                // (fragmentation, or memory still used by other readers):
                // evict the LRU end and retry; with nothing evictable, ask the
                // backend to overflow rather than fail an allowed request.
                let (victims, _) = if evict_if_full {
                    self.choose_global_victims(size.max(1))
                } else {
                    (Vec::new(), 0)
                };
                if victims.is_empty() {
                    return match self.mem.alloc(id, size, true) {
                        Ok(loc) => {
                            self.allocated += size;
                            Ok(loc)
                        }
                        Err(AllocError::Exists) => Err(PlasmaError::ObjectExists),
                        Err(AllocError::NoSpace) => Err(PlasmaError::OutOfMemory),
                    };
                }
                self.evict_objects(&victims);
                continue;
            }
            if !evict_if_full {
                return Err(PlasmaError::OutOfMemory);
            }
            let required = self.allocated + size - self.limit;
            let space_to_free = required.max(self.limit / 5);
            let (victims, freed) = self.choose_global_victims(space_to_free);
            self.evict_objects(&victims);
            if !(freed >= required && freed > 0) {
                return Err(PlasmaError::OutOfMemory);
            }
        }
    }

    fn enforce_quota(&mut self, client: ClientId, size: u64) -> Result<(), PlasmaError> {
        let (capacity, used) = match self.quota_mut(client) {
            Some(q) => (q.capacity, q.used),
            None => return Ok(()),
        };
        if size > capacity {
            return Err(PlasmaError::OutOfMemory);
        }
        if capacity - used >= size {
            return Ok(());
        }
        let mut shortfall = size - (capacity - used);
        // Unpinned (in the client's LRU) first, oldest first; then pinned
        // objects are demoted (dropped from quota tracking).
        let unpinned: Vec<ObjectId> = self
            .quota_mut(client)
            .map(|q| q.lru.values().copied().collect())
            .unwrap_or_default();
        let mut victims = Vec::new();
        for id in unpinned {
            if shortfall == 0 {
                break;
            }
            let s = self.objects.get(&id).map(|e| e.size()).unwrap_or(0);
            shortfall = shortfall.saturating_sub(s);
            victims.push(id);
        }
        if shortfall > 0 {
            let pinned: Vec<ObjectId> = self
                .objects
                .iter()
                .filter(|(_, e)| e.quota_owner == Some(client) && e.lru_key.is_none())
                .map(|(id, _)| *id)
                .collect();
            for id in pinned {
                if shortfall == 0 {
                    break;
                }
                let s = self.objects[&id].size();
                shortfall = shortfall.saturating_sub(s);
                self.objects.get_mut(&id).expect("listed").quota_owner = None;
                if let Some(q) = self.quota_mut(client) {
                    q.used = q.used.saturating_sub(s);
                }
            }
        }
        self.evict_objects(&victims);
        Ok(())
    }

    fn lru_insert(&mut self, id: &ObjectId) {
        let owner = self.objects.get(id).and_then(|e| e.quota_owner);
        match owner {
            Some(c) if self.has_quota(c) => {
                self.lru_seq += 1;
                let key = self.lru_seq;
                if let Some(q) = self.quota_mut(c) {
                    q.lru.insert(key, *id);
                }
                if let Some(e) = self.objects.get_mut(id) {
                    e.lru_key = Some(key);
                }
            }
            _ => self.lru_insert_global(id),
        }
    }

    fn lru_insert_global(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if e.lru_key.is_some() || e.state != State::Sealed || !e.holders.is_empty() {
            return;
        }
        e.quota_owner = None;
        self.lru_seq += 1;
        e.lru_key = Some(self.lru_seq);
        self.lru.insert(self.lru_seq, *id);
    }

    fn lru_remove(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        let Some(key) = e.lru_key.take() else {
            return;
        };
        if self.lru.remove(&key).is_none() {
            if let Some(c) = e.quota_owner {
                if let Some(q) = self.clients.get_mut(&c).and_then(|c| c.quota.as_mut()) {
                    q.lru.remove(&key);
                }
            }
        }
    }

    /// Takes objects from the global LRU's old end until their total size
    /// is `>= num_bytes` (or the LRU is exhausted).
    fn choose_global_victims(&self, num_bytes: u64) -> (Vec<ObjectId>, u64) {
        let mut total = 0u64;
        let mut out = Vec::new();
        for id in self.lru.values() {
            if total >= num_bytes {
                break;
            }
            total += self.objects.get(id).map(|e| e.size()).unwrap_or(0);
            out.push(*id);
        }
        (out, total)
    }

    /// §9.7: with an external store, move objects there (EVICTED, no
    /// notification); otherwise delete them with a deletion notification.
    fn evict_objects(&mut self, ids: &[ObjectId]) {
        for id in ids {
            let ok = self
                .objects
                .get(id)
                .is_some_and(|e| e.state == State::Sealed && e.holders.is_empty());
            if !ok {
                continue;
            }
            self.lru_remove(id);
            let size = self.objects[id].size();
            self.stats.num_evictions += 1;
            self.stats.bytes_evicted += size;
            if self.external.is_some() {
                let e = self.objects.get_mut(id).expect("checked");
                let loc = e.loc.take().expect("sealed objects own memory");
                e.state = State::Evicted;
                let bytes = self.mem.bytes(loc, size).to_vec();
                self.mem.free(id, loc, size);
                self.allocated -= size;
                self.untrack_quota(id);
                if let Some(ext) = self.external.as_mut() {
                    ext.put(id, bytes);
                }
                if let Some(ev) = self.events.as_mut() {
                    ev.removed(id);
                }
            } else {
                self.erase_with_notification(id);
            }
        }
    }

    fn untrack_quota(&mut self, id: &ObjectId) {
        let Some(e) = self.objects.get_mut(id) else {
            return;
        };
        if let Some(c) = e.quota_owner.take() {
            let s = e.size();
            if let Some(q) = self.quota_mut(c) {
                q.used = q.used.saturating_sub(s);
            }
        }
    }

    /// Frees memory and erases the entry (no notification).
    fn erase(&mut self, id: &ObjectId) {
        self.lru_remove(id);
        self.untrack_quota(id);
        let Some(e) = self.objects.remove(id) else {
            return;
        };
        if let Some(loc) = e.loc {
            self.mem.free(id, loc, e.size());
            self.allocated -= e.size();
            if let Some(ev) = self.events.as_mut() {
                ev.removed(id);
            }
        }
        if let Some(ext) = self.external.as_mut() {
            ext.remove(id);
        }
        for c in e.holders {
            if let Some(cs) = self.clients.get_mut(&c) {
                cs.held.remove(id);
            }
        }
    }

    fn erase_with_notification(&mut self, id: &ObjectId) {
        self.erase(id);
        self.deletion_cache.remove(id);
        self.notify_deleted(id);
    }

    fn notify_deleted(&mut self, id: &ObjectId) {
        self.notify_all(&[ObjectInfo {
            object_id: *id,
            is_deletion: true,
            ..Default::default()
        }]);
    }

    /// Aborted or orphaned unsealed object: freed without notification.
    fn destroy_unsealed(&mut self, id: &ObjectId) {
        self.erase(id);
        // Unlike the reference, clear a stale deferred deletion (§9.6 quirk).
        self.deletion_cache.remove(id);
        // Unlike the reference, Gets waiting for it end now (it is reported missing): the
        // seal they wait for will not come.
        self.abandon_waiters(id);
    }

    /// The object `id` will not be sealed (its creator aborted it or disconnected): the Gets
    /// waiting for it stop waiting for it, and are answered (with it missing) when that was
    /// the last id they waited for.
    fn abandon_waiters(&mut self, id: &ObjectId) {
        let Some(waiters) = self.waiting.remove(id) else {
            return;
        };
        for client in waiters {
            let Some(p) = self.pending.get_mut(&client) else {
                continue;
            };
            if p.waiting.remove(id) && p.waiting.is_empty() {
                self.finish_get(client);
            }
        }
    }

    /// Restores an EVICTED object from the external store. On failure the
    /// object stays EVICTED (reported as missing).
    fn restore(&mut self, id: &ObjectId) -> bool {
        let size = match self.objects.get(id) {
            Some(e) if e.state == State::Evicted => e.size(),
            _ => return false,
        };
        let loc = match self.allocate(id, size, true, None) {
            Ok(loc) => loc,
            Err(PlasmaError::ObjectExists) => {
                // Another front-end stored the id meanwhile: its object wins.
                self.erase(id);
                return false;
            }
            Err(_) => return false,
        };
        let bytes = self.external.as_mut().and_then(|x| x.take(id));
        let bytes = match bytes {
            Some(b) if b.len() as u64 == size => b,
            other => {
                // Inconsistent external store: give the memory back.
                if let (Some(b), Some(x)) = (other, self.external.as_mut()) {
                    x.put(id, b);
                }
                self.mem.free(id, loc, size);
                self.allocated -= size;
                return false;
            }
        };
        self.mem.bytes_mut(loc, size).copy_from_slice(&bytes);
        let now = unix_now();
        let e = self.objects.get_mut(id).expect("checked above");
        e.loc = Some(loc);
        e.state = State::Sealed;
        e.digest = Some([0; DIGEST_LEN]);
        e.create_time = now;
        e.construct_duration = 0;
        let (d, m) = (e.data_size, e.metadata_size);
        self.mem.publish(id, loc, d, m);
        if let Some(ev) = self.events.as_mut() {
            ev.sealed(id, loc, d, m);
        }
        true
    }

    /// Takes a hold on a foreign object and enters it in the table (no
    /// holders yet; the caller adds them). False if there is none.
    fn adopt_foreign(&mut self, id: &ObjectId) -> bool {
        let Some(f) = self.mem.hold_foreign(id) else {
            return false;
        };
        self.objects.insert(
            *id,
            Entry {
                state: State::Sealed,
                loc: Some(f.loc),
                data_size: f.data_size,
                metadata_size: f.metadata_size,
                holders: HashSet::new(),
                create_time: unix_now(),
                construct_duration: 0,
                digest: Some([0; DIGEST_LEN]),
                lru_key: None,
                quota_owner: None,
                foreign: true,
            },
        );
        true
    }

    /// Another front-end sealed `id`: serves the Gets waiting for it.
    pub fn foreign_sealed(&mut self, id: &ObjectId) {
        if self.objects.contains_key(id) || !self.waiting.contains_key(id) {
            return;
        }
        if !self.adopt_foreign(id) {
            return;
        }
        self.serve_waiters(id);
        if self.objects.get(id).is_some_and(|e| e.holders.is_empty()) {
            self.objects.remove(id);
            self.mem.release_foreign(id);
        }
    }

    /// Another front-end's client gave up creating `id` (aborted it, or disconnected before
    /// sealing): the Gets waiting for it are answered as for a Plasma object.
    pub fn foreign_abandoned(&mut self, id: &ObjectId) {
        if self.objects.contains_key(id) {
            return;
        }
        self.abandon_waiters(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plasma::codec::{decode_notification, decode_reply, MessageType};
    use std::sync::{Arc, Mutex};

    /// Heap-backed memory for state-machine tests: one segment, bump-free
    /// first fit over 64-byte slots (the file-backed arena is tested apart).
    struct HeapMem {
        buf: Vec<u8>,
        used: Vec<(u64, u64)>,
    }

    impl HeapMem {
        fn new(n: usize) -> Self {
            HeapMem {
                buf: vec![0; n],
                used: Vec::new(),
            }
        }
    }

    impl PlasmaMemory for HeapMem {
        fn alloc(
            &mut self,
            _id: &ObjectId,
            size: u64,
            _overflow: bool,
        ) -> Result<Location, AllocError> {
            let r = size.max(1).div_ceil(64) * 64;
            let mut off = 64;
            let mut used = self.used.clone();
            used.sort();
            for (o, l) in used {
                if off + r <= o {
                    break;
                }
                off = off.max(o + l);
            }
            if off + r > self.buf.len() as u64 {
                return Err(AllocError::NoSpace);
            }
            self.used.push((off, r));
            Ok(Location {
                segment: 1,
                offset: off,
                mmap_size: self.buf.len() as u64 + 8,
            })
        }
        fn free(&mut self, _id: &ObjectId, loc: Location, _size: u64) {
            self.used.retain(|(o, _)| *o != loc.offset);
        }
        fn bytes(&self, loc: Location, len: u64) -> &[u8] {
            &self.buf[loc.offset as usize..(loc.offset + len) as usize]
        }
        fn bytes_mut(&mut self, loc: Location, len: u64) -> &mut [u8] {
            &mut self.buf[loc.offset as usize..(loc.offset + len) as usize]
        }
        fn segment_fd(&self, _segment: i32) -> Option<BorrowedFd<'_>> {
            None
        }
    }

    fn id(n: u8) -> ObjectId {
        [n; 20]
    }

    fn store(limit: u64) -> PlasmaStore<HeapMem> {
        PlasmaStore::new(HeapMem::new(limit as usize * 2 + 4096), limit)
    }

    fn replies(s: &mut PlasmaStore<HeapMem>) -> Vec<(ClientId, Reply, Vec<i32>)> {
        s.drain_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Reply {
                    client,
                    frame,
                    segments,
                } => {
                    let ty = i64::from_le_bytes(frame[8..16].try_into().unwrap());
                    Some((client, decode_reply(ty, &frame[24..]).unwrap(), segments))
                }
                Output::Notify { .. } => None,
            })
            .collect()
    }

    fn put(s: &mut PlasmaStore<HeapMem>, c: ClientId, n: u8, size: usize) -> PlasmaError {
        let data = vec![n; size];
        s.handle(
            c,
            Request::CreateAndSeal {
                object_id: id(n),
                evict_if_full: true,
                data: &data,
                metadata: b"",
                digest: [0; 8],
            },
            Instant::now(),
        );
        match replies(s).pop().unwrap().1 {
            Reply::CreateAndSeal { error } => error,
            r => panic!("{r:?}"),
        }
    }

    fn contains(s: &mut PlasmaStore<HeapMem>, n: u8) -> bool {
        s.handle(9, Request::Contains { object_id: id(n) }, Instant::now());
        matches!(
            replies(s).pop().unwrap().1,
            Reply::Contains {
                has_object: true,
                ..
            }
        )
    }

    #[test]
    fn eviction_loop_exact_accounting() {
        let mut s = store(1000);
        for n in 1..=4 {
            assert_eq!(put(&mut s, 1, n, 200), PlasmaError::Ok);
        }
        assert_eq!(s.allocated(), 800);
        // Needs 500: required = 300, space_to_free = max(300, 200) -> evicts 1,2.
        assert_eq!(put(&mut s, 1, 5, 500), PlasmaError::Ok);
        assert!(!contains(&mut s, 1) && !contains(&mut s, 2));
        assert!(contains(&mut s, 3) && contains(&mut s, 4));
        assert_eq!(s.allocated(), 900);
        // Larger than the limit: fails, after evicting everything evictable.
        assert_eq!(put(&mut s, 6, 1, 1001), PlasmaError::OutOfMemory);
        assert_eq!(s.allocated(), 0);
        // Exactly the limit fits an empty store.
        assert_eq!(put(&mut s, 1, 7, 1000), PlasmaError::Ok);
        assert_eq!(put(&mut s, 1, 7, 1), PlasmaError::ObjectExists);
    }

    #[test]
    fn evict_request_lru_order_and_zero_sizes() {
        let mut s = store(10_000);
        put(&mut s, 1, 1, 0);
        put(&mut s, 1, 2, 0);
        put(&mut s, 1, 3, 100);
        put(&mut s, 1, 4, 100);
        s.handle(
            1,
            Request::RefreshLru {
                object_ids: vec![id(3)],
            },
            Instant::now(),
        );
        replies(&mut s);
        s.handle(1, Request::Evict { num_bytes: 1 }, Instant::now());
        assert_eq!(replies(&mut s)[0].1, Reply::Evict { num_bytes: 100 });
        assert!(!contains(&mut s, 1) && !contains(&mut s, 2) && !contains(&mut s, 4));
        assert!(contains(&mut s, 3));
        assert_eq!(s.stats().num_evictions, 3);
    }

    #[test]
    fn waiters_of_an_abandoned_object_are_answered() {
        let mut s = store(10_000);
        let now = Instant::now();
        for c in [1, 4] {
            s.add_client(c);
        }
        let create = |s: &mut PlasmaStore<HeapMem>, n: u8| {
            s.handle(
                1,
                Request::Create {
                    object_id: id(n),
                    evict_if_full: true,
                    data_size: 10,
                    metadata_size: 0,
                    device_num: 0,
                },
                now,
            );
        };
        create(&mut s, 1);
        create(&mut s, 2);
        replies(&mut s);
        for (c, n) in [(2, 1), (3, 2)] {
            s.handle(
                c,
                Request::Get {
                    object_ids: vec![id(n)],
                    timeout_ms: -1,
                },
                now,
            );
        }
        assert!(replies(&mut s).is_empty());
        // Abort wakes the waiter of that id, with it missing.
        s.handle(1, Request::Abort { object_id: id(1) }, now);
        let r = replies(&mut s);
        let get = r.iter().find(|x| x.0 == 2).expect("the waiter is answered");
        let Reply::Get { objects, .. } = &get.1 else {
            panic!("{get:?}")
        };
        assert!(objects[0].is_missing());
        // The creator's disconnect wakes the waiter of the other one.
        s.disconnect_client(1);
        let r = replies(&mut s);
        let Reply::Get { objects, .. } = &r.iter().find(|x| x.0 == 3).unwrap().1 else {
            panic!()
        };
        assert!(objects[0].is_missing());
        // A native creator giving up an id is reported the same way.
        s.handle(
            4,
            Request::Get {
                object_ids: vec![id(9)],
                timeout_ms: -1,
            },
            now,
        );
        assert!(replies(&mut s).is_empty());
        s.foreign_abandoned(&id(9));
        assert_eq!(replies(&mut s).len(), 1);
    }

    #[test]
    fn pending_get_timeout_seal_and_disconnect() {
        let mut s = store(10_000);
        let t0 = Instant::now();
        s.handle(
            2,
            Request::Get {
                object_ids: vec![id(1), id(2)],
                timeout_ms: 50,
            },
            t0,
        );
        assert!(
            replies(&mut s).is_empty(),
            "a pending Get never answers early"
        );
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(50)));
        put(&mut s, 1, 1, 10);
        s.fire_timers(t0 + Duration::from_millis(49));
        assert!(replies(&mut s).is_empty());
        s.fire_timers(t0 + Duration::from_millis(50));
        let r = replies(&mut s);
        let Reply::Get {
            objects, store_fds, ..
        } = &r[0].1
        else {
            panic!()
        };
        assert_eq!(objects[0].data_size, 10);
        assert!(objects[1].is_missing());
        assert_eq!(store_fds, &vec![1]);
        assert_eq!(r[0].2, vec![1], "fd sent on first contact");
        // Infinite wait satisfied by a later seal; fd not sent twice.
        s.handle(
            2,
            Request::Get {
                object_ids: vec![id(3)],
                timeout_ms: -1,
            },
            t0,
        );
        assert_eq!(s.next_deadline(), None);
        s.handle(
            1,
            Request::CreateAndSeal {
                object_id: id(3),
                evict_if_full: true,
                data: b"12345",
                metadata: b"",
                digest: [0; 8],
            },
            t0,
        );
        let r = replies(&mut s);
        assert!(r
            .iter()
            .any(|(c, rep, segs)| *c == 2 && matches!(rep, Reply::Get { .. }) && segs.is_empty()));
        // Client dies during a Get: no reply, no leak, the store carries on.
        s.handle(
            3,
            Request::Get {
                object_ids: vec![id(9)],
                timeout_ms: -1,
            },
            t0,
        );
        s.disconnect_client(3);
        put(&mut s, 1, 9, 5);
        assert!(replies(&mut s).iter().all(|(c, _, _)| *c != 3));
        // Client 2 held 1 and 3; disconnect releases them into the LRU.
        s.disconnect_client(2);
        s.handle(
            1,
            Request::Evict {
                num_bytes: 1_000_000,
            },
            t0,
        );
        assert_eq!(replies(&mut s)[0].1, Reply::Evict { num_bytes: 20 });
        assert_eq!(s.allocated(), 0);
    }

    #[test]
    fn unsealed_destroyed_on_disconnect_and_deferred_delete() {
        let mut s = store(10_000);
        let now = Instant::now();
        s.handle(
            1,
            Request::Create {
                object_id: id(1),
                evict_if_full: true,
                data_size: 10,
                metadata_size: 2,
                device_num: 0,
            },
            now,
        );
        let r = replies(&mut s);
        let Reply::Create {
            object,
            error,
            store_fd,
            mmap_size,
            ..
        } = r[0].1
        else {
            panic!()
        };
        assert_eq!(error, PlasmaError::Ok);
        assert_eq!(object.metadata_offset, object.data_offset + 10);
        assert_eq!(store_fd, object.segment_index);
        assert!(mmap_size > 0);
        s.handle(
            2,
            Request::Delete {
                object_ids: vec![id(1), id(5)],
            },
            now,
        );
        assert_eq!(
            replies(&mut s)[0].1,
            Reply::Delete {
                object_ids: vec![id(1), id(5)],
                errors: vec![PlasmaError::ObjectNotSealed, PlasmaError::ObjectNotFound]
            }
        );
        s.disconnect_client(1);
        assert_eq!(s.num_objects(), 0);
        assert_eq!(s.allocated(), 0);
        // Deferred delete of an in-use object.
        put(&mut s, 1, 2, 10);
        s.handle(
            3,
            Request::Get {
                object_ids: vec![id(2)],
                timeout_ms: 0,
            },
            now,
        );
        s.subscribe(4);
        replies(&mut s);
        s.handle(
            1,
            Request::Delete {
                object_ids: vec![id(2)],
            },
            now,
        );
        assert!(
            matches!(&replies(&mut s)[0].1, Reply::Delete { errors, .. } if errors == &vec![PlasmaError::ObjectInUse])
        );
        s.handle(3, Request::Release { object_id: id(2) }, now);
        let notes: Vec<_> = s
            .drain_outputs()
            .into_iter()
            .filter_map(|o| match o {
                Output::Notify { client: 4, message } => {
                    Some(decode_notification(&message[8..]).unwrap())
                }
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 1);
        assert!(notes[0][0].is_deletion);
        assert_eq!(s.num_objects(), 0);
        // Release without a hold and seal of unknown ids are harmless.
        s.handle(3, Request::Release { object_id: id(2) }, now);
        s.handle(
            3,
            Request::Seal {
                object_id: id(77),
                digest: [0; 8],
            },
            now,
        );
        assert!(matches!(
            replies(&mut s)[0].1,
            Reply::Seal {
                error: PlasmaError::Ok,
                ..
            }
        ));
    }

    #[test]
    fn quotas_and_debug_string() {
        let mut s = store(1000);
        let now = Instant::now();
        let opt = |s: &mut PlasmaStore<HeapMem>, c, q| {
            s.handle(
                c,
                Request::SetOptions {
                    client_name: b"q",
                    output_memory_quota: q,
                },
                now,
            );
            match replies(s).pop().unwrap().1 {
                Reply::SetOptions { error } => error,
                _ => panic!(),
            }
        };
        assert_eq!(opt(&mut s, 1, 800), PlasmaError::OutOfMemory); // 1000-800 < 300
        assert_eq!(opt(&mut s, 1, 500), PlasmaError::Ok);
        assert_eq!(opt(&mut s, 1, 10), PlasmaError::OutOfMemory); // already has one
        assert_eq!(opt(&mut s, 2, 300), PlasmaError::OutOfMemory); // 500-300 < 300
        assert_eq!(put(&mut s, 1, 1, 600), PlasmaError::OutOfMemory); // > quota
        assert_eq!(put(&mut s, 1, 1, 300), PlasmaError::Ok);
        assert_eq!(put(&mut s, 1, 2, 300), PlasmaError::Ok); // evicts 1 from the quota LRU
        assert!(!contains(&mut s, 1));
        s.handle(1, Request::GetDebugString, now);
        let Reply::DebugString { debug_string } = replies(&mut s).pop().unwrap().1 else {
            panic!()
        };
        let d = String::from_utf8(debug_string).unwrap();
        assert!(d.starts_with("num clients with quota: 1\n"), "{d}");
        assert!(d.contains("(global lru) capacity: 500"));
        s.disconnect_client(1);
        assert_eq!(opt(&mut s, 2, 300), PlasmaError::Ok);
    }

    #[derive(Default)]
    struct Log(Arc<Mutex<Vec<String>>>);
    impl StoreEvents for Log {
        fn sealed(&mut self, id: &ObjectId, _l: Location, d: u64, m: u64) {
            self.0
                .lock()
                .unwrap()
                .push(format!("sealed {} {d} {m}", id[0]));
        }
        fn removed(&mut self, id: &ObjectId) {
            self.0.lock().unwrap().push(format!("removed {}", id[0]));
        }
    }

    #[test]
    fn events_and_external_store() {
        let mut s = store(1000);
        let log = Arc::new(Mutex::new(Vec::new()));
        s.set_event_sink(Box::new(Log(log.clone())));
        s.set_external_store(external_store_from_endpoint("hashtable://x").unwrap());
        assert!(
            matches!(external_store_from_endpoint("foo://x"), Err(ExternalStoreError::Unknown(n)) if n == "foo")
        );
        assert!(external_store_from_endpoint("nocolon").is_err());
        s.subscribe(5);
        for n in 1..=3 {
            put(&mut s, 1, n, 400);
        }
        // 3rd put evicted object 1 to the external store: no deletion notification.
        let notes = s
            .drain_outputs()
            .into_iter()
            .filter(|o| matches!(o, Output::Notify { .. }))
            .count();
        assert_eq!(notes, 0, "already drained by put(); nothing else queued");
        assert!(contains(&mut s, 1), "evicted objects are still contained");
        s.handle(
            2,
            Request::Get {
                object_ids: vec![id(1)],
                timeout_ms: 0,
            },
            Instant::now(),
        );
        let Reply::Get { objects, .. } = replies(&mut s).pop().unwrap().1 else {
            panic!()
        };
        assert_eq!(objects[0].data_size, 400);
        let loc = Location {
            segment: 1,
            offset: objects[0].data_offset,
            mmap_size: 0,
        };
        assert!(s.memory().bytes(loc, 400).iter().all(|b| *b == 1));
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                "sealed 1 400 0",
                "sealed 2 400 0",
                "removed 1",
                "sealed 3 400 0",
                "removed 2",
                "sealed 1 400 0"
            ]
        );
        assert_eq!(MessageType::GetReply as i64, 10);
    }

    #[test]
    fn batch_rolls_back_and_notifies_once() {
        let mut s = store(10_000);
        s.subscribe(7);
        put(&mut s, 1, 3, 1);
        s.drain_outputs();
        let now = Instant::now();
        s.handle(
            1,
            Request::CreateAndSealBatch {
                object_ids: vec![id(1), id(3)],
                evict_if_full: true,
                data: vec![b"a", b"b"],
                metadata: vec![b"", b""],
                digests: vec![[0; 8]; 2],
            },
            now,
        );
        assert!(matches!(
            replies(&mut s)[0].1,
            Reply::CreateAndSealBatch {
                error: PlasmaError::ObjectExists
            }
        ));
        assert!(!contains(&mut s, 1));
        s.handle(
            1,
            Request::CreateAndSealBatch {
                object_ids: vec![id(1), id(2)],
                evict_if_full: true,
                data: vec![b"a", b"b"],
                metadata: vec![b"", b"m"],
                digests: vec![[0; 8]; 2],
            },
            now,
        );
        let outs = s.drain_outputs();
        let notes: Vec<_> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Notify { message, .. } => Some(decode_notification(&message[8..]).unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].len(), 2);
        assert_eq!(s.allocated(), 4);
    }
}
