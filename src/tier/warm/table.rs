//! The warm tier's layout for Arrow objects: one Parquet file per object, with the object's own
//! schema, so that any Parquet reader (pyarrow, DuckDB, Spark) sees the table itself.
//!
//! Each record batch of the object becomes one row group (so promotion rebuilds the same
//! batches), the Arrow schema is embedded (`ARROW:schema`, so dictionary and other Arrow-only
//! types come back exactly), and the file's key-value metadata carries what the cache needs:
//! `cidcache.key` (hex), `cidcache.meta` (hex of the object's metadata bytes), `cidcache.flags`,
//! `cidcache.ipc_len` (the object's size in shared memory) and `cidcache.batch_rows` (rows of
//! each batch, so empty batches survive too).
//!
//! Promotion decodes row groups and columns in parallel, one task per (row group, column set),
//! on every core.

use super::files::no_panic;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::tier::parquet_guard;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Schema, SchemaRef};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

const K_KEY: &str = "cidcache.key";
const K_META: &str = "cidcache.meta";
const K_FLAGS: &str = "cidcache.flags";
const K_IPC_LEN: &str = "cidcache.ipc_len";
const K_ROWS: &str = "cidcache.batch_rows";

/// What the footer says about the object in an Arrow file.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub key: Key,
    pub meta: Vec<u8>,
    pub flags: u32,
    pub ipc_len: u64,
    batch_rows: Vec<usize>,
}

/// Lower-case hex of `b`.
pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a lower-case or upper-case hex string; `None` when it is not hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes an Arrow object (its schema and batches) as a Parquet file.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    file: File,
    props: WriterProperties,
    key: &Key,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    meta: &[u8],
    flags: u32,
    ipc_len: u64,
    extra: Option<(String, String)>,
) -> Result<File> {
    let err = |e: parquet::errors::ParquetError| {
        Error::io(
            "cannot write an Arrow object to the warm tier",
            std::io::Error::other(e),
        )
    };
    let handle = file
        .try_clone()
        .map_err(|e| Error::io("cannot write an Arrow object to the warm tier", e))?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(err)?;
    for b in batches {
        w.write(b).map_err(err)?;
        // One row group per batch: promotion gives the same batches back.
        w.flush().map_err(err)?;
    }
    let rows: Vec<String> = batches.iter().map(|b| b.num_rows().to_string()).collect();
    for (k, v) in [
        (K_KEY, hex(key.as_bytes())),
        (K_META, hex(meta)),
        (K_FLAGS, flags.to_string()),
        (K_IPC_LEN, ipc_len.to_string()),
        (K_ROWS, rows.join(",")),
    ] {
        w.append_key_value_metadata(KeyValue::new(k.to_string(), v));
    }
    if let Some((k, v)) = extra {
        w.append_key_value_metadata(KeyValue::new(k, v));
    }
    w.close().map_err(err)?;
    Ok(handle)
}

/// Gives every dictionary column of `batches` one shared dictionary (an Arrow IPC file allows
/// only one per field): the Parquet reader builds a dictionary per row group.
pub(crate) fn unify_dictionaries(schema: &SchemaRef, batches: &mut [RecordBatch]) -> Result<()> {
    let nonempty: Vec<usize> = (0..batches.len())
        .filter(|&i| batches[i].num_rows() > 0)
        .collect();
    if nonempty.len() < 2 {
        return Ok(());
    }
    for (c, f) in schema.fields().iter().enumerate() {
        if !matches!(f.data_type(), arrow_schema::DataType::Dictionary(..)) {
            continue;
        }
        let parts: Vec<&dyn arrow_array::Array> = nonempty
            .iter()
            .map(|&i| batches[i].column(c).as_ref())
            .collect();
        let whole = arrow_select::concat::concat(&parts)?;
        let mut off = 0;
        // Empty batches too: a dictionary of their own would also be a replacement.
        for b in batches.iter_mut() {
            let n = b.num_rows();
            let mut cols = b.columns().to_vec();
            cols[c] = whole.slice(off, n);
            off += n;
            *b = RecordBatch::try_new(schema.clone(), cols)?;
        }
    }
    Ok(())
}

