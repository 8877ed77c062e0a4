//! CLOCK (second chance).

use super::list::{id_map, Arena, IdMap, List, ScanBudget, NIL};
use super::{EvictionPolicy, PolicyConfig, PolicyKind};

/// CLOCK with one reference bit per object.
///
/// The clock is a FIFO ring: the hand sits at the tail, new objects enter at the head
/// (just behind the hand). A hit only sets the reference bit (no list movement, which is
/// the point of CLOCK: hits are a single store). Eviction inspects the tail: a set bit is
/// cleared and the object goes round again; a clear bit makes it the victim. Pinned
/// candidates go round again as if referenced. O(1) amortized; single-threaded.
#[derive(Debug)]
pub struct Clock {
    arena: Arena<bool>,
    map: IdMap,
    ring: List,
}

impl Clock {
    /// Creates an empty CLOCK; `config` only sizes preallocation.
    pub fn new(config: PolicyConfig) -> Self {
        let n = config.prealloc();
        Clock {
            arena: Arena::with_capacity(n),
            map: id_map(n),
            ring: List::default(),
        }
    }
}

impl EvictionPolicy for Clock {
    fn on_insert(&mut self, id: u64, size: u64) {
        if let Some(&idx) = self.map.get(&id) {
            self.arena.unlink(&mut self.ring, idx);
            let n = self.arena.get_mut(idx);
            n.size = size;
            n.data = true;
            self.arena.push_head(&mut self.ring, idx);
            return;
        }
        let idx = self.arena.alloc(id, size, false);
        self.arena.push_head(&mut self.ring, idx);
        self.map.insert(id, idx);
    }

    fn on_hit(&mut self, id: u64) {
        if let Some(&idx) = self.map.get(&id) {
            self.arena.get_mut(idx).data = true;
        }
    }

    fn on_remove(&mut self, id: u64) {
        if let Some(idx) = self.map.remove(&id) {
            self.arena.unlink(&mut self.ring, idx);
            self.arena.release(idx);
        }
    }

    fn evict_into(
        &mut self,
        need_bytes: u64,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        victims: &mut Vec<u64>,
    ) -> u64 {
        let mut freed = 0;
        // Each object can be passed over twice (bit set, then pinned) per full revolution.
        let mut budget = ScanBudget::new(2 * self.ring.len + 1);
        while freed < need_bytes && self.ring.tail != NIL {
            let idx = self.ring.tail;
            let (id, size, referenced) = {
                let n = self.arena.get(idx);
                (n.id, n.size, n.data)
            };
            if !referenced && is_evictable(id) {
                self.arena.unlink(&mut self.ring, idx);
                self.arena.release(idx);
                self.map.remove(&id);
                victims.push(id);
                freed += size;
                budget.reset();
            } else {
                if !budget.spend() {
                    break;
                }
                self.arena.get_mut(idx).data = false;
                self.arena.move_to_head(&mut self.ring, idx);
            }
        }
        freed
    }

    fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.ring.len
    }

    fn resident_bytes(&self) -> u64 {
        self.ring.bytes
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::Clock
    }
}
