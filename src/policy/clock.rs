//! CLOCK (second chance): a FIFO ring with one reference bit per object.

use super::EvictionPolicy;
use std::collections::{HashMap, VecDeque};

/// CLOCK over object handles. O(1) amortized per operation.
#[derive(Default)]
pub(crate) struct Clock {
    ring: VecDeque<u64>,
    referenced: HashMap<u64, bool>,
}

impl EvictionPolicy for Clock {
    fn on_insert(&mut self, id: u64, _size: u64) {
        if self.referenced.insert(id, false).is_none() {
            self.ring.push_back(id);
        }
    }

    fn on_hit(&mut self, id: u64) {
        if let Some(r) = self.referenced.get_mut(&id) {
            *r = true;
        }
    }

    fn on_remove(&mut self, id: u64) {
        // The ring entry is dropped lazily when the hand reaches it.
        self.referenced.remove(&id);
    }

    fn victim(&mut self, is_evictable: &mut dyn FnMut(u64) -> bool) -> Option<u64> {
        // Two full turns: the first may only clear reference bits.
        let mut budget = 2 * self.ring.len() + 1;
        while budget > 0 {
            budget -= 1;
            let id = self.ring.pop_front()?;
            let Some(r) = self.referenced.get_mut(&id) else {
                continue; // removed earlier
            };
            if *r {
                *r = false;
                self.ring.push_back(id);
            } else if is_evictable(id) {
                self.referenced.remove(&id);
                return Some(id);
            } else {
                self.ring.push_back(id);
            }
        }
        None
    }

    fn name(&self) -> &'static str {
        "clock"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_chance_and_pinned_skip() {
        let mut c = Clock::default();
        for id in 1..=3 {
            c.on_insert(id, 1);
        }
        c.on_hit(1);
        assert_eq!(c.victim(&mut |_| true), Some(2));
        // 3 is "pinned": skipped, kept.
        assert_eq!(c.victim(&mut |id| id != 3), Some(1));
        assert_eq!(c.victim(&mut |id| id != 3), None);
        assert_eq!(c.victim(&mut |_| true), Some(3));
        c.on_insert(4, 1);
        c.on_remove(4);
        assert_eq!(c.victim(&mut |_| true), None);
    }
}