/// The fewest bits a row of a column of type `dt` takes in an Arrow IPC file (its value or
/// offset buffers; 0 where rows can take no space, such as `Null`).
fn min_row_bits(dt: &arrow_schema::DataType) -> u64 {
    use arrow_schema::DataType::*;
    match dt {
        Boolean => 1,
        Int8 | UInt8 => 8,
        Int16 | UInt16 | Float16 => 16,
        Int32 | UInt32 | Float32 | Date32 | Time32(_) | Utf8 | Binary | List(_) | Map(..) => 32,
        Int64 | UInt64 | Float64 | Date64 | Time64(_) | Timestamp(..) | Duration(_) | LargeUtf8
        | LargeBinary | LargeList(_) => 64,
        Utf8View | BinaryView => 128,
        FixedSizeBinary(n) => 8 * (*n).max(0) as u64,
        FixedSizeList(f, n) => ((*n).max(0) as u64).saturating_mul(min_row_bits(f.data_type())),
        Struct(fields) => fields
            .iter()
            .fold(0u64, |a, f| a.saturating_add(min_row_bits(f.data_type()))),
        Dictionary(k, _) => min_row_bits(k),
        _ => 0,
    }
}

/// Checks what the footer declares against the operator's limit before anything is decoded:
/// the object's size, its batch count, and its rows (each row takes at least
/// [`min_row_bits`] of the object's size, so a file cannot declare billions of rows and have
/// the decoder allocate for them).
fn check_declared(
    path: &Path,
    md: &ArrowReaderMetadata,
    info: &TableInfo,
    max_object: u64,
) -> Result<()> {
    let bad = |what: String| Err(Error::Corrupt(format!("{}: {what}", path.display())));
    if info.ipc_len > max_object || info.meta.len() as u64 > max_object {
        return bad(format!(
            "declares an object of {} + {} bytes, more than the hot tier's {max_object}",
            info.ipc_len,
            info.meta.len()
        ));
    }
    // Every batch is a message of more than 64 bytes in the object.
    if info.batch_rows.len() as u64 > 1 + info.ipc_len / 64 {
        return bad(format!(
            "{} batches cannot fit {} bytes",
            info.batch_rows.len(),
            info.ipc_len
        ));
    }
    let rows: u64 = info
        .batch_rows
        .iter()
        .fold(0u64, |a, &r| a.saturating_add(r as u64));
    let bits = md
        .schema()
        .fields()
        .iter()
        .fold(0u64, |a, f| a.saturating_add(min_row_bits(f.data_type())));
    let fits = if bits > 0 {
        rows.saturating_mul(bits) / 8 <= info.ipc_len
    } else {
        // Rows that take no space still cost the decoder a level (2 bytes) each.
        rows.saturating_mul(2) <= max_object
    };
    if !fits {
        return bad(format!(
            "{rows} rows cannot fit an object of {} bytes",
            info.ipc_len
        ));
    }
    Ok(())
}

