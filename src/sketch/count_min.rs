//! Count-Min sketch with conservative update and aging by halving.

use super::hash::double_hash;

/// Count-Min sketch: `depth` rows of `width` (a power of two) saturating `u32` counters.
///
/// Guarantees (for counts added since construction, without halving and below the
/// saturation cap): `estimate(x) >= true_count(x)` always, and
/// `estimate(x) <= true_count(x) + ε·N` with probability `1 - δ`, where `N` is the total
/// added, `ε = e / width` and `δ = e^{-depth}`. Conservative update (only raise the
/// counters that are at the current minimum) keeps the lower bound and only tightens the
/// upper one. [`CountMinSketch::halve`] ages every counter (`c >>= 1`); estimates then
/// track the halved history. O(depth) per operation, no allocation after construction.
#[derive(Clone, Debug)]
pub struct CountMinSketch {
    counters: Vec<u32>,
    width_mask: u64,
    depth: usize,
    max: u32,
    total: u64,
}

impl CountMinSketch {
    /// `depth` rows (1..=16) of `width` counters (rounded up to a power of two, ≥ 16).
    pub fn new(width: usize, depth: usize) -> Self {
        let width = width.max(16).next_power_of_two();
        let depth = depth.clamp(1, 16);
        CountMinSketch {
            counters: vec![0; width * depth],
            width_mask: width as u64 - 1,
            depth,
            max: u32::MAX,
            total: 0,
        }
    }

    /// Sized for additive error `epsilon·N` with probability `1 - delta`:
    /// `width = ⌈e/ε⌉`, `depth = ⌈ln 1/δ⌉`.
    pub fn with_error(epsilon: f64, delta: f64) -> Self {
        let w = (std::f64::consts::E / epsilon.clamp(1e-9, 1.0)).ceil() as usize;
        let d = (1.0 / delta.clamp(1e-9, 0.5)).ln().ceil() as usize;
        CountMinSketch::new(w, d)
    }

    /// Caps counters at `max` (e.g. 15 for TinyLFU's 4-bit counters); saturating.
    pub fn with_max(mut self, max: u32) -> Self {
        self.max = max.max(1);
        self
    }

    /// Counters per row.
    pub fn width(&self) -> usize {
        self.width_mask as usize + 1
    }

    /// Number of rows.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Sum of all amounts added (halved by [`CountMinSketch::halve`]).
    pub fn total(&self) -> u64 {
        self.total
    }

    #[inline]
    fn slot(&self, row: usize, h1: u64, h2: u64) -> usize {
        let col = h1.wrapping_add((row as u64).wrapping_mul(h2)) & self.width_mask;
        row * (self.width_mask as usize + 1) + col as usize
    }

    fn add_hashed(&mut self, h1: u64, h2: u64, n: u32) {
        self.total += u64::from(n);
        let min = self.estimate_hashed(h1, h2);
        let target = min.saturating_add(n).min(self.max);
        for row in 0..self.depth {
            let s = self.slot(row, h1, h2);
            // Conservative update: never lower a counter, raise only up to min + n.
            if self.counters[s] < target {
                self.counters[s] = target;
            }
        }
    }

    #[inline]
    fn estimate_hashed(&self, h1: u64, h2: u64) -> u32 {
        (0..self.depth)
            .map(|row| self.counters[self.slot(row, h1, h2)])
            .min()
            .unwrap_or(0)
    }

    /// Adds `n` occurrences of `key`.
    pub fn add(&mut self, key: &[u8], n: u32) {
        let (h1, h2) = double_hash(key);
        self.add_hashed(h1, h2, n);
    }

    /// Adds one occurrence of `key`.
    pub fn increment(&mut self, key: &[u8]) {
        self.add(key, 1);
    }

    /// Estimated count of `key` (never below the true count, see type docs).
    pub fn estimate(&self, key: &[u8]) -> u32 {
        let (h1, h2) = double_hash(key);
        self.estimate_hashed(h1, h2)
    }

    /// [`CountMinSketch::increment`] for a key already hashed with
    /// [`super::hash::double_hash`] (lets callers hash once for several sketches).
    pub fn increment_hashes(&mut self, h1: u64, h2: u64) {
        self.add_hashed(h1, h2 | 1, 1);
    }

    /// [`CountMinSketch::estimate`] for a key already hashed with
    /// [`super::hash::double_hash`].
    pub fn estimate_hashes(&self, h1: u64, h2: u64) -> u32 {
        self.estimate_hashed(h1, h2 | 1)
    }

    /// `increment(&key.to_le_bytes())`.
    pub fn increment_u64(&mut self, key: u64) {
        self.increment(&key.to_le_bytes());
    }

    /// `estimate(&key.to_le_bytes())`.
    pub fn estimate_u64(&self, key: u64) -> u32 {
        self.estimate(&key.to_le_bytes())
    }

    /// Ages the sketch: halves every counter and the total. O(width·depth).
    pub fn halve(&mut self) {
        for c in &mut self.counters {
            *c >>= 1;
        }
        self.total >>= 1;
    }

    /// Zeroes the sketch (keeps the allocation).
    pub fn clear(&mut self) {
        self.counters.fill(0);
        self.total = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Deterministic Zipf-ish stream from a fixed-seed xorshift generator.
    fn stream(n: usize, universe: u64, seed: u64) -> Vec<u64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Skew: square a uniform in [0,1) so low ids are hot.
                let u = (s >> 11) as f64 / (1u64 << 53) as f64;
                (u * u * universe as f64) as u64
            })
            .collect()
    }

    #[test]
    fn error_bound_holds_statistically() {
        let eps = 0.001;
        let delta = 0.01;
        let mut cm = CountMinSketch::with_error(eps, delta);
        let data = stream(200_000, 50_000, 0x1234_5678);
        let mut exact: HashMap<u64, u32> = HashMap::new();
        for &x in &data {
            cm.increment_u64(x);
            *exact.entry(x).or_default() += 1;
        }
        let bound = (eps * data.len() as f64).ceil() as u32;
        let mut over = 0usize;
        for (&k, &c) in &exact {
            let e = cm.estimate_u64(k);
            assert!(e >= c, "underestimate for {k}: {e} < {c}");
            if e > c + bound {
                over += 1;
            }
        }
        // At most a delta fraction may exceed the bound (allow 2x for sampling noise).
        assert!(
            (over as f64) <= 2.0 * delta * exact.len() as f64,
            "{over} of {} keys over the bound",
            exact.len()
        );
    }

    #[test]
    fn halving_and_cap() {
        let mut cm = CountMinSketch::new(1024, 4).with_max(15);
        for _ in 0..40 {
            cm.increment(b"hot");
        }
        assert_eq!(cm.estimate(b"hot"), 15);
        cm.halve();
        assert_eq!(cm.estimate(b"hot"), 7);
        assert_eq!(cm.estimate(b"cold"), 0);
        cm.clear();
        assert_eq!(cm.estimate(b"hot"), 0);
    }

    proptest! {
        #[test]
        fn never_underestimates(keys in proptest::collection::vec(0u64..200, 0..2000)) {
            // Narrow sketch so collisions are frequent.
            let mut cm = CountMinSketch::new(16, 3);
            let mut exact: HashMap<u64, u32> = HashMap::new();
            for &k in &keys {
                cm.increment_u64(k);
                *exact.entry(k).or_default() += 1;
            }
            for (&k, &c) in &exact {
                prop_assert!(cm.estimate_u64(k) >= c);
            }
            prop_assert_eq!(cm.total(), keys.len() as u64);
        }
    }
}
