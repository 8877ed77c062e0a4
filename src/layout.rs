//! The control segment's layout: header words, the segment table and where the index lives.
//!
//! ```text
//! offset 0      header: HEADER_WORDS little-endian u64 words (see `hdr`), padded to 4096 bytes
//! seg_off       segment table: seg_len entries of 4 u64 words (id, size, kind, reserved)
//! index_off     index: capacity slots of 128 bytes (see `index`)
//! ```
//!
//! Every field is a naturally aligned 64-bit word accessed atomically, so a read-only mapping
//! can read it (128-bit atomics would fault there). The coordinator is the only writer.
//! Clients refuse a segment whose magic or `LAYOUT_VERSION` they do not know.

#[cfg(cidcache_loom)]
use crate::sync::fence;
use crate::sync::{AtomicU64, Ordering};

/// `CIDCACHE` in little-endian: the first word of the control segment.
pub const MAGIC: u64 = u64::from_le_bytes(*b"CIDCACHE");
/// Version of this layout (header, segment table, slots, lease pages). Bumped on any change.
///
/// 2: the run token ([`hdr::RUN_TOKEN`]), which clients must check on every hit, and control
/// segments that outlive their coordinator (a new one adopts them).
pub const LAYOUT_VERSION: u64 = 2;
/// Seed of the slot hash (xxh3-64). Fixed forever: other processes and later versions must find
/// the same slot.
pub const HASH_SEED: u64 = 0x6369_6463_6163_6865;
/// Bytes reserved for the header.
pub const HEADER_BYTES: usize = 4096;
/// Size of one segment-table entry.
pub const SEG_ENTRY_BYTES: usize = 32;

/// Header word indices.
pub mod hdr {
    /// [`super::MAGIC`].
    pub const MAGIC: usize = 0;
    /// [`super::LAYOUT_VERSION`].
    pub const VERSION: usize = 1;
    /// Process id of the coordinator.
    pub const PID: usize = 2;
    /// Random id of this coordinator boot; changes at every start.
    pub const BOOT_ID: usize = 3;
    /// [`super::STATE_RUNNING`] or [`super::STATE_STOPPED`].
    pub const STATE: usize = 4;
    /// Byte offset of the index.
    pub const INDEX_OFFSET: usize = 5;
    /// Number of index slots (a power of two).
    pub const INDEX_CAPACITY: usize = 6;
    /// Byte offset of the segment table.
    pub const SEG_OFFSET: usize = 7;
    /// Number of segment-table entries (a power of two).
    pub const SEG_LEN: usize = 8;
    /// Longest probe distance of any key ever inserted; readers stop after it.
    pub const MAX_PROBE: usize = 9;
    /// Total size of the control segment in bytes.
    pub const TOTAL_SIZE: usize = 10;
    /// [`super::HASH_SEED`], recorded so a reader can check it.
    pub const HASH_SEED: usize = 11;
    /// Memory limit of the hot tier in bytes.
    pub const MEMORY_LIMIT: usize = 12;
    /// Live (sealed, indexed) objects.
    pub const LIVE_OBJECTS: usize = 13;
    /// Bytes of sealed objects (data + metadata).
    pub const LIVE_BYTES: usize = 14;
    /// The boot id of the coordinator serving this segment now, 0 when none does (it stopped,
    /// or a successor is adopting the segment). A client may use what it reads through this
    /// segment only while this word equals the boot id its Hello reply gave: it sits on the
    /// cache line of [`MAX_PROBE`], which every lookup already loads, so the check costs one
    /// load of a line in cache.
    pub const RUN_TOKEN: usize = 15;
    /// Number of header words in use.
    pub const COUNT: usize = 16;
}

/// Coordinator running.
pub const STATE_RUNNING: u64 = 1;
/// Coordinator stopped cleanly; clients must reconnect to a new one.
pub const STATE_STOPPED: u64 = 2;

/// Whether a client that connected to the coordinator boot `boot` may still use what it read
/// through this control segment. A client calls it after storing its pin and the SeqCst fence
/// of the pin protocol: a coordinator that takes the segment over first clears the token,
/// fences, then scans the lease pages, so either it sees the pin or the client sees the token
/// changed (see `docs/layout.md`, "Restarts").
#[inline]
pub fn token_current(header: &Header<'_>, boot: u64) -> bool {
    header.words[hdr::RUN_TOKEN].load(Ordering::Relaxed) == boot
}

/// Segment kinds in the segment table.
pub const SEG_KIND_ARENA: u64 = 1;
/// A segment holding one large object.
pub const SEG_KIND_DEDICATED: u64 = 2;

/// Geometry of a control segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Index slots (power of two).
    pub index_capacity: u64,
    /// Segment-table entries (power of two).
    pub seg_len: u64,
}

impl Geometry {
    /// Byte offset of the segment table.
    pub fn seg_offset(&self) -> u64 {
        HEADER_BYTES as u64
    }
    /// Byte offset of the index (128-byte aligned).
    pub fn index_offset(&self) -> u64 {
        let end = self.seg_offset() + self.seg_len * SEG_ENTRY_BYTES as u64;
        end.next_multiple_of(4096)
    }
    /// Total size of the control segment.
    pub fn total_size(&self) -> u64 {
        (self.index_offset() + self.index_capacity * crate::index::SLOT_BYTES as u64)
            .next_multiple_of(4096)
    }
}

/// A view of the header words of a mapped control segment.
#[derive(Clone, Copy)]
pub struct Header<'a> {
    words: &'a [AtomicU64],
}

