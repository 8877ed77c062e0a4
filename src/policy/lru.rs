//! Plain LRU: the baseline.

use super::list::{id_map, Arena, IdMap, List, ScanBudget, NIL};
use super::{EvictionPolicy, PolicyConfig, PolicyKind};

/// Least-recently-used eviction.
///
/// Keeps every resident object in one recency list; hits and inserts move the object to
/// the MRU end, eviction takes from the LRU end. A pinned LRU candidate is moved to the
/// MRU end (a pin is an ongoing use). O(1) per operation; single-threaded.
#[derive(Debug)]
pub struct Lru {
    arena: Arena<()>,
    map: IdMap,
    list: List,
}

impl Lru {
    /// Creates an empty LRU; `config` only sizes preallocation.
    pub fn new(config: PolicyConfig) -> Self {
        let n = config.prealloc();
        Lru {
            arena: Arena::with_capacity(n),
            map: id_map(n),
            list: List::default(),
        }
    }
}

impl EvictionPolicy for Lru {
    fn on_insert(&mut self, id: u64, size: u64) {
        if let Some(&idx) = self.map.get(&id) {
            self.arena.unlink(&mut self.list, idx);
            self.arena.get_mut(idx).size = size;
            self.arena.push_head(&mut self.list, idx);
            return;
        }
        let idx = self.arena.alloc(id, size, ());
        self.arena.push_head(&mut self.list, idx);
        self.map.insert(id, idx);
    }

    fn on_hit(&mut self, id: u64) {
        if let Some(&idx) = self.map.get(&id) {
            self.arena.move_to_head(&mut self.list, idx);
        }
    }

    fn on_remove(&mut self, id: u64) {
        if let Some(idx) = self.map.remove(&id) {
            self.arena.unlink(&mut self.list, idx);
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
        let mut budget = ScanBudget::new(self.list.len);
        while freed < need_bytes && self.list.tail != NIL {
            let idx = self.list.tail;
            let (id, size) = {
                let n = self.arena.get(idx);
                (n.id, n.size)
            };
            if is_evictable(id) {
                self.arena.unlink(&mut self.list, idx);
                self.arena.release(idx);
                self.map.remove(&id);
                victims.push(id);
                freed += size;
                budget.reset();
            } else {
                if !budget.spend() {
                    break;
                }
                self.arena.move_to_head(&mut self.list, idx);
            }
        }
        freed
    }

    fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    fn len(&self) -> usize {
        self.list.len
    }

    fn resident_bytes(&self) -> u64 {
        self.list.bytes
    }

    fn kind(&self) -> PolicyKind {
        PolicyKind::Lru
    }
}
