//! The hot tier's memory: data segments (arenas and dedicated segments), their reservation
//! against the memory limit, and their entries in the shared segment table.
//!
//! Reservation: every segment is `fallocate`d when it is created, and the sum of all segment
//! sizes never exceeds the memory limit. Objects up to half an arena go into arenas (best fit);
//! larger ones get a dedicated segment, and freed dedicated segments are kept in a small pool so
//! that a later large object of similar size reuses the memory (and the clients' existing
//! mappings) instead of paying for a new file.

use crate::arena::{alloc_size, Arena};
use crate::error::{Error, Result};
use crate::layout::{SegEntry, SegTable, SEG_KIND_ARENA, SEG_KIND_DEDICATED};
use crate::shm::{self, human_bytes, Access, Mapping};
use rustix::fd::OwnedFd;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where an object's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Alloc {
    pub seg: u64,
    pub offset: u64,
    /// Requested length (data + metadata).
    pub len: u64,
}

enum Kind {
    Arena(Arena),
    Dedicated { in_use: bool },
}

struct Segment {
    size: u64,
    kind: Kind,
    // Kept open so Plasma clients can be handed the descriptor.
    fd: OwnedFd,
    // Shared with fills in progress ([`FillTarget`]), which must outlive a shutdown.
    map: std::sync::Arc<Mapping>,
}

/// Why an allocation failed.
pub(crate) enum AllocError {
    /// Not enough reserved memory: evict and retry.
    NeedSpace,
    /// Cannot succeed (too large, or the shared-memory filesystem refused).
    Fatal(Error),
}

/// Segments and allocation. Owned by the coordinator's store; not thread-safe by itself.
pub(crate) struct Memory {
    dir: PathBuf,
    store: String,
    mode: u32,
    limit: u64,
    arena_size: u64,
    reserved: u64,
    used: u64,
    segs: BTreeMap<u64, Segment>,
    pool: Vec<u64>,
    next_id: u64,
    table: SegTable<'static>,
    /// Free space of adopted arenas held back from allocation while a client of the previous
    /// coordinator may still write an object it created there or read one it pinned (see
    /// [`Memory::taint_free_space`]).
    tainted: Vec<(u64, u64, u64)>,
}

/// What [`Memory::adopt`] found in the segment table.
#[derive(Debug, Default)]
pub(crate) struct AdoptedSegments {
    pub arenas: usize,
    pub dedicated: usize,
    pub bytes: u64,
    /// Entries dropped, with the reason (logged by the caller).
    pub dropped: Vec<String>,
}

const DEDICATED_GRANULE: u64 = 1 << 21;

impl Memory {
    pub(crate) fn new(
        dir: PathBuf,
        store: String,
        mode: u32,
        limit: u64,
        arena_size: u64,
        table: SegTable<'static>,
    ) -> Memory {
        Memory {
            dir,
            store,
            mode,
            limit,
            arena_size: arena_size.min(limit).max(4096) / 4096 * 4096,
            reserved: 0,
            used: 0,
            segs: BTreeMap::new(),
            pool: Vec::new(),
            next_id: 1,
            table,
            tainted: Vec::new(),
        }
    }

