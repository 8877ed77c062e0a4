//! Client lease pages: pins and hit rings, and the reclamation protocol built on them.
//!
//! # Lease page layout (one page per connected client, `cidcache.NAME.lID`)
//! ```text
//! word 0       LEASE_MAGIC
//! word 1       client id
//! word 2       number of pin words P
//! word 3       number of hit-ring words H
//! word 4       hit-ring head (count of hits ever recorded)
//! words 8..    P pin words:   0 = free, else ((slot + 1) << 32) | (seq & 0xffff_ffff)
//! then         H hit words:   object ids of recent hits (a ring; a sample, not a log)
//! ```
//! The lease page is the only shared memory a client writes. The coordinator creates it when the
//! client connects and discards it when the connection closes, which drops every pin the client
//! held: a dead client cannot keep memory pinned.
//!
//! # What the coordinator trusts (nothing)
//! The client can write any word of its page at any time. The coordinator therefore never takes
//! the page's header as the truth: it views the page with the sizes it created it with
//! ([`Lease::with_sizes`]), checks that the header still holds what it wrote
//! ([`Lease::check_header`]) and that every pin names a slot of the index
//! ([`Lease::collect_pins_checked`]); a failed check is a [`LeaseFault`], which ends that
//! client's session. What cannot be told apart from a correct page costs bounded work: a
//! harvest reads at most H hit words however far the head moved (a head moving backwards, which
//! racing threads of a correct client can cause, reads nothing), hit ids that name no object
//! are ignored by the policies, and a forged pin `(slot, seq)` can at worst keep one retired
//! object's memory from being reused while it stays, at most P of them per client (the same as
//! P real pins).
//!
//! # Pin protocol (a hit without a round trip)
//! Reader: look the key up (a seqlock snapshot at `seq`), store the pin `(slot, seq)`, issue a
//! SeqCst fence, re-load the slot's `seq`. Equal: the object is pinned. Different: drop the pin
//! and retry.
//!
//! Coordinator, before reusing an object's memory: retire the slot (its `seq` changes), issue a
//! SeqCst fence, then scan every live lease page for a pin `(slot, seq)`. Memory is reused only
//! when none is found; otherwise it is queued and the scan repeated later.
//!
//! Why this is safe: both sides store, fence (SeqCst), then load what the other stored. Of two
//! SeqCst fences one comes first in the total order, so at least one side sees the other's store:
//! either the coordinator finds the pin (and defers), or the reader sees the new `seq` (and
//! retries). Pins carry only the low 32 bits of `seq`; a false match needs 2^31 rewrites of one
//! slot between a reader's snapshot and its re-check, and would only delay a reuse.

use crate::index::IndexRef;
use crate::sync::{fence, AtomicU64, Ordering};

/// First word of a lease page.
pub const LEASE_MAGIC: u64 = u64::from_le_bytes(*b"CIDLEASE");
/// Words before the pin array.
pub const LEASE_HEADER_WORDS: usize = 8;

/// Lease-page header word indices.
pub mod lease {
    /// [`super::LEASE_MAGIC`].
    pub const MAGIC: usize = 0;
    /// Client id.
    pub const CLIENT_ID: usize = 1;
    /// Pin words.
    pub const PINS: usize = 2;
    /// Hit-ring words.
    pub const HITS: usize = 3;
    /// Hit-ring head.
    pub const HIT_HEAD: usize = 4;
}

/// Size in bytes of a lease page with `pins` pin words and `hits` ring words.
pub fn lease_bytes(pins: usize, hits: usize) -> usize {
    ((LEASE_HEADER_WORDS + pins + hits) * 8).next_multiple_of(4096)
}

/// Packs a pin word.
#[inline]
pub fn pin_word(slot: u32, seq: u64) -> u64 {
    ((slot as u64 + 1) << 32) | (seq & 0xffff_ffff)
}

/// A view of one lease page.
#[derive(Clone, Copy)]
pub struct Lease<'a> {
    header: &'a [AtomicU64],
    pins: &'a [AtomicU64],
    hits: &'a [AtomicU64],
}

