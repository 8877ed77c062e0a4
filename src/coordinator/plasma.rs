//! The Plasma front-end's view of the coordinator: a [`PlasmaMemory`] over the coordinator's own
//! data segments, object table and index.
//!
//! * Memory: Plasma objects are allocated from the coordinator's arenas (64-byte aligned,
//!   offsets from the start of the segment file); a segment's `store_fd` is a positive `i32`
//!   handed out once per segment id (segment ids are never reused, neither are `store_fd`s), and
//!   its `mmap_size` is the segment size + 8 (§7.2 of the protocol notes).
//! * Namespace: a Plasma create reserves the 20-byte key in the coordinator's table, so native
//!   and Plasma creates of one id conflict as they should.
//! * Index: a Plasma seal publishes the object in the lock-free index (an object whose data is
//!   framed as an Arrow IPC file is validated first, on a thread of its own, off the event loop
//!   and the store lock, and published as Arrow only if valid); a Plasma delete or
//!   eviction retires it and frees its memory through the pin-aware path (a native reader that
//!   still pins it defers the reuse).
//! * Native objects under 20-byte keys are "foreign" to the Plasma state machine: visible to
//!   Get/Contains/List, held (kept from native eviction and deletion) while a Plasma client
//!   holds them.
//!
//! The Store mutex is taken for each operation only, never across I/O.

use super::store::{PendingSeal, PlasmaAllocError, PlasmaPlace, Sealing, Store};
use crate::key::Key;
use crate::plasma::codec::ObjectId;
use crate::plasma::server::{AllocError, ForeignObject, Location, PlasmaMemory};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

struct SegView {
    seg: u64,
    fd: OwnedFd,
    /// Address of the coordinator's read-write mapping of the segment.
    base: usize,
    size: u64,
}

/// [`PlasmaMemory`] backed by the coordinator's store. Created with
/// [`super::Coordinator::plasma_memory`].
pub struct SharedMemory {
    store: Arc<Mutex<Store>>,
    segs: HashMap<i32, SegView>,
    by_seg: HashMap<u64, i32>,
    next_fd: i32,
    /// Queue of the thread that validates Plasma objects framed as Arrow IPC files (started on
    /// first use; it ends when this is dropped).
    validator: Option<std::sync::mpsc::Sender<PendingSeal>>,
}

fn key(id: &ObjectId) -> Key {
    Key::new(id).expect("20 bytes is a valid key length")
}

impl SharedMemory {
    pub(crate) fn new(store: Arc<Mutex<Store>>) -> SharedMemory {
        SharedMemory {
            store,
            segs: HashMap::new(),
            by_seg: HashMap::new(),
            next_fd: 1,
            validator: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `store_fd` of segment `seg`, registering it (dup of its fd, its mapping) if new.
    fn location(&mut self, st: &Store, place: &PlasmaPlace) -> Option<Location> {
        let seg = place.alloc.seg;
        let fd = match self.by_seg.get(&seg) {
            Some(&fd) => fd,
            None => {
                let (dup, base, size) = st.plasma_segment(seg)?;
                let fd = self.next_fd;
                self.next_fd = self.next_fd.checked_add(1)?;
                self.segs.insert(
                    fd,
                    SegView {
                        seg,
                        fd: dup,
                        base: base.as_ptr() as usize,
                        size,
                    },
                );
                self.by_seg.insert(seg, fd);
                fd
            }
        };
        let size = self.segs[&fd].size;
        debug_assert_eq!(size, place.seg_size);
        Some(Location {
            segment: fd,
            offset: place.alloc.offset,
            mmap_size: size + 8,
        })
    }

    fn range(&self, loc: Location, len: u64) -> Option<(usize, usize)> {
        let s = self.segs.get(&loc.segment)?;
        let end = loc.offset.checked_add(len)?;
        (end <= s.size).then_some((s.base + loc.offset as usize, len as usize))
    }

    fn foreign_object(&mut self, id: &ObjectId, hold: Option<bool>) -> Option<ForeignObject> {
        let store = self.store.clone();
        let mut st = store.lock().unwrap_or_else(|p| p.into_inner());
        let f = st.plasma_foreign(&key(id), hold)?;
        match self.location(&st, &f.place) {
            Some(loc) => Some(ForeignObject {
                loc,
                data_size: f.data_len,
                metadata_size: f.meta_len,
            }),
            None => {
                if hold == Some(true) {
                    st.plasma_foreign(&key(id), Some(false));
                }
                None
            }
        }
    }
}

impl SharedMemory {
    /// Queues `p` for the validator thread, which publishes it when done.
    fn validate(&mut self, p: PendingSeal) {
        let p = match &self.validator {
            Some(tx) => match tx.send(p) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(p)) => p,
            },
            None => p,
        };
        let (tx, rx) = std::sync::mpsc::channel::<PendingSeal>();
        let store = self.store.clone();
        let spawned = std::thread::Builder::new()
            .name("plasma-arrow-validate".into())
            .spawn(move || {
                for mut p in rx {
                    let valid = p.validate();
                    let mut st = store.lock().unwrap_or_else(|e| e.into_inner());
                    if let Err(e) = st.plasma_finish_publish(p, valid) {
                        tracing::warn!("a Plasma object is not visible to native clients: {e}");
                    }
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(p);
                self.validator = Some(tx);
            }
            Err(e) => {
                // No thread: validate here (this stalls the Plasma loop, never the store lock).
                tracing::warn!("cannot start the Plasma validator thread ({e}); validating inline");
                let mut p = p;
                let valid = p.validate();
                if let Err(e) = self.lock().plasma_finish_publish(p, valid) {
                    tracing::warn!("a Plasma object is not visible to native clients: {e}");
                }
            }
        }
    }
}

impl PlasmaMemory for SharedMemory {
    fn alloc(&mut self, id: &ObjectId, size: u64, overflow: bool) -> Result<Location, AllocError> {
        let store = self.store.clone();
        let mut st = store.lock().unwrap_or_else(|p| p.into_inner());
        let place = st
            .plasma_alloc(key(id), size, overflow)
            .map_err(|e| match e {
                PlasmaAllocError::Exists => AllocError::Exists,
                PlasmaAllocError::NoSpace => AllocError::NoSpace,
            })?;
        match self.location(&st, &place) {
            Some(loc) => Ok(loc),
            None => {
                st.plasma_free(key(id));
                Err(AllocError::NoSpace)
            }
        }
    }

