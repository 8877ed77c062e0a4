//! The warm tier's layout for raw byte objects.
//!
//! Many objects share one Parquet file, one row per chunk of at most [`CHUNK`] bytes:
//!
//! | column     | type      | what |
//! |------------|-----------|------|
//! | `key`      | binary    | the object's key (a binary CID or any key up to 63 bytes); bloom filter, statistics |
//! | `part`     | uint32    | chunk number, from 0; an object's chunks are consecutive rows of one row group |
//! | `data_len` | uint64    | the object's total data length (same on every chunk) |
//! | `flags`    | uint32    | the put flags (Arrow, ...) |
//! | `checksum` | uint64    | xxh3-64 of the whole data, checked on every read |
//! | `meta`     | binary    | the object's metadata bytes (on chunk 0 only, empty elsewhere) |
//! | `data`     | binary    | the chunk's bytes, plain encoded (no dictionary) |
//!
//! Chunking keeps pages and batch offsets small for objects of any size, and a point read
//! decodes only the pages of the object's rows (row selection with the offset index).

use super::files::no_panic;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::tier::parquet_guard;
use arrow_array::builder::{BinaryBuilder, UInt32Builder, UInt64Builder};
use arrow_array::{Array, BinaryArray, RecordBatch, UInt32Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Largest chunk of an object's data in one row.
pub(crate) const CHUNK: usize = 4 << 20;
/// A row group is closed once this many bytes are buffered (at an object boundary).
const ROW_GROUP_BYTES: usize = 16 << 20;

const KEY: usize = 0;
const PART: usize = 1;
const DATA_LEN: usize = 2;
const FLAGS: usize = 3;
const CHECKSUM: usize = 4;
const META: usize = 5;
const DATA: usize = 6;

/// The Arrow schema of a raw-object file.
pub(crate) fn schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("part", DataType::UInt32, false),
            Field::new("data_len", DataType::UInt64, false),
            Field::new("flags", DataType::UInt32, false),
            Field::new("checksum", DataType::UInt64, false),
            Field::new("meta", DataType::Binary, false),
            Field::new("data", DataType::Binary, false),
        ]))
    })
    .clone()
}

/// Where an object's rows are in a raw file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawLoc {
    pub row_group: u32,
    pub row: u32,
    pub parts: u32,
}

/// Writes raw objects into one Parquet file.
pub(crate) struct RawWriter {
    w: ArrowWriter<File>,
    file: File,
    row_group: u32,
    rows_in_group: u32,
}

impl RawWriter {
    pub(crate) fn new(file: File, props: WriterProperties) -> Result<RawWriter> {
        let handle = file
            .try_clone()
            .map_err(|e| Error::io("cannot start a warm-tier file", e))?;
        let w = ArrowWriter::try_new(file, schema(), Some(props))
            .map_err(|e| Error::io("cannot start a warm-tier file", std::io::Error::other(e)))?;
        Ok(RawWriter {
            w,
            file: handle,
            row_group: 0,
            rows_in_group: 0,
        })
    }

    /// Appends one object; its rows never straddle a row group.
    pub(crate) fn append(
        &mut self,
        key: &Key,
        flags: u32,
        data: &[u8],
        meta: &[u8],
    ) -> Result<RawLoc> {
        let parts = data.len().div_ceil(CHUNK).max(1);
        let checksum = xxhash_rust::xxh3::xxh3_64(data);
        let mut k = BinaryBuilder::with_capacity(parts, parts * key.as_bytes().len());
        let mut p = UInt32Builder::with_capacity(parts);
        let mut l = UInt64Builder::with_capacity(parts);
        let mut f = UInt32Builder::with_capacity(parts);
        let mut c = UInt64Builder::with_capacity(parts);
        let mut m = BinaryBuilder::with_capacity(parts, meta.len());
        let mut d = BinaryBuilder::with_capacity(parts, data.len());
        for i in 0..parts {
            k.append_value(key.as_bytes());
            p.append_value(i as u32);
            l.append_value(data.len() as u64);
            f.append_value(flags);
            c.append_value(checksum);
            m.append_value(if i == 0 { meta } else { &[] });
            let end = ((i + 1) * CHUNK).min(data.len());
            d.append_value(&data[(i * CHUNK).min(data.len())..end]);
        }
        let batch = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(k.finish()),
                Arc::new(p.finish()),
                Arc::new(l.finish()),
                Arc::new(f.finish()),
                Arc::new(c.finish()),
                Arc::new(m.finish()),
                Arc::new(d.finish()),
            ],
        )?;
        let loc = RawLoc {
            row_group: self.row_group,
            row: self.rows_in_group,
            parts: parts as u32,
        };
        self.w.write(&batch).map_err(write_err)?;
        self.rows_in_group += parts as u32;
        if self.w.in_progress_size() >= ROW_GROUP_BYTES {
            self.w.flush().map_err(write_err)?;
            self.row_group += 1;
            self.rows_in_group = 0;
        }
        Ok(loc)
    }

    /// Adds a key-value entry to the file's footer metadata.
    pub(crate) fn add_metadata(&mut self, key: String, value: String) {
        self.w
            .append_key_value_metadata(parquet::file::metadata::KeyValue::new(key, value));
    }

    /// Writes the footer; the file still needs to be committed.
    pub(crate) fn finish(self) -> Result<File> {
        self.w.close().map_err(write_err)?;
        Ok(self.file)
    }
}

