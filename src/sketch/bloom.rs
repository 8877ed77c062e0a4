//! Bloom filter with a fixed, persistable hash.

use super::hash::double_hash;

/// A standard Bloom filter: `m` bits, `k` probes by double hashing
/// (`g_i = h1 + i·h2 mod 2^64`, mapped to a bit as `⌊g_i·m / 2^64⌋`, `h1`/`h2` = xxh3-64 under [`super::hash::SEED_PRIMARY`] /
/// [`super::hash::SEED_SECONDARY`]).
///
/// Guarantees: no false negatives (a key inserted since the last [`BloomFilter::clear`] is
/// always reported present); the false-positive rate after `n` inserts is about
/// `(1 - e^{-kn/m})^k`, which [`BloomFilter::with_rate`] sizes to the requested rate at the
/// expected `n`. Insert and lookup are O(k); no allocation after construction. The hash is
/// fixed, so [`BloomFilter::to_bytes`] output can be stored and reloaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BloomFilter {
    words: Vec<u64>,
    m: u64,
    k: u32,
}

/// Magic prefix of the serialized form.
const MAGIC: &[u8; 4] = b"CCBF";
const VERSION: u8 = 1;

impl BloomFilter {
    /// A filter with `m_bits` bits (rounded up to a multiple of 64, at least 64) and `k`
    /// probes (at least 1).
    pub fn new(m_bits: u64, k: u32) -> Self {
        let words = m_bits.max(64).div_ceil(64);
        BloomFilter {
            words: vec![0; usize::try_from(words).expect("bloom filter too large")],
            m: words * 64,
            k: k.max(1),
        }
    }

    /// A filter sized for `expected_items` at false-positive rate `fp_rate` (0 < r < 1):
    /// `m = -n ln r / (ln 2)^2`, `k = round(m/n · ln 2)`.
    pub fn with_rate(expected_items: u64, fp_rate: f64) -> Self {
        let n = expected_items.max(1) as f64;
        let r = fp_rate.clamp(1e-12, 0.5);
        let ln2 = std::f64::consts::LN_2;
        let m = (-n * r.ln() / (ln2 * ln2)).ceil().max(64.0);
        let k = ((m / n) * ln2).round().clamp(1.0, 32.0);
        BloomFilter::new(m as u64, k as u32)
    }

    /// Number of bits.
    pub fn bits(&self) -> u64 {
        self.m
    }

    /// Number of probes per key.
    pub fn hashes(&self) -> u32 {
        self.k
    }

    /// Bit index of probe `i`: `g_i = h1 + i·h2 (mod 2^64)` mapped onto `0..m` by
    /// multiply-shift (Lemire's fast range reduction) rather than `%`, which would cost a
    /// 64-bit division per probe.
    #[inline]
    fn bit(&self, h1: u64, h2: u64, i: u64) -> u64 {
        let g = h1.wrapping_add(i.wrapping_mul(h2));
        ((u128::from(g) * u128::from(self.m)) >> 64) as u64
    }

    /// Inserts `key`; returns `true` if it was (probably) already present, i.e. every
    /// probed bit was already set.
    pub fn insert(&mut self, key: &[u8]) -> bool {
        let (h1, h2) = double_hash(key);
        self.insert_hashes(h1, h2)
    }

    /// Whether `key` may have been inserted (never `false` for an inserted key).
    pub fn contains(&self, key: &[u8]) -> bool {
        let (h1, h2) = double_hash(key);
        self.contains_hashes(h1, h2)
    }

    /// [`BloomFilter::insert`] for a key already hashed with
    /// [`super::hash::double_hash`] (lets callers hash once for several sketches).
    pub fn insert_hashes(&mut self, h1: u64, h2: u64) -> bool {
        let mut present = true;
        for i in 0..u64::from(self.k) {
            let bit = self.bit(h1, h2, i);
            let (w, b) = ((bit / 64) as usize, bit % 64);
            present &= self.words[w] & (1 << b) != 0;
            self.words[w] |= 1 << b;
        }
        present
    }

