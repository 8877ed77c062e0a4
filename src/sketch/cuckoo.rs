//! Cuckoo filter (Fan et al., CoNEXT'14): approximate membership with deletion.

use super::hash::{fmix64, hash_bytes, SEED_PRIMARY};
use std::fmt;

const SLOTS: usize = 4;
const MAX_KICKS: usize = 500;

/// Returned by [`CuckooFilter::insert`] when the filter is full; the key was not added
/// and the filter is unchanged for all previously inserted keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CuckooFull;

impl fmt::Display for CuckooFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cuckoo filter is full")
    }
}

impl std::error::Error for CuckooFull {}

/// Cuckoo filter with 16-bit fingerprints, 4-slot buckets and partial-key cuckoo hashing
/// (`i2 = i1 ^ fmix64(fp)`), plus a one-entry victim stash as in the reference
/// implementation, so a failed kick-out chain never loses a stored fingerprint.
///
/// Guarantees: no false negatives for keys inserted (and not yet deleted) — provided
/// `delete` is only called for keys that were inserted (deleting a never-inserted key
/// may remove a colliding key's fingerprint). False-positive rate ≤ `8 / 2^16` ≈ 0.012 %
/// (2 buckets × 4 slots). Inserting a key twice stores two copies; delete removes one.
/// Typical load factor before [`CuckooFull`] ≈ 95 %. Lookup and delete are O(1); insert
/// is O(1) amortized (at most 500 relocations). Kick-outs use a fixed-seed xorshift, so
/// behaviour is deterministic.
#[derive(Clone, Debug)]
pub struct CuckooFilter {
    buckets: Vec<[u16; SLOTS]>,
    mask: u64,
    victim: Option<(u64, u16)>,
    len: usize,
    rng: u64,
}

impl CuckooFilter {
    /// A filter able to hold about `capacity` keys (buckets rounded up to a power of two,
    /// sized for a 95 % load factor).
    pub fn new(capacity: usize) -> Self {
        let buckets = ((capacity as f64 / (SLOTS as f64 * 0.95)).ceil() as usize)
            .max(1)
            .next_power_of_two();
        CuckooFilter {
            buckets: vec![[0; SLOTS]; buckets],
            mask: buckets as u64 - 1,
            victim: None,
            len: 0,
            rng: 0x2545_F491_4F6C_DD1D,
        }
    }

