//! Slab-backed intrusive doubly-linked lists shared by all policies.
//!
//! Every policy keeps its queues (LRU lists, FIFOs, ghost lists) as [`List`]s whose
//! nodes live in one [`Arena`]. Nodes are addressed by `u32` slot indices, so moving an
//! entry between queues is a handful of index writes: O(1), and no allocation once the
//! arena has grown to its high-water mark (freed slots are recycled through an intrusive
//! free list threaded through `next`).
//!
//! The id → slot map uses [`IdHasher`], a fixed (non-random) 64-bit mixer: ids are
//! assigned by the coordinator, not by untrusted clients, so SipHash's DoS resistance
//! buys nothing and would cost ~20 ns per lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Sentinel meaning "no slot".
pub(crate) const NIL: u32 = u32::MAX;

/// Hasher for `u64` ids: the murmur3 `fmix64` finalizer (a bijection, so distinct ids
/// never collide in the full 64-bit hash). Deterministic; not DoS-resistant by design.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        let mut k = self.0;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        k ^= k >> 33;
        k
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-u64 keys; fold bytes in so the hasher stays total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 ^= i;
    }
}

/// Map from object id to arena slot.
pub(crate) type IdMap = HashMap<u64, u32, BuildHasherDefault<IdHasher>>;

/// Creates an [`IdMap`] with room for `n` entries.
pub(crate) fn id_map(n: usize) -> IdMap {
    HashMap::with_capacity_and_hasher(n, BuildHasherDefault::default())
}

/// One arena slot: an object (resident or ghost) plus its list links and per-policy tag.
#[derive(Clone, Debug)]
pub(crate) struct Node<T> {
    pub id: u64,
    pub size: u64,
    pub prev: u32,
    pub next: u32,
    pub data: T,
}

/// A doubly-linked list of arena slots; `head` is the most recently pushed end.
#[derive(Clone, Debug)]
pub(crate) struct List {
    pub head: u32,
    pub tail: u32,
    pub len: usize,
    pub bytes: u64,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
        }
    }
}

impl List {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Slab of nodes with an intrusive free list.
#[derive(Clone, Debug)]
pub(crate) struct Arena<T> {
    nodes: Vec<Node<T>>,
    free: u32,
}

impl<T: Copy> Arena<T> {
    pub fn with_capacity(n: usize) -> Self {
        Arena {
            nodes: Vec::with_capacity(n),
            free: NIL,
        }
    }

    /// Allocates a detached node; reuses a freed slot when one exists.
    #[inline]
    pub fn alloc(&mut self, id: u64, size: u64, data: T) -> u32 {
        let node = Node {
            id,
            size,
            prev: NIL,
            next: NIL,
            data,
        };
        if self.free != NIL {
            let idx = self.free;
            self.free = self.nodes[idx as usize].next;
            self.nodes[idx as usize] = node;
            idx
        } else {
            let idx = u32::try_from(self.nodes.len()).expect("more than 2^32-1 tracked objects");
            assert!(idx != NIL, "more than 2^32-1 tracked objects");
            self.nodes.push(node);
            idx
        }
    }

    /// Returns a detached node's slot to the free list.
    #[inline]
    pub fn release(&mut self, idx: u32) {
        self.nodes[idx as usize].next = self.free;
        self.free = idx;
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &Node<T> {
        &self.nodes[idx as usize]
    }

    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut Node<T> {
        &mut self.nodes[idx as usize]
    }

    /// Links a detached node at the head (MRU / newest end) of `list`.
    #[inline]
    pub fn push_head(&mut self, list: &mut List, idx: u32) {
        let old = list.head;
        {
            let n = &mut self.nodes[idx as usize];
            n.prev = NIL;
            n.next = old;
            list.bytes += n.size;
        }
        if old != NIL {
            self.nodes[old as usize].prev = idx;
        } else {
            list.tail = idx;
        }
        list.head = idx;
        list.len += 1;
    }

    /// Unlinks `idx` from `list` (it must be a member); the node stays allocated.
    #[inline]
    pub fn unlink(&mut self, list: &mut List, idx: u32) {
        let (prev, next, size) = {
            let n = &self.nodes[idx as usize];
            (n.prev, n.next, n.size)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        } else {
            list.head = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        } else {
            list.tail = prev;
        }
        list.len -= 1;
        list.bytes -= size;
    }

    /// Moves a member of `list` to its head.
    #[inline]
    pub fn move_to_head(&mut self, list: &mut List, idx: u32) {
        if list.head != idx {
            self.unlink(list, idx);
            self.push_head(list, idx);
        }
    }
}

/// Guard against endless scans when most candidates are pinned: a policy gives up on an
/// `evict` call once it has rotated more than `limit` candidates without finding a victim.
/// `limit` is chosen per policy so that every resident object is visited at least once
/// (more for policies with multi-bit frequency counters) before giving up.
pub(crate) struct ScanBudget {
    left: usize,
    limit: usize,
}

impl ScanBudget {
    pub fn new(limit: usize) -> Self {
        ScanBudget { left: limit, limit }
    }
    /// Records one candidate examined without producing a victim; `false` = give up.
    #[inline]
    pub fn spend(&mut self) -> bool {
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
    /// A victim was found: the remaining candidates get a fresh budget.
    #[inline]
    pub fn reset(&mut self) {
        self.left = self.limit;
    }
}
