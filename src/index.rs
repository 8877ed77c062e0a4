//! The lock-free, single-writer hash index that lives in the control segment.
//!
//! # Layout
//! Open addressing with linear probing over `capacity` (a power of two) slots of 128 bytes, each
//! made only of naturally aligned 64-bit atomics (see [`Slot`]). The home slot of a key is
//! `xxh3_64(key, HASH_SEED) & (capacity - 1)`. Keys (1..=63 bytes) are stored and compared in
//! full. Deleted slots become tombstones; a tombstone followed by an empty slot is turned back
//! into an empty slot, which keeps probe chains short without moving live entries (a moved entry
//! would invalidate the pins that name its slot).
//!
//! # Concurrency (seqlock per slot)
//! The coordinator is the only writer. A write sets `seq` odd, fences, writes the fields with
//! relaxed stores, then sets `seq` to the next even value with Release. A reader loads `seq`
//! (Acquire), waits while it is odd, reads the fields with relaxed loads, issues an Acquire
//! fence and re-loads `seq`: equal means the fields form one consistent snapshot. Readers never
//! write to the index, so the control segment is mapped read-only in clients.
//!
//! A reader that finds a slot odd for too long (a coordinator killed mid-write) gives up and
//! reports a miss; the miss path then talks to the coordinator and learns it is gone.

use crate::key::Key;
use crate::sync::{fence, spin, AtomicU64, Ordering};

/// Size of one slot in bytes.
pub const SLOT_BYTES: usize = 128;

/// Slot states (low byte of the `state` word).
pub(crate) const STATE_EMPTY: u64 = 0;
pub(crate) const STATE_LIVE: u64 = 1;
pub(crate) const STATE_TOMB: u64 = 2;
/// Flag bits (above the state byte): the object is Arrow IPC.
pub const FLAG_ARROW: u64 = 1 << 8;
/// Flag bit: the object lives in shared memory only and is never demoted (put as ephemeral, or
/// a scan result). Recorded so that a coordinator adopting the index after a crash knows.
pub const FLAG_EPHEMERAL: u64 = 1 << 16;
/// Flag bit: the coordinator validated the Arrow IPC object in full when it was sealed (set
/// only with [`FLAG_ARROW`]); readers then decode it without validation.
pub const FLAG_VALIDATED: u64 = 1 << 9;

/// How long a reader waits for an odd `seq` before treating the slot as unreadable.
#[cfg(not(cidcache_loom))]
const MAX_SPINS: u32 = 1 << 16;
#[cfg(cidcache_loom)]
const MAX_SPINS: u32 = 2;

/// One index slot: 16 naturally aligned 64-bit words, cache-line aligned.
#[repr(C, align(64))]
pub struct Slot {
    /// Sequence number: odd while the coordinator writes the slot.
    pub(crate) seq: AtomicU64,
    /// Full 64-bit hash of the key.
    pub(crate) hash: AtomicU64,
    /// Key: byte 0 = length, bytes 1..=63 = key, as 8 little-endian words.
    pub(crate) key: [AtomicU64; 8],
    /// Data segment id.
    pub(crate) seg: AtomicU64,
    /// Offset of the object in its segment (64-byte aligned).
    pub(crate) offset: AtomicU64,
    /// Length of the data part.
    pub(crate) data_len: AtomicU64,
    /// Length of the metadata part (stored right after the data).
    pub(crate) meta_len: AtomicU64,
    /// State byte plus flag bits.
    pub(crate) state: AtomicU64,
    /// The coordinator's handle of the object (what clients report in their hit rings).
    pub(crate) object_id: AtomicU64,
}

impl Slot {
    /// A slot with every word zero: what a fresh control segment holds (tests, benchmarks and
    /// model checks build their tables from these).
    pub(crate) fn empty() -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            hash: AtomicU64::new(0),
            key: Default::default(),
            seg: AtomicU64::new(0),
            offset: AtomicU64::new(0),
            data_len: AtomicU64::new(0),
            meta_len: AtomicU64::new(0),
            state: AtomicU64::new(0),
            object_id: AtomicU64::new(0),
        }
    }
}