    /// Number of stored fingerprints.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total slots (buckets × 4).
    pub fn slots(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    #[inline]
    fn index_and_fp(&self, key: &[u8]) -> (u64, u16) {
        let h = hash_bytes(key, SEED_PRIMARY);
        // Fingerprint from the high bits, index from the low bits: independent parts.
        let fp = ((h >> 48) as u16).max(1); // 0 marks an empty slot
        (h & self.mask, fp)
    }

    #[inline]
    fn alt(&self, i: u64, fp: u16) -> u64 {
        (i ^ fmix64(u64::from(fp))) & self.mask
    }

    fn try_place(&mut self, i: u64, fp: u16) -> bool {
        if let Some(slot) = self.buckets[i as usize].iter_mut().find(|s| **s == 0) {
            *slot = fp;
            true
        } else {
            false
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// Inserts `key`. Fails only when the filter is full (the stash is occupied).
    pub fn insert(&mut self, key: &[u8]) -> Result<(), CuckooFull> {
        if self.victim.is_some() {
            return Err(CuckooFull);
        }
        let (i1, fp) = self.index_and_fp(key);
        let i2 = self.alt(i1, fp);
        self.len += 1;
        if self.try_place(i1, fp) || self.try_place(i2, fp) {
            return Ok(());
        }
        let mut i = if self.next_rand() & 1 == 0 { i1 } else { i2 };
        let mut fp = fp;
        for _ in 0..MAX_KICKS {
            let slot = (self.next_rand() % SLOTS as u64) as usize;
            std::mem::swap(&mut fp, &mut self.buckets[i as usize][slot]);
            i = self.alt(i, fp);
            if self.try_place(i, fp) {
                return Ok(());
            }
        }
        // The homeless fingerprint (maybe another key's) goes to the stash: nothing lost.
        self.victim = Some((i, fp));
        Ok(())
    }

    /// Whether `key` may be present (never `false` for an inserted, undeleted key).
    pub fn contains(&self, key: &[u8]) -> bool {
        let (i1, fp) = self.index_and_fp(key);
        let i2 = self.alt(i1, fp);
        self.buckets[i1 as usize].contains(&fp)
            || self.buckets[i2 as usize].contains(&fp)
            || matches!(self.victim, Some((vi, vfp)) if vfp == fp && (vi == i1 || vi == i2))
    }

    /// Deletes one copy of `key`; returns whether a matching fingerprint was found.
    /// Only delete keys that were inserted (see type docs).
    pub fn delete(&mut self, key: &[u8]) -> bool {
        let (i1, fp) = self.index_and_fp(key);
        let i2 = self.alt(i1, fp);
        let mut found = false;
        for i in [i1, i2] {
            if let Some(slot) = self.buckets[i as usize].iter_mut().find(|s| **s == fp) {
                *slot = 0;
                found = true;
                break;
            }
        }
        if !found {
            if matches!(self.victim, Some((vi, vfp)) if vfp == fp && (vi == i1 || vi == i2)) {
                self.victim = None;
                self.len -= 1;
                return true;
            }
            return false;
        }
        self.len -= 1;
        // A slot opened up: give the stashed fingerprint a home if it fits directly.
        if let Some((vi, vfp)) = self.victim {
            let va = self.alt(vi, vfp);
            if self.try_place(vi, vfp) || self.try_place(va, vfp) {
                self.victim = None;
            }
        }
        true
    }

    /// `insert(&key.to_le_bytes())`.
    pub fn insert_u64(&mut self, key: u64) -> Result<(), CuckooFull> {
        self.insert(&key.to_le_bytes())
    }

    /// `contains(&key.to_le_bytes())`.
    pub fn contains_u64(&self, key: u64) -> bool {
        self.contains(&key.to_le_bytes())
    }

    /// `delete(&key.to_le_bytes())`.
    pub fn delete_u64(&mut self, key: u64) -> bool {
        self.delete(&key.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn load_and_false_positives() {
        let mut f = CuckooFilter::new(100_000);
        let mut inserted = 0u64;
        while f.insert_u64(inserted).is_ok() {
            inserted += 1;
        }
        let load = f.len() as f64 / f.slots() as f64;
        assert!(load > 0.90, "load factor {load}");
        for i in 0..inserted {
            assert!(f.contains_u64(i), "false negative {i}");
        }
        let trials = 1_000_000u64;
        let fps = (0..trials).filter(|i| f.contains_u64(u64::MAX - i)).count() as f64;
        let rate = fps / trials as f64;
        // Bound 8/2^16 = 1.22e-4; expected count 122, allow 4 sigma (~45).
        assert!(rate < 8.0 / 65536.0 + 4.5e-5, "fp rate {rate}");
    }

    #[test]
    fn delete_then_absent() {
        let mut f = CuckooFilter::new(1000);
        for i in 0..800u64 {
            f.insert_u64(i).unwrap();
        }
        for i in 0..800u64 {
            assert!(f.delete_u64(i));
        }
        assert!(f.is_empty());
        assert!((0..800u64).all(|i| !f.contains_u64(i)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Delete(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..300).prop_map(Op::Insert),
            (0u64..300).prop_map(Op::Delete)
        ]
    }

    proptest! {
        #[test]
        fn matches_hashset(ops in proptest::collection::vec(op(), 0..1500)) {
            // 64 buckets x 4 = 256 slots for <= 300 keys: exercises kicks and the stash.
            let mut f = CuckooFilter::new(240);
            let mut model = HashSet::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        if !model.contains(&k) && f.insert_u64(k).is_ok() {
                            model.insert(k);
                        }
                    }
                    Op::Delete(k) => {
                        if model.remove(&k) {
                            prop_assert!(f.delete_u64(k));
                        }
                    }
                }
                prop_assert_eq!(f.len(), model.len());
            }
            for &k in &model {
                prop_assert!(f.contains_u64(k), "false negative {}", k);
            }
        }
    }
}
