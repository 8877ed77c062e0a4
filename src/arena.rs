//! Allocation inside data segments. The allocator's state lives in the coordinator's own memory
//! (never in shared memory), so no client can corrupt it.
//!
//! Best fit over free extents with immediate coalescing: O(log n) per operation, every offset and
//! size a multiple of [`ALIGN`] so every object starts 64-byte aligned.

use std::collections::{BTreeMap, BTreeSet};

/// Alignment (and granularity) of every allocation.
pub const ALIGN: u64 = 64;

/// Rounds a request up to the allocation granularity (zero-size objects still take one unit so
/// that they have a distinct, valid offset).
pub fn alloc_size(len: u64) -> u64 {
    len.max(1).next_multiple_of(ALIGN)
}

/// A best-fit allocator over `[0, size)`.
#[derive(Debug)]
pub struct Arena {
    size: u64,
    used: u64,
    by_offset: BTreeMap<u64, u64>,
    by_size: BTreeSet<(u64, u64)>,
}

impl Arena {
    /// An arena of `size` bytes (rounded down to the alignment), all free.
    pub fn new(size: u64) -> Arena {
        let size = size / ALIGN * ALIGN;
        let mut a = Arena {
            size,
            used: 0,
            by_offset: BTreeMap::new(),
            by_size: BTreeSet::new(),
        };
        if size > 0 {
            a.insert_free(0, size);
        }
        a
    }

    fn insert_free(&mut self, off: u64, len: u64) {
        self.by_offset.insert(off, len);
        self.by_size.insert((len, off));
    }

    fn remove_free(&mut self, off: u64, len: u64) {
        self.by_offset.remove(&off);
        self.by_size.remove(&(len, off));
    }

    /// Allocates `alloc_size(len)` bytes; returns the offset.
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let need = alloc_size(len);
        let &(flen, off) = self.by_size.range((need, 0)..).next()?;
        self.remove_free(off, flen);
        if flen > need {
            self.insert_free(off + need, flen - need);
        }
        self.used += need;
        Some(off)
    }

    /// An arena of `size` bytes whose allocations are `used`: `(offset, alloc_size)` pairs,
    /// sorted by offset, aligned, inside the arena and not overlapping (the caller checked).
    /// Built in one pass (adoption of an arena with many objects).
    pub fn from_used(size: u64, used: &[(u64, u64)]) -> Arena {
        let size = size / ALIGN * ALIGN;
        let mut free = Vec::with_capacity(used.len() + 1);
        let mut at = 0;
        let mut total = 0;
        for &(off, len) in used {
            debug_assert!(off >= at && off % ALIGN == 0 && len % ALIGN == 0);
            if off > at {
                free.push((at, off - at));
            }
            at = off + len;
            total += len;
        }
        if size > at {
            free.push((at, size - at));
        }
        Arena {
            size,
            used: total,
            by_size: free.iter().map(|&(o, l)| (l, o)).collect(),
            by_offset: free.into_iter().collect(),
        }
    }

    /// Takes `[off, off + alloc_size(len))` if it is aligned, inside the arena and entirely
    /// free (adoption rebuilds an arena from the objects found in it). False otherwise, and
    /// nothing changes.
    pub fn reserve(&mut self, off: u64, len: u64) -> bool {
        let need = alloc_size(len);
        let Some(end) = off.checked_add(need) else {
            return false;
        };
        if !off.is_multiple_of(ALIGN) || end > self.size {
            return false;
        }
        let Some((&foff, &flen)) = self.by_offset.range(..=off).next_back() else {
            return false;
        };
        if foff + flen < end {
            return false;
        }
        self.remove_free(foff, flen);
        if foff < off {
            self.insert_free(foff, off - foff);
        }
        if end < foff + flen {
            self.insert_free(end, foff + flen - end);
        }
        self.used += need;
        true
    }

    /// Takes every free extent (as allocations the caller frees later with [`Arena::free`]).
    pub fn take_free(&mut self) -> Vec<(u64, u64)> {
        let all: Vec<(u64, u64)> = self.by_offset.iter().map(|(&o, &l)| (o, l)).collect();
        for &(o, l) in &all {
            self.remove_free(o, l);
            self.used += l;
        }
        all
    }

    /// Frees an allocation made with the same `len`.
    pub fn free(&mut self, off: u64, len: u64) {
        let mut off = off;
        let mut len = alloc_size(len);
        self.used -= len;
        if let Some((&poff, &plen)) = self.by_offset.range(..off).next_back() {
            debug_assert!(poff + plen <= off, "double free or overlap");
            if poff + plen == off {
                self.remove_free(poff, plen);
                off = poff;
                len += plen;
            }
        }
        if let Some(&nlen) = self.by_offset.get(&(off + len)) {
            self.remove_free(off + len, nlen);
            len += nlen;
        }
        self.insert_free(off, len);
    }

    /// Bytes handed out.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Arena size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Largest allocation that would succeed now.
    pub fn largest_free(&self) -> u64 {
        self.by_size.iter().next_back().map_or(0, |&(l, _)| l)
    }

    /// True when nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Allocations never overlap, stay in bounds and aligned, and freeing everything
        /// restores one free extent.
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((any::<bool>(), 0u64..5000), 1..300)) {
            let mut a = Arena::new(1 << 16);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (alloc, n) in ops {
                if alloc || live.is_empty() {
                    if let Some(off) = a.alloc(n) {
                        prop_assert_eq!(off % ALIGN, 0);
                        prop_assert!(off + alloc_size(n) <= a.size());
                        for &(o, l) in &live {
                            prop_assert!(off + alloc_size(n) <= o || o + alloc_size(l) <= off);
                        }
                        live.push((off, n));
                    }
                } else {
                    let (o, l) = live.swap_remove(n as usize % live.len());
                    a.free(o, l);
                }
            }
            for (o, l) in live.drain(..) { a.free(o, l); }
            prop_assert!(a.is_empty());
            prop_assert_eq!(a.largest_free(), a.size());
        }

        /// An arena rebuilt by reserving another arena's allocations holds exactly them: the
        /// same further allocations succeed, overlapping reservations are refused, and taking
        /// and returning the free space changes nothing.
        #[test]
        fn reserve_rebuilds_an_arena(ops in proptest::collection::vec((any::<bool>(), 0u64..5000), 1..200)) {
            let mut a = Arena::new(1 << 16);
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (alloc, n) in ops {
                if alloc || live.is_empty() {
                    if let Some(off) = a.alloc(n) { live.push((off, n)); }
                } else {
                    let (o, l) = live.swap_remove(n as usize % live.len());
                    a.free(o, l);
                }
            }
            let mut b = Arena::new(1 << 16);
            for &(o, l) in &live {
                prop_assert!(b.reserve(o, l));
                prop_assert!(!b.reserve(o, l), "a second reservation overlaps");
            }
            let mut sorted: Vec<(u64, u64)> = live.iter().map(|&(o, l)| (o, alloc_size(l))).collect();
            sorted.sort_unstable();
            let c = Arena::from_used(1 << 16, &sorted);
            prop_assert_eq!(c.used(), a.used());
            prop_assert_eq!(c.largest_free(), a.largest_free());
            prop_assert_eq!(&c.by_offset, &b.by_offset);
            prop_assert_eq!(b.used(), a.used());
            let gaps = b.take_free();
            prop_assert_eq!(b.largest_free(), 0);
            for (o, l) in gaps { b.free(o, l); }
            prop_assert_eq!(b.used(), a.used());
            prop_assert_eq!(b.largest_free(), a.largest_free());
        }
    }
}