    /// Takes over the data segments listed in `table` (a control segment a previous
    /// coordinator left): each entry must sit at its position, have a known kind and a
    /// page-multiple size, and name a file of this user at least that large, and all of them
    /// together must fit in `limit` (in id order). Every segment starts empty: the caller
    /// then claims each adopted object's range with [`Memory::claim`] and calls
    /// [`Memory::finish_adoption`]. Entries that fail are cleared (and their files removed).
    pub(crate) fn adopt(
        dir: PathBuf,
        store: String,
        mode: u32,
        limit: u64,
        arena_size: u64,
        table: SegTable<'static>,
    ) -> (Memory, AdoptedSegments) {
        let mut m = Memory::new(dir, store, mode, limit, arena_size, table);
        let mut rep = AdoptedSegments::default();
        let mut entries: Vec<(usize, SegEntry)> = (0..table.len())
            .map(|pos| (pos, table.get(pos)))
            .filter(|(_, e)| e.id != 0)
            .collect();
        entries.sort_by_key(|(_, e)| e.id);
        for (pos, e) in entries {
            let name = shm::data_name(&m.store, e.id);
            let r = m.adopt_one(pos, e, &name);
            match r {
                Ok(()) => {
                    if e.kind == SEG_KIND_ARENA {
                        rep.arenas += 1;
                    } else {
                        rep.dedicated += 1;
                    }
                    rep.bytes += e.size;
                }
                Err(why) => {
                    m.table.clear(pos);
                    shm::unlink_segment(&m.dir, &name);
                    rep.dropped
                        .push(format!("segment {} ({name}): {why}", e.id));
                }
            }
            m.next_id = m.next_id.max(e.id.saturating_add(1));
        }
        (m, rep)
    }

