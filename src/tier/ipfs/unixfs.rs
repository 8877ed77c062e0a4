//! dag-pb nodes carrying UnixFS: what a source sends is decoded strictly and within bounds, a
//! file's bytes are assembled from its verified blocks, and a file's DAG is built the way
//! `ipfs add --cid-version 1 --raw-leaves` builds it (write-back checks the node got that CID).
//!
//! dag-pb itself is decoded and encoded by `ipld-dagpb`; the UnixFS `Data` message inside a node
//! is small and read here by a strict reader (every length checked against what is left of its
//! own message, unknown fields skipped only when well-formed).

use super::blocks::Blocks;
use crate::cid::{RAW_CODEC, SHA2_256};
use crate::error::{Error, Result};
use bytes::Bytes;
use cid::Cid;
use ipld_dagpb::{PbLink, PbNode};
use sha2::{Digest, Sha256};

/// Multicodec code of dag-pb.
pub(crate) const DAG_PB: u64 = 0x70;
/// Bytes per leaf of `ipfs add`'s default chunker (`size-262144`).
pub(crate) const CHUNK: usize = 256 << 10;
/// Links per node of `ipfs add`'s balanced layout.
pub(crate) const MAX_LINKS: usize = 174;
/// Deepest file DAG assembled (a balanced DAG of 256 KiB leaves and 174 links per node holds
/// 2^71 bytes at depth 8).
const MAX_DEPTH: usize = 32;
/// Links followed while assembling one file: legitimate DAGs link one leaf many times (a file
/// of zeros), but a few blocks must not make the walk run for ever.
const MAX_VISITS: u64 = 1 << 22;

/// The `Type` of a UnixFS `Data` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    Raw,
    Directory,
    File,
    Metadata,
    Symlink,
    HamtShard,
}

/// The fields of a UnixFS `Data` message that cidcache uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct UnixfsData<'a> {
    pub kind: Option<DataType>,
    pub data: Option<&'a [u8]>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("the IPFS source sent a malformed DAG: {what}"))
}

/// A strict protobuf reader over one message.
struct Pb<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Pb<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| corrupt("a UnixFS varint runs past its message"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(corrupt("a UnixFS varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(corrupt("a UnixFS varint is longer than 10 bytes"))
    }

    fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if len > left {
            return Err(corrupt(format!(
                "a UnixFS field declares {len} bytes, {left} are left"
            )));
        }
        let s = &self.buf[self.pos..self.pos + len as usize];
        self.pos += len as usize;
        Ok(s)
    }

    fn skip(&mut self, wire: u64) -> Result<()> {
        let n = match wire {
            0 => return self.varint().map(|_| ()),
            1 => 8,
            2 => return self.bytes().map(|_| ()),
            5 => 4,
            w => return Err(corrupt(format!("unknown protobuf wire type {w}"))),
        };
        if self.buf.len() - self.pos < n {
            return Err(corrupt("a UnixFS field runs past its message"));
        }
        self.pos += n;
        Ok(())
    }
}

/// Decodes a UnixFS `Data` message (the `Data` field of a dag-pb node).
pub(crate) fn decode_data(buf: &[u8]) -> Result<UnixfsData<'_>> {
    let mut r = Pb { buf, pos: 0 };
    let mut out = UnixfsData::default();
    while r.pos < buf.len() {
        let tag = r.varint()?;
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 0) => {
                out.kind = Some(match r.varint()? {
                    0 => DataType::Raw,
                    1 => DataType::Directory,
                    2 => DataType::File,
                    3 => DataType::Metadata,
                    4 => DataType::Symlink,
                    5 => DataType::HamtShard,
                    t => return Err(corrupt(format!("unknown UnixFS type {t}"))),
                })
            }
            (2, 2) => out.data = Some(r.bytes()?),
            (3, 0) => out.filesize = Some(r.varint()?),
            (4, 0) => out.blocksizes.push(r.varint()?),
            (4, 2) => {
                // Packed (proto3 writers); bounded by the message itself.
                let packed = r.bytes()?;
                let mut p = Pb {
                    buf: packed,
                    pos: 0,
                };
                while p.pos < packed.len() {
                    out.blocksizes.push(p.varint()?);
                }
            }
            (0, _) => return Err(corrupt("protobuf field number 0")),
            (_, w) => r.skip(w)?,
        }
    }
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes the `Data` message of an internal file node as go-unixfs does (type, filesize,
/// unpacked blocksizes; no data).
fn encode_file_data(filesize: u64, blocksizes: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 11 * (1 + blocksizes.len()));
    out.extend_from_slice(&[0x08, 0x02]);
    out.push(0x18);
    put_varint(&mut out, filesize);
    for &b in blocksizes {
        out.push(0x20);
        put_varint(&mut out, b);
    }
    out
}

