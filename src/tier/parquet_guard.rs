//! Checks a Parquet file's structure against the file itself and against limits *before* the
//! Parquet decoder sees it.
//!
//! The decoder (parquet-rs) trusts some declared sizes enough to allocate by them, which a
//! hostile or damaged file can turn into an allocation of gigabytes (the process aborts: no
//! panic to catch) or unbounded recursion (a stack overflow):
//! * a page header's binary fields (statistics) are read into `Vec::with_capacity(declared)`;
//! * a dictionary page's value count reserves that many offsets;
//! * a page's declared uncompressed size is allocated and decompressed into (a small page can
//!   expand to 2 GiB);
//! * the schema tree is built recursively, as deep as the footer nests it.
//!
//! So every page header of every column chunk about to be decoded is parsed here first with a
//! bounded reader (every length checked against the bytes of its column chunk), the chunk
//! ranges are checked against the file, the page sizes against the caller's limit, dictionary
//! counts against their page, the offset index (when the reader will follow it) against the
//! pages found, and the schema's depth. Only then does the decoder run.
//!
//! Cost: one small read per page (page headers are tens of bytes), no decoding.

use crate::error::{Error, Result};
use parquet::file::metadata::ParquetMetaData;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Deepest schema nesting accepted (groups within groups); real tables stay far below.
pub(crate) const MAX_SCHEMA_DEPTH: usize = 64;
/// Largest footer accepted.
pub(crate) const MAX_FOOTER: u64 = 64 << 20;
/// Deepest Thrift nesting accepted inside a header or the footer.
const MAX_THRIFT_DEPTH: u32 = 32;

fn corrupt(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{}: {what}", path.display()))
}

fn read_at(f: &File, path: &Path, at: u64, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, at)
        .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
    Ok(b)
}

/// Checks the footer of `f` before the decoder parses it: its length against the file and
/// [`MAX_FOOTER`], its Thrift structure, and the depth of its schema ([`MAX_SCHEMA_DEPTH`]).
pub(crate) fn footer(f: &File, path: &Path) -> Result<()> {
    let len = f
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    if len < 12 {
        return Err(corrupt(path, "too short to be a Parquet file"));
    }
    let tail = read_at(f, path, len - 8, 8)?;
    if &tail[4..] != b"PAR1" {
        return Err(corrupt(
            path,
            "no Parquet footer (an unencrypted PAR1 file is expected)",
        ));
    }
    let flen = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if flen + 12 > len || flen > MAX_FOOTER {
        return Err(corrupt(
            path,
            format!("a footer of {flen} bytes does not fit a file of {len} bytes"),
        ));
    }
    let b = read_at(f, path, len - 8 - flen, flen as usize)?;
    let depth = schema_depth(&b).map_err(|e| corrupt(path, format!("footer: {e}")))?;
    if depth > MAX_SCHEMA_DEPTH {
        return Err(corrupt(
            path,
            format!("the schema nests {depth} levels deep (at most {MAX_SCHEMA_DEPTH})"),
        ));
    }
    Ok(())
}