    fn adopt_one(
        &mut self,
        pos: usize,
        e: SegEntry,
        name: &str,
    ) -> std::result::Result<(), String> {
        if self.table.position(e.id) != pos {
            return Err(format!(
                "it sits at table position {pos}, not {}",
                self.table.position(e.id)
            ));
        }
        if e.kind != SEG_KIND_ARENA && e.kind != SEG_KIND_DEDICATED {
            return Err(format!("unknown kind {}", e.kind));
        }
        if e.size == 0 || !e.size.is_multiple_of(4096) || e.size > isize::MAX as u64 {
            return Err(format!("invalid size {}", e.size));
        }
        if self.reserved + e.size > self.limit {
            return Err(format!(
                "the memory limit ({}) is full with the segments before it",
                human_bytes(self.limit)
            ));
        }
        super::paths::check_shm_entry(&self.dir.join(name)).map_err(|e| e.to_string())?;
        let (fd, flen) =
            shm::open_segment(&self.dir, name, Access::ReadWrite).map_err(|e| e.to_string())?;
        if flen < e.size {
            return Err(format!(
                "the file has {flen} bytes, the table says {}",
                e.size
            ));
        }
        // The store's mode now (a store restarted with or without --group), whatever the umask.
        rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(self.mode))
            .map_err(|e| format!("cannot set its mode: {e}"))?;
        let arena = e.kind == SEG_KIND_ARENA;
        // Not populated: the pages exist already, and mapping them all would make adoption
        // cost time in proportion to the data instead of the index.
        let map = Mapping::map(&fd, e.size as usize, Access::ReadWrite, false)
            .map_err(|e| e.to_string())?;
        let kind = if arena {
            Kind::Arena(Arena::new(e.size))
        } else {
            Kind::Dedicated { in_use: false }
        };
        self.segs.insert(
            e.id,
            Segment {
                size: e.size,
                kind,
                fd,
                map: std::sync::Arc::new(map),
            },
        );
        self.reserved += e.size;
        Ok(())
    }

    /// Whether segment `id` exists.
    pub(crate) fn has_segment(&self, id: u64) -> bool {
        self.segs.contains_key(&id)
    }

    /// Claims the ranges of adopted objects, `(segment, offset, length, tag)`, in one pass:
    /// each must lie inside its segment, 64-byte aligned, and overlap no range claimed before
    /// it in address order (a dedicated segment holds one object, at offset 0). Returns the
    /// tags of the claims refused; the arenas are rebuilt from the others.
    pub(crate) fn claim_all(&mut self, mut claims: Vec<(u64, u64, u64, usize)>) -> Vec<usize> {
        claims.sort_unstable_by_key(|c| (c.0, c.1));
        let mut refused = Vec::new();
        for group in claims.chunk_by(|a, b| a.0 == b.0) {
            let Some(s) = self.segs.get_mut(&group[0].0) else {
                refused.extend(group.iter().map(|c| c.3));
                continue;
            };
            match &mut s.kind {
                Kind::Arena(a) => {
                    let mut used = Vec::with_capacity(group.len());
                    let mut end = 0;
                    for &(_, off, len, tag) in group {
                        let need = alloc_size(len);
                        let fits = off.is_multiple_of(crate::arena::ALIGN)
                            && off >= end
                            && off.checked_add(need).is_some_and(|e| e <= a.size());
                        if fits {
                            used.push((off, need));
                            end = off + need;
                            self.used += need;
                        } else {
                            refused.push(tag);
                        }
                    }
                    *a = Arena::from_used(s.size, &used);
                }
                Kind::Dedicated { in_use } => {
                    for &(_, off, len, tag) in group {
                        if !*in_use && off == 0 && len <= s.size {
                            *in_use = true;
                            self.used += alloc_size(len);
                        } else {
                            refused.push(tag);
                        }
                    }
                }
            }
        }
        refused
    }

    /// Ends an adoption: dedicated segments no object claimed are removed (a client of the
    /// previous coordinator that still maps one keeps its pages; nobody else needs them).
    pub(crate) fn finish_adoption(&mut self) {
        let unused: Vec<u64> = self
            .segs
            .iter()
            .filter(|(_, s)| matches!(s.kind, Kind::Dedicated { in_use: false }))
            .map(|(&id, _)| id)
            .collect();
        for id in unused {
            self.drop_segment(id);
        }
    }

    /// Holds back the free space of every arena now: it may hold an object that a client of
    /// the previous coordinator created but never sealed (and may still be writing), or one
    /// that was deleted but is still pinned by such a client. Memory freed later (objects
    /// evicted or deleted) is reused as usual: no such client can write or pin there.
    pub(crate) fn taint_free_space(&mut self) {
        for (&id, s) in self.segs.iter_mut() {
            if let Kind::Arena(a) = &mut s.kind {
                for (off, len) in a.take_free() {
                    self.tainted.push((id, off, len));
                }
            }
        }
    }

    /// Returns the held-back space (the clients of the previous coordinator are gone).
    pub(crate) fn release_taint(&mut self) -> u64 {
        let mut n = 0;
        for (id, off, len) in std::mem::take(&mut self.tainted) {
            if let Some(Segment {
                kind: Kind::Arena(a),
                ..
            }) = self.segs.get_mut(&id)
            {
                a.free(off, len);
                n += len;
            }
        }
        n
    }

    /// Bytes held back by [`Memory::taint_free_space`].
    pub(crate) fn tainted_bytes(&self) -> u64 {
        self.tainted.iter().map(|t| t.2).sum()
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved
    }
    /// Bytes handed to objects (rounded to the allocation granularity).
    pub(crate) fn used(&self) -> u64 {
        self.used
    }
    pub(crate) fn segment_count(&self) -> usize {
        self.segs.len()
    }

    /// Creates the first arena so that a store too large for `/dev/shm` fails at start.
    pub(crate) fn reserve_first_arena(&mut self) -> Result<()> {
        self.new_segment(self.arena_size, true).map(|_| ())
    }

    fn new_segment(&mut self, size: u64, arena: bool) -> Result<u64> {
        // Segment ids are never reused; skip ids whose table position is taken.
        let mut id = self.next_id;
        let mut tries = 0;
        while self.table.get(self.table.position(id)).id != 0 {
            id += 1;
            tries += 1;
            if tries > self.table.len() {
                return Err(Error::StoreFull(format!(
                    "all {} segment-table entries are in use; raise the arena size so fewer segments are needed",
                    self.table.len()
                )));
            }
        }
        self.next_id = id + 1;
        let name = shm::data_name(&self.store, id);
        let fd = shm::create_segment(&self.dir, &name, size, self.mode)?;
        // Arenas are written over and over (inline puts, promotions): populate their page
        // tables once here rather than faulting on first touch of every page later.
        let map = match Mapping::map(&fd, size as usize, Access::ReadWrite, arena) {
            Ok(m) => m,
            Err(e) => {
                shm::unlink_segment(&self.dir, &name);
                return Err(e);
            }
        };
        let kind = if arena {
            Kind::Arena(Arena::new(size))
        } else {
            Kind::Dedicated { in_use: false }
        };
        self.segs.insert(
            id,
            Segment {
                size,
                kind,
                fd,
                map: std::sync::Arc::new(map),
            },
        );
        self.reserved += size;
        self.table.set(
            self.table.position(id),
            SegEntry {
                id,
                size,
                kind: if arena {
                    SEG_KIND_ARENA
                } else {
                    SEG_KIND_DEDICATED
                },
            },
        );
        Ok(id)
    }

    fn drop_segment(&mut self, id: u64) {
        if let Some(s) = self.segs.remove(&id) {
            self.table.clear(self.table.position(id));
            self.reserved -= s.size;
            shm::unlink_segment(&self.dir, &shm::data_name(&self.store, id));
        }
    }

    /// Allocates `len` bytes, 64-byte aligned.
    pub(crate) fn alloc(&mut self, len: u64) -> std::result::Result<Alloc, AllocError> {
        if len > self.limit {
            return Err(AllocError::Fatal(Error::StoreFull(format!(
                "an object of {} can never fit in a hot tier of {}; raise --memory",
                human_bytes(len),
                human_bytes(self.limit)
            ))));
        }
        if alloc_size(len) <= self.arena_size / 2 {
            for (&id, s) in self.segs.iter_mut() {
                if let Kind::Arena(a) = &mut s.kind {
                    if let Some(off) = a.alloc(len) {
                        self.used += alloc_size(len);
                        return Ok(Alloc {
                            seg: id,
                            offset: off,
                            len,
                        });
                    }
                }
            }
            if self.reserved + self.arena_size > self.limit {
                return Err(AllocError::NeedSpace);
            }
            let id = self
                .new_segment(self.arena_size, true)
                .map_err(AllocError::Fatal)?;
            let Some(Segment {
                kind: Kind::Arena(a),
                ..
            }) = self.segs.get_mut(&id)
            else {
                unreachable!("segment just created as an arena");
            };
            let off = a.alloc(len).ok_or_else(|| {
                AllocError::Fatal(Error::Internal(
                    "fresh arena cannot hold a small object".into(),
                ))
            })?;
            self.used += alloc_size(len);
            return Ok(Alloc {
                seg: id,
                offset: off,
                len,
            });
        }
        // Dedicated segment: reuse a pooled one of similar size first.
        let want = len.max(1).next_multiple_of(DEDICATED_GRANULE);
        if let Some(pos) = self.pool.iter().position(|id| {
            let s = self.segs[id].size;
            s >= want && s <= want.saturating_mul(2)
        }) {
            let id = self.pool.swap_remove(pos);
            if let Some(Segment {
                kind: Kind::Dedicated { in_use },
                ..
            }) = self.segs.get_mut(&id)
            {
                *in_use = true;
            }
            self.used += alloc_size(len);
            return Ok(Alloc {
                seg: id,
                offset: 0,
                len,
            });
        }
        while self.reserved + want > self.limit {
            let Some(id) = self.pool.pop() else {
                return Err(AllocError::NeedSpace);
            };
            self.drop_segment(id);
        }
        let id = self.new_segment(want, false).map_err(AllocError::Fatal)?;
        if let Some(Segment {
            kind: Kind::Dedicated { in_use },
            ..
        }) = self.segs.get_mut(&id)
        {
            *in_use = true;
        }
        self.used += alloc_size(len);
        Ok(Alloc {
            seg: id,
            offset: 0,
            len,
        })
    }

    /// Allocates `len` bytes in a dedicated segment even beyond the memory limit (the Plasma
    /// front-end's last resort when its own exact accounting allows an object that
    /// fragmentation or deferred frees keep out of the reserved memory).
    pub(crate) fn alloc_overflow(&mut self, len: u64) -> Result<Alloc> {
        let want = len.max(1).next_multiple_of(4096);
        let id = self.new_segment(want, false)?;
        if let Some(Segment {
            kind: Kind::Dedicated { in_use },
            ..
        }) = self.segs.get_mut(&id)
        {
            *in_use = true;
        }
        self.used += alloc_size(len);
        Ok(Alloc {
            seg: id,
            offset: 0,
            len,
        })
    }

    /// A duplicate of segment `id`'s descriptor, its mapping's base and its size. The base stays
    /// valid while the segment holds a live allocation (segments are only dropped when empty).
    pub(crate) fn segment_handle(&self, id: u64) -> Option<(OwnedFd, std::ptr::NonNull<u8>, u64)> {
        let s = self.segs.get(&id)?;
        let fd = s.fd.try_clone().ok()?;
        Some((fd, std::ptr::NonNull::new(s.map.as_ptr())?, s.size))
    }

    /// Ids of the live segments.
    pub(crate) fn segment_ids(&self) -> Vec<u64> {
        self.segs.keys().copied().collect()
    }

    /// Returns an allocation. The caller guarantees no client still pins it.
    pub(crate) fn free(&mut self, a: Alloc) {
        self.used -= alloc_size(a.len);
        match self.segs.get_mut(&a.seg).map(|s| &mut s.kind) {
            Some(Kind::Arena(ar)) => ar.free(a.offset, a.len),
            Some(Kind::Dedicated { in_use }) => {
                *in_use = false;
                self.pool.push(a.seg);
                // Keep the pool small: it is reserved memory nobody uses.
                if self.pool.len() > 4 {
                    let id = self.pool.remove(0);
                    self.drop_segment(id);
                }
            }
            None => {}
        }
    }

    /// Releases empty arenas and pooled segments, so that their reservation can serve a
    /// dedicated segment. Returns the bytes released.
    pub(crate) fn release_unused(&mut self) -> u64 {
        let before = self.reserved;
        for id in std::mem::take(&mut self.pool) {
            self.drop_segment(id);
        }
        let empty: Vec<u64> = self
            .segs
            .iter()
            .filter(|(_, s)| matches!(&s.kind, Kind::Arena(a) if a.is_empty()))
            .map(|(&id, _)| id)
            .collect();
        for id in empty {
            self.drop_segment(id);
        }
        before - self.reserved
    }

    /// Whether an allocation of `len` could succeed without creating a segment.
    pub(crate) fn would_need_reservation(&self, len: u64) -> bool {
        alloc_size(len) > self.arena_size / 2
    }

    /// Mutable bytes of an allocation (coordinator writes inline puts).
    pub(crate) fn bytes_mut(&mut self, a: Alloc) -> &mut [u8] {
        let s = &self.segs[&a.seg];
        debug_assert!(a.offset + a.len <= s.size);
        // SAFETY: the allocation lies inside the segment's mapping (the allocator only hands out
        // in-bounds ranges), it is not sealed yet, so no client reads it, and `&mut self`
        // guarantees this is the only reference the coordinator holds.
        unsafe {
            std::slice::from_raw_parts_mut(s.map.as_ptr().add(a.offset as usize), a.len as usize)
        }
    }

    /// Exclusive write access to allocation `a` from another thread, without the store lock.
    /// The caller must own `a` as an unsealed object that nothing else writes (promotions do)
    /// and must not hand out a second target for it.
    pub(crate) fn fill_target(&self, a: Alloc) -> FillTarget {
        let s = &self.segs[&a.seg];
        debug_assert!(a.offset + a.len <= s.size);
        FillTarget {
            map: s.map.clone(),
            offset: a.offset as usize,
            len: a.len as usize,
        }
    }

    /// Read access to the first `len` bytes of allocation `a` without the store lock.
    pub(crate) fn read_view(&self, a: Alloc, len: u64) -> ReadView {
        let s = &self.segs[&a.seg];
        let len = len.min(a.len);
        debug_assert!(a.offset + a.len <= s.size);
        ReadView {
            map: s.map.clone(),
            offset: a.offset as usize,
            len: len as usize,
        }
    }

    /// Bytes of an allocation (to verify a CID at seal).
    pub(crate) fn bytes(&self, a: Alloc) -> &[u8] {
        let s = &self.segs[&a.seg];
        // SAFETY: in bounds as above; sealed or creator-owned bytes are only read here.
        unsafe { std::slice::from_raw_parts(s.map.as_ptr().add(a.offset as usize), a.len as usize) }
    }

    /// Size of segment `id`.
    pub(crate) fn seg_size(&self, id: u64) -> Option<u64> {
        self.segs.get(&id).map(|s| s.size)
    }

    /// Removes every segment (shutdown).
    pub(crate) fn remove_all(&mut self) {
        let ids: Vec<u64> = self.segs.keys().copied().collect();
        for id in ids {
            self.drop_segment(id);
        }
    }

    /// Bytes lost to alignment and arena slack: reserved minus requested.
    pub(crate) fn alignment_waste(&self, requested: u64) -> u64 {
        self.used.saturating_sub(requested)
    }
}

