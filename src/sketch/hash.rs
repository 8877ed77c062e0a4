//! The fixed hash used by every sketch: xxh3-64 with fixed seeds.
//!
//! These constants are part of the persisted format of [`super::BloomFilter`]; changing
//! them invalidates every stored filter.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Primary seed (first 64 bits of the golden ratio).
pub const SEED_PRIMARY: u64 = 0x9E37_79B9_7F4A_7C15;
/// Secondary seed, used where two independent hashes are needed (double hashing).
pub const SEED_SECONDARY: u64 = 0xC2B2_AE3D_27D4_EB4F;

/// xxh3-64 of `key` under `seed`.
#[inline]
pub fn hash_bytes(key: &[u8], seed: u64) -> u64 {
    xxh3_64_with_seed(key, seed)
}

/// xxh3-64 of the little-endian bytes of `key` under `seed`.
#[inline]
pub fn hash_u64(key: u64, seed: u64) -> u64 {
    xxh3_64_with_seed(&key.to_le_bytes(), seed)
}

/// The two hashes used for Kirsch–Mitzenmacher double hashing; `h2` is forced odd so
/// that `h1 + i*h2` visits distinct slots modulo any power of two.
#[inline]
pub fn double_hash(key: &[u8]) -> (u64, u64) {
    (
        hash_bytes(key, SEED_PRIMARY),
        hash_bytes(key, SEED_SECONDARY) | 1,
    )
}

/// [`double_hash`] of `key.to_le_bytes()`.
#[inline]
pub fn double_hash_u64(key: u64) -> (u64, u64) {
    double_hash(&key.to_le_bytes())
}

/// murmur3's 64-bit finalizer: a fast bijective mixer, used to derive further hashes
/// from one xxh3 value.
#[inline]
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}