/// A decoded dag-pb node.
pub(crate) struct Node {
    pub links: Vec<PbLink>,
    /// The dag-pb `Data` field (a UnixFS message when the node is UnixFS).
    pub data: Option<Bytes>,
}

/// Decodes a dag-pb block.
pub(crate) fn decode_node(block: &Bytes) -> Result<Node> {
    let n = PbNode::from_bytes(block.clone()).map_err(|e| corrupt(format!("dag-pb: {e}")))?;
    Ok(Node {
        links: n.links,
        data: n.data,
    })
}

/// What a dag-pb block is, for deciding how to fetch and publish it.
pub(crate) enum Shape {
    /// A UnixFS file (or legacy `Raw` node) root: its bytes are published under its CID.
    File,
    /// Anything else (a directory, a HAMT shard, a symlink, dag-pb that is not UnixFS): the
    /// block itself is published; its links may be prefetched.
    Other,
}

/// Classifies a verified dag-pb block.
pub(crate) fn shape(node: &Node) -> Shape {
    let kind = node
        .data
        .as_ref()
        .and_then(|d| decode_data(d).ok())
        .and_then(|u| u.kind);
    match kind {
        Some(DataType::File | DataType::Raw) => Shape::File,
        _ => Shape::Other,
    }
}

/// The file bytes a UnixFS file node carries itself, and its links.
struct FileNode {
    links: Vec<Cid>,
    data: Bytes,
}

fn file_node(block: &Bytes) -> Result<FileNode> {
    let n = decode_node(block)?;
    let d = n
        .data
        .ok_or_else(|| corrupt("a file node has no UnixFS data"))?;
    let u = decode_data(&d)?;
    match u.kind {
        Some(DataType::File | DataType::Raw) => {}
        k => return Err(corrupt(format!("a file links a {k:?} node"))),
    }
    let data = match u.data {
        Some(s) => d.slice_ref(s),
        None => Bytes::new(),
    };
    Ok(FileNode {
        links: n.links.into_iter().map(|l| l.cid).collect(),
        data,
    })
}

/// Walks the file DAG under `root` depth-first, handing each piece of file data to `emit` in
/// order. Every block must be in `blocks` (which holds only verified blocks).
fn walk(root: &Cid, blocks: &Blocks, emit: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let missing = |c: &Cid| {
        Error::Corrupt(format!(
            "the IPFS source sent an incomplete DAG (a truncated CAR?): block {c} is missing"
        ))
    };
    let block = |c: &Cid| blocks.get(c).ok_or_else(|| missing(c));
    if root.codec() == RAW_CODEC {
        return emit(block(root)?);
    }
    let first = file_node(block(root)?)?;
    emit(&first.data)?;
    let mut stack = vec![(first.links, 0usize)];
    let mut visits = 0u64;
    while let Some((links, next)) = stack.last_mut() {
        let Some(c) = links.get(*next).copied() else {
            stack.pop();
            continue;
        };
        *next += 1;
        visits += 1;
        if visits > MAX_VISITS {
            return Err(corrupt(format!("a file DAG of over {MAX_VISITS} links")));
        }
        match c.codec() {
            RAW_CODEC => emit(block(&c)?)?,
            DAG_PB => {
                let n = file_node(block(&c)?)?;
                emit(&n.data)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(corrupt(format!("a file DAG deeper than {MAX_DEPTH}")));
                }
                stack.push((n.links, 0));
            }
            other => return Err(corrupt(format!("a file links a block of codec {other:#x}"))),
        }
    }
    Ok(())
}