/// Walks every page header of the given columns (`None`: all) of the given row groups (`None`:
/// all) and checks them: see the module documentation. `max_page` bounds a page's
/// uncompressed size; `offset_index` says whether the decoder will follow the offset index
/// (it must then agree with the pages).
pub(crate) fn pages(
    f: &File,
    path: &Path,
    md: &ParquetMetaData,
    row_groups: Option<&[usize]>,
    columns: Option<&[usize]>,
    max_page: u64,
) -> Result<()> {
    let len = f
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len();
    let max_page = max_page.min(i32::MAX as u64);
    let all_groups: Vec<usize> = (0..md.num_row_groups()).collect();
    for &g in row_groups.unwrap_or(&all_groups) {
        let Some(rg) = md.row_groups().get(g) else {
            return Err(corrupt(path, format!("row group {g} is missing")));
        };
        if rg.num_rows() < 0 {
            return Err(corrupt(
                path,
                format!("row group {g} has a negative row count"),
            ));
        }
        let all_cols: Vec<usize> = (0..rg.num_columns()).collect();
        for &c in columns.unwrap_or(&all_cols) {
            let Some(col) = rg.columns().get(c) else {
                return Err(corrupt(path, format!("row group {g} has no column {c}")));
            };
            let start = col
                .dictionary_page_offset()
                .unwrap_or(col.data_page_offset());
            let size = col.compressed_size();
            let (Ok(start), Ok(size)) = (u64::try_from(start), u64::try_from(size)) else {
                return Err(corrupt(
                    path,
                    format!("column chunk {g}/{c}: negative range"),
                ));
            };
            if start.checked_add(size).is_none_or(|end| end > len) {
                return Err(corrupt(
                    path,
                    format!("column chunk {g}/{c} ({size} bytes at {start}) is past the end of the file"),
                ));
            }
            if let Some(at) = col.bloom_filter_offset() {
                let n = col.bloom_filter_length().unwrap_or(0);
                let inside = u64::try_from(at)
                    .ok()
                    .zip(u64::try_from(n).ok())
                    .and_then(|(a, n)| a.checked_add(n))
                    .is_some_and(|end| end <= len);
                if !inside {
                    return Err(corrupt(
                        path,
                        format!(
                            "column chunk {g}/{c}: the bloom filter is past the end of the file"
                        ),
                    ));
                }
            }
            let found = walk_chunk(f, path, start, size, max_page)
                .map_err(|e| corrupt(path, format!("column chunk {g}/{c}: {e}")))?;
            if let Some(locs) = md.page_index().and_then(|pi| pi.page_locations(g, c)) {
                for l in locs {
                    let ok = found.iter().any(|p| {
                        !p.dictionary
                            && p.offset as i64 == l.offset
                            && p.total as i64 == l.compressed_page_size as i64
                    });
                    if !ok || l.first_row_index < 0 || l.first_row_index > rg.num_rows() {
                        return Err(corrupt(
                            path,
                            format!(
                                "column chunk {g}/{c}: the offset index names a page at {} that is not there",
                                l.offset
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A page found by [`walk_chunk`].
#[derive(Debug, Clone, Copy)]
struct PageAt {
    offset: u64,
    /// Header and compressed body.
    total: u64,
    dictionary: bool,
}

fn walk_chunk(
    f: &File,
    path: &Path,
    start: u64,
    size: u64,
    max_page: u64,
) -> std::result::Result<Vec<PageAt>, String> {
    let mut pages = Vec::new();
    let mut at = start;
    let end = start + size;
    while at < end {
        let remaining = end - at;
        // Headers are small; read more only when one really is longer (large statistics).
        let mut window = remaining.min(256);
        let (h, hlen) = loop {
            let b = read_at(f, path, at, window as usize).map_err(|e| e.to_string())?;
            match page_header(&b) {
                Ok(x) => break x,
                Err(ThriftError::Short) if window < remaining => {
                    window = (window * 4).min(remaining);
                }
                Err(ThriftError::Short) => return Err(format!("page header at {at} is cut off")),
                Err(ThriftError::Bad(e)) => return Err(format!("page header at {at}: {e}")),
            }
        };
        let (Some(unc), Some(comp)) = (h.uncompressed, h.compressed) else {
            return Err(format!("page header at {at} lacks its sizes"));
        };
        if comp < 0 || unc < 0 {
            return Err(format!("page at {at} has a negative size"));
        }
        let total = hlen as u64 + comp as u64;
        if total > remaining {
            return Err(format!(
                "page at {at} ({comp} bytes) runs past its column chunk"
            ));
        }
        if unc as u64 > max_page {
            return Err(format!(
                "page at {at} expands to {unc} bytes, over the limit of {max_page}"
            ));
        }
        if let Some(n) = h.dictionary_values {
            if n < 0 || n as u64 > unc as u64 {
                return Err(format!(
                    "dictionary page at {at} claims {n} values in {unc} bytes"
                ));
            }
        }
        if h.data_values.is_some_and(|n| n < 0) {
            return Err(format!("data page at {at} has a negative value count"));
        }
        pages.push(PageAt {
            offset: at,
            total,
            dictionary: h.dictionary_values.is_some(),
        });
        at += total;
    }
    Ok(pages)
}

// ----- a bounded Thrift compact-protocol reader ---------------------------------------------

#[derive(Debug)]
enum ThriftError {
    /// The bytes end inside the structure (more may make it whole).
    Short,
    /// The structure is malformed.
    Bad(&'static str),
}

impl std::fmt::Display for ThriftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ThriftError::Short => f.write_str("truncated"),
            ThriftError::Bad(e) => f.write_str(e),
        }
    }
}

type TResult<T> = std::result::Result<T, ThriftError>;

// Compact-protocol type codes.
const T_TRUE: u8 = 1;
const T_FALSE: u8 = 2;
const T_BYTE: u8 = 3;
const T_I16: u8 = 4;
const T_I32: u8 = 5;
const T_I64: u8 = 6;
const T_DOUBLE: u8 = 7;
const T_BINARY: u8 = 8;
const T_LIST: u8 = 9;
const T_SET: u8 = 10;
const T_MAP: u8 = 11;
const T_STRUCT: u8 = 12;

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> TResult<u8> {
        let x = *self.b.get(self.pos).ok_or(ThriftError::Short)?;
        self.pos += 1;
        Ok(x)
    }

    fn skip_bytes(&mut self, n: u64) -> TResult<()> {
        let left = (self.b.len() - self.pos) as u64;
        if n > left {
            return Err(ThriftError::Short);
        }
        self.pos += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> TResult<u64> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let x = self.byte()?;
            if shift == 63 && x > 1 {
                return Err(ThriftError::Bad("varint overflows 64 bits"));
            }
            v |= ((x & 0x7f) as u64) << shift;
            if x & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ThriftError::Bad("varint too long"))
    }

    fn i32(&mut self) -> TResult<i32> {
        let v = self.varint()?;
        let v = u32::try_from(v).map_err(|_| ThriftError::Bad("i32 out of range"))?;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// The next field header of a struct: `None` at its end.
    fn field(&mut self, last: &mut i16) -> TResult<Option<(i16, u8)>> {
        let h = self.byte()?;
        if h == 0 {
            return Ok(None);
        }
        let ty = h & 0x0f;
        let delta = (h >> 4) as i16;
        let id = if delta != 0 {
            last.checked_add(delta)
                .ok_or(ThriftError::Bad("field id overflows"))?
        } else {
            let v = self.varint()?;
            let v = u16::try_from(v).map_err(|_| ThriftError::Bad("field id out of range"))?;
            ((v >> 1) as i16) ^ -((v & 1) as i16)
        };
        *last = id;
        Ok(Some((id, ty)))
    }

    /// Skips a value of type `ty` (`in_collection`: booleans take a byte there, not in fields).
    fn skip(&mut self, ty: u8, depth: u32, in_collection: bool) -> TResult<()> {
        if depth > MAX_THRIFT_DEPTH {
            return Err(ThriftError::Bad("nested too deeply"));
        }
        match ty {
            T_TRUE | T_FALSE if !in_collection => Ok(()),
            T_TRUE | T_FALSE | T_BYTE => self.byte().map(drop),
            T_I16 | T_I32 | T_I64 => self.varint().map(drop),
            T_DOUBLE => self.skip_bytes(8),
            T_BINARY => {
                let n = self.varint()?;
                self.skip_bytes(n)
            }
            T_LIST | T_SET => {
                let h = self.byte()?;
                let mut n = (h >> 4) as u64;
                if n == 15 {
                    n = self.varint()?;
                }
                let et = h & 0x0f;
                // Every element takes at least a byte (booleans too, inside a collection).
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(ThriftError::Short);
                }
                for _ in 0..n {
                    self.skip(et, depth + 1, true)?;
                }
                Ok(())
            }
            T_MAP => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                if n > (self.b.len() - self.pos) as u64 {
                    return Err(ThriftError::Short);
                }
                for _ in 0..n {
                    self.skip(kv >> 4, depth + 1, true)?;
                    self.skip(kv & 0x0f, depth + 1, true)?;
                }
                Ok(())
            }
            T_STRUCT => self.skip_struct(depth + 1),
            _ => Err(ThriftError::Bad("unknown Thrift type")),
        }
    }

    fn skip_struct(&mut self, depth: u32) -> TResult<()> {
        let mut last = 0;
        while let Some((_, ty)) = self.field(&mut last)? {
            self.skip(ty, depth, false)?;
        }
        Ok(())
    }

    /// Reads an i32 field (checking its type) or skips a field of another id.
    fn expect_i32(&mut self, ty: u8) -> TResult<i32> {
        if ty != T_I32 {
            return Err(ThriftError::Bad("a field has the wrong type"));
        }
        self.i32()
    }

    /// Reads field 1 (an i32) of a nested struct, skipping the rest.
    fn struct_first_i32(&mut self, depth: u32) -> TResult<Option<i32>> {
        let mut last = 0;
        let mut v = None;
        while let Some((id, ty)) = self.field(&mut last)? {
            if id == 1 {
                v = Some(self.expect_i32(ty)?);
            } else {
                self.skip(ty, depth, false)?;
            }
        }
        Ok(v)
    }
}

/// What [`walk_chunk`] needs of a page header.
#[derive(Debug, Default)]
struct PageHeaderInfo {
    uncompressed: Option<i32>,
    compressed: Option<i32>,
    dictionary_values: Option<i32>,
    data_values: Option<i32>,
}

/// Parses a Thrift `PageHeader` at the start of `b`; returns it and its length in bytes.
fn page_header(b: &[u8]) -> TResult<(PageHeaderInfo, usize)> {
    let mut r = Reader { b, pos: 0 };
    let mut h = PageHeaderInfo::default();
    let mut last = 0;
    while let Some((id, ty)) = r.field(&mut last)? {
        match id {
            2 => h.uncompressed = Some(r.expect_i32(ty)?),
            3 => h.compressed = Some(r.expect_i32(ty)?),
            5 | 8 if ty == T_STRUCT => h.data_values = r.struct_first_i32(1)?.or(Some(0)),
            7 if ty == T_STRUCT => h.dictionary_values = Some(r.struct_first_i32(1)?.unwrap_or(0)),
            5 | 7 | 8 => return Err(ThriftError::Bad("a field has the wrong type")),
            _ => r.skip(ty, 1, false)?,
        }
    }
    Ok((h, r.pos))
}

/// The nesting depth of the schema in a Thrift `FileMetaData` (field 2, a list of
/// `SchemaElement`s whose field 5 is `num_children`), without recursion.
fn schema_depth(b: &[u8]) -> TResult<usize> {
    let mut r = Reader { b, pos: 0 };
    let mut last = 0;
    let mut depth = 0;
    while let Some((id, ty)) = r.field(&mut last)? {
        if id != 2 {
            r.skip(ty, 1, false)?;
            continue;
        }
        if ty != T_LIST {
            return Err(ThriftError::Bad("the schema is not a list"));
        }
        let h = r.byte()?;
        let mut n = (h >> 4) as u64;
        if n == 15 {
            n = r.varint()?;
        }
        if h & 0x0f != T_STRUCT {
            return Err(ThriftError::Bad("the schema is not a list of elements"));
        }
        if n > (b.len() - r.pos) as u64 {
            return Err(ThriftError::Bad(
                "the schema list is longer than the footer",
            ));
        }
        // Children still expected at each open level.
        let mut open: Vec<i64> = Vec::new();
        for _ in 0..n {
            let mut children = None;
            let mut last = 0;
            while let Some((id, ty)) = r.field(&mut last)? {
                if id == 5 {
                    children = Some(r.expect_i32(ty)?);
                } else {
                    r.skip(ty, 2, false)?;
                }
            }
            while open.last() == Some(&0) {
                open.pop();
            }
            if let Some(top) = open.last_mut() {
                *top -= 1;
            }
            match children {
                Some(c) if c < 0 => return Err(ThriftError::Bad("negative child count")),
                Some(c) if c > 0 => {
                    open.push(c as i64);
                    depth = depth.max(open.len());
                    if depth > MAX_SCHEMA_DEPTH {
                        return Ok(depth);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(depth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn zz(v: i32) -> u64 {
        ((v << 1) ^ (v >> 31)) as u32 as u64
    }

    /// A page header: type, sizes, then (optionally) a dictionary header with `n` values and a
    /// statistics-like binary of declared length `blen` inside a data page header.
    fn header(unc: i32, comp: i32, dict: Option<i32>, blen: Option<u64>) -> Vec<u8> {
        let mut b = vec![0x15];
        varint(zz(if dict.is_some() { 2 } else { 0 }), &mut b);
        b.push(0x15);
        varint(zz(unc), &mut b);
        b.push(0x15);
        varint(zz(comp), &mut b);
        if let Some(n) = dict {
            b.push(0x4c); // field 7 (delta 4 from 3), struct
            b.push(0x15);
            varint(zz(n), &mut b);
            b.push(0);
        }
        if let Some(blen) = blen {
            b.push(0x2c); // field 5, struct
            b.push(0x15);
            varint(zz(3), &mut b);
            b.push(0x48); // field 5 (delta 4 from 1), binary
            varint(blen, &mut b);
            b.extend(std::iter::repeat_n(7u8, blen.min(16) as usize));
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn page_headers_are_read_within_their_bytes() {
        let (h, n) = page_header(&header(100, 50, None, None)).unwrap();
        assert_eq!((h.uncompressed, h.compressed), (Some(100), Some(50)));
        assert_eq!(n, header(100, 50, None, None).len());
        let (h, _) = page_header(&header(100, 50, Some(9), None)).unwrap();
        assert_eq!(h.dictionary_values, Some(9));
        let (h, _) = page_header(&header(100, 50, None, Some(16))).unwrap();
        assert_eq!(h.data_values, Some(3));
        // A binary declaring 40 GB: never allocated, reported as cut off.
        assert!(matches!(
            page_header(&header(100, 50, None, Some(40 << 30))),
            Err(ThriftError::Short)
        ));
        // Deep nesting is refused, not recursed into.
        let mut deep = vec![0x1c; 1000];
        deep.extend([0u8; 1000]);
        assert!(matches!(page_header(&deep), Err(ThriftError::Bad(_))));
    }

    #[test]
    fn schema_depth_follows_child_counts() {
        // FileMetaData { 2: [root(2 children) [a, g(1 child) [b]]] }
        let el = |children: Option<i32>| {
            let mut b = Vec::new();
            if let Some(c) = children {
                b.push(0x55); // field 5, i32
                varint(zz(c), &mut b);
            }
            b.push(0);
            b
        };
        let mut b = vec![0x29, 0x4c];
        for c in [Some(2), None, Some(1), None] {
            b.extend(el(c));
        }
        b.push(0);
        assert_eq!(schema_depth(&b).unwrap(), 2);
        // A chain of 10,000 groups, each with one child.
        let mut b = vec![0x29, 0xfc];
        varint(10_001, &mut b);
        for _ in 0..10_000 {
            b.extend(el(Some(1)));
        }
        b.extend(el(None));
        b.push(0);
        assert!(schema_depth(&b).unwrap() > MAX_SCHEMA_DEPTH);
    }
}
