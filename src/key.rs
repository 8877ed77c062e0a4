//! Object keys: 1 to 63 opaque bytes (binary CIDs, 20-byte Plasma ids, or any application key).

use crate::error::{Error, Result};
use std::fmt;

/// Longest key the index stores; slot key words hold a length byte plus 63 key bytes.
pub const MAX_KEY_LEN: usize = 63;

/// A validated key, stored inline (no allocation). Cheap to copy and hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    len: u8,
    bytes: [u8; MAX_KEY_LEN],
}

impl Key {
    /// Validates `bytes` as a key: 1..=63 bytes.
    pub fn new(bytes: &[u8]) -> Result<Key> {
        if bytes.is_empty() {
            return Err(Error::InvalidKey("keys must not be empty".into()));
        }
        if bytes.len() > MAX_KEY_LEN {
            return Err(Error::InvalidKey(format!(
                "key is {} bytes; keys are at most {MAX_KEY_LEN} bytes (binary CIDs fit; hash longer names first)",
                bytes.len()
            )));
        }
        let mut k = Key {
            len: bytes.len() as u8,
            bytes: [0; MAX_KEY_LEN],
        };
        k.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(k)
    }

    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The key packed as the index stores it: byte 0 is the length, bytes 1..=63 the key,
    /// zero-padded, read as eight little-endian words.
    pub(crate) fn words(&self) -> [u64; 8] {
        let mut buf = [0u8; 64];
        buf[0] = self.len;
        buf[1..].copy_from_slice(&self.bytes);
        let mut w = [0u64; 8];
        for (i, chunk) in buf.chunks_exact(8).enumerate() {
            w[i] = u64::from_le_bytes(chunk.try_into().expect("8-byte chunk"));
        }
        w
    }

    /// Inverse of [`Key::words`]; `None` when the words do not encode a valid key.
    pub(crate) fn from_words(w: &[u64; 8]) -> Option<Key> {
        let mut buf = [0u8; 64];
        for (i, word) in w.iter().enumerate() {
            buf[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        let len = buf[0] as usize;
        if len == 0 || len > MAX_KEY_LEN {
            return None;
        }
        Key::new(&buf[1..1 + len]).ok()
    }

    /// The fixed slot hash: xxh3-64 with [`crate::layout::HASH_SEED`]. Stable across processes
    /// and versions (it is part of the shared layout).
    pub fn hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(self.as_bytes(), crate::layout::HASH_SEED)
    }

    /// Human-readable form: the text CID when the bytes parse as one, else hex.
    pub fn display(&self) -> String {
        crate::cid::format_key(self.as_bytes())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.display())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for len in 1..=MAX_KEY_LEN {
            let bytes: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
            let k = Key::new(&bytes).unwrap();
            assert_eq!(Key::from_words(&k.words()).unwrap(), k);
        }
    }

    #[test]
    fn rejects_bad_lengths() {
        assert!(Key::new(&[]).is_err());
        assert!(Key::new(&[0u8; 64]).is_err());
        assert!(Key::new(&[0u8; 63]).is_ok());
    }
}