fn load_meta(path: &Path, max_object: u64) -> Result<(File, ArrowReaderMetadata, TableInfo)> {
    let f =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    parquet_guard::footer(&f, path)?;
    let md = ArrowReaderMetadata::load(&f, ArrowReaderOptions::new())?;
    let kv: HashMap<&str, &str> = md
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|v| {
            v.iter()
                .filter_map(|kv| Some((kv.key.as_str(), kv.value.as_deref()?)))
                .collect()
        })
        .unwrap_or_default();
    let bad = |what: &str| Error::Corrupt(format!("{}: {what}", path.display()));
    let key = kv
        .get(K_KEY)
        .and_then(|s| unhex(s))
        .and_then(|b| Key::new(&b).ok())
        .ok_or_else(|| bad("no valid cidcache.key"))?;
    let meta = kv
        .get(K_META)
        .and_then(|s| unhex(s))
        .ok_or_else(|| bad("no valid cidcache.meta"))?;
    let flags = kv
        .get(K_FLAGS)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no valid cidcache.flags"))?;
    let ipc_len = kv
        .get(K_IPC_LEN)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no valid cidcache.ipc_len"))?;
    let batch_rows: Vec<usize> = match kv.get(K_ROWS) {
        Some(&"") => Vec::new(),
        Some(s) => s
            .split(',')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()
            .ok_or_else(|| bad("invalid cidcache.batch_rows"))?,
        None => return Err(bad("no cidcache.batch_rows")),
    };
    let groups: Vec<usize> = md
        .metadata()
        .row_groups()
        .iter()
        .map(|g| g.num_rows() as usize)
        .collect();
    let nonempty: Vec<usize> = batch_rows.iter().copied().filter(|&r| r > 0).collect();
    if nonempty != groups {
        return Err(bad("row groups do not match the recorded batches"));
    }
    let info = TableInfo {
        key,
        meta,
        flags,
        ipc_len,
        batch_rows,
    };
    check_declared(path, &md, &info, max_object)?;
    Ok((f, md, info))
}

/// The largest uncompressed page a table of up to `max_object` bytes can hold (a page holds
/// part of one column of the object, encoded about as compactly as in Arrow IPC).
fn max_page(max_object: u64) -> u64 {
    max_object.saturating_add(8 << 20)
}

/// Reads only the footer of an Arrow file, checked against `max_object` (the largest object
/// the hot tier can hold).
pub(crate) fn info(path: &Path, max_object: u64) -> Result<TableInfo> {
    no_panic(&path.display().to_string(), || {
        load_meta(path, max_object).map(|(_, _, i)| i)
    })
}