/// A UnixFS file (or a raw block) whose blocks all arrived and were verified: its size and how
/// to write its bytes.
pub(crate) struct FilePlan {
    root: Cid,
    blocks: Blocks,
    size: u64,
}

impl FilePlan {
    /// Checks the DAG under `root` (complete, well-formed, at most `max_file` bytes, agreeing
    /// with the size its root declares) without copying anything.
    pub(crate) fn new(root: Cid, blocks: Blocks, max_file: u64) -> Result<FilePlan> {
        let mut size = 0u64;
        walk(&root, &blocks, &mut |d| {
            size += d.len() as u64;
            if size > max_file {
                return Err(Error::InvalidArgument(format!(
                    "{root} is over {} bytes, the largest object this store fetches from IPFS (--ipfs-max-file)",
                    max_file
                )));
            }
            Ok(())
        })?;
        if root.codec() == DAG_PB {
            let d = decode_node(blocks.get(&root).expect("walked"))?.data;
            let declared = d
                .as_deref()
                .map(decode_data)
                .transpose()?
                .and_then(|u| u.filesize);
            if declared.is_some_and(|f| f != size) {
                return Err(corrupt(format!(
                    "the root of {root} declares {} bytes, its blocks hold {size}",
                    declared.unwrap_or(0)
                )));
            }
        }
        Ok(FilePlan { root, blocks, size })
    }

    /// Bytes of the file.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// Writes the file into `out`, which must be exactly [`FilePlan::size`] bytes.
    pub(crate) fn write_into(&self, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != self.size {
            return Err(Error::Internal(
                "a file was written into a wrong-sized place".into(),
            ));
        }
        let mut pos = 0usize;
        walk(&self.root, &self.blocks, &mut |d| {
            // The DAG was walked once already; the blocks cannot change, so this holds.
            let end = pos + d.len();
            let dst = out
                .get_mut(pos..end)
                .ok_or_else(|| Error::Internal("a file DAG changed while written".into()))?;
            dst.copy_from_slice(d);
            pos = end;
            Ok(())
        })
    }
}

// ----- building (write-back) ------------------------------------------------------------------

/// A child of a node being built: its CID, cumulative serialized size (the link's `Tsize`) and
/// the file bytes under it.
struct Built {
    cid: Cid,
    tsize: u64,
    filesize: u64,
}

fn sha256_cid(codec: u64, bytes: &[u8]) -> Cid {
    let mh = multihash::Multihash::wrap(SHA2_256, &Sha256::digest(bytes)).expect("32 bytes fit");
    Cid::new_v1(codec, mh)
}

struct Builder<'a, F: FnMut(&Cid, &[u8])> {
    chunks: std::slice::Chunks<'a, u8>,
    pending: Option<&'a [u8]>,
    on_block: F,
}

impl<F: FnMut(&Cid, &[u8])> Builder<'_, F> {
    fn done(&mut self) -> bool {
        if self.pending.is_none() {
            self.pending = self.chunks.next();
        }
        self.pending.is_none()
    }

    fn leaf(&mut self) -> Built {
        self.done();
        let chunk = self.pending.take().unwrap_or(&[]);
        let cid = sha256_cid(RAW_CODEC, chunk);
        (self.on_block)(&cid, chunk);
        Built {
            cid,
            tsize: chunk.len() as u64,
            filesize: chunk.len() as u64,
        }
    }

    fn node(&mut self, children: Vec<Built>) -> Built {
        let filesize = children.iter().map(|c| c.filesize).sum();
        let sizes: Vec<u64> = children.iter().map(|c| c.filesize).collect();
        let node = PbNode {
            links: children
                .iter()
                .map(|c| PbLink {
                    cid: c.cid,
                    name: Some(String::new()),
                    size: Some(c.tsize),
                })
                .collect(),
            data: Some(encode_file_data(filesize, &sizes).into()),
        };
        let bytes = node.into_bytes();
        let cid = sha256_cid(DAG_PB, &bytes);
        (self.on_block)(&cid, &bytes);
        Built {
            cid,
            tsize: bytes.len() as u64 + children.iter().map(|c| c.tsize).sum::<u64>(),
            filesize,
        }
    }

    /// go-unixfs `fillNodeRec`: fills a node of the given depth with up to MAX_LINKS children.
    fn fill(&mut self, mut children: Vec<Built>, depth: usize) -> Built {
        while children.len() < MAX_LINKS && !self.done() {
            let c = if depth == 1 {
                self.leaf()
            } else {
                self.fill(Vec::new(), depth - 1)
            };
            children.push(c);
        }
        self.node(children)
    }
}