#[cfg(not(cidcache_loom))]
const _: () = assert!(std::mem::size_of::<Slot>() == SLOT_BYTES);

/// A consistent snapshot of a live slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Data segment id.
    pub seg: u64,
    /// Offset of the object in its segment.
    pub offset: u64,
    /// Data length.
    pub data_len: u64,
    /// Metadata length.
    pub meta_len: u64,
    /// Flag bits ([`FLAG_ARROW`], [`FLAG_VALIDATED`]).
    pub flags: u64,
    /// Coordinator handle.
    pub object_id: u64,
}

/// Where a lookup found a key: the slot, the `seq` it was read at, and the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Slot index.
    pub slot: u32,
    /// Even `seq` value the snapshot was taken at.
    pub seq: u64,
    /// The entry.
    pub entry: Entry,
}

struct Snapshot {
    seq: u64,
    state: u64,
    hash: u64,
    key: [u64; 8],
    entry: Entry,
}

/// Read access to an index (any process). Cheap to copy.
#[derive(Clone, Copy)]
pub struct IndexRef<'a> {
    slots: &'a [Slot],
    max_probe: &'a AtomicU64,
}

impl<'a> IndexRef<'a> {
    /// Wraps `slots` (length a power of two) and the header's max-probe word.
    pub fn new(slots: &'a [Slot], max_probe: &'a AtomicU64) -> IndexRef<'a> {
        assert!(slots.len().is_power_of_two());
        IndexRef { slots, max_probe }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot at `i`.
    pub fn slot(&self, i: u32) -> &'a Slot {
        &self.slots[i as usize]
    }

    /// Current `seq` of slot `i` (used by the pin protocol to re-check a snapshot).
    #[inline]
    pub fn seq(&self, i: u32) -> u64 {
        self.slots[i as usize].seq.load(Ordering::Relaxed)
    }

    fn snapshot(&self, i: usize) -> Option<Snapshot> {
        let s = &self.slots[i];
        let mut spins = 0u32;
        loop {
            let seq1 = s.seq.load(Ordering::Acquire);
            if seq1 & 1 == 1 {
                spins += 1;
                if spins > MAX_SPINS {
                    return None;
                }
                spin();
                continue;
            }
            let state = s.state.load(Ordering::Relaxed);
            let hash = s.hash.load(Ordering::Relaxed);
            let mut key = [0u64; 8];
            for (k, w) in key.iter_mut().zip(s.key.iter()) {
                *k = w.load(Ordering::Relaxed);
            }
            let entry = Entry {
                seg: s.seg.load(Ordering::Relaxed),
                offset: s.offset.load(Ordering::Relaxed),
                data_len: s.data_len.load(Ordering::Relaxed),
                meta_len: s.meta_len.load(Ordering::Relaxed),
                flags: state & !0xff,
                object_id: s.object_id.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) == seq1 {
                return Some(Snapshot {
                    seq: seq1,
                    state: state & 0xff,
                    hash,
                    key,
                    entry,
                });
            }
            spin();
        }
    }

    /// Looks `key` up without locks or system calls. `hash` must be `key.hash()`.
    ///
    /// A `None` is a *possible* miss: the key may have been inserted concurrently, or a slot was
    /// unreadable. Callers confirm misses with the coordinator.
    #[inline]
    pub fn lookup(&self, key: &Key, hash: u64) -> Option<Found> {
        let mask = self.slots.len() - 1;
        let max_probe = (self.max_probe.load(Ordering::Acquire) as usize).min(mask);
        let want = key.words();
        let mut i = hash as usize & mask;
        for _ in 0..=max_probe {
            let snap = self.snapshot(i)?;
            match snap.state {
                STATE_EMPTY => return None,
                STATE_LIVE if snap.hash == hash && snap.key == want => {
                    return Some(Found {
                        slot: i as u32,
                        seq: snap.seq,
                        entry: snap.entry,
                    });
                }
                _ => {}
            }
            i = (i + 1) & mask;
        }
        None
    }

    /// Reads live entries from slot `start` on, for listing. Returns `(key, entry)` pairs and
    /// the next slot to continue from (`None` at the end).
    pub fn scan(&self, start: usize, max: usize) -> (Vec<(Key, Entry)>, Option<usize>) {
        self.scan_slots(start, max, usize::MAX)
    }

    /// Like [`IndexRef::scan`], reading at most `max_slots` slots (at least one), so that one
    /// call's cost is bounded however sparse the table is.
    pub fn scan_slots(
        &self,
        start: usize,
        max: usize,
        max_slots: usize,
    ) -> (Vec<(Key, Entry)>, Option<usize>) {
        let mut out = Vec::new();
        let mut i = start;
        let end = start.saturating_add(max_slots.max(1)).min(self.slots.len());
        while i < end && out.len() < max {
            if let Some(s) = self.snapshot(i) {
                if s.state == STATE_LIVE {
                    if let Some(k) = Key::from_words(&s.key) {
                        out.push((k, s.entry));
                    }
                }
            }
            i += 1;
        }
        (out, (i < self.slots.len()).then_some(i))
    }
}

