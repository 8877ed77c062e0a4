//! S3-FIFO (Yang et al., "FIFO queues are all you need for cache eviction", SOSP'23).

use super::list::{id_map, Arena, IdMap, List, NIL};
use super::{EvictionPolicy, PolicyConfig, PolicyKind};

/// Which queue a node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    Small,
    Main,
    Ghost,
}

#[derive(Clone, Copy, Debug)]
struct Meta {
    queue: Queue,
    /// Accesses since insertion (or since last demotion), capped at [`MAX_FREQ`].
    freq: u8,
}

/// Frequency counters saturate here (2 bits), as in the paper.
const MAX_FREQ: u8 = 3;
/// An object leaving the small queue is promoted to main if it was hit at least this
/// often while in the small queue (the reference implementation's
/// `move_to_main_threshold`, default 2; the paper's `freq > 1`).
const MOVE_TO_MAIN_THRESHOLD: u8 = 2;

/// S3-FIFO: a small FIFO (10 % of capacity) that filters one-hit wonders, a main FIFO
/// with CLOCK-style reinsertion (2-bit frequency), and a ghost FIFO of ids recently
/// evicted from the small queue (bounded to 90 % of capacity in bytes, ids only).
///
/// * insert: ghost hit → main; otherwise small (before the first eviction, once small
///   is full, new objects fill main directly, as in the reference implementation).
/// * hit: `freq = min(freq + 1, 3)`; nothing moves (hits are a single store).
/// * evict: from main if main exceeds its 90 % share or small is empty, else from small.
///   Small tail: promoted to main if `freq >= 2`, else evicted into the ghost. Main tail:
///   reinserted with `freq - 1` if `freq > 0`, else evicted.
/// * pinned candidates are kept: a pinned small-queue tail moves to main, a pinned main
///   tail is reinserted at main's head.
///
/// O(1) amortized per operation (each object is reinserted at most 3 times per pass
/// through main); hits never allocate. Single-threaded.
#[derive(Debug)]
pub struct S3Fifo {
    arena: Arena<Meta>,
    map: IdMap,
    small: List,
    main: List,
    ghost: List,
    small_cap: u64,
    main_cap: u64,
    ghost_cap: u64,
    has_evicted: bool,
}

impl S3Fifo {
    /// Creates an empty S3-FIFO sized for `config.capacity_bytes`.
    pub fn new(config: PolicyConfig) -> Self {
        let cap = config.capacity_bytes.max(1);
        let small_cap = (cap / 10).max(1);
        let n = config.prealloc();
        S3Fifo {
            arena: Arena::with_capacity(n * 2),
            map: id_map(n * 2),
            small: List::default(),
            main: List::default(),
            ghost: List::default(),
            small_cap,
            main_cap: cap.saturating_sub(small_cap).max(1),
            ghost_cap: cap - cap / 10,
            has_evicted: false,
        }
    }

    fn list(&mut self, q: Queue) -> &mut List {
        match q {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
            Queue::Ghost => &mut self.ghost,
        }
    }

    fn detach(&mut self, idx: u32) {
        let q = self.arena.get(idx).data.queue;
        let mut list = std::mem::take(self.list(q));
        self.arena.unlink(&mut list, idx);
        *self.list(q) = list;
    }

    fn trim_ghost(&mut self) {
        while self.ghost.bytes > self.ghost_cap && self.ghost.tail != NIL {
            let idx = self.ghost.tail;
            self.arena.unlink(&mut self.ghost, idx);
            self.map.remove(&self.arena.get(idx).id);
            self.arena.release(idx);
        }
    }

    fn push(&mut self, q: Queue, idx: u32, freq: u8) {
        self.arena.get_mut(idx).data = Meta { queue: q, freq };
        let mut list = std::mem::take(self.list(q));
        self.arena.push_head(&mut list, idx);
        *self.list(q) = list;
    }

