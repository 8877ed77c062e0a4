//! HyperLogLog distinct counter.

use super::hash::{hash_bytes, SEED_PRIMARY};

/// HyperLogLog with `2^p` one-byte registers (Flajolet et al. 2007, with the
/// small-range linear-counting correction; 64-bit hashes make the large-range
/// correction unnecessary).
///
/// Guarantees: relative standard error ≈ `1.04 / sqrt(2^p)`, i.e. ≈ 1.6 % for the
/// default `p = 12` (4 KiB). Insert is O(1) and allocation-free; `count` is O(2^p).
/// Two sketches with the same `p` merge losslessly (register-wise max), so
/// `a.merge(b)` counts `A ∪ B`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HyperLogLog {
    registers: Vec<u8>,
    p: u32,
}

impl Default for HyperLogLog {
    fn default() -> Self {
        HyperLogLog::new(12)
    }
}

impl HyperLogLog {
    /// `2^p` registers, `p` clamped to 4..=18.
    pub fn new(p: u32) -> Self {
        let p = p.clamp(4, 18);
        HyperLogLog {
            registers: vec![0; 1 << p],
            p,
        }
    }

    /// Precision `p` (log2 of the register count).
    pub fn precision(&self) -> u32 {
        self.p
    }

    /// Adds an already-hashed value (must be a well-mixed 64-bit hash).
    #[inline]
    pub fn insert_hash(&mut self, h: u64) {
        let idx = (h >> (64 - self.p)) as usize;
        // Rank of the first 1 bit in the remaining 64-p bits; the sentinel bit bounds it.
        let w = (h << self.p) | (1 << (self.p - 1));
        let rank = (w.leading_zeros() + 1) as u8;
        if self.registers[idx] < rank {
            self.registers[idx] = rank;
        }
    }

    /// Adds `key`.
    pub fn insert(&mut self, key: &[u8]) {
        self.insert_hash(hash_bytes(key, SEED_PRIMARY));
    }

    /// `insert(&key.to_le_bytes())`.
    pub fn insert_u64(&mut self, key: u64) {
        self.insert(&key.to_le_bytes());
    }

    /// Estimated number of distinct keys inserted.
    pub fn count(&self) -> f64 {
        let m = self.registers.len() as f64;
        let alpha = match self.registers.len() {
            16 => 0.673,
            32 => 0.697,
            64 => 0.709,
            _ => 0.7213 / (1.0 + 1.079 / m),
        };
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &r in &self.registers {
            sum += 1.0 / (1u64 << r) as f64;
            zeros += usize::from(r == 0);
        }
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }

    /// Merges `other` (same precision) into `self`: afterwards `self` counts the union.
    ///
    /// # Panics
    /// If the precisions differ.
    pub fn merge(&mut self, other: &HyperLogLog) {
        assert_eq!(self.p, other.p, "HyperLogLog precision mismatch");
        for (a, &b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(b);
        }
    }

    /// Resets to empty.
    pub fn clear(&mut self) {
        self.registers.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn error_within_bounds() {
        // Standard error for p=12 is 1.04/64 = 1.625 %.
        let sigma = 1.04 / 64.0;
        let mut sq_sum = 0.0;
        let mut trials = 0.0;
        for (t, &n) in [
            100u64, 1_000, 5_000, 10_000, 20_000, 50_000, 100_000, 300_000, 1_000_000,
        ]
        .iter()
        .enumerate()
        {
            for seed in 0..4u64 {
                let mut h = HyperLogLog::new(12);
                let base = (seed * 10 + t as u64) << 40;
                for i in 0..n {
                    h.insert_u64(base + i);
                }
                let err = (h.count() - n as f64) / n as f64;
                // 4 sigma per estimate (fixed seeds keep this deterministic).
                assert!(err.abs() < 4.0 * sigma, "n={n} seed={seed}: err {err}");
                sq_sum += err * err;
                trials += 1.0;
            }
        }
        let rmse = (sq_sum / trials).sqrt();
        assert!(rmse < 1.5 * sigma, "rmse {rmse}");
    }

    #[test]
    fn duplicates_do_not_count() {
        let mut h = HyperLogLog::default();
        for _ in 0..10 {
            for i in 0..1000u64 {
                h.insert_u64(i);
            }
        }
        let c = h.count();
        assert!((c - 1000.0).abs() < 50.0, "{c}");
    }

    proptest! {
        #[test]
        fn merge_equals_union(a in proptest::collection::vec(any::<u64>(), 0..500),
                              b in proptest::collection::vec(any::<u64>(), 0..500)) {
            let mut ha = HyperLogLog::new(10);
            let mut hb = HyperLogLog::new(10);
            let mut hu = HyperLogLog::new(10);
            for &x in &a { ha.insert_u64(x); hu.insert_u64(x); }
            for &x in &b { hb.insert_u64(x); hu.insert_u64(x); }
            ha.merge(&hb);
            prop_assert_eq!(ha, hu);
        }
    }
}