impl<'a> Header<'a> {
    /// Wraps the first `hdr::COUNT` words.
    pub fn new(words: &'a [AtomicU64]) -> Header<'a> {
        assert!(words.len() >= hdr::COUNT);
        Header { words }
    }
    /// Loads a header word (Acquire: pairs with the coordinator's Release stores).
    pub fn get(&self, w: usize) -> u64 {
        self.words[w].load(Ordering::Acquire)
    }
    /// Stores a header word (coordinator only).
    pub fn set(&self, w: usize, v: u64) {
        self.words[w].store(v, Ordering::Release)
    }
    /// Adds to a counter word (coordinator only: the single writer makes load+store enough).
    pub fn add(&self, w: usize, delta: i64) {
        let v = self.words[w].load(Ordering::Relaxed);
        self.words[w].store(v.wrapping_add(delta as u64), Ordering::Relaxed);
    }
}

/// One entry of the segment table: which data segment occupies a table position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegEntry {
    /// Segment id (never reused within a boot; 0 = free entry).
    pub id: u64,
    /// Segment size in bytes.
    pub size: u64,
    /// [`SEG_KIND_ARENA`] or [`SEG_KIND_DEDICATED`].
    pub kind: u64,
}

/// A view of the segment table. Segment `id` always lives at position `id % len`.
#[derive(Clone, Copy)]
pub struct SegTable<'a> {
    words: &'a [AtomicU64],
}

impl<'a> SegTable<'a> {
    /// Wraps `len * 4` words.
    pub fn new(words: &'a [AtomicU64]) -> SegTable<'a> {
        SegTable { words }
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.words.len() / 4
    }
    /// True when the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
    /// Position of segment `id`.
    pub fn position(&self, id: u64) -> usize {
        (id % self.len() as u64) as usize
    }
    /// Reads an entry. The id is written last (Release) and read first (Acquire), so a reader
    /// that sees an id sees that segment's size and kind.
    pub fn get(&self, pos: usize) -> SegEntry {
        let id = self.words[pos * 4].load(Ordering::Acquire);
        SegEntry {
            id,
            size: self.words[pos * 4 + 1].load(Ordering::Relaxed),
            kind: self.words[pos * 4 + 2].load(Ordering::Relaxed),
        }
    }
    /// Publishes an entry (coordinator only).
    pub fn set(&self, pos: usize, e: SegEntry) {
        self.words[pos * 4].store(0, Ordering::Release);
        self.words[pos * 4 + 1].store(e.size, Ordering::Relaxed);
        self.words[pos * 4 + 2].store(e.kind, Ordering::Relaxed);
        self.words[pos * 4].store(e.id, Ordering::Release);
    }
    /// Frees an entry (coordinator only).
    pub fn clear(&self, pos: usize) {
        self.words[pos * 4].store(0, Ordering::Release);
    }
}

#[cfg(cidcache_loom)]
mod loom_tests {
    use super::*;
    use crate::index::{Entry, IndexRef, IndexWriter, Slot};
    use crate::key::Key;
    use crate::pins::{pin_snapshot, pin_word, Lease, LEASE_HEADER_WORDS};
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    /// A coordinator adopting the segment after a crash: whatever the interleaving, either it
    /// sees the old client's pin when it scans that client's lease page (and keeps the memory),
    /// or the client sees the run token changed after pinning (and does not use the object).
    #[test]
    fn adoption_vs_hit_race() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.check(|| {
            const OLD_BOOT: u64 = 7;
            let slots: Arc<Vec<Slot>> = Arc::new((0..2).map(|_| Slot::empty()).collect());
            let header: Arc<Vec<AtomicU64>> =
                Arc::new((0..hdr::COUNT).map(|_| AtomicU64::new(0)).collect());
            header[hdr::RUN_TOKEN].store(OLD_BOOT, Ordering::Relaxed);
            let page: Arc<Vec<AtomicU64>> = Arc::new(
                (0..LEASE_HEADER_WORDS + 2 + 1)
                    .map(|_| AtomicU64::new(0))
                    .collect(),
            );
            Lease::init(&page, 1, 2, 1);
            let key = Key::new(b"x").unwrap();
            let e = Entry {
                seg: 1,
                offset: 0,
                data_len: 1,
                meta_len: 0,
                flags: 0,
                object_id: 1,
            };
            let slot = IndexWriter::new(IndexRef::new(&slots, &header[hdr::MAX_PROBE]), 2)
                .insert(&key, e)
                .unwrap();
            let reusable = Arc::new(AtomicBool::new(false));

            let (h2, p2, s2, r2) = (
                header.clone(),
                page.clone(),
                slots.clone(),
                reusable.clone(),
            );
            let adopter = loom::thread::spawn(move || {
                // open_control: clear the token, fence; then every pin scan comes later.
                Header::new(&h2).set(hdr::RUN_TOKEN, 0);
                fence(Ordering::SeqCst);
                let seq = IndexRef::new(&s2, &h2[hdr::MAX_PROBE]).seq(slot);
                let mut pins = Vec::new();
                Lease::new(&p2).unwrap().collect_pins(&mut pins);
                if !pins.contains(&pin_word(slot, seq)) {
                    r2.store(true, Ordering::SeqCst);
                }
            });

            let index = IndexRef::new(&slots, &header[hdr::MAX_PROBE]);
            let lease = Lease::new(&page).unwrap();
            if let Some(f) = index.lookup(&key, key.hash()) {
                if let Ok(pos) = pin_snapshot(index, lease, f.slot, f.seq, 0) {
                    if token_current(&Header::new(&header), OLD_BOOT) {
                        assert!(
                            !reusable.load(Ordering::SeqCst),
                            "an object in use was left unprotected"
                        );
                    }
                    lease.unpin(pos);
                }
            }
            adopter.join().unwrap();
        });
    }
}