    /// One small-queue eviction step; returns the victim's (id, size) if one was evicted
    /// (`None` once small is empty). Every step removes small's tail, so this terminates.
    /// Anything pushed into main resets `main_pinned_run` (see [`S3Fifo::evict_main`]).
    fn evict_small(
        &mut self,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        main_pinned_run: &mut usize,
    ) -> Option<(u64, u64)> {
        while self.small.tail != NIL {
            let idx = self.small.tail;
            let (id, size, freq) = {
                let n = self.arena.get(idx);
                (n.id, n.size, n.data.freq)
            };
            self.arena.unlink(&mut self.small, idx);
            if freq >= MOVE_TO_MAIN_THRESHOLD {
                // Promotion is not an eviction; main may now exceed its share, which the
                // next step corrects.
                self.push(Queue::Main, idx, 0);
                *main_pinned_run = 0;
            } else if is_evictable(id) {
                self.push(Queue::Ghost, idx, 0);
                self.trim_ghost();
                return Some((id, size));
            } else {
                // Pinned, i.e. in use right now: keep it by moving it to main (with its
                // frequency), where CLOCK-style reinsertion handles it. Rotating it inside
                // small instead could starve eviction when all of small is pinned.
                self.push(Queue::Main, idx, freq);
                *main_pinned_run = 0;
            }
        }
        None
    }

    /// One main-queue eviction step. `main_pinned_run` counts consecutive rotations of
    /// pinned zero-frequency objects with no frequency decrement or push in between; once
    /// it reaches main's length every member of main is pinned, and this returns `None`.
    /// Decrements are bounded by 3 per object, so this terminates.
    fn evict_main(
        &mut self,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        main_pinned_run: &mut usize,
    ) -> Option<(u64, u64)> {
        while self.main.tail != NIL && *main_pinned_run < self.main.len {
            let idx = self.main.tail;
            let (id, size, freq) = {
                let n = self.arena.get(idx);
                (n.id, n.size, n.data.freq)
            };
            if freq > 0 {
                *main_pinned_run = 0;
            } else if is_evictable(id) {
                self.arena.unlink(&mut self.main, idx);
                self.map.remove(&id);
                self.arena.release(idx);
                return Some((id, size));
            } else {
                *main_pinned_run += 1;
            }
            self.arena.move_to_head(&mut self.main, idx);
            self.arena.get_mut(idx).data.freq = freq.saturating_sub(1);
        }
        None
    }
}

impl EvictionPolicy for S3Fifo {
    fn on_insert(&mut self, id: u64, size: u64) {
        if let Some(&idx) = self.map.get(&id) {
            let meta = self.arena.get(idx).data;
            self.detach(idx);
            self.arena.get_mut(idx).size = size;
            match meta.queue {
                // Re-insert of a resident object: keep its place class, count the access.
                Queue::Small | Queue::Main => {
                    self.push(meta.queue, idx, (meta.freq + 1).min(MAX_FREQ))
                }
                // Ghost hit: it was evicted too early from small; admit straight to main.
                Queue::Ghost => self.push(Queue::Main, idx, 0),
            }
            return;
        }
        let idx = self.arena.alloc(
            id,
            size,
            Meta {
                queue: Queue::Small,
                freq: 0,
            },
        );
        self.map.insert(id, idx);
        let q = if !self.has_evicted && self.small.bytes >= self.small_cap {
            Queue::Main
        } else {
            Queue::Small
        };
        self.push(q, idx, 0);
    }

    fn on_hit(&mut self, id: u64) {
        if let Some(&idx) = self.map.get(&id) {
            let m = &mut self.arena.get_mut(idx).data;
            if m.queue != Queue::Ghost && m.freq < MAX_FREQ {
                m.freq += 1;
            }
        }
    }

    fn on_remove(&mut self, id: u64) {
        if let Some(idx) = self.map.remove(&id) {
            self.detach(idx);
            self.arena.release(idx);
        }
    }

    fn evict_into(
        &mut self,
        need_bytes: u64,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        victims: &mut Vec<u64>,
    ) -> u64 {
        self.has_evicted = true;
        let mut freed = 0;
        let mut main_pinned_run = 0;
        while freed < need_bytes {
            let main_ok = !self.main.is_empty() && main_pinned_run < self.main.len;
            let small_ok = !self.small.is_empty();
            let got = if main_ok && (self.main.bytes > self.main_cap || !small_ok) {
                self.evict_main(is_evictable, &mut main_pinned_run)
            } else if small_ok {
                self.evict_small(is_evictable, &mut main_pinned_run)
            } else {
                break; // nothing left that is not pinned
            };
            if let Some((id, size)) = got {
                victims.push(id);
                freed += size;
            }
        }
        freed
    }

    fn contains(&self, id: u64) -> bool {
        self.map
            .get(&id)
            .is_some_and(|&i| self.arena.get(i).data.queue != Queue::Ghost)
    }

    fn len(&self) -> usize {
        self.small.len + self.main.len
    }

    fn resident_bytes(&self) -> u64 {
        self.small.bytes + self.main.bytes
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::S3Fifo
    }
}