/// Write access to an index. Only the coordinator holds one, and only one exists per index.
pub struct IndexWriter<'a> {
    r: IndexRef<'a>,
    live: usize,
    tombs: usize,
    max_live: usize,
}

/// What [`IndexWriter::adopt`] dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdoptReport {
    /// Slots whose write the previous writer never finished (odd `seq`).
    pub interrupted: usize,
    /// Slots with an unknown state, a key or hash that does not check out, or an entry the
    /// caller rejected.
    pub invalid: usize,
}

/// Outcome of a failed insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table holds `max_live` entries (or no free slot was found).
    Full,
}

impl<'a> IndexWriter<'a> {
    /// Takes over an index whose slots are all empty. At most `max_live` entries are allowed
    /// (keep it below the capacity so probe chains stay short).
    pub fn new(r: IndexRef<'a>, max_live: usize) -> IndexWriter<'a> {
        IndexWriter {
            r,
            live: 0,
            tombs: 0,
            max_live: max_live.min(r.capacity()),
        }
    }

    /// Takes over an index that a previous writer left, possibly killed in the middle of a
    /// write. Every slot is visited once: an odd `seq` (an interrupted write), a state it does
    /// not know, a live entry whose key or hash does not check out, or one that `keep` rejects
    /// becomes a tombstone (written with the seqlock protocol, so concurrent readers stay
    /// safe); the others stay where they are (pins name slots). `keep` is called with the slot
    /// and the entry's key and fields; it validates what the index cannot (segments, bounds,
    /// duplicates). At most `max_live` entries are kept. The max-probe word is set to the
    /// longest probe distance of a kept entry.
    pub(crate) fn adopt(
        r: IndexRef<'a>,
        max_live: usize,
        mut keep: impl FnMut(u32, Key, Entry) -> bool,
    ) -> (IndexWriter<'a>, AdoptReport) {
        let mut w = IndexWriter::new(r, max_live);
        let mut rep = AdoptReport::default();
        let mask = r.slots.len() - 1;
        let mut max_probe = 0u64;
        for i in 0..r.slots.len() {
            let s = &r.slots[i];
            let seq = s.seq.load(Ordering::Acquire);
            if seq & 1 == 1 {
                // The previous writer died here: nothing in the slot can be trusted, and the
                // next even value ends the write it left open.
                s.state.store(STATE_TOMB, Ordering::Relaxed);
                s.object_id.store(0, Ordering::Relaxed);
                s.seq.store(seq.wrapping_add(1), Ordering::Release);
                rep.interrupted += 1;
                w.tombs += 1;
                continue;
            }
            let state = s.state.load(Ordering::Relaxed);
            match state & 0xff {
                STATE_EMPTY => continue,
                STATE_TOMB => {
                    w.tombs += 1;
                    continue;
                }
                STATE_LIVE => {}
                _ => {
                    w.write(i, |s| s.state.store(STATE_TOMB, Ordering::Relaxed));
                    rep.invalid += 1;
                    w.tombs += 1;
                    continue;
                }
            }
            let mut words = [0u64; 8];
            for (k, v) in words.iter_mut().zip(s.key.iter()) {
                *k = v.load(Ordering::Relaxed);
            }
            let hash = s.hash.load(Ordering::Relaxed);
            let key = Key::from_words(&words).filter(|k| k.hash() == hash);
            let entry = Entry {
                seg: s.seg.load(Ordering::Relaxed),
                offset: s.offset.load(Ordering::Relaxed),
                data_len: s.data_len.load(Ordering::Relaxed),
                meta_len: s.meta_len.load(Ordering::Relaxed),
                flags: state & !0xff,
                object_id: s.object_id.load(Ordering::Relaxed),
            };
            let kept = match key {
                Some(k) if w.live < w.max_live => keep(i as u32, k, entry),
                _ => false,
            };
            if kept {
                w.live += 1;
                let home = hash as usize & mask;
                max_probe = max_probe.max(((i + mask + 1 - home) & mask) as u64);
            } else {
                w.write(i, |s| {
                    s.state.store(STATE_TOMB, Ordering::Relaxed);
                    s.object_id.store(0, Ordering::Relaxed);
                });
                rep.invalid += 1;
                w.tombs += 1;
            }
        }
        r.max_probe.store(max_probe, Ordering::Release);
        (w, rep)
    }

    /// A second writer handle over an index that already holds `live` entries (model tests
    /// hand the writer to another thread this way).
    #[cfg(cidcache_loom)]
    pub(crate) fn with_live(mut self, live: usize) -> Self {
        self.live = live;
        self
    }

    /// Read view of the same index.
    pub fn reader(&self) -> IndexRef<'a> {
        self.r
    }

