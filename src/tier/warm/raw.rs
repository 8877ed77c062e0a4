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

fn open(path: &Path, page_index: bool) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let f =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    let md = load(&f, path, page_index)?;
    Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(f, md))
}

fn load(f: &File, path: &Path, page_index: bool) -> Result<ArrowReaderMetadata> {
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
    Ok(md)
}

/// The footer and page index of a raw file, parsed once and reused for point reads.
pub(crate) fn metadata(path: &Path) -> Result<ArrowReaderMetadata> {
    no_panic(&path.display().to_string(), || {
        let f = File::open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        load(&f, path, true)
    })
}

fn col<'a, T: 'static>(b: &'a RecordBatch, i: usize, path: &Path) -> Result<&'a T> {
    b.column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::Corrupt(format!("{}: column {i} has the wrong type", path.display())))
}

/// Lists the objects of a raw file (reads the small columns only, never the data).
pub(crate) fn scan(path: &Path) -> Result<Vec<RawEntry>> {
    no_panic(&path.display().to_string(), || {
        let b = open(path, false)?;
        let groups = b.metadata().num_row_groups();
        let mask = ProjectionMask::roots(
            b.parquet_schema(),
            [KEY, PART, DATA_LEN, FLAGS, CHECKSUM, META],
        );
        let mut out: Vec<RawEntry> = Vec::new();
        for g in 0..groups {
            let rd = open(path, false)?
                .with_projection(mask.clone())
                .with_row_groups(vec![g])
                .with_batch_size(8192)
                .build()?;
            let mut row = 0u32;
            for batch in rd {
                let batch = batch?;
                let keys = col::<BinaryArray>(&batch, 0, path)?;
                let parts = col::<UInt32Array>(&batch, 1, path)?;
                let lens = col::<UInt64Array>(&batch, 2, path)?;
                let flags = col::<UInt32Array>(&batch, 3, path)?;
                let metas = col::<BinaryArray>(&batch, 5, path)?;
                for i in 0..batch.num_rows() {
                    if parts.value(i) == 0 {
                        out.push(RawEntry {
                            key: Key::new(keys.value(i)).map_err(|_| {
                                Error::Corrupt(format!("{}: invalid key", path.display()))
                            })?,
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
                        let last = out.last_mut().filter(|e| {
                            e.key.as_bytes() == keys.value(i)
                                && e.loc.row_group == g as u32
                                && e.loc.row + e.loc.parts == row
                                && parts.value(i) == e.loc.parts
                        });
                        match last {
                            Some(e) => e.loc.parts += 1,
                            None => {
                                return Err(Error::Corrupt(format!(
                                    "{}: chunk {} of an object without its first chunk",
                                    path.display(),
                                    parts.value(i)
                                )))
                            }
                        }
                    }
                    row += 1;
                }
            }
        }
        for e in &out {
            let want = e.data_len.div_ceil(CHUNK as u64).max(1);
            if want != e.loc.parts as u64 {
                return Err(Error::Corrupt(format!(
                    "{}: {} has {} chunks, its length needs {want}",
                    path.display(),
                    e.key,
                    e.loc.parts
                )));
            }
        }
        Ok(out)
    })
}

/// Reads one object's data and metadata, checking its length and checksum.
pub(crate) fn read(
    path: &Path,
    md: &ArrowReaderMetadata,
    loc: RawLoc,
    data_len: u64,
) -> Result<(Vec<u8>, Vec<u8>)> {
    no_panic(&path.display().to_string(), || {
        let f = File::open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let b = ParquetRecordBatchReaderBuilder::new_with_metadata(f, md.clone());
        if loc.row_group as usize >= b.metadata().num_row_groups() {
            return Err(Error::Corrupt(format!(
                "{}: row group {} is missing",
                path.display(),
                loc.row_group
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
            .with_batch_size(loc.parts as usize)
            .build()?;
        let cap = usize::try_from(data_len)
            .map_err(|_| Error::Corrupt(format!("{}: absurd object length", path.display())))?;
        let mut data = Vec::with_capacity(cap);
        let mut meta = Vec::new();
        let mut checksum = None;
        let mut rows = 0;
        for batch in rd {
            let batch = batch?;
            let sums = col::<UInt64Array>(&batch, 0, path)?;
            let metas = col::<BinaryArray>(&batch, 1, path)?;
            let chunks = col::<BinaryArray>(&batch, 2, path)?;
            for i in 0..batch.num_rows() {
                if rows == 0 {
                    checksum = Some(sums.value(i));
                    meta.extend_from_slice(metas.value(i));
                }
                if data.len() + chunks.value(i).len() > cap {
                    return Err(Error::Corrupt(format!(
                        "{}: object longer than recorded",
                        path.display()
                    )));
                }
                data.extend_from_slice(chunks.value(i));
                rows += 1;
            }
            if chunks.null_count() > 0 {
                return Err(Error::Corrupt(format!("{}: null chunk", path.display())));
            }
        }
        if rows != loc.parts as usize || data.len() != cap {
            return Err(Error::Corrupt(format!(
                "{}: object truncated ({} of {} bytes)",
                path.display(),
                data.len(),
                cap
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

/// Reads every object of a raw file (for compaction), checking lengths and checksums.
pub(crate) fn read_all(path: &Path) -> Result<Vec<RawObject>> {
    let entries = scan(path)?;
    no_panic(&path.display().to_string(), || {
        let b = open(path, false)?;
        let groups = b.metadata().num_row_groups();
        let mut out: Vec<RawObject> = Vec::with_capacity(entries.len());
        let mut next = entries.into_iter().peekable();
        for g in 0..groups {
            let rd = open(path, false)?
                .with_projection(ProjectionMask::roots(
                    b.parquet_schema(),
                    [CHECKSUM, META, DATA],
                ))
                .with_row_groups(vec![g])
                .with_batch_size(1024)
                .build()?;
            let mut row = 0u32;
            let mut cur: Option<(RawEntry, u64, Vec<u8>, Vec<u8>)> = None;
            for batch in rd {
                let batch = batch?;
                let sums = col::<UInt64Array>(&batch, 0, path)?;
                let metas = col::<BinaryArray>(&batch, 1, path)?;
                let chunks = col::<BinaryArray>(&batch, 2, path)?;
                for i in 0..batch.num_rows() {
                    if cur.is_none() {
                        let e = next
                            .next_if(|e| e.loc.row_group == g as u32 && e.loc.row == row)
                            .ok_or_else(|| {
                                Error::Corrupt(format!("{}: rows out of order", path.display()))
                            })?;
                        let cap = usize::try_from(e.data_len).unwrap_or(usize::MAX);
                        cur = Some((
                            e,
                            sums.value(i),
                            Vec::with_capacity(cap.min(1 << 30)),
                            metas.value(i).to_vec(),
                        ));
                    }
                    let (e, _, data, _) = cur.as_mut().expect("set above");
                    data.extend_from_slice(chunks.value(i));
                    if data.len() as u64 > e.data_len {
                        return Err(Error::Corrupt(format!(
                            "{}: object longer than recorded",
                            path.display()
                        )));
                    }
                    row += 1;
                    if row == e.loc.row + e.loc.parts {
                        let (e, sum, data, meta) = cur.take().expect("set above");
                        if data.len() as u64 != e.data_len
                            || xxhash_rust::xxh3::xxh3_64(&data) != sum
                        {
                            return Err(Error::Corrupt(format!(
                                "{}: {} is damaged",
                                path.display(),
                                e.key
                            )));
                        }
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
        Ok(out)
    })
}