impl<'a> Lease<'a> {
    /// Client: splits `words` (the whole page) by the sizes in its header, which the coordinator
    /// wrote. `None` if they do not fit. The coordinator never uses this on a page a client can
    /// write: see [`Lease::with_sizes`].
    pub fn new(words: &'a [AtomicU64]) -> Option<Lease<'a>> {
        if words.len() < LEASE_HEADER_WORDS {
            return None;
        }
        let p = words[lease::PINS].load(Ordering::Relaxed);
        let h = words[lease::HITS].load(Ordering::Relaxed);
        Lease::with_sizes(words, usize::try_from(p).ok()?, usize::try_from(h).ok()?)
    }

    /// Coordinator: a view of a page it created with `pins` pin words and `hits` ring words,
    /// whatever the page's header says now. `None` if `words` is too short or `hits` is 0.
    pub fn with_sizes(words: &'a [AtomicU64], pins: usize, hits: usize) -> Option<Lease<'a>> {
        if words.len() < LEASE_HEADER_WORDS || hits == 0 {
            return None;
        }
        let (header, rest) = words.split_at(LEASE_HEADER_WORDS);
        if pins.checked_add(hits)? > rest.len() {
            return None;
        }
        let (pins, rest) = rest.split_at(pins);
        Some(Lease {
            header,
            pins,
            hits: &rest[..hits],
        })
    }

    /// Writes a fresh header into `words` (coordinator, at connect).
    pub fn init(words: &'a [AtomicU64], client_id: u64, pins: usize, hits: usize) -> Lease<'a> {
        words[lease::MAGIC].store(LEASE_MAGIC, Ordering::Relaxed);
        words[lease::CLIENT_ID].store(client_id, Ordering::Relaxed);
        words[lease::PINS].store(pins as u64, Ordering::Relaxed);
        words[lease::HITS].store(hits as u64, Ordering::Relaxed);
        words[lease::HIT_HEAD].store(0, Ordering::Relaxed);
        Lease::with_sizes(words, pins, hits).expect("lease page sized for its header")
    }

    /// Coordinator: checks that the header words the client must never change still hold what
    /// [`Lease::init`] wrote for `client_id` (the sizes are this view's).
    pub fn check_header(&self, client_id: u64) -> Result<(), LeaseFault> {
        let want = [
            (lease::MAGIC, LEASE_MAGIC),
            (lease::CLIENT_ID, client_id),
            (lease::PINS, self.pins.len() as u64),
            (lease::HITS, self.hits.len() as u64),
        ];
        for (word, expected) in want {
            let found = self.header[word].load(Ordering::Relaxed);
            if found != expected {
                return Err(LeaseFault::Header {
                    word,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }

    /// Magic word (for validation by the client).
    pub fn magic(&self) -> u64 {
        self.header[lease::MAGIC].load(Ordering::Relaxed)
    }

    /// Number of pin words.
    pub fn capacity(&self) -> usize {
        self.pins.len()
    }

    /// Number of hit-ring words.
    pub fn hit_capacity(&self) -> usize {
        self.hits.len()
    }

    /// Stores `word` in a free pin slot, searching from `hint`. Returns its position, or `None`
    /// when every pin slot is taken.
    #[inline]
    pub fn pin(&self, word: u64, hint: usize) -> Option<usize> {
        let n = self.pins.len();
        for k in 0..n {
            let i = (hint + k) % n;
            if self.pins[i].load(Ordering::Relaxed) == 0
                && self.pins[i]
                    .compare_exchange(0, word, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return Some(i);
            }
        }
        None
    }

    /// Frees pin slot `i` (Release: the object's bytes were read before the pin is seen free).
    #[inline]
    pub fn unpin(&self, i: usize) {
        self.pins[i].store(0, Ordering::Release);
    }

    /// Number of pins held.
    pub fn pinned(&self) -> usize {
        self.pins
            .iter()
            .filter(|p| p.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Records a hit in the ring. Lossy under races between threads, by design: the ring is a
    /// sample that feeds eviction policies, and a plain load/store is cheaper than an RMW.
    #[inline]
    pub fn record_hit(&self, object_id: u64) {
        let head = &self.header[lease::HIT_HEAD];
        let h = head.load(Ordering::Relaxed);
        self.hits[(h % self.hits.len() as u64) as usize].store(object_id, Ordering::Relaxed);
        head.store(h.wrapping_add(1), Ordering::Release);
    }

    /// Appends every pin word held to `out` (unchecked: for tests and benchmarks; the coordinator
    /// uses [`Lease::collect_pins_checked`]).
    pub fn collect_pins(&self, out: &mut Vec<u64>) {
        for p in self.pins {
            let v = p.load(Ordering::Relaxed);
            if v != 0 {
                out.push(v);
            }
        }
    }

    /// Coordinator: appends every pin word held to `out` (at most P), or fails on the first one
    /// that names no slot of an index of `slots` slots (no correct client writes one). On
    /// failure `out` may hold some of this page's pins; the caller drops them with the session.
    pub fn collect_pins_checked(&self, slots: u32, out: &mut Vec<u64>) -> Result<(), LeaseFault> {
        for (pos, p) in self.pins.iter().enumerate() {
            let v = p.load(Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            let slot_plus_1 = v >> 32;
            if slot_plus_1 == 0 || slot_plus_1 > slots as u64 {
                return Err(LeaseFault::Pin { pos, word: v });
            }
            out.push(v);
        }
        Ok(())
    }

    /// Coordinator: calls `f` with the object ids of hits recorded since `*seen`, then advances
    /// `*seen`. When the client wrote more than a ring's worth, only the last ring is read: at
    /// most H words whatever the head says (ids are hostile too: `f` must ignore unknown ones).
    pub fn drain_hits(&self, seen: &mut u64, mut f: impl FnMut(u64)) {
        let head = self.header[lease::HIT_HEAD].load(Ordering::Acquire);
        let n = self.hits.len() as u64;
        let from = (*seen).max(head.saturating_sub(n));
        for h in from..head {
            let id = self.hits[(h % n) as usize].load(Ordering::Relaxed);
            if id != 0 {
                f(id);
            }
        }
        *seen = head;
    }
}

/// Why the coordinator refuses a client's lease page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseFault {
    /// A header word no longer holds what the coordinator wrote.
    Header {
        /// Word index (see [`lease`]).
        word: usize,
        /// What the coordinator wrote.
        expected: u64,
        /// What the page holds now.
        found: u64,
    },
    /// A pin word names no slot of the index.
    Pin {
        /// Position in the pin array.
        pos: usize,
        /// The word.
        word: u64,
    },
}

impl std::fmt::Display for LeaseFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LeaseFault::Header {
                word,
                expected,
                found,
            } => {
                let name = ["magic", "client id", "pin count", "hit-ring size"]
                    .get(*word)
                    .copied()
                    .unwrap_or("header");
                write!(
                    f,
                    "header word {word} ({name}) was overwritten: {found:#x}, not {expected:#x}"
                )
            }
            LeaseFault::Pin { pos, word } => write!(
                f,
                "pin {pos} ({word:#x}) names slot {}, which the index does not have",
                (word >> 32).wrapping_sub(1)
            ),
        }
    }
}

/// Reader side of the pin protocol: pins the snapshot `(slot, seq)` and confirms it is still
/// current. Returns the pin position, `Err(true)` when the snapshot went stale (retry the
/// lookup) and `Err(false)` when no pin slot is free.
#[inline]
pub fn pin_snapshot(
    index: IndexRef<'_>,
    lease: Lease<'_>,
    slot: u32,
    seq: u64,
    hint: usize,
) -> Result<usize, bool> {
    let pos = lease.pin(pin_word(slot, seq), hint).ok_or(false)?;
    fence(Ordering::SeqCst);
    if index.seq(slot) == seq {
        Ok(pos)
    } else {
        lease.unpin(pos);
        Err(true)
    }
}

/// Coordinator side: the fence between retiring slots and scanning pins.
#[inline]
pub fn retire_fence() {
    fence(Ordering::SeqCst);
}

#[cfg(all(test, not(cidcache_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pin_and_unpin() {
        let words: Vec<AtomicU64> = (0..lease_bytes(4, 8) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let l = Lease::init(&words, 9, 4, 8);
        let a = l.pin(pin_word(1, 2), 0).unwrap();
        let b = l.pin(pin_word(3, 4), 0).unwrap();
        assert_ne!(a, b);
        assert_eq!(l.pinned(), 2);
        for _ in 0..2 {
            l.pin(pin_word(5, 6), 0).unwrap();
        }
        assert!(l.pin(pin_word(7, 8), 0).is_none(), "bounded pins");
        l.unpin(a);
        assert!(l.pin(pin_word(7, 8), 3).is_some());
        let mut v = Vec::new();
        l.collect_pins(&mut v);
        assert!(v.contains(&pin_word(3, 4)));
    }

    #[test]
    fn the_coordinator_checks_what_the_client_can_write() {
        let words: Vec<AtomicU64> = (0..lease_bytes(4, 8) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let l = Lease::init(&words, 9, 4, 8);
        assert_eq!(l.check_header(9), Ok(()));
        assert!(l.check_header(8).is_err(), "another client's id");
        let mut v = Vec::new();
        l.pin(pin_word(15, 3), 0).unwrap();
        assert_eq!(l.collect_pins_checked(16, &mut v), Ok(()));
        assert_eq!(v, vec![pin_word(15, 3)]);
        // A slot past the index, and a word with no slot at all.
        for bad in [pin_word(16, 3), 0x1234] {
            words[LEASE_HEADER_WORDS + 1].store(bad, Ordering::Relaxed);
            let e = l.collect_pins_checked(16, &mut Vec::new()).unwrap_err();
            assert_eq!(e, LeaseFault::Pin { pos: 1, word: bad });
        }
        words[LEASE_HEADER_WORDS + 1].store(0, Ordering::Relaxed);
        // The header's sizes are the client's to break, never the coordinator's truth.
        words[lease::HITS].store(0, Ordering::Relaxed);
        assert!(Lease::new(&words).is_none());
        let mine = Lease::with_sizes(&words, 4, 8).unwrap();
        assert_eq!(mine.capacity(), 4);
        let e = mine.check_header(9).unwrap_err();
        assert!(e.to_string().contains("hit-ring size"), "{e}");
        words[lease::HITS].store(8, Ordering::Relaxed);
        words[lease::PINS].store(u64::MAX, Ordering::Relaxed);
        assert!(Lease::new(&words).is_none());
        assert!(mine.check_header(9).is_err());
        // A head far ahead reads one ring; a head moving back reads nothing.
        let mut seen = 0;
        let mut n = 0;
        words[lease::HIT_HEAD].store(u64::MAX - 3, Ordering::Relaxed);
        mine.drain_hits(&mut seen, |_| n += 1);
        assert!(n <= 8);
        words[lease::HIT_HEAD].store(5, Ordering::Relaxed);
        n = 0;
        mine.drain_hits(&mut seen, |_| n += 1);
        assert_eq!((n, seen), (0, 5));
    }

    #[test]
    fn hit_ring_wraps() {
        let words: Vec<AtomicU64> = (0..lease_bytes(1, 4) / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let l = Lease::init(&words, 1, 1, 4);
        let mut seen = 0;
        for id in 1..=10 {
            l.record_hit(id);
        }
        let mut got = Vec::new();
        l.drain_hits(&mut seen, |id| got.push(id));
        assert_eq!(got, vec![7, 8, 9, 10]);
        l.record_hit(11);
        got.clear();
        l.drain_hits(&mut seen, |id| got.push(id));
        assert_eq!(got, vec![11]);
    }
}

#[cfg(cidcache_loom)]
mod loom_tests {
    use super::*;
    use crate::index::{Entry, IndexWriter, Slot};
    use crate::key::Key;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;

    /// The pin / retire race: whatever the interleaving, either the coordinator sees the
    /// reader's pin (and keeps the memory), or the reader sees the retired slot (and does not
    /// use it). Never both miss each other.
    #[test]
    fn pin_retire_race() {
        // Bounded preemption keeps the model tractable (every field is a separate atomic);
        // bugs in seqlock and fence protocols show up within two preemptions.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(2);
        model.check(|| {
            let slots: Arc<Vec<Slot>> = Arc::new((0..2).map(|_| Slot::empty()).collect());
            let mp = Arc::new(AtomicU64::new(0));
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
            let slot = IndexWriter::new(IndexRef::new(&slots, &mp), 2)
                .insert(&key, e)
                .unwrap();
            let memory_reused = Arc::new(AtomicBool::new(false));

            let (s2, mp2, p2, reused2) = (
                slots.clone(),
                mp.clone(),
                page.clone(),
                memory_reused.clone(),
            );
            let coordinator = loom::thread::spawn(move || {
                let mut w = IndexWriter::new(IndexRef::new(&s2, &mp2), 2).with_live(1);
                let seq = w.remove(slot);
                retire_fence();
                let mut pins = Vec::new();
                Lease::new(&p2).unwrap().collect_pins(&mut pins);
                if !pins.contains(&pin_word(slot, seq)) {
                    reused2.store(true, Ordering::SeqCst);
                }
            });

            let index = IndexRef::new(&slots, &mp);
            let lease = Lease::new(&page).unwrap();
            if let Some(f) = index.lookup(&key, key.hash()) {
                if let Ok(pos) = pin_snapshot(index, lease, f.slot, f.seq, 0) {
                    // The reader now uses the object: its memory must not have been reused.
                    assert!(
                        !memory_reused.load(Ordering::SeqCst),
                        "pinned memory was reused"
                    );
                    lease.unpin(pos);
                }
            }
            coordinator.join().unwrap();
        });
    }
}