fn write_err(e: parquet::errors::ParquetError) -> Error {
    Error::io("cannot write a warm-tier file", std::io::Error::other(e))
}

/// One object found in a raw file by [`scan`].
pub(crate) struct RawEntry {
    pub key: Key,
    pub loc: RawLoc,
    pub data_len: u64,
    pub meta_len: u64,
    pub flags: u32,
}

/// What [`scan`] found in a raw file: the objects that can be read, and the damaged ones
/// (quarantined alone: the key when it is known, and why).
#[derive(Default)]
pub(crate) struct RawScan {
    pub entries: Vec<RawEntry>,
    pub damaged: Vec<(Option<Key>, String)>,
}

/// Most rows a raw file may declare (a writer batch holds at most 4,096 objects, compaction
/// merges files under 128 MiB): bounds the work and memory of listing a hostile file.
pub(crate) const MAX_ROWS: u64 = 1 << 22;
/// What a page may hold beyond the largest object: the rows of smaller objects written before
/// it into the same page (the writer closes pages at 1 MiB).
const PAGE_SLACK: u64 = 8 << 20;

/// The largest uncompressed page a raw file of objects up to `max_object` bytes can hold.
pub(crate) fn max_page(max_object: u64) -> u64 {
    max_object.saturating_add(PAGE_SLACK)
}

/// Parses and checks the footer (and the page index when asked), and the page headers of
/// `columns` (`None`: all) in every row group, before anything is decoded.
fn load(
    f: &File,
    path: &Path,
    page_index: bool,
    columns: Option<&[usize]>,
    max_object: u64,
) -> Result<ArrowReaderMetadata> {
    parquet_guard::footer(f, path)?;
    let mut opts = ArrowReaderOptions::new();
    if page_index {
        opts = opts.with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional);
    }
    let md = ArrowReaderMetadata::load(f, opts)?;
    if md.schema().fields().len() != schema().fields().len()
        || md
            .schema()
            .fields()
            .iter()
            .zip(schema().fields())
            .any(|(a, w)| a.name() != w.name() || a.data_type() != w.data_type())
    {
        return Err(Error::Corrupt(format!(
            "{} does not have the raw-object schema",
            path.display()
        )));
    }
    let rows = md.metadata().row_groups().iter().try_fold(0u64, |n, g| {
        n.checked_add(u64::try_from(g.num_rows()).ok()?)
    });
    if rows.is_none_or(|r| r > MAX_ROWS) {
        return Err(Error::Corrupt(format!(
            "{}: the row groups declare more than {MAX_ROWS} rows",
            path.display()
        )));
    }
    parquet_guard::pages(f, path, md.metadata(), None, columns, max_page(max_object))?;
    Ok(md)
}

fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))
}

/// The footer and page index of a raw file, parsed once, checked, and reused for point reads.
pub(crate) fn metadata(path: &Path, max_object: u64) -> Result<ArrowReaderMetadata> {
    no_panic(&path.display().to_string(), || {
        load(&open_file(path)?, path, true, None, max_object)
    })
}

