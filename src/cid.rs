//! Content identifiers: parsing and formatting text CIDs, and computing CIDv1 for content.
//!
//! Keys are stored in binary form. On the command line and in logs they appear as text:
//! CIDv0 (`Qm...`, base58btc, sha2-256) and CIDv1 (multibase; `b...` base32 lower by default).

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};

/// Multicodec code of the `raw` codec (content is plain bytes).
pub const RAW_CODEC: u64 = 0x55;
/// Multihash code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// Computes the CIDv1 (raw codec, sha2-256) of `data` and returns its binary form (36 bytes).
pub fn cid_v1_raw(data: &[u8]) -> Vec<u8> {
    let digest = Sha256::digest(data);
    let mut out = Vec::with_capacity(36);
    out.push(0x01); // CID version 1
    out.push(RAW_CODEC as u8);
    out.push(SHA2_256 as u8);
    out.push(32);
    out.extend_from_slice(&digest);
    out
}

/// Computes the CID `ipfs add --cid-version 1 --raw-leaves` gives `data` with kubo's defaults
/// (256 KiB raw leaves, balanced DAG of at most 174 links per node, sha2-256), in binary form.
/// Up to 256 KiB it is [`cid_v1_raw`]; above, a dag-pb (UnixFS) root. This is the key under
/// which the object can be shared through IPFS (`cidcache put --ipfs`).
pub fn unixfs_file_cid(data: &[u8]) -> Vec<u8> {
    crate::tier::ipfs::unixfs::build_file(data, |_, _| {}).to_bytes()
}

/// Parses a text CID (v0 or v1, any multibase the `cid` crate knows) into its binary form.
///
/// Errors name what is wrong so a user can fix the input.
pub fn parse(text: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::InvalidKey("empty CID".into()));
    }
    let c = cid::Cid::try_from(text).map_err(|e| {
        Error::InvalidKey(format!(
            "{text:?} is not a valid CID ({e}); expected CIDv0 (Qm..., base58btc) or CIDv1 (b..., base32)"
        ))
    })?;
    let bytes = c.to_bytes();
    if bytes.len() > crate::key::MAX_KEY_LEN {
        return Err(Error::InvalidKey(format!(
            "CID {text} is {} bytes in binary; cidcache keys are at most {} bytes",
            bytes.len(),
            crate::key::MAX_KEY_LEN
        )));
    }
    Ok(bytes)
}

/// Formats binary CID bytes as text (v0 as base58btc, v1 as base32 lower), or `None` when the
/// bytes are not a CID.
pub fn format(bytes: &[u8]) -> Option<String> {
    let c = cid::Cid::try_from(bytes).ok()?;
    // Only accept when the whole key is the CID (no trailing bytes).
    if c.encoded_len() != bytes.len() {
        return None;
    }
    Some(c.to_string())
}

/// A key for display: the text CID if it is one, else `0x` + hex.
pub fn format_key(bytes: &[u8]) -> String {
    format(bytes).unwrap_or_else(|| {
        let mut s = String::with_capacity(2 + bytes.len() * 2);
        s.push_str("0x");
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        s
    })
}

/// Parses a key given on a command line: a text CID, or `0x`-prefixed hex for arbitrary keys.
pub fn parse_key_arg(text: &str) -> Result<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("0x") {
        if hex.len() % 2 != 0 || hex.is_empty() {
            return Err(Error::InvalidKey(format!(
                "{text:?}: hex keys need an even, non-zero number of digits"
            )));
        }
        let mut out = Vec::with_capacity(hex.len() / 2);
        for i in (0..hex.len()).step_by(2) {
            let b = u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| Error::InvalidKey(format!("{text:?} is not valid hex")))?;
            out.push(b);
        }
        crate::key::Key::new(&out)?;
        return Ok(out);
    }
    parse(text)
}

/// Checks that `data` hashes to the CID `key` when `key` is a sha2-256 CID: the data itself
/// hashes to it, or, for a dag-pb key, it is the UnixFS file [`unixfs_file_cid`] names.
///
/// Returns `Ok(true)` when verified, `Ok(false)` when the key is not a CID with a hash this
/// build can check, and `Err(CidMismatch)` when the bytes do not match.
pub fn verify(key: &[u8], data: &[u8]) -> Result<bool> {
    let Ok(c) = cid::Cid::try_from(key) else {
        return Ok(false);
    };
    let mh = c.hash();
    if mh.code() != SHA2_256 {
        return Ok(false);
    }
    let digest = Sha256::digest(data);
    let unixfs = || {
        c.codec() == crate::tier::ipfs::unixfs::DAG_PB
            && data.len() > crate::tier::ipfs::unixfs::CHUNK
            && unixfs_file_cid(data) == key
    };
    if mh.digest() == digest.as_slice() || unixfs() {
        Ok(true)
    } else {
        Err(Error::CidMismatch(format!(
            "the data does not hash to {} (sha2-256)",
            format_key(key)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_raw_round_trip() {
        let bin = cid_v1_raw(b"hello world");
        let text = format(&bin).unwrap();
        assert!(text.starts_with('b'), "{text}");
        assert_eq!(parse(&text).unwrap(), bin);
        // Known value (ipfs add --cid-version 1 --raw-leaves of "hello world").
        assert_eq!(
            text,
            "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"
        );
        assert!(verify(&bin, b"hello world").unwrap());
        assert!(verify(&bin, b"hello worle").is_err());
    }

    #[test]
    fn v0_parses() {
        let text = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        let bin = parse(text).unwrap();
        assert_eq!(bin.len(), 34);
        assert_eq!(format(&bin).unwrap(), text);
    }

    #[test]
    fn malformed_rejected() {
        for bad in ["", "Qm", "bafy!!", "hello", "zzzzzz"] {
            let e = parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidKey(_)), "{bad}: {e}");
        }
        assert!(parse_key_arg("0x0").is_err());
        assert_eq!(parse_key_arg("0x0aff").unwrap(), vec![0x0a, 0xff]);
    }
}
