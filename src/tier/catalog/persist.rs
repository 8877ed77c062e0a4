//! Crash-safe Parquet persistence: file naming, atomic writes, recovery and quarantine.
//!
//! Layout: `<catalog dir>/<partition>/snap-<seq>.parquet` and `.../delta-<seq>.parquet`, where
//! `<seq>` is a 16-digit hex number that increases over the whole catalog (never reused). A
//! partition's state is its newest readable snapshot plus every delta with a larger seq, applied
//! in seq order; the newest row for a key wins and a row with `_deleted = true` (a tombstone)
//! removes the key. Files older than the chosen snapshot are leftovers of a finished compaction
//! and are deleted at open. Temporary files (`.tmp-*`) are never read and are deleted at open.
//! Unreadable files are moved to `<catalog dir>/quarantine/` and reported.

use super::encoding::{writer_properties, Preset};
use super::schema::{from_batch, to_file_batch, CatalogEntry};
use crate::error::{Error, Result};
use crate::key::Key;
use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file moved aside because it could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedFile {
    /// Where the file was (relative to the catalog directory).
    pub original: PathBuf,
    /// Where it is now (under `quarantine/`), or `None` when it could not be moved.
    pub moved_to: Option<PathBuf>,
    /// Why it was rejected.
    pub reason: String,
}

/// What [`super::Catalog::open`] found on disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecoveryReport {
    /// Partitions found.
    pub partitions: usize,
    /// Catalog files read successfully.
    pub files_loaded: usize,
    /// Live entries after recovery.
    pub entries: usize,
    /// Files that could not be read and were quarantined (their rows are lost unless a newer
    /// file holds them). Empty on a clean open.
    pub quarantined: Vec<QuarantinedFile>,
    /// Leftover temporary files and superseded files that were deleted.
    pub removed_files: usize,
}

/// One catalog file of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub seq: u64,
    pub snapshot: bool,
    pub path: PathBuf,
}

pub(crate) fn file_name(seq: u64, snapshot: bool) -> String {
    format!(
        "{}-{seq:016x}.parquet",
        if snapshot { "snap" } else { "delta" }
    )
}

pub(crate) fn parse_file_name(name: &str) -> Option<(u64, bool)> {
    let stem = name.strip_suffix(".parquet")?;
    let (snapshot, hex) = if let Some(h) = stem.strip_prefix("snap-") {
        (true, h)
    } else {
        (false, stem.strip_prefix("delta-")?)
    };
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(|s| (s, snapshot))
}

/// True for a partition directory name (`<strategy>=<value>`).
pub(crate) fn is_partition_dir(name: &str) -> bool {
    name.contains('=') && !name.starts_with('.')
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

/// Creates `dir` (and its parents) with mode 0700, like the rest of the store's files, and
/// restricts an existing one to it.
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))
}

pub(crate) fn pq_err(what: &str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("{what} {}: {e}", path.display()))
}

/// Writes `batch` as Parquet to `dir/name` crash-safely: a temporary file in the same
/// directory, fsync, rename, fsync of the directory. Returns the file size.
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    batch: &RecordBatch,
    preset: Preset,
) -> Result<u64> {
    let tmp = dir.join(format!(".tmp-{name}"));
    let dst = dir.join(name);
    let res = (|| -> Result<u64> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let props = writer_properties(preset, batch.num_rows());
        let mut w = ArrowWriter::try_new(f, batch.schema(), Some(props))
            .map_err(|e| pq_err("start writing", &tmp, e))?;
        w.write(batch).map_err(|e| pq_err("write", &tmp, e))?;
        let mut f = w.into_inner().map_err(|e| pq_err("finish", &tmp, e))?;
        f.flush()
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(format!("fsync {}", tmp.display()), e))?;
        let len = f
            .metadata()
            .map_err(|e| Error::io(format!("stat {}", tmp.display()), e))?
            .len();
        fs::rename(&tmp, &dst)
            .map_err(|e| Error::io(format!("rename {} to {}", tmp.display(), dst.display()), e))?;
        fsync_dir(dir)?;
        Ok(len)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Writes entries (tombstones when `deleted`) to `dir/name`; see [`write_atomic`].
pub(crate) fn write_entries(
    dir: &Path,
    name: &str,
    entries: &[&CatalogEntry],
    deleted: bool,
    preset: Preset,
) -> Result<u64> {
    let batch = to_file_batch(entries, deleted)?;
    write_atomic(dir, name, &batch, preset)
}

/// Largest uncompressed page a catalog file may hold. The writer closes pages at a few thousand
/// rows and a row is bounded by what one upsert frame can carry (64 MiB), so real pages stay far
/// below; a page claiming more is damage (or a decompression bomb), never decoded.
pub(crate) const MAX_PAGE: u64 = 256 << 20;

/// Opens a catalog file for decoding after checking it (`crate::tier::parquet_guard`: footer,
/// schema depth, every page header against [`MAX_PAGE`]), so that no declared size allocates.
pub(crate) fn open_checked(
    path: &Path,
    opts: parquet::arrow::arrow_reader::ArrowReaderOptions,
) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let f = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    crate::tier::parquet_guard::footer(&f, path)?;
    let b = ParquetRecordBatchReaderBuilder::try_new_with_options(f, opts)
        .map_err(|e| pq_err("read footer of", path, e))?;
    let f2 = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    crate::tier::parquet_guard::pages(&f2, path, b.metadata(), None, None, MAX_PAGE)?;
    Ok(b)
}