fn col<'a, T: 'static>(b: &'a RecordBatch, i: usize, path: &Path) -> Result<&'a T> {
    b.column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::Corrupt(format!("{}: column {i} has the wrong type", path.display())))
}

/// Lists the objects of a raw file (reads the small columns only, never the data). Objects
/// whose rows do not add up (a chunk without its first chunk, a chunk count that does not match
/// the length, a length over `max_object`) and row groups whose small columns do not decode are
/// reported as damaged; the rest are listed. Fails (the whole file is unreadable) when the
/// footer is bad or no row group decodes.
pub(crate) fn scan(path: &Path, max_object: u64) -> Result<RawScan> {
    no_panic(&path.display().to_string(), || {
        let f = open_file(path)?;
        let small = [KEY, PART, DATA_LEN, FLAGS, CHECKSUM, META];
        let md = load(&f, path, false, Some(&small), max_object)?;
        let groups = md.metadata().num_row_groups();
        let mut out = RawScan::default();
        let mut bad_groups = 0;
        for g in 0..groups {
            let before = out.entries.len();
            if let Err(e) = scan_group(path, &md, g, &small, &mut out.entries) {
                out.entries.truncate(before);
                bad_groups += 1;
                out.damaged.push((None, format!("row group {g}: {e}")));
            }
        }
        if groups > 0 && bad_groups == groups {
            let why = out.damaged.pop().map(|d| d.1).unwrap_or_default();
            return Err(Error::Corrupt(format!(
                "{}: no row group is readable ({why})",
                path.display()
            )));
        }
        let entries = std::mem::take(&mut out.entries);
        for e in entries {
            let want = e.data_len.div_ceil(CHUNK as u64).max(1);
            let why = if e.data_len > max_object || e.meta_len > max_object {
                Some(format!(
                    "declares {} + {} bytes, more than the hot tier's {max_object}",
                    e.data_len, e.meta_len
                ))
            } else if want != e.loc.parts as u64 {
                Some(format!(
                    "has {} chunks, its length needs {want}",
                    e.loc.parts
                ))
            } else {
                None
            };
            match why {
                Some(w) => out.damaged.push((Some(e.key), w)),
                None => out.entries.push(e),
            }
        }
        Ok(out)
    })
}

/// Appends the objects of row group `g` to `out` (see [`scan`]); an object whose chunk rows do
/// not follow each other is given a chunk count that [`scan`] then finds wrong.
fn scan_group(
    path: &Path,
    md: &ArrowReaderMetadata,
    g: usize,
    small: &[usize],
    out: &mut Vec<RawEntry>,
) -> Result<()> {
    let b = ParquetRecordBatchReaderBuilder::new_with_metadata(open_file(path)?, md.clone());
    let mask = ProjectionMask::roots(b.parquet_schema(), small.iter().copied());
    let rd = b
        .with_projection(mask)
        .with_row_groups(vec![g])
        .with_batch_size(8192)
        .build()?;
    let mut row = 0u32;
    // Whether the last entry's chunks were interrupted (it is damaged, whatever follows).
    let mut broken = false;
    for batch in rd {
        let batch = batch?;
        let keys = col::<BinaryArray>(&batch, 0, path)?;
        let parts = col::<UInt32Array>(&batch, 1, path)?;
        let lens = col::<UInt64Array>(&batch, 2, path)?;
        let flags = col::<UInt32Array>(&batch, 3, path)?;
        let metas = col::<BinaryArray>(&batch, 5, path)?;
        if [keys.null_count(), parts.null_count(), lens.null_count()] != [0; 3] {
            return Err(Error::Corrupt("null key, chunk number or length".into()));
        }
        for i in 0..batch.num_rows() {
            if parts.value(i) == 0 {
                broken = false;
                let Ok(key) = Key::new(keys.value(i)) else {
                    return Err(Error::Corrupt("an invalid key".into()));
                };
                out.push(RawEntry {
                    key,
                    loc: RawLoc {
                        row_group: g as u32,
                        row,
                        parts: 1,
                    },
                    data_len: lens.value(i),
                    meta_len: metas.value(i).len() as u64,
                    flags: flags.value(i),
                });
            } else {
                let next = out.last_mut().filter(|e| {
                    !broken
                        && e.key.as_bytes() == keys.value(i)
                        && e.loc.row_group == g as u32
                        && e.loc.row + e.loc.parts == row
                        && parts.value(i) == e.loc.parts
                });
                match next {
                    Some(e) => e.loc.parts += 1,
                    None => {
                        // A chunk out of place: the object it follows cannot be trusted.
                        if let Some(e) = out.last_mut().filter(|e| e.loc.row_group == g as u32) {
                            e.loc.parts = u32::MAX;
                        }
                        broken = true;
                    }
                }
            }
            row += 1;
        }
    }
    Ok(())
}