/// The bytes of one unsealed allocation, writable from any thread while the store lock is not
/// held (a promotion encodes straight into shared memory). It keeps the segment mapped, so a
/// shutdown that removes the segment meanwhile cannot make the writes fault.
pub(crate) struct FillTarget {
    map: std::sync::Arc<Mapping>,
    offset: usize,
    len: usize,
}

impl FillTarget {
    /// The allocation's bytes.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: offset..offset+len lies inside the mapping (checked when the target was made
        // from an in-bounds allocation), the mapping lives as long as `self.map`, and the store
        // hands out one target per unsealed allocation, which it neither reads nor writes
        // until the fill is finished: `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_ptr().add(self.offset), self.len) }
    }
}

/// The first `len` bytes of an allocation, readable from any thread while the store lock is not
/// held (an Arrow object is validated at seal this way). Like [`FillTarget`] it keeps the
/// segment mapped, so a shutdown meanwhile cannot make the reads fault.
pub(crate) struct ReadView {
    map: std::sync::Arc<Mapping>,
    offset: usize,
    len: usize,
}

impl ReadView {
    /// Maps the view's pages into the coordinator ahead of reading them
    /// (`MADV_POPULATE_READ`, Linux 5.14+; best effort), so that reading a segment the
    /// coordinator never touched (a dedicated one) does not take one page fault per page. In
    /// chunks: the advice holds the process's memory-map lock while it works.
    pub(crate) fn populate(&self) {
        const PAGE: usize = 4096; // x86-64 and most arm64 kernels; otherwise EINVAL, ignored
        const CHUNK: usize = 8 << 20;
        let start = self.map.as_ptr() as usize + self.offset;
        let end = start + self.len;
        let mut at = start & !(PAGE - 1);
        while at < end {
            let n = CHUNK.min(end - at);
            // SAFETY: advice only, over pages of our own live mapping (`at` is not below the
            // page-aligned mapping base, and `at + n` ends inside the mapping).
            let r = unsafe {
                rustix::mm::madvise(
                    at as *mut std::ffi::c_void,
                    n,
                    rustix::mm::Advice::LinuxPopulateRead,
                )
            };
            if r.is_err() {
                return;
            }
            at += n;
        }
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: offset..offset+len lies inside the mapping (checked when the view was made
        // from an in-bounds allocation) and the mapping lives as long as `self.map`. The store
        // does not write an object while it is being sealed; a client that breaks its contract
        // and writes it anyway only changes what the (bounds-checked) validation reads.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(self.offset), self.len) }
    }
}