/// Reads a whole catalog file into `(entry, deleted)` rows; any defect is an error (and a
/// decoder panic is one too). A key appearing twice is a defect (no writer repeats one in a
/// file), which bounds the rows decoded by the keys the file really holds.
pub(crate) fn read_file(path: &Path) -> Result<Vec<(CatalogEntry, bool)>> {
    crate::tier::warm::files::no_panic(&path.display().to_string(), || {
        let reader = open_checked(path, Default::default())?
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| pq_err("open", path, e))?;
        let mut out = Vec::new();
        let mut seen: std::collections::HashSet<Key, super::KeyHashBuilder> =
            std::collections::HashSet::with_hasher(super::KeyHashBuilder);
        for batch in reader {
            let batch = batch.map_err(|e| pq_err("decode", path, e))?;
            let rows = from_batch(&batch).map_err(|e| pq_err("decode", path, e.message()))?;
            for (e, _) in &rows {
                if !seen.insert(e.key) {
                    return Err(pq_err("decode", path, format!("{} appears twice", e.key)));
                }
            }
            out.extend(rows);
        }
        Ok(out)
    })
}

/// Lists a partition directory: catalog files sorted by seq, and deletes temporary files.
pub(crate) fn list_partition(dir: &Path, removed: &mut usize) -> Result<Vec<FileRef>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    let mut files = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(".tmp-") {
            if fs::remove_file(ent.path()).is_ok() {
                *removed += 1;
            }
            continue;
        }
        if let Some((seq, snapshot)) = parse_file_name(name) {
            files.push(FileRef {
                seq,
                snapshot,
                path: ent.path(),
            });
        }
    }
    files.sort_by_key(|f| f.seq);
    Ok(files)
}

/// Lists a partition's active files (newest snapshot and the deltas after it) without reading
/// them or changing anything; used by persisted scans.
pub(crate) fn active_files(dir: &Path) -> Result<Vec<FileRef>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
    let mut files: Vec<FileRef> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let (seq, snapshot) = parse_file_name(name.to_str()?)?;
            Some(FileRef {
                seq,
                snapshot,
                path: e.path(),
            })
        })
        .collect();
    files.sort_by_key(|f| f.seq);
    let start = files.iter().rposition(|f| f.snapshot).unwrap_or(0);
    Ok(files.split_off(start))
}

/// Moves an unreadable file to `<catalog dir>/quarantine/<partition>__<file>`.
pub(crate) fn quarantine(catalog_dir: &Path, path: &Path, reason: String) -> QuarantinedFile {
    let original = path.strip_prefix(catalog_dir).unwrap_or(path).to_path_buf();
    let qdir = catalog_dir.join("quarantine");
    let flat = original.to_string_lossy().replace(['/', '\\'], "__");
    let target = qdir.join(flat);
    let moved_to = fs::create_dir_all(&qdir)
        .and_then(|_| fs::rename(path, &target))
        .ok()
        .map(|_| target);
    tracing::warn!(file = %path.display(), %reason, "catalog file quarantined");
    QuarantinedFile {
        original,
        moved_to,
        reason,
    }
}

/// A recovered partition.
pub(crate) struct LoadedPartition {
    pub name: String,
    /// Live rows with the seq of the file they came from.
    pub rows: Vec<(CatalogEntry, u64)>,
    /// Files that are now active (snapshot first).
    pub files: Vec<FileRef>,
    pub files_loaded: usize,
    pub quarantined: Vec<QuarantinedFile>,
    pub removed: usize,
}

