//! Blocks received from an IPFS source, each verified against its CID before it is kept, within
//! a byte budget.

use crate::cid::SHA2_256;
use crate::error::{Error, Result};
use bytes::Bytes;
use cid::Cid;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Multihash code of the identity "hash" (the digest is the data).
const IDENTITY: u64 = 0x00;

/// Whether cidcache can verify blocks named by `cid` (sha2-256 or identity multihash).
pub(crate) fn verifiable(cid: &Cid) -> bool {
    matches!(cid.hash().code(), SHA2_256 | IDENTITY)
}

/// Checks that `bytes` are the block `cid` names.
pub(crate) fn verify(cid: &Cid, bytes: &[u8]) -> Result<()> {
    let mh = cid.hash();
    let ok = match mh.code() {
        SHA2_256 => mh.digest() == Sha256::digest(bytes).as_slice(),
        IDENTITY => mh.digest() == bytes,
        other => {
            return Err(Error::InvalidKey(format!(
                "{cid} uses multihash {other:#x}; cidcache verifies sha2-256 (and identity) only"
            )))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Error::CidMismatch(format!(
            "the IPFS source sent {} bytes for {cid} that do not hash to it; nothing was cached",
            bytes.len()
        )))
    }
}

/// Verified blocks by codec and multihash (a CIDv0 and the CIDv1 of the same dag-pb block are
/// one block).
pub(crate) struct Blocks {
    map: HashMap<(u64, Vec<u8>), Bytes>,
    bytes: u64,
    max_total: u64,
    first: Option<Cid>,
}

impl Blocks {
    /// An empty set that will hold at most `max_total` bytes of blocks.
    pub(crate) fn new(max_total: u64) -> Blocks {
        Blocks {
            map: HashMap::new(),
            bytes: 0,
            max_total,
            first: None,
        }
    }

    /// Verifies `bytes` against `cid` and keeps them. Errors: a block over `max_block` bytes,
    /// the total over the budget, bytes that do not hash to the CID.
    pub(crate) fn insert(&mut self, cid: &Cid, bytes: Bytes, max_block: u64) -> Result<()> {
        check_block_len(cid, bytes.len() as u64, max_block)?;
        let key = (cid.codec(), cid.hash().to_bytes());
        if self.map.contains_key(&key) {
            // A duplicate (CARs may repeat blocks): already verified.
            return Ok(());
        }
        if self.bytes + bytes.len() as u64 > self.max_total {
            return Err(Error::InvalidArgument(format!(
                "the IPFS source sent over {} bytes of blocks for one object, the most this store fetches (--ipfs-max-file)",
                self.max_total
            )));
        }
        verify(cid, &bytes)?;
        self.bytes += bytes.len() as u64;
        self.map.insert(key, bytes);
        self.first.get_or_insert(*cid);
        Ok(())
    }

    /// The first block that arrived (a CAR's root comes first), by its CID.
    pub(crate) fn first(&self) -> Option<Cid> {
        self.first
    }

    /// The verified block `cid` names, if it arrived.
    pub(crate) fn get(&self, cid: &Cid) -> Option<&Bytes> {
        self.map.get(&(cid.codec(), cid.hash().to_bytes()))
    }
}

/// Errors when a block of `len` bytes is over the configured maximum.
pub(crate) fn check_block_len(cid: &Cid, len: u64, max_block: u64) -> Result<()> {
    if len > max_block {
        return Err(Error::InvalidArgument(format!(
            "the IPFS source sent a block of {len} bytes for {cid}, over the {max_block}-byte maximum (--ipfs-max-block); nothing was cached"
        )));
    }
    Ok(())
}
