//! ARC (Megiddo & Modha, "ARC: A Self-Tuning, Low Overhead Replacement Cache", FAST'03).

use super::list::{id_map, Arena, IdMap, List, ScanBudget, NIL};
use super::{EvictionPolicy, PolicyConfig, PolicyKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    T1,
    T2,
    B1,
    B2,
}

/// The object inserted last, until the next eviction: the paper's "x" in REPLACE(x, p).
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: u64,
    size: u64,
    from_b2: bool,
}

/// Adaptive Replacement Cache, generalized to bytes.
///
/// Resident objects live in T1 (seen once recently) or T2 (seen at least twice); ghost
/// lists B1/B2 remember ids evicted from T1/T2. A ghost hit on insert moves the target
/// size `p` of T1 towards the list that would have kept the object (by
/// `max(|B_other|/|B_this|, 1) · size`), and the object enters T2. Eviction (REPLACE)
/// takes T1's LRU when `|T1| > p` (or `|T1| >= p` if the newcomer came from B2), else
/// T2's LRU; evicted ids move to B1/B2. The directory is bounded as in the paper:
/// `|T1| + |B1| <= c` and `|T1| + |T2| + |B1| + |B2| <= 2c` (bytes). With unit sizes and
/// `on_insert` before `evict`, this is exactly the paper's algorithm.
///
/// Pinned candidates are moved to the MRU end of their list. O(1) per operation;
/// single-threaded.
#[derive(Debug)]
pub struct ArcPolicy {
    arena: Arena<Where>,
    map: IdMap,
    t1: List,
    t2: List,
    b1: List,
    b2: List,
    /// Target size of T1, in bytes. Real-valued as in the paper: the adaptation step
    /// `|B2|/|B1|` is a ratio, and truncating it measurably changes the hit ratio.
    p: f64,
    c: u64,
    pending: Option<Pending>,
    /// Case IV(A) with B1 empty: the paper drops T1's LRU without remembering it.
    drop_t1_without_ghost: bool,
}

impl ArcPolicy {
    /// Creates an empty ARC for `config.capacity_bytes`.
    pub fn new(config: PolicyConfig) -> Self {
        let n = config.prealloc();
        ArcPolicy {
            arena: Arena::with_capacity(2 * n),
            map: id_map(2 * n),
            t1: List::default(),
            t2: List::default(),
            b1: List::default(),
            b2: List::default(),
            p: 0.0,
            c: config.capacity_bytes.max(1),
            pending: None,
            drop_t1_without_ghost: false,
        }
    }

    /// Current target size of T1 in bytes (exposed for tests and metrics).
    pub fn target_t1_bytes(&self) -> u64 {
        self.p as u64
    }

    fn list(&mut self, w: Where) -> &mut List {
        match w {
            Where::T1 => &mut self.t1,
            Where::T2 => &mut self.t2,
            Where::B1 => &mut self.b1,
            Where::B2 => &mut self.b2,
        }
    }

    fn unlink(&mut self, idx: u32) {
        let w = self.arena.get(idx).data;
        let mut l = std::mem::take(self.list(w));
        self.arena.unlink(&mut l, idx);
        *self.list(w) = l;
    }

    fn push(&mut self, w: Where, idx: u32) {
        self.arena.get_mut(idx).data = w;
        let mut l = std::mem::take(self.list(w));
        self.arena.push_head(&mut l, idx);
        *self.list(w) = l;
    }

    /// Forgets the LRU entry of a ghost list.
    fn drop_ghost_lru(&mut self, w: Where) {
        let idx = self.list(w).tail;
        if idx != NIL {
            self.unlink(idx);
            self.map.remove(&self.arena.get(idx).id);
            self.arena.release(idx);
        }
    }

    /// Enforces `|T1|+|T2|+|B1|+|B2| <= 2c` after a ghost was added (never fires in
    /// the unit-size case, where the paper's invariants already hold).
    fn bound_directory(&mut self) {
        while self.t1.bytes + self.t2.bytes + self.b1.bytes + self.b2.bytes > 2 * self.c
            && !(self.b1.is_empty() && self.b2.is_empty())
        {
            let w = if self.b2.is_empty() {
                Where::B1
            } else {
                Where::B2
            };
            self.drop_ghost_lru(w);
        }
    }

    /// Picks the list REPLACE evicts from, ignoring the pending newcomer.
    fn replace_from_t1(&self) -> bool {
        let pend_in_t1 = self
            .pending
            .filter(|p| {
                self.map
                    .get(&p.id)
                    .is_some_and(|&i| self.arena.get(i).data == Where::T1)
            })
            .map_or(0, |p| p.size);
        let t1 = (self.t1.bytes - pend_in_t1) as f64;
        let t1_len = self.t1.len - usize::from(pend_in_t1 > 0);
        let from_b2 = self.pending.is_some_and(|p| p.from_b2);
        let t2_has_other = match self.pending {
            Some(p) if self.t2.len == 1 && self.arena.get(self.t2.head).id == p.id => false,
            _ => !self.t2.is_empty(),
        };
        #[allow(clippy::float_cmp)] // the paper's test is exact equality |T1| = p
        let at_target = from_b2 && t1 == self.p;
        (t1_len >= 1 && (at_target || t1 > self.p)) || !t2_has_other
    }
}

