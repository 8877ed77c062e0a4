//! Probabilistic sketches: Bloom filter, Count-Min, HyperLogLog, cuckoo filter, MinHash.
//!
//! All sketches hash with **xxh3-64 under fixed seeds** (see [`hash`]): never randomly
//! seeded, so a sketch built in one process (or persisted and reloaded) answers the same
//! way in another, and tests are deterministic. The flip side is that keys chosen by an
//! adversary can be crafted to collide; feed these sketches ids or content hashes, not
//! raw attacker-controlled strings where that matters.
//!
//! Every sketch offers a byte-slice API (`insert(&[u8])`, ...) and a `u64` API
//! (`insert_u64`, ...); `x_u64(v)` is defined as `x(&v.to_le_bytes())`.
//!
//! Thread-safety: plain owned data, `Send + Sync` for reads; mutation needs `&mut`.

pub mod bloom;
pub mod count_min;
pub mod cuckoo;
pub mod hash;
pub mod hyperloglog;
pub mod minhash;

pub use bloom::BloomFilter;
pub use count_min::CountMinSketch;
pub use cuckoo::{CuckooFilter, CuckooFull};
pub use hyperloglog::HyperLogLog;
pub use minhash::MinHash;
