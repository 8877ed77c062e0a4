//! MinHash signatures for Jaccard similarity.

use super::hash::{fmix64, hash_bytes, SEED_PRIMARY};

/// A MinHash signature of `k` minima.
///
/// Each element is hashed once with xxh3-64 (fixed seed); the `k` hash functions are
/// `fmix64(h ^ s_i)` for fixed salts `s_i = fmix64(i + 1)` (bijective mixes of one
/// well-mixed hash). Two signatures with the same `k` estimate the Jaccard similarity
/// `|A ∩ B| / |A ∪ B|` as the fraction of equal minima; the estimator is unbiased with
/// standard error `sqrt(J(1-J)/k)`. Insert is O(k), no allocation; signatures merge
/// (element-wise min) into the signature of the union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinHash {
    mins: Vec<u64>,
}

impl MinHash {
    /// An empty signature with `k` (≥ 1) hash functions.
    pub fn new(k: usize) -> Self {
        MinHash {
            mins: vec![u64::MAX; k.max(1)],
        }
    }

    /// Number of hash functions.
    pub fn k(&self) -> usize {
        self.mins.len()
    }

    /// Adds `key` to the set.
    pub fn insert(&mut self, key: &[u8]) {
        let h = hash_bytes(key, SEED_PRIMARY);
        for (i, m) in self.mins.iter_mut().enumerate() {
            let v = fmix64(h ^ fmix64(i as u64 + 1));
            if v < *m {
                *m = v;
            }
        }
    }

    /// `insert(&key.to_le_bytes())`.
    pub fn insert_u64(&mut self, key: u64) {
        self.insert(&key.to_le_bytes());
    }

    /// Estimated Jaccard similarity in `[0, 1]`; two empty sets give 1.
    ///
    /// # Panics
    /// If `k` differs.
    pub fn jaccard(&self, other: &MinHash) -> f64 {
        assert_eq!(self.k(), other.k(), "MinHash k mismatch");
        let eq = self
            .mins
            .iter()
            .zip(&other.mins)
            .filter(|(a, b)| a == b)
            .count();
        eq as f64 / self.k() as f64
    }

    /// Merges `other` in: afterwards `self` is the signature of the union.
    ///
    /// # Panics
    /// If `k` differs.
    pub fn merge(&mut self, other: &MinHash) {
        assert_eq!(self.k(), other.k(), "MinHash k mismatch");
        for (a, &b) in self.mins.iter_mut().zip(&other.mins) {
            *a = (*a).min(b);
        }
    }

    /// The raw minima.
    pub fn signature(&self) -> &[u64] {
        &self.mins
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn estimates_jaccard() {
        let k = 256;
        // Sets [0, n) and [s, s + n): J = (n - s) / (n + s).
        for (t, &(n, s)) in [
            (1000u64, 0u64),
            (1000, 100),
            (1000, 333),
            (1000, 600),
            (1000, 1000),
        ]
        .iter()
        .enumerate()
        {
            let base = (t as u64) << 32;
            let mut a = MinHash::new(k);
            let mut b = MinHash::new(k);
            for i in 0..n {
                a.insert_u64(base + i);
                b.insert_u64(base + s + i);
            }
            let j = (n.saturating_sub(s)) as f64 / (n + s.min(n)) as f64;
            let sigma = (j * (1.0 - j) / k as f64).sqrt().max(1.0 / k as f64);
            let est = a.jaccard(&b);
            assert!((est - j).abs() <= 4.0 * sigma, "J={j} est={est}");
        }
    }

    proptest! {
        #[test]
        fn merge_is_union_and_identity_is_one(a in proptest::collection::vec(any::<u64>(), 0..200),
                                              b in proptest::collection::vec(any::<u64>(), 0..200)) {
            let mut ma = MinHash::new(32);
            let mut mb = MinHash::new(32);
            let mut mu = MinHash::new(32);
            for &x in &a { ma.insert_u64(x); mu.insert_u64(x); }
            for &x in &b { mb.insert_u64(x); mu.insert_u64(x); }
            prop_assert_eq!(ma.jaccard(&ma.clone()), 1.0);
            ma.merge(&mb);
            prop_assert_eq!(ma, mu);
        }
    }
}