/// Builds the UnixFS DAG of `data` as `ipfs add --cid-version 1 --raw-leaves` does by default
/// (256 KiB raw leaves, balanced layout, 174 links per node, sha2-256), handing every block to
/// `on_block`, and returns the root CID. Up to 256 KiB that is the raw CID of `data` itself.
pub(crate) fn build_file(data: &[u8], on_block: impl FnMut(&Cid, &[u8])) -> Cid {
    let mut b = Builder {
        chunks: data.chunks(CHUNK),
        pending: None,
        on_block,
    };
    // go-unixfs balanced.Layout: the first leaf is the root until more data comes, then each
    // round puts the old root under a new, deeper one and fills that.
    let mut root = b.leaf();
    let mut depth = 1;
    while !b.done() {
        root = b.fill(vec![root], depth);
        depth += 1;
    }
    root.cid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trip_and_strictness() {
        let enc = encode_file_data(300, &[100, 200]);
        let d = decode_data(&enc).unwrap();
        assert_eq!(d.kind, Some(DataType::File));
        assert_eq!(d.filesize, Some(300));
        assert_eq!(d.blocksizes, vec![100, 200]);
        // A length past the end, an overlong varint, an unknown type: errors, no panic.
        assert!(decode_data(&[0x12, 0x05, 1, 2]).is_err());
        assert!(
            decode_data(&[0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
                .is_err()
        );
        assert!(decode_data(&[0x08, 0x09]).is_err());
        // Unknown fields are skipped.
        let d = decode_data(&[0x08, 0x02, 0x48, 0x05]).unwrap();
        assert_eq!(d.kind, Some(DataType::File));
    }

    #[test]
    fn small_files_are_raw_leaves() {
        let data = b"hello world";
        let c = build_file(data, |_, _| {});
        assert_eq!(c.to_bytes(), crate::cid::cid_v1_raw(data));
    }

    /// Builds a DAG, then assembles it again from its blocks.
    #[test]
    fn build_then_assemble() {
        for len in [CHUNK + 1, 3 * CHUNK, 175 * CHUNK + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut blocks = Blocks::new(u64::MAX);
            let root = build_file(&data, |c, b| {
                blocks
                    .insert(c, Bytes::copy_from_slice(b), u64::MAX)
                    .unwrap();
            });
            assert_eq!(root.codec(), DAG_PB);
            let plan = FilePlan::new(root, blocks, u64::MAX).unwrap();
            assert_eq!(plan.size(), len as u64);
            let mut out = vec![0u8; len];
            plan.write_into(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn missing_blocks_and_limits() {
        // Leaves that differ (a period of 251 does not divide the chunk size).
        let data: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 251) as u8).collect();
        let mut all = Vec::new();
        let root = build_file(&data, |c, b| all.push((*c, Bytes::copy_from_slice(b))));
        // Without its last leaf (a truncated CAR).
        let mut blocks = Blocks::new(u64::MAX);
        for (c, b) in &all[1..] {
            blocks.insert(c, b.clone(), u64::MAX).unwrap();
        }
        let e = FilePlan::new(root, blocks, u64::MAX).err().unwrap();
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
        // Over the configured maximum.
        let mut blocks = Blocks::new(u64::MAX);
        for (c, b) in &all {
            blocks.insert(c, b.clone(), u64::MAX).unwrap();
        }
        let e = FilePlan::new(root, blocks, 2 * CHUNK as u64).err().unwrap();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}