    /// Live entries.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Tombstones.
    pub fn tombstones(&self) -> usize {
        self.tombs
    }

    /// Maximum live entries.
    pub fn max_live(&self) -> usize {
        self.max_live
    }

    fn write(&self, i: usize, f: impl FnOnce(&Slot)) {
        let s = &self.r.slots[i];
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        f(s);
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    fn state(&self, i: usize) -> u64 {
        self.r.slots[i].state.load(Ordering::Relaxed) & 0xff
    }

    /// Inserts `key` (which must not be live already: the coordinator checks its own table
    /// first). Returns the slot used.
    pub fn insert(&mut self, key: &Key, entry: Entry) -> Result<u32, InsertError> {
        if self.live >= self.max_live {
            return Err(InsertError::Full);
        }
        let hash = key.hash();
        let mask = self.r.slots.len() - 1;
        let home = hash as usize & mask;
        for d in 0..=mask {
            let i = (home + d) & mask;
            let st = self.state(i);
            if st == STATE_EMPTY || st == STATE_TOMB {
                if st == STATE_TOMB {
                    self.tombs -= 1;
                }
                // Publish the new probe bound before the entry so a reader that can see the
                // entry also probes far enough to reach it.
                if d as u64 > self.r.max_probe.load(Ordering::Relaxed) {
                    self.r.max_probe.store(d as u64, Ordering::Release);
                }
                let words = key.words();
                self.write(i, |s| {
                    s.hash.store(hash, Ordering::Relaxed);
                    for (w, v) in s.key.iter().zip(words) {
                        w.store(v, Ordering::Relaxed);
                    }
                    s.seg.store(entry.seg, Ordering::Relaxed);
                    s.offset.store(entry.offset, Ordering::Relaxed);
                    s.data_len.store(entry.data_len, Ordering::Relaxed);
                    s.meta_len.store(entry.meta_len, Ordering::Relaxed);
                    s.object_id.store(entry.object_id, Ordering::Relaxed);
                    s.state
                        .store(STATE_LIVE | (entry.flags & !0xff), Ordering::Relaxed);
                });
                self.live += 1;
                return Ok(i as u32);
            }
        }
        Err(InsertError::Full)
    }

    /// Changes flag bits of the live entry at `slot`, if it still holds object `object_id`, in
    /// place: one atomic store of its state word, no seqlock write. A reader sees the entry
    /// with the old bits or the new ones, and `seq` stays what pins taken on the entry carry
    /// (a seqlock write would orphan them). Only for bits whose old and new values are both
    /// correct for every reader at the time of the change: clearing [`FLAG_VALIDATED`] (readers
    /// then validate), or setting it once the coordinator validated the bytes. Returns whether
    /// the entry was changed.
    pub(crate) fn update_flags(&mut self, slot: u32, object_id: u64, set: u64, clear: u64) -> bool {
        debug_assert_eq!((set | clear) & 0xff, 0, "flag bits only");
        let Some(s) = self.r.slots.get(slot as usize) else {
            return false;
        };
        let state = s.state.load(Ordering::Relaxed);
        if state & 0xff != STATE_LIVE || s.object_id.load(Ordering::Relaxed) != object_id {
            return false;
        }
        let new = (state | (set & !0xff)) & !(clear & !0xff);
        if new != state {
            s.state.store(new, Ordering::Release);
        }
        true
    }

    /// Retires the live entry at `slot`: afterwards no reader can take a new snapshot of it, and
    /// a reader that pinned the old snapshot sees `seq` changed when it re-checks. Returns the
    /// `seq` the entry was live at (what pins on it carry).
    ///
    /// The caller must issue a SeqCst fence before scanning pins (see `pins`).
    pub fn remove(&mut self, slot: u32) -> u64 {
        let i = slot as usize;
        let s = &self.r.slots[i];
        let old_seq = s.seq.load(Ordering::Relaxed);
        debug_assert_eq!(self.state(i), STATE_LIVE);
        self.write(i, |s| {
            s.state.store(STATE_TOMB, Ordering::Relaxed);
            s.object_id.store(0, Ordering::Relaxed);
        });
        self.live -= 1;
        self.tombs += 1;
        // A tombstone followed by an empty slot ends every probe chain that reaches it anyway:
        // turn such tombstones back into empty slots, walking backwards.
        let mask = self.r.slots.len() - 1;
        let mut j = i;
        while self.state((j + 1) & mask) == STATE_EMPTY && self.state(j) == STATE_TOMB {
            self.write(j, |s| s.state.store(STATE_EMPTY, Ordering::Relaxed));
            self.tombs -= 1;
            j = (j + mask) & mask;
            if j == i {
                break;
            }
        }
        old_seq
    }
}

#[cfg(all(test, not(cidcache_loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn slots(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::empty()).collect()
    }

    fn entry(v: u64) -> Entry {
        Entry {
            seg: v,
            offset: v * 64,
            data_len: v + 1,
            meta_len: v % 3,
            flags: 0,
            object_id: v + 100,
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u64),
        Delete(u8),
        Lookup(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space so that deletes, re-inserts and tombstones collide often.
        prop_oneof![
            (0u8..48, any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v % 1000)),
            (0u8..48).prop_map(Op::Delete),
            (0u8..48).prop_map(Op::Lookup),
        ]
    }

    fn key_of(k: u8) -> Key {
        // Vary lengths too, up to the 63-byte maximum.
        let len = 1 + (k as usize * 7) % 63;
        let bytes: Vec<u8> = (0..len).map(|i| k.wrapping_add(i as u8)).collect();
        Key::new(&bytes).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The index behaves like a HashMap with a size limit, whatever the mix of inserts,
        /// deletes (tombstones) and lookups, including a full table.
        #[test]
        fn matches_hashmap_model(ops in proptest::collection::vec(op(), 1..400), cap_log in 3u32..7) {
            let cap = 1usize << cap_log;
            let max_live = cap - cap / 8;
            let s = slots(cap);
            let mp = AtomicU64::new(0);
            let mut w = IndexWriter::new(IndexRef::new(&s, &mp), max_live);
            let mut model: HashMap<Key, (u32, Entry)> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let key = key_of(k);
                        if model.contains_key(&key) { continue; }
                        match w.insert(&key, entry(v)) {
                            Ok(slot) => { model.insert(key, (slot, entry(v))); }
                            Err(InsertError::Full) => prop_assert_eq!(model.len(), max_live),
                        }
                    }
                    Op::Delete(k) => {
                        let key = key_of(k);
                        if let Some((slot, _)) = model.remove(&key) {
                            w.remove(slot);
                        }
                    }
                    Op::Lookup(k) => {
                        let key = key_of(k);
                        let got = w.reader().lookup(&key, key.hash());
                        match model.get(&key) {
                            Some((slot, e)) => {
                                let f = got.expect("live key must be found");
                                prop_assert_eq!(f.slot, *slot);
                                prop_assert_eq!(f.entry, *e);
                            }
                            None => prop_assert!(got.is_none()),
                        }
                    }
                }
                prop_assert_eq!(w.live(), model.len());
            }
            // Every live key is still found after the whole sequence.
            for (k, (slot, e)) in &model {
                let f = w.reader().lookup(k, k.hash()).unwrap();
                prop_assert_eq!(f.slot, *slot);
                prop_assert_eq!(f.entry, *e);
            }
            let (listed, _) = w.reader().scan(0, usize::MAX);
            prop_assert_eq!(listed.len(), model.len());
        }
    }

    /// Adoption keeps valid entries where they are, turns interrupted writes, corrupt slots
    /// and rejected entries into tombstones, and leaves an index that works on.
    #[test]
    fn adopt_keeps_what_checks_out_and_drops_the_rest() {
        let s = slots(64);
        let mp = AtomicU64::new(0);
        let mut w = IndexWriter::new(IndexRef::new(&s, &mp), 56);
        let mut at = HashMap::new();
        for k in 0..20u8 {
            at.insert(k, w.insert(&key_of(k), entry(k as u64)).unwrap());
        }
        w.remove(at[&3]);
        // Killed mid-write on key 5; key 6's hash is corrupt; key 7 has an unknown state.
        s[at[&5] as usize].seq.fetch_add(1, Ordering::Relaxed);
        s[at[&6] as usize].hash.fetch_xor(1, Ordering::Relaxed);
        s[at[&7] as usize].state.store(9, Ordering::Relaxed);
        let (mut w, rep) = IndexWriter::adopt(IndexRef::new(&s, &mp), 56, |_, k, e| {
            // The caller rejects key 8.
            assert_eq!(e, entry(k.as_bytes()[0] as u64));
            k != key_of(8)
        });
        assert_eq!(rep.interrupted, 1);
        assert_eq!(rep.invalid, 3);
        assert_eq!(w.live(), 15);
        let r = w.reader();
        for k in 0..20u8 {
            let f = r.lookup(&key_of(k), key_of(k).hash());
            if [3, 5, 6, 7, 8].contains(&k) {
                assert!(f.is_none(), "{k} must be gone");
            } else {
                assert_eq!(f.unwrap().slot, at[&k], "{k} stays in its slot");
            }
            assert_eq!(r.seq(at[&k]) & 1, 0);
        }
        let slot = w.insert(&key_of(5), entry(5)).unwrap();
        assert_eq!(r.lookup(&key_of(5), key_of(5).hash()).unwrap().slot, slot);
    }

    #[test]
    fn flags_change_in_place_and_pins_stay_valid() {
        let s = slots(16);
        let mp = AtomicU64::new(0);
        let mut w = IndexWriter::new(IndexRef::new(&s, &mp), 14);
        let mut e = entry(1);
        e.flags = FLAG_ARROW | FLAG_VALIDATED;
        let slot = w.insert(&key_of(1), e).unwrap();
        let r = w.reader();
        let seq = r.seq(slot);
        assert!(w.update_flags(slot, e.object_id, 0, FLAG_VALIDATED));
        // The seq that pins carry is unchanged; readers see the new bits.
        assert_eq!(r.seq(slot), seq);
        let f = r.lookup(&key_of(1), key_of(1).hash()).unwrap();
        assert_eq!(f.entry.flags, FLAG_ARROW);
        assert!(w.update_flags(slot, e.object_id, FLAG_VALIDATED, 0));
        let f = r.lookup(&key_of(1), key_of(1).hash()).unwrap();
        assert_eq!(f.entry.flags, FLAG_ARROW | FLAG_VALIDATED);
        // Another object in the slot, or none, is left alone.
        assert!(!w.update_flags(slot, e.object_id + 1, 0, FLAG_VALIDATED));
        w.remove(slot);
        assert!(!w.update_flags(slot, e.object_id, 0, FLAG_VALIDATED));
        assert!(!w.update_flags(99, e.object_id, 0, FLAG_VALIDATED));
    }

    #[test]
    fn full_table_is_an_error_not_a_hang() {
        let s = slots(8);
        let mp = AtomicU64::new(0);
        let mut w = IndexWriter::new(IndexRef::new(&s, &mp), 8);
        for k in 0..8u8 {
            w.insert(&key_of(k), entry(k as u64)).unwrap();
        }
        assert_eq!(w.insert(&key_of(9), entry(9)), Err(InsertError::Full));
        // Lookups of missing keys terminate on a table with no empty slot.
        assert!(w.reader().lookup(&key_of(9), key_of(9).hash()).is_none());
    }
}