/// Reads one object's data and metadata, checking its length and checksum. `md` is the file's
/// footer as [`metadata`] checked it. Memory grows with the chunks actually read, never with
/// the length the file declares.
pub(crate) fn read(
    path: &Path,
    md: &ArrowReaderMetadata,
    loc: RawLoc,
    data_len: u64,
) -> Result<(Vec<u8>, Vec<u8>)> {
    no_panic(&path.display().to_string(), || {
        let b = ParquetRecordBatchReaderBuilder::new_with_metadata(open_file(path)?, md.clone());
        let rows_in_group = b
            .metadata()
            .row_groups()
            .get(loc.row_group as usize)
            .map(|g| g.num_rows())
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "{}: row group {} is missing",
                    path.display(),
                    loc.row_group
                ))
            })?;
        if loc.row as i64 + loc.parts as i64 > rows_in_group
            || data_len > loc.parts as u64 * CHUNK as u64
        {
            return Err(Error::Corrupt(format!(
                "{}: the object's rows are not in its row group",
                path.display()
            )));
        }
        let mask = ProjectionMask::roots(b.parquet_schema(), [CHECKSUM, META, DATA]);
        let sel = RowSelection::from(vec![
            RowSelector::skip(loc.row as usize),
            RowSelector::select(loc.parts as usize),
        ]);
        let rd = b
            .with_projection(mask)
            .with_row_groups(vec![loc.row_group as usize])
            .with_row_selection(sel)
            .with_batch_size((loc.parts as usize).min(64))
            .build()?;
        let mut data = Vec::with_capacity((data_len as usize).min(CHUNK));
        let mut meta = Vec::new();
        let mut checksum = None;
        let mut rows = 0;
        for batch in rd {
            let batch = batch?;
            let sums = col::<UInt64Array>(&batch, 0, path)?;
            let metas = col::<BinaryArray>(&batch, 1, path)?;
            let chunks = col::<BinaryArray>(&batch, 2, path)?;
            if chunks.null_count() > 0 || sums.null_count() > 0 {
                return Err(Error::Corrupt(format!("{}: null chunk", path.display())));
            }
            for i in 0..batch.num_rows() {
                if rows == 0 {
                    checksum = Some(sums.value(i));
                    meta.extend_from_slice(metas.value(i));
                }
                let chunk = chunks.value(i);
                if chunk.len() > CHUNK || (data.len() + chunk.len()) as u64 > data_len {
                    return Err(Error::Corrupt(format!(
                        "{}: object longer than recorded",
                        path.display()
                    )));
                }
                data.extend_from_slice(chunk);
                rows += 1;
            }
        }
        if rows != loc.parts as usize || data.len() as u64 != data_len {
            return Err(Error::Corrupt(format!(
                "{}: object truncated ({} of {} bytes)",
                path.display(),
                data.len(),
                data_len
            )));
        }
        if Some(xxhash_rust::xxh3::xxh3_64(&data)) != checksum {
            return Err(Error::Corrupt(format!(
                "{}: checksum mismatch",
                path.display()
            )));
        }
        Ok((data, meta))
    })
}

/// One whole object read back by [`read_all`].
pub(crate) struct RawObject {
    pub key: Key,
    pub loc: RawLoc,
    pub flags: u32,
    pub data: Vec<u8>,
    pub meta: Vec<u8>,
}