/// Recovers one partition: newest readable snapshot, then newer deltas in order.
pub(crate) fn load_partition(catalog_dir: &Path, name: &str) -> Result<LoadedPartition> {
    let dir = catalog_dir.join(name);
    let mut removed = 0;
    let files = list_partition(&dir, &mut removed)?;
    let mut quarantined = Vec::new();
    let mut files_loaded = 0;
    let mut live: HashMap<Key, (CatalogEntry, u64), super::KeyHashBuilder> =
        HashMap::with_hasher(super::KeyHashBuilder);
    // Newest readable snapshot.
    let mut base: Option<usize> = None;
    for (i, f) in files.iter().enumerate().rev().filter(|(_, f)| f.snapshot) {
        match read_file(&f.path) {
            Ok(rows) => {
                files_loaded += 1;
                live.reserve(rows.len());
                for (e, del) in rows {
                    if del {
                        live.remove(&e.key);
                    } else {
                        live.insert(e.key, (e, f.seq));
                    }
                }
                base = Some(i);
                break;
            }
            Err(e) => quarantined.push(quarantine(catalog_dir, &f.path, e.message())),
        }
    }
    let base_seq = base.map(|i| files[i].seq);
    let mut active = Vec::new();
    if let Some(i) = base {
        active.push(files[i].clone());
    }
    for f in &files {
        if quarantined
            .iter()
            .any(|q| catalog_dir.join(&q.original) == f.path)
        {
            continue;
        }
        match base_seq {
            Some(b) if f.seq < b => {
                // Superseded by the snapshot (a compaction finished but had not cleaned up).
                if fs::remove_file(&f.path).is_ok() {
                    removed += 1;
                }
                continue;
            }
            Some(b) if f.seq == b => continue,
            _ => {}
        }
        if f.snapshot {
            continue; // only reachable without a base; older snapshots were unreadable
        }
        match read_file(&f.path) {
            Ok(rows) => {
                files_loaded += 1;
                live.reserve(rows.len());
                for (e, del) in rows {
                    if del {
                        live.remove(&e.key);
                    } else {
                        live.insert(e.key, (e, f.seq));
                    }
                }
                active.push(f.clone());
            }
            Err(e) => quarantined.push(quarantine(catalog_dir, &f.path, e.message())),
        }
    }
    Ok(LoadedPartition {
        name: name.to_string(),
        rows: live.into_values().collect(),
        files: active,
        files_loaded,
        quarantined,
        removed,
    })
}

/// The partition directory names under `catalog_dir` (sorted).
pub(crate) fn partition_names(catalog_dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(catalog_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("list {}", catalog_dir.display()), e)),
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_partition_dir(n))
        .collect();
    names.sort();
    Ok(names)
}

/// Runs `f` on every item with up to `threads` scoped threads (items taken in order from a
/// shared counter); results come back in item order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= items.len() {
                            break out;
                        }
                        out.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The number of threads "one per core" means here.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    #[test]
    fn parallel_map_runs_items_concurrently_and_keeps_order() {
        // Each item waits (up to 5 s) until both items have started: only possible when they
        // run on two threads at once.
        let started = AtomicUsize::new(0);
        let out = parallel_map(&[10, 20], 2, |&x| {
            started.fetch_add(1, Ordering::SeqCst);
            let t = Instant::now();
            while started.load(Ordering::SeqCst) < 2 && t.elapsed() < Duration::from_secs(5) {
                std::thread::yield_now();
            }
            (x, started.load(Ordering::SeqCst) == 2)
        });
        assert_eq!(out, vec![(10, true), (20, true)]);
        let serial = parallel_map(&[1, 2, 3], 1, |&x| x * 2);
        assert_eq!(serial, vec![2, 4, 6]);
        let many: Vec<usize> = (0..100).collect();
        assert_eq!(
            parallel_map(&many, 3, |&x| x + 1),
            (1..101).collect::<Vec<_>>()
        );
    }

    #[test]
    fn file_names_round_trip() {
        for (seq, snap) in [(1u64, true), (0xabc, false), (u64::MAX, true)] {
            assert_eq!(parse_file_name(&file_name(seq, snap)), Some((seq, snap)));
        }
        for bad in [
            "snap-1.parquet",
            "delta-000000000000000g.parquet",
            "x.parquet",
            ".tmp-snap-0000000000000001.parquet",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }
}
