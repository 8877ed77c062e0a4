//! W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A Highly Efficient Cache Admission
//! Policy", ACM ToS 2017), as popularized by Caffeine.

use super::list::{id_map, Arena, IdMap, List, ScanBudget, NIL};
use super::{EvictionPolicy, PolicyConfig, PolicyKind};
use crate::sketch::hash::double_hash_u64;
use crate::sketch::{BloomFilter, CountMinSketch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seg {
    Window,
    Probation,
    Protected,
}

/// TinyLFU's approximate access-frequency history: a doorkeeper Bloom filter absorbs the
/// first access of each key (most keys are one-hit wonders), a Count-Min sketch with
/// 4-bit-style counters (capped at 15, conservative update) counts the rest, and every
/// `sample_size` recorded accesses both age: counters halve, the doorkeeper clears.
#[derive(Clone, Debug)]
struct FrequencySketch {
    doorkeeper: BloomFilter,
    counts: CountMinSketch,
    samples: u64,
    sample_size: u64,
}

impl FrequencySketch {
    fn new(expected_objects: u64) -> Self {
        let n = expected_objects.clamp(16, 1 << 24);
        // The reset period of 10 x cache entries follows the TinyLFU paper / Caffeine.
        let sample_size = 10 * n;
        FrequencySketch {
            doorkeeper: BloomFilter::with_rate(sample_size, 0.01),
            counts: CountMinSketch::new(n as usize, 4).with_max(15),
            samples: 0,
            sample_size,
        }
    }

    fn record(&mut self, id: u64) {
        // Hash once for both structures.
        let (h1, h2) = double_hash_u64(id);
        if self.doorkeeper.insert_hashes(h1, h2) {
            self.counts.increment_hashes(h1, h2);
        }
        self.samples += 1;
        if self.samples >= self.sample_size {
            self.counts.halve();
            self.doorkeeper.clear();
            self.samples /= 2;
        }
    }

    fn frequency(&self, id: u64) -> u32 {
        let (h1, h2) = double_hash_u64(id);
        self.counts.estimate_hashes(h1, h2) + u32::from(self.doorkeeper.contains_hashes(h1, h2))
    }
}

/// W-TinyLFU: a small LRU window (1 % of capacity) in front of a segmented-LRU main area
/// (probation + protected = 80 % of main), with TinyLFU admission deciding, when space is
/// needed, whether the window's LRU candidate displaces main's LRU victim
/// (`freq(candidate) > freq(victim)`, else the candidate is dropped).
///
/// * insert: recorded in the sketch, enters the window; while the cache is still filling,
///   window overflow moves to probation without a contest.
/// * hit: recorded; window/protected → MRU; probation → protected (overflowing protected
///   demotes its LRU back to probation). Late hits on non-resident ids are ignored.
/// * evict: if the window holds at least its share, contest window-LRU vs main-LRU;
///   otherwise evict main's LRU (probation first).
/// * pinned losers are moved to the MRU end of their segment.
///
/// O(1) per operation (sketch updates are O(depth) = 4 counters + 7 Bloom probes; aging is
/// O(sketch) every `10 × expected_objects` accesses, O(1) amortized). Hits never
/// allocate. Single-threaded.
#[derive(Debug)]
pub struct WTinyLfu {
    arena: Arena<Seg>,
    map: IdMap,
    window: List,
    probation: List,
    protected: List,
    window_cap: u64,
    main_cap: u64,
    protected_cap: u64,
    sketch: FrequencySketch,
}

impl WTinyLfu {
    /// Creates an empty W-TinyLFU sized for `config`.
    pub fn new(config: PolicyConfig) -> Self {
        let cap = config.capacity_bytes.max(1);
        let window_cap = (cap / 100).max(1);
        let main_cap = cap.saturating_sub(window_cap).max(1);
        let n = config.prealloc();
        WTinyLfu {
            arena: Arena::with_capacity(n),
            map: id_map(n),
            window: List::default(),
            probation: List::default(),
            protected: List::default(),
            window_cap,
            main_cap,
            protected_cap: main_cap * 8 / 10,
            sketch: FrequencySketch::new(config.expected_objects),
        }
    }

    fn list(&mut self, s: Seg) -> &mut List {
        match s {
            Seg::Window => &mut self.window,
            Seg::Probation => &mut self.probation,
            Seg::Protected => &mut self.protected,
        }
    }

    fn unlink(&mut self, idx: u32) {
        let s = self.arena.get(idx).data;
        let mut l = std::mem::take(self.list(s));
        self.arena.unlink(&mut l, idx);
        *self.list(s) = l;
    }

    fn push(&mut self, s: Seg, idx: u32) {
        self.arena.get_mut(idx).data = s;
        let mut l = std::mem::take(self.list(s));
        self.arena.push_head(&mut l, idx);
        *self.list(s) = l;
    }

    fn list_ref(&self, s: Seg) -> &List {
        match s {
            Seg::Window => &self.window,
            Seg::Probation => &self.probation,
            Seg::Protected => &self.protected,
        }
    }

    fn main_bytes(&self) -> u64 {
        self.probation.bytes + self.protected.bytes
    }

    fn touch(&mut self, idx: u32) {
        match self.arena.get(idx).data {
            Seg::Window => self.arena.move_to_head(&mut self.window, idx),
            Seg::Protected => self.arena.move_to_head(&mut self.protected, idx),
            Seg::Probation => {
                self.unlink(idx);
                self.push(Seg::Protected, idx);
                while self.protected.bytes > self.protected_cap && self.protected.len > 1 {
                    let t = self.protected.tail;
                    self.unlink(t);
                    self.push(Seg::Probation, t);
                }
            }
        }
    }

    fn remove_idx(&mut self, idx: u32) -> (u64, u64) {
        self.unlink(idx);
        let (id, size) = {
            let n = self.arena.get(idx);
            (n.id, n.size)
        };
        self.map.remove(&id);
        self.arena.release(idx);
        (id, size)
    }
}

impl EvictionPolicy for WTinyLfu {
    fn on_insert(&mut self, id: u64, size: u64) {
        self.sketch.record(id);
        if let Some(&idx) = self.map.get(&id) {
            self.unlink(idx);
            self.arena.get_mut(idx).size = size;
            let s = self.arena.get(idx).data;
            self.push(s, idx);
            self.touch(idx);
            return;
        }
        let idx = self.arena.alloc(id, size, Seg::Window);
        self.map.insert(id, idx);
        self.push(Seg::Window, idx);
        // While main has room (cache still filling), window overflow needs no contest.
        while self.window.bytes > self.window_cap && self.window.tail != NIL {
            let t = self.window.tail;
            if t == idx || self.main_bytes() + self.arena.get(t).size > self.main_cap {
                break;
            }
            self.unlink(t);
            self.push(Seg::Probation, t);
        }
    }

    fn on_hit(&mut self, id: u64) {
        if let Some(&idx) = self.map.get(&id) {
            self.sketch.record(id);
            self.touch(idx);
        }
    }

    fn on_remove(&mut self, id: u64) {
        if let Some(&idx) = self.map.get(&id) {
            self.remove_idx(idx);
        }
    }

    fn evict_into(
        &mut self,
        need_bytes: u64,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        victims: &mut Vec<u64>,
    ) -> u64 {
        let mut freed = 0;
        let mut budget = ScanBudget::new(2 * self.len() + 1);
        // Pinned objects rotated to the MRU end, per segment, since anything else was
        // pushed there in this call. Rotations and evictions both pop the LRU end, so once
        // this reaches the segment's length every member is a rotated (pinned) one and the
        // segment is skipped: pins in one segment cannot hide evictable objects in another.
        let mut pinned_seen = [0usize; 3];
        while freed < need_bytes && self.len() > 0 {
            let avail = |me: &Self, s: Seg| {
                let l = me.list_ref(s);
                l.tail != NIL && pinned_seen[s as usize] < l.len
            };
            let victim = if avail(self, Seg::Probation) {
                self.probation.tail
            } else if avail(self, Seg::Protected) {
                self.protected.tail
            } else {
                NIL
            };
            let cand = if avail(self, Seg::Window) {
                self.window.tail
            } else {
                NIL
            };
            if victim == NIL && cand == NIL {
                break;
            }
            let contest = cand != NIL && (self.window.bytes >= self.window_cap || victim == NIL);
            // (loser to evict, window candidate to admit into probation if it won)
            let (loser, admit) = if !contest {
                (victim, NIL)
            } else if victim == NIL {
                (cand, NIL)
            } else {
                let fc = self.sketch.frequency(self.arena.get(cand).id);
                let fv = self.sketch.frequency(self.arena.get(victim).id);
                if fc > fv {
                    (victim, cand)
                } else {
                    (cand, NIL)
                }
            };
            let loser_id = self.arena.get(loser).id;
            if !is_evictable(loser_id) {
                if !budget.spend() {
                    break;
                }
                // Pinned: keep it. A pinned window candidate is in use, so it is admitted
                // to probation (otherwise it would lose every contest and block the
                // window); a pinned main victim is rotated to its segment's MRU end.
                let s = self.arena.get(loser).data;
                self.unlink(loser);
                if s == Seg::Window {
                    self.push(Seg::Probation, loser);
                    pinned_seen[Seg::Probation as usize] = 0;
                } else {
                    pinned_seen[s as usize] += 1;
                    self.push(s, loser);
                }
                continue;
            }
            budget.reset();
            let (id, size) = self.remove_idx(loser);
            victims.push(id);
            freed += size;
            if admit != NIL {
                self.unlink(admit);
                self.push(Seg::Probation, admit);
                pinned_seen[Seg::Probation as usize] = 0;
            }
        }
        freed
    }

    fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.window.len + self.probation.len + self.protected.len
    }

    fn resident_bytes(&self) -> u64 {
        self.window.bytes + self.main_bytes()
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::WTinyLfu
    }
}