    /// [`BloomFilter::contains`] for a key already hashed with
    /// [`super::hash::double_hash`].
    pub fn contains_hashes(&self, h1: u64, h2: u64) -> bool {
        (0..u64::from(self.k)).all(|i| {
            let bit = self.bit(h1, h2, i);
            self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
        })
    }

    /// `insert(&key.to_le_bytes())`.
    pub fn insert_u64(&mut self, key: u64) -> bool {
        self.insert(&key.to_le_bytes())
    }

    /// `contains(&key.to_le_bytes())`.
    pub fn contains_u64(&self, key: u64) -> bool {
        self.contains(&key.to_le_bytes())
    }

    /// Clears all bits (keeps the allocation).
    pub fn clear(&mut self) {
        self.words.fill(0);
    }

    /// Serializes as `"CCBF" | version u8 | k u32 LE | m u64 LE | words u64 LE…`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.words.len() * 8);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&self.m.to_le_bytes());
        for w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Parses [`BloomFilter::to_bytes`] output; `None` if malformed.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 17 || &bytes[..4] != MAGIC || bytes[4] != VERSION {
            return None;
        }
        let k = u32::from_le_bytes(bytes[5..9].try_into().ok()?);
        let m = u64::from_le_bytes(bytes[9..17].try_into().ok()?);
        let body = &bytes[17..];
        if k == 0 || m == 0 || m % 64 != 0 || body.len() as u64 != m / 8 {
            return None;
        }
        let words = body
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("chunk of 8")))
            .collect();
        Some(BloomFilter { words, m, k })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn false_positive_rate_within_bound() {
        for &rate in &[0.01, 0.001] {
            let n = 20_000u64;
            let mut f = BloomFilter::with_rate(n, rate);
            for i in 0..n {
                f.insert_u64(i);
            }
            let trials = 200_000u64;
            let fps = (n..n + trials).filter(|&i| f.contains_u64(i)).count() as f64;
            let observed = fps / trials as f64;
            // Binomial std dev at the target rate; allow 4 sigma plus 25 % sizing slack.
            let sigma = (rate * (1.0 - rate) / trials as f64).sqrt();
            assert!(
                observed < rate * 1.25 + 4.0 * sigma,
                "rate {rate}: observed {observed}"
            );
        }
    }

    #[test]
    fn fixed_hash_is_stable() {
        // Pins the persisted format: these bit positions must never change.
        let mut f = BloomFilter::new(1024, 3);
        f.insert(b"cidcache");
        let set: Vec<u64> = (0..f.m)
            .filter(|&b| f.words[(b / 64) as usize] >> (b % 64) & 1 == 1)
            .collect();
        let (h1, h2) = double_hash(b"cidcache");
        let expect: Vec<u64> = {
            let mut v: Vec<u64> = (0..3u64)
                .map(|i| ((u128::from(h1.wrapping_add(i.wrapping_mul(h2))) * 1024) >> 64) as u64)
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        assert_eq!(set, expect);
        // Literal positions: if this changes, persisted filters become unreadable.
        assert_eq!(set, vec![250, 270, 772]);
        assert_eq!(
            super::super::hash::hash_bytes(b"cidcache", super::super::hash::SEED_PRIMARY),
            xxhash_rust::xxh3::xxh3_64_with_seed(b"cidcache", 0x9E37_79B9_7F4A_7C15)
        );
    }

    #[test]
    fn roundtrip_bytes() {
        let mut f = BloomFilter::with_rate(1000, 0.01);
        for i in 0..1000u64 {
            f.insert_u64(i * 7);
        }
        let g = BloomFilter::from_bytes(&f.to_bytes()).expect("parses");
        assert_eq!(f, g);
        assert!(BloomFilter::from_bytes(b"nope").is_none());
        let mut bad = f.to_bytes();
        bad.pop();
        assert!(BloomFilter::from_bytes(&bad).is_none());
    }

    proptest! {
        #[test]
        fn no_false_negatives(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..300)) {
            let mut f = BloomFilter::with_rate(100, 0.05); // deliberately overfilled
            for k in &keys {
                f.insert(k);
            }
            for k in &keys {
                prop_assert!(f.contains(k));
            }
        }
    }
}