/// Reads an Arrow object back: its schema (as it was put) and its batches (same boundaries).
/// Row groups and column sets are decoded in parallel on up to `threads` threads.
pub(crate) fn read(
    path: &Path,
    threads: usize,
    max_object: u64,
) -> Result<(SchemaRef, Vec<RecordBatch>, TableInfo)> {
    no_panic(&path.display().to_string(), || {
        let (f, md, info) = load_meta(path, max_object)?;
        parquet_guard::pages(&f, path, md.metadata(), None, None, max_page(max_object))?;
        // The reader folds the file's key-value metadata into the schema's; the object's own
        // schema is the embedded Arrow schema without ours.
        let mut schema_md = md.schema().metadata().clone();
        schema_md.retain(|k, _| !k.starts_with("cidcache."));
        let schema: SchemaRef = Arc::new(Schema::new_with_metadata(
            md.schema().fields().clone(),
            schema_md,
        ));
        let groups = md.metadata().num_row_groups();
        let ncols = schema.fields().len();
        let threads = threads.max(1);
        // Split columns into sets so that there are about `threads` tasks per row group when
        // there are few row groups.
        let sets = if groups >= threads || ncols == 0 {
            1
        } else {
            threads.min(ncols)
        };
        let col_sets: Vec<Vec<usize>> = (0..sets)
            .map(|s| (0..ncols).filter(|c| c % sets == s).collect())
            .collect();
        let tasks: Vec<(usize, usize)> = (0..groups)
            .flat_map(|g| (0..col_sets.len()).map(move |s| (g, s)))
            .collect();
        let results: Mutex<Vec<Option<Result<Vec<ArrayRef>>>>> =
            Mutex::new((0..tasks.len()).map(|_| None).collect());
        let next = AtomicUsize::new(0);
        let worker = || loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(g, s)) = tasks.get(t) else { break };
            let r = (|| -> Result<Vec<ArrayRef>> {
                // A file of its own: a dup'ed descriptor shares the file offset, and the reader
                // seeks and reads.
                let file = File::open(path)
                    .map_err(|e| Error::io(format!("cannot reopen {}", path.display()), e))?;
                let b = ParquetRecordBatchReaderBuilder::new_with_metadata(file, md.clone());
                let mask = ProjectionMask::roots(b.parquet_schema(), col_sets[s].iter().copied());
                let rows = md.metadata().row_group(g).num_rows() as usize;
                let rd = b
                    .with_projection(mask)
                    .with_row_groups(vec![g])
                    .with_batch_size(rows.max(1))
                    .build()?;
                let mut out: Option<RecordBatch> = None;
                for batch in rd {
                    if out.is_some() {
                        return Err(Error::Corrupt(format!(
                            "{}: row group {g} decoded into several batches",
                            path.display()
                        )));
                    }
                    out = Some(batch?);
                }
                let out = out.ok_or_else(|| {
                    Error::Corrupt(format!("{}: row group {g} is empty", path.display()))
                })?;
                if out.num_rows() != rows {
                    return Err(Error::Corrupt(format!(
                        "{}: row group {g} is short",
                        path.display()
                    )));
                }
                Ok(out.columns().to_vec())
            })();
            results.lock().unwrap_or_else(|p| p.into_inner())[t] = Some(r);
        };
        std::thread::scope(|sc| {
            for _ in 1..threads.min(tasks.len()) {
                sc.spawn(worker);
            }
            worker();
        });
        let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut batches = Vec::with_capacity(info.batch_rows.len());
        let mut g = 0;
        for &rows in &info.batch_rows {
            if rows == 0 {
                batches.push(RecordBatch::new_empty(schema.clone()));
                continue;
            }
            let mut cols: Vec<Option<ArrayRef>> = vec![None; ncols];
            for (s, set) in col_sets.iter().enumerate() {
                let r = results[g * col_sets.len() + s]
                    .take()
                    .ok_or_else(|| Error::Internal("a decode task did not run".into()))??;
                for (c, a) in set.iter().zip(r) {
                    cols[*c] = Some(a);
                }
            }
            let cols: Vec<ArrayRef> = cols
                .into_iter()
                .map(|c| c.ok_or_else(|| Error::Internal("a column was not decoded".into())))
                .collect::<Result<_>>()?;
            batches.push(RecordBatch::try_new_with_options(
                schema.clone(),
                cols,
                &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
            )?);
            g += 1;
        }
        Ok((schema, batches, info))
    })
}

/// What a warm scan read and skipped.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ScanReport {
    pub row_groups: usize,
    pub row_groups_skipped: usize,
    pub rows_skipped_by_pages: usize,
}