    fn free(&mut self, id: &ObjectId, _loc: Location, _size: u64) {
        self.lock().plasma_free(key(id));
    }

    fn publish(&mut self, id: &ObjectId, _loc: Location, data_size: u64, metadata_size: u64) {
        let r = self
            .lock()
            .plasma_publish(key(id), data_size, metadata_size);
        match r {
            Ok(Sealing::Done) => {}
            Ok(Sealing::Validate(p)) => self.validate(p),
            // Plasma objects are not durable puts (`plasma_publish` never answers this).
            Ok(Sealing::Persist(_)) => {}
            Err(e) => tracing::warn!("a Plasma object is not visible to native clients: {e}"),
        }
    }

    fn bytes(&self, loc: Location, len: u64) -> &[u8] {
        match self.range(loc, len) {
            // SAFETY: the range lies inside the segment's mapping (checked by `range`), which
            // the coordinator keeps mapped while it holds a live allocation — and the caller
            // only asks for live allocations it owns. Plasma clients may write the bytes
            // concurrently (their protocol maps segments read-write); readers here only copy.
            Some((addr, n)) => unsafe { std::slice::from_raw_parts(addr as *const u8, n) },
            None => &[],
        }
    }

    fn bytes_mut(&mut self, loc: Location, len: u64) -> &mut [u8] {
        match self.range(loc, len) {
            // SAFETY: as in `bytes`; the allocation is not sealed yet, so no reader uses it,
            // and `&mut self` makes this the only Rust reference to it.
            Some((addr, n)) => unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, n) },
            None => &mut [],
        }
    }

    fn segment_fd(&self, segment: i32) -> Option<BorrowedFd<'_>> {
        self.segs.get(&segment).map(|s| s.fd.as_fd())
    }

    fn foreign(&mut self, id: &ObjectId) -> Option<ForeignObject> {
        self.foreign_object(id, None)
    }

    fn hold_foreign(&mut self, id: &ObjectId) -> Option<ForeignObject> {
        self.foreign_object(id, Some(true))
    }

    fn release_foreign(&mut self, id: &ObjectId) {
        self.lock().plasma_foreign(&key(id), Some(false));
    }

    fn delete_foreign(&mut self, id: &ObjectId) -> bool {
        self.lock().plasma_delete_foreign(&key(id))
    }

    fn list_foreign(&mut self) -> Vec<(ObjectId, u64, u64)> {
        self.lock()
            .plasma_list_foreign()
            .into_iter()
            .filter_map(|(k, d, m)| Some((k.as_bytes().try_into().ok()?, d, m)))
            .collect()
    }

    fn maintain(&mut self) {
        // Forget segments the coordinator dropped (their memory goes once every client that
        // mapped them is gone); their store_fds are never handed out again.
        let live: std::collections::HashSet<u64> = self.lock().segment_ids().into_iter().collect();
        let gone: Vec<i32> = self
            .segs
            .iter()
            .filter(|(_, s)| !live.contains(&s.seg))
            .map(|(&fd, _)| fd)
            .collect();
        for fd in gone {
            if let Some(s) = self.segs.remove(&fd) {
                self.by_seg.remove(&s.seg);
            }
        }
    }
}