#[cfg(cidcache_loom)]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    fn new_slots(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::empty()).collect()
    }

    /// A reader racing the writer's remove-then-reinsert of a key never returns a snapshot that
    /// mixes two entries: it sees the old entry, the new one, or a miss.
    #[test]
    fn seqlock_read_is_never_torn() {
        // Bounded preemption keeps the model tractable (every field is a separate atomic);
        // bugs in seqlock and fence protocols show up within two preemptions.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.check(|| {
            let slots = Arc::new(new_slots(2));
            let mp = Arc::new(AtomicU64::new(0));
            let key = Key::new(b"k").unwrap();
            // The entries differ in every word, flags included: a reader must never see the
            // Arrow and validated bits of one entry with the offsets of the other.
            let a = Entry {
                seg: 1,
                offset: 64,
                data_len: 10,
                meta_len: 1,
                flags: FLAG_ARROW | FLAG_VALIDATED,
                object_id: 7,
            };
            let b = Entry {
                seg: 2,
                offset: 128,
                data_len: 20,
                meta_len: 2,
                flags: 0,
                object_id: 8,
            };
            let slot = {
                let mut w = IndexWriter::new(IndexRef::new(&slots, &mp), 2);
                w.insert(&key, a).unwrap()
            };
            let (s2, mp2) = (slots.clone(), mp.clone());
            let writer = loom::thread::spawn(move || {
                let mut w = IndexWriter::new(IndexRef::new(&s2, &mp2), 2).with_live(1);
                w.remove(slot);
                w.insert(&key, b).unwrap();
            });
            let r = IndexRef::new(&slots, &mp);
            if let Some(f) = r.lookup(&key, key.hash()) {
                assert!(f.entry == a || f.entry == b, "torn read: {:?}", f.entry);
            }
            writer.join().unwrap();
        });
    }

    /// A reader racing an in-place flag change (adoption clearing `FLAG_VALIDATED`, the
    /// background validation setting it back) sees the entry with the old flags or the new
    /// ones, never anything else, at the seq its pin would carry (the change keeps it).
    #[test]
    fn flag_change_in_place_keeps_the_snapshot_and_its_seq() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.check(|| {
            let slots = Arc::new(new_slots(2));
            let mp = Arc::new(AtomicU64::new(0));
            let key = Key::new(b"k").unwrap();
            let a = Entry {
                seg: 1,
                offset: 64,
                data_len: 10,
                meta_len: 1,
                flags: FLAG_ARROW | FLAG_VALIDATED,
                object_id: 7,
            };
            let (slot, seq) = {
                let mut w = IndexWriter::new(IndexRef::new(&slots, &mp), 2);
                let slot = w.insert(&key, a).unwrap();
                (slot, w.reader().seq(slot))
            };
            let (s2, mp2) = (slots.clone(), mp.clone());
            let writer = loom::thread::spawn(move || {
                let mut w = IndexWriter::new(IndexRef::new(&s2, &mp2), 2).with_live(1);
                assert!(w.update_flags(slot, 7, 0, FLAG_VALIDATED));
            });
            let r = IndexRef::new(&slots, &mp);
            let f = r.lookup(&key, key.hash()).expect("the entry stays live");
            let cleared = Entry {
                flags: FLAG_ARROW,
                ..a
            };
            assert!(f.entry == a || f.entry == cleared, "{:?}", f.entry);
            assert_eq!(f.seq, seq);
            writer.join().unwrap();
        });
    }
}