/// Every readable object of a raw file (for compaction), lengths and checksums checked, and
/// the damaged ones (see [`scan`]; an object whose rows do not decode or whose checksum does
/// not match is damaged alone). Fails only when the file as a whole is unreadable.
pub(crate) fn read_all(path: &Path, max_object: u64) -> Result<(Vec<RawObject>, RawScan)> {
    let mut listed = scan(path, max_object)?;
    let md = metadata(path, max_object)?;
    let entries = std::mem::take(&mut listed.entries);
    let mut out = Vec::with_capacity(entries.len());
    let mut by_group: std::collections::BTreeMap<u32, Vec<RawEntry>> = Default::default();
    for e in entries {
        by_group.entry(e.loc.row_group).or_default().push(e);
    }
    for (g, entries) in by_group {
        // A row group at a time (each page decoded once); when it does not decode, one object at
        // a time, so that damage stays with the objects it touches.
        match no_panic(&path.display().to_string(), || {
            read_group(path, &md, g, &entries)
        }) {
            Ok((objects, damaged)) => {
                out.extend(objects);
                listed.damaged.extend(damaged);
            }
            Err(_) => {
                for e in entries {
                    match read(path, &md, e.loc, e.data_len) {
                        Ok((data, meta)) => out.push(RawObject {
                            key: e.key,
                            loc: e.loc,
                            flags: e.flags,
                            data,
                            meta,
                        }),
                        Err(err) => listed.damaged.push((Some(e.key), err.to_string())),
                    }
                }
            }
        }
    }
    Ok((out, listed))
}

type Damaged = Vec<(Option<Key>, String)>;

/// Reads the objects `entries` (listed by [`scan`], in row order) of row group `g` in one pass.
/// An object whose length or checksum is wrong is damaged; a decoding error fails the group.
fn read_group(
    path: &Path,
    md: &ArrowReaderMetadata,
    g: u32,
    entries: &[RawEntry],
) -> Result<(Vec<RawObject>, Damaged)> {
    let b = ParquetRecordBatchReaderBuilder::new_with_metadata(open_file(path)?, md.clone());
    let rd = b
        .with_projection(ProjectionMask::roots(
            md.parquet_schema(),
            [CHECKSUM, META, DATA],
        ))
        .with_row_groups(vec![g as usize])
        .with_batch_size(64)
        .build()?;
    let mut out = Vec::with_capacity(entries.len());
    let mut damaged = Vec::new();
    let mut next = entries.iter().peekable();
    let mut row = 0u32;
    // The object being read: its entry, checksum, data, metadata, and whether it overran.
    type Reading<'e> = (&'e RawEntry, u64, Vec<u8>, Vec<u8>, bool);
    let mut cur: Option<Reading<'_>> = None;
    for batch in rd {
        let batch = batch?;
        let sums = col::<UInt64Array>(&batch, 0, path)?;
        let metas = col::<BinaryArray>(&batch, 1, path)?;
        let chunks = col::<BinaryArray>(&batch, 2, path)?;
        if chunks.null_count() > 0 || sums.null_count() > 0 {
            return Err(Error::Corrupt(format!("{}: null chunk", path.display())));
        }
        for i in 0..batch.num_rows() {
            if cur.is_none() {
                // Rows of objects `scan` found damaged are skipped.
                if let Some(e) = next.next_if(|e| e.loc.row == row) {
                    cur = Some((
                        e,
                        sums.value(i),
                        Vec::with_capacity((e.data_len as usize).min(CHUNK)),
                        metas.value(i).to_vec(),
                        false,
                    ));
                }
            }
            row += 1;
            let Some((e, _, data, _, overran)) = cur.as_mut() else {
                continue;
            };
            let chunk = chunks.value(i);
            if *overran || chunk.len() > CHUNK || (data.len() + chunk.len()) as u64 > e.data_len {
                *overran = true;
                *data = Vec::new();
            } else {
                data.extend_from_slice(chunk);
            }
            if row == e.loc.row + e.loc.parts {
                let (e, sum, data, meta, overran) = cur.take().expect("set above");
                if overran
                    || data.len() as u64 != e.data_len
                    || xxhash_rust::xxh3::xxh3_64(&data) != sum
                {
                    damaged.push((Some(e.key), "length or checksum mismatch".into()));
                } else {
                    out.push(RawObject {
                        key: e.key,
                        loc: e.loc,
                        flags: e.flags,
                        data,
                        meta,
                    });
                }
            }
        }
    }
    if cur.is_some() || next.peek().is_some() {
        return Err(Error::Corrupt(format!(
            "{}: row group {g} is shorter than listed",
            path.display()
        )));
    }
    Ok((out, damaged))
}