impl EvictionPolicy for ArcPolicy {
    fn on_insert(&mut self, id: u64, size: u64) {
        self.drop_t1_without_ghost = false;
        if let Some(&idx) = self.map.get(&id) {
            let w = self.arena.get(idx).data;
            self.unlink(idx);
            self.arena.get_mut(idx).size = size;
            match w {
                // Case I: already resident (re-insert / size update) counts as a hit.
                Where::T1 | Where::T2 => {
                    self.pending = None;
                }
                // Case II: ghost hit in B1 -> favour recency: grow p.
                Where::B1 => {
                    // |B1| as the paper measures it, i.e. still including x.
                    let ratio = self.b2.bytes as f64 / (self.b1.bytes + size).max(1) as f64;
                    self.p = (self.p + ratio.max(1.0) * size as f64).min(self.c as f64);
                    self.pending = Some(Pending {
                        id,
                        size,
                        from_b2: false,
                    });
                }
                // Case III: ghost hit in B2 -> favour frequency: shrink p.
                Where::B2 => {
                    // Measured before x leaves B2, as in the paper.
                    let ratio = self.b1.bytes as f64 / (self.b2.bytes + size).max(1) as f64;
                    self.p = (self.p - ratio.max(1.0) * size as f64).max(0.0);
                    self.pending = Some(Pending {
                        id,
                        size,
                        from_b2: true,
                    });
                }
            }
            self.push(Where::T2, idx);
            return;
        }
        // Case IV: a new object.
        let l1 = self.t1.bytes + self.b1.bytes;
        if l1 + size > self.c {
            // (A) L1 is full: drop B1's LRU, or if B1 is empty, T1's LRU outright.
            if self.b1.is_empty() {
                self.drop_t1_without_ghost = true;
            } else {
                while self.t1.bytes + self.b1.bytes + size > self.c && !self.b1.is_empty() {
                    self.drop_ghost_lru(Where::B1);
                }
            }
        } else {
            // (B) L1 has room: keep the whole directory within 2c.
            while self.t1.bytes + self.t2.bytes + self.b1.bytes + self.b2.bytes + size > 2 * self.c
                && !self.b2.is_empty()
            {
                self.drop_ghost_lru(Where::B2);
            }
        }
        let idx = self.arena.alloc(id, size, Where::T1);
        self.map.insert(id, idx);
        self.push(Where::T1, idx);
        self.pending = Some(Pending {
            id,
            size,
            from_b2: false,
        });
    }

    fn on_hit(&mut self, id: u64) {
        if let Some(&idx) = self.map.get(&id) {
            match self.arena.get(idx).data {
                Where::T1 => {
                    self.unlink(idx);
                    self.push(Where::T2, idx);
                }
                Where::T2 => self.arena.move_to_head(&mut self.t2, idx),
                // Late hit on an evicted object: only an insert revives it.
                Where::B1 | Where::B2 => {}
            }
        }
    }

    fn on_remove(&mut self, id: u64) {
        if let Some(idx) = self.map.remove(&id) {
            self.unlink(idx);
            self.arena.release(idx);
            if self.pending.is_some_and(|p| p.id == id) {
                self.pending = None;
            }
        }
    }

    fn evict_into(
        &mut self,
        need_bytes: u64,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        victims: &mut Vec<u64>,
    ) -> u64 {
        let mut freed = 0;
        let mut budget = ScanBudget::new(self.len() + 1);
        // Shield the newcomer (REPLACE runs before x enters, in the paper) unless pinned
        // objects leave it as the only candidate.
        let mut shield_pending = true;
        // Pinned objects met per list (T1, T2) in this call.
        let mut pinned_seen = [0usize; 2];
        while freed < need_bytes && !(self.t1.is_empty() && self.t2.is_empty()) {
            let no_ghost = self.drop_t1_without_ghost && !self.t1.is_empty();
            let mut from = if no_ghost || self.t2.is_empty() || self.replace_from_t1() {
                Where::T1
            } else {
                Where::T2
            };
            // Fall back to the other list when REPLACE's choice is empty or has been
            // found entirely pinned during this call.
            let other = if from == Where::T1 {
                Where::T2
            } else {
                Where::T1
            };
            let exhausted = |me: &Self, w: Where| {
                let l = if w == Where::T1 { &me.t1 } else { &me.t2 };
                l.is_empty() || pinned_seen[usize::from(w == Where::T2)] >= l.len
            };
            if exhausted(self, from) {
                if exhausted(self, other) {
                    break;
                }
                from = other;
            }
            let mut idx = self.list(from).tail;
            // Never evict the newcomer while anything else is resident.
            if shield_pending
                && self.pending.is_some_and(|p| self.arena.get(idx).id == p.id)
                && self.len() > 1
            {
                let prev = self.arena.get(idx).prev;
                idx = if prev != NIL {
                    prev
                } else {
                    let other = if from == Where::T1 {
                        &self.t2
                    } else {
                        &self.t1
                    };
                    other.tail
                };
            }
            let (id, size, w) = {
                let n = self.arena.get(idx);
                (n.id, n.size, n.data)
            };
            if !is_evictable(id) {
                if !budget.spend() {
                    break;
                }
                shield_pending = false;
                pinned_seen[usize::from(w == Where::T2)] += 1;
                self.unlink(idx);
                self.push(w, idx);
                continue;
            }
            budget.reset();
            self.unlink(idx);
            if no_ghost && w == Where::T1 {
                self.drop_t1_without_ghost = false;
                self.map.remove(&id);
                self.arena.release(idx);
            } else {
                self.push(if w == Where::T1 { Where::B1 } else { Where::B2 }, idx);
                self.bound_directory();
            }
            victims.push(id);
            freed += size;
        }
        self.pending = None;
        freed
    }

    fn contains(&self, id: u64) -> bool {
        self.map
            .get(&id)
            .is_some_and(|&i| matches!(self.arena.get(i).data, Where::T1 | Where::T2))
    }

    fn len(&self) -> usize {
        self.t1.len + self.t2.len
    }

    fn resident_bytes(&self) -> u64 {
        self.t1.bytes + self.t2.bytes
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::Arc
    }
}