/// Reads the rows of an Arrow file that satisfy `scan`'s predicates, only the columns it
/// needs: row groups are skipped by their statistics, pages inside the others by the page index
/// (a row selection), and the remaining rows filtered exactly.
pub(crate) fn scan(
    path: &Path,
    scan: &crate::scan::Scan,
    max_object: u64,
) -> Result<(SchemaRef, Vec<RecordBatch>, ScanReport)> {
    use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
    use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
    no_panic(&path.display().to_string(), || {
        let (f, _, _) = load_meta(path, max_object)?;
        let md = ArrowReaderMetadata::load(
            &f,
            ArrowReaderOptions::new()
                .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional),
        )?;
        parquet_guard::pages(&f, path, md.metadata(), None, None, max_page(max_object))?;
        let mut schema_md = md.schema().metadata().clone();
        schema_md.retain(|k, _| !k.starts_with("cidcache."));
        let schema = Arc::new(Schema::new_with_metadata(
            md.schema().fields().clone(),
            schema_md,
        ));
        let proj = scan.projection(&schema)?;
        let fcols = scan.filter_columns(&schema)?;
        let pq = md.metadata();
        let groups = pq.row_groups();
        let mut report = ScanReport {
            row_groups: groups.len(),
            ..ScanReport::default()
        };
        let mut keep_groups = Vec::new();
        let mut selectors: Vec<RowSelector> = Vec::new();
        for g in 0..groups.len() {
            let rows = groups[g].num_rows() as usize;
            let mut keep = true;
            let mut sel = RowSelection::from(vec![RowSelector::select(rows)]);
            for p in &scan.filters {
                let Ok(conv) =
                    StatisticsConverter::try_new(&p.column, &schema, md.parquet_schema())
                else {
                    continue;
                };
                if let (Ok(lo), Ok(hi)) = (
                    conv.row_group_mins(std::iter::once(&groups[g])),
                    conv.row_group_maxes(std::iter::once(&groups[g])),
                ) {
                    if lo.len() == 1 && !crate::scan::Scan::may_match(p, &lo, &hi, 0) {
                        keep = false;
                        break;
                    }
                }
                // Pages: one selector run per page of the predicate's column.
                let Some(pi) = pq.page_index() else { continue };
                let pages = (
                    conv.data_page_mins(pi.as_ref(), std::iter::once(&g)),
                    conv.data_page_maxes(pi.as_ref(), std::iter::once(&g)),
                    conv.data_page_row_counts(pi.as_ref(), groups, std::iter::once(&g)),
                );
                if let (Ok(lo), Ok(hi), Ok(Some(counts))) = pages {
                    if counts.len() == lo.len()
                        && counts.values().iter().sum::<u64>() as usize == rows
                    {
                        let runs: Vec<RowSelector> = (0..lo.len())
                            .map(|i| {
                                let n = counts.value(i) as usize;
                                if crate::scan::Scan::may_match(p, &lo, &hi, i) {
                                    RowSelector::select(n)
                                } else {
                                    RowSelector::skip(n)
                                }
                            })
                            .collect();
                        sel = sel.intersection(&RowSelection::from(runs));
                    }
                }
            }
            if !keep {
                report.row_groups_skipped += 1;
                continue;
            }
            let selected = sel.row_count();
            report.rows_skipped_by_pages += rows.saturating_sub(selected);
            keep_groups.push(g);
            selectors.extend(Vec::<RowSelector>::from(sel));
        }
        // Decode the projected and predicate columns only.
        let mut need: Vec<usize> = proj.iter().chain(&fcols).copied().collect();
        need.sort_unstable();
        need.dedup();
        let read_schema = Arc::new(schema.project(&need)?);
        let mut batches = Vec::new();
        if !keep_groups.is_empty() {
            let b = ParquetRecordBatchReaderBuilder::new_with_metadata(
                f.try_clone()
                    .map_err(|e| Error::io("cannot reopen a warm-tier file", e))?,
                md.clone(),
            );
            let mask = ProjectionMask::roots(b.parquet_schema(), need.iter().copied());
            let rd = b
                .with_projection(mask)
                .with_row_groups(keep_groups)
                .with_row_selection(RowSelection::from(selectors))
                .with_batch_size(64 * 1024)
                .build()?;
            for batch in rd {
                let batch = batch?.with_schema(read_schema.clone())?;
                batches.push(batch);
            }
        }
        let out_proj: Vec<usize> = proj
            .iter()
            .map(|c| {
                need.iter()
                    .position(|n| n == c)
                    .expect("projected column read")
            })
            .collect();
        let (_, mut out) = scan.apply(&read_schema, &batches)?;
        // `apply` projected with the requested names already; keep the object's field order
        // for the schema of the result.
        let out_schema = Arc::new(schema.project(&proj)?);
        let _ = out_proj;
        for b in &mut out {
            *b = b.clone().with_schema(out_schema.clone())?;
        }
        unify_dictionaries(&out_schema, &mut out)?;
        Ok((out_schema, out, report))
    })
}
