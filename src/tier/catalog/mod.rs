//! The CID metadata catalog: per-key metadata held in memory for point lookups and batch
//! upserts, persisted as partitioned Parquet (snapshots + deltas, crash-safe, compacted
//! automatically), and queryable in memory or over the persisted files.
//!
//! # Concurrency
//! [`Catalog`] is **not** internally synchronized: it is a plain single-owner structure
//! (`Send`, `&mut self` for every mutation). The coordinator holds it under its own lock.
//!
//! # In-memory layout
//! Rows are kept in a dense `Vec` (removal swaps the last row in), indexed by a hash map from
//! [`Key`] to row number, hashed with xxh3 (no per-lookup allocation; absent optional strings
//! cost nothing). Each row carries a dirty flag and the partition it is persisted in, so a
//! checkpoint writes only what changed since the last one.
//!
//! # Persistence
//! The file layout and recovery rules are described in `docs/catalog.md`.
//! A checkpoint writes, per partition with changes, one delta of live rows, then (in a second
//! phase) one delta of tombstones for keys removed or moved to another partition; a crash
//! between the two phases leaves a key live in two partitions, and recovery keeps the copy from
//! the newer file and tombstones the other at the next checkpoint. A partition with
//! [`CatalogOptions::max_deltas`] deltas is compacted into a new snapshot.

mod encoding;
mod partition;
mod persist;
mod query;
mod schema;

pub use encoding::Preset;
pub use partition::PartitionStrategy;
pub(crate) use persist::read_file as read_catalog_file;
pub use persist::{QuarantinedFile, RecoveryReport};
pub use query::{
    format_table, output_schema, scan_persisted, write_ipc, write_output, write_parquet, CmpOp,
    Filter, Literal, OutputFormat, Query, ScanReport,
};
pub use schema::{catalog_schema, CatalogEntry, Column, StorageTier, SCHEMA_VERSION};

use crate::error::{Error, Result};
use crate::key::Key;
use arrow_array::RecordBatch;
use persist::FileRef;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};

/// xxh3-based hasher for [`Key`] (the derived `Hash` feeds the length and the padded bytes).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeyHashBuilder;

pub(crate) struct KeyHasher(u64);

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0x9e37_79b9_7f4a_7c15)
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (self.0 ^ n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

const NO_PART: u32 = u32::MAX;

/// How a persistent catalog is stored and maintained.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogOptions {
    /// Partitioning of the files (default: none, one partition).
    pub strategy: PartitionStrategy,
    /// Encoding/compression preset (default: balanced).
    pub preset: Preset,
    /// A partition with this many delta files is compacted into a new snapshot at the next
    /// checkpoint (default 8; minimum 1).
    pub max_deltas: usize,
    /// Half-life of `heat_score`, µs (default one hour).
    pub heat_half_life_us: i64,
    /// Threads for recovery and persisted scans; 0 = one per core (default).
    pub threads: usize,
}

impl Default for CatalogOptions {
    fn default() -> Self {
        CatalogOptions {
            strategy: PartitionStrategy::None,
            preset: Preset::Balanced,
            max_deltas: 8,
            heat_half_life_us: 3_600_000_000,
            threads: 0,
        }
    }
}

/// What a checkpoint or compaction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckpointStats {
    /// Live rows written to delta files.
    pub rows_written: usize,
    /// Tombstone rows written.
    pub tombstones_written: usize,
    /// Files created (deltas and snapshots).
    pub files_written: usize,
    /// Bytes of the files created.
    pub bytes_written: u64,
    /// Partitions compacted into a new snapshot.
    pub partitions_compacted: usize,
}

struct Row {
    entry: CatalogEntry,
    /// Partition (index into `parts`) whose files hold this key live, or `NO_PART`.
    part: u32,
    dirty: bool,
}

/// One file to write: the rows `idxs` (sorted by key) of partition `pid`.
struct WriteJob {
    pid: u32,
    dir: PathBuf,
    seq: u64,
    idxs: Vec<usize>,
}

/// Sorts row numbers by key bytes (lexicographic), without chasing rows for most comparisons:
/// the first 16 key bytes, zero-padded and read big-endian, order keys consistently with
/// lexicographic order whenever they differ; ties fall back to the full keys.
fn sort_rows_by_key(rows: &[Row], idxs: &mut Vec<usize>) {
    let mut tagged: Vec<(u128, usize)> = idxs
        .iter()
        .map(|&i| {
            let b = rows[i].entry.key.as_bytes();
            let mut p = [0u8; 16];
            let n = b.len().min(16);
            p[..n].copy_from_slice(&b[..n]);
            (u128::from_be_bytes(p), i)
        })
        .collect();
    tagged.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            rows[a.1]
                .entry
                .key
                .as_bytes()
                .cmp(rows[b.1].entry.key.as_bytes())
        })
    });
    idxs.clear();
    idxs.extend(tagged.into_iter().map(|(_, i)| i));
}

struct PartState {
    name: String,
    /// Active files, oldest first (a snapshot, if any, comes first).
    files: Vec<FileRef>,
}

/// The in-memory catalog, optionally backed by a directory of Parquet files.
///
/// Not thread-safe internally (see the module docs): wrap it in the coordinator's lock.
pub struct Catalog {
    map: HashMap<Key, u32, KeyHashBuilder>,
    rows: Vec<Row>,
    /// Tombstones to write at the next checkpoint: (key, partition).
    tombs: Vec<(Key, u32)>,
    parts: Vec<PartState>,
    part_ids: HashMap<String, u32>,
    dir: Option<PathBuf>,
    opts: CatalogOptions,
    next_seq: u64,
    dirty: usize,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog::new()
    }
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("entries", &self.rows.len())
            .field("dir", &self.dir)
            .field("partitions", &self.parts.len())
            .field("pending_changes", &self.pending_changes())
            .finish()
    }
}

impl Catalog {
    /// An empty, memory-only catalog (checkpoints fail with `InvalidArgument`).
    pub fn new() -> Catalog {
        Catalog::with_options(CatalogOptions::default())
    }

    fn with_options(opts: CatalogOptions) -> Catalog {
        Catalog {
            map: HashMap::with_hasher(KeyHashBuilder),
            rows: Vec::new(),
            tombs: Vec::new(),
            parts: Vec::new(),
            part_ids: HashMap::new(),
            dir: None,
            opts,
            next_seq: 1,
            dirty: 0,
        }
    }

    /// Opens (creating if needed) the catalog persisted in `dir` (e.g. `<data_dir>/catalog`)
    /// and recovers it: every partition's newest readable snapshot plus newer deltas,
    /// partitions in parallel. Unreadable files are quarantined and listed in the report;
    /// they never make this fail. Errors only when the directory itself cannot be created or
    /// listed, or `opts` is invalid.
    pub fn open(dir: &Path, opts: CatalogOptions) -> Result<(Catalog, RecoveryReport)> {
        if opts.heat_half_life_us <= 0 {
            return Err(Error::InvalidArgument(
                "heat_half_life_us must be positive".into(),
            ));
        }
        persist::create_dir(dir)?;
        let names = persist::partition_names(dir)?;
        let threads = if opts.threads == 0 {
            persist::cores()
        } else {
            opts.threads
        };
        let loaded = persist::parallel_map(&names, threads, |n| persist::load_partition(dir, n));
        let mut cat = Catalog::with_options(opts);
        cat.dir = Some(dir.to_path_buf());
        let mut report = RecoveryReport {
            partitions: names.len(),
            ..Default::default()
        };
        let mut seqs: Vec<u64> = Vec::new();
        let mut max_seq = 0u64;
        let loaded: Vec<persist::LoadedPartition> = loaded.into_iter().collect::<Result<_>>()?;
        let total: usize = loaded.iter().map(|lp| lp.rows.len()).sum();
        cat.map.reserve(total);
        cat.rows.reserve(total);
        seqs.reserve(total);
        for lp in loaded {
            report.files_loaded += lp.files_loaded;
            report.removed_files += lp.removed;
            for q in &lp.quarantined {
                if let Some(name) = q.original.file_name().and_then(|n| n.to_str()) {
                    if let Some((s, _)) = persist::parse_file_name(name) {
                        max_seq = max_seq.max(s);
                    }
                }
            }
            report.quarantined.extend(lp.quarantined);
            max_seq = lp.files.iter().map(|f| f.seq).fold(max_seq, u64::max);
            let pid = cat.intern_part(&lp.name);
            cat.parts[pid as usize].files = lp.files;
            for (entry, seq) in lp.rows {
                match cat.map.get(&entry.key) {
                    Some(&i) => {
                        // Live in two partitions (a checkpoint was interrupted between its
                        // phases): the newer file wins, the other copy gets a tombstone.
                        let row = &mut cat.rows[i as usize];
                        if seq > seqs[i as usize] {
                            cat.tombs.push((entry.key, row.part));
                            row.entry = entry;
                            row.part = pid;
                            seqs[i as usize] = seq;
                        } else {
                            cat.tombs.push((entry.key, pid));
                        }
                    }
                    None => {
                        cat.map.insert(entry.key, cat.rows.len() as u32);
                        cat.rows.push(Row {
                            entry,
                            part: pid,
                            dirty: false,
                        });
                        seqs.push(seq);
                    }
                }
            }
        }
        cat.next_seq = max_seq + 1;
        report.entries = cat.rows.len();
        Ok((cat, report))
    }

    fn intern_part(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.part_ids.get(name) {
            return id;
        }
        let id = self.parts.len() as u32;
        self.parts.push(PartState {
            name: name.to_string(),
            files: Vec::new(),
        });
        self.part_ids.insert(name.to_string(), id);
        id
    }

    /// The options this catalog was opened with.
    pub fn options(&self) -> &CatalogOptions {
        &self.opts
    }

    /// The directory backing this catalog, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the catalog holds no entry.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Changes (upserted/touched rows and removals) not yet written by a checkpoint.
    pub fn pending_changes(&self) -> usize {
        self.dirty + self.tombs.len()
    }

    /// The entry for `key`, if any. O(1), no allocation.
    #[inline]
    pub fn get(&self, key: &Key) -> Option<&CatalogEntry> {
        self.map.get(key).map(|&i| &self.rows[i as usize].entry)
    }

    /// True when the catalog has an entry for `key`.
    pub fn contains(&self, key: &Key) -> bool {
        self.map.contains_key(key)
    }

    /// All entries, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.rows.iter().map(|r| &r.entry)
    }

    #[inline]
    fn mark(&mut self, i: usize) {
        let r = &mut self.rows[i];
        if !r.dirty {
            r.dirty = true;
            self.dirty += 1;
        }
    }

    /// Inserts or replaces (whole entry) the entry for `entry.key`. Returns true when the key
    /// was new.
    #[inline]
    pub fn upsert(&mut self, entry: CatalogEntry) -> bool {
        use std::collections::hash_map::Entry;
        match self.map.entry(entry.key) {
            Entry::Occupied(o) => {
                let i = *o.get() as usize;
                self.rows[i].entry = entry;
                self.mark(i);
                false
            }
            Entry::Vacant(v) => {
                v.insert(self.rows.len() as u32);
                self.rows.push(Row {
                    entry,
                    part: NO_PART,
                    dirty: true,
                });
                self.dirty += 1;
                true
            }
        }
    }

    /// Upserts every entry (later entries for the same key win). Returns how many keys were
    /// new.
    pub fn upsert_batch(&mut self, entries: impl IntoIterator<Item = CatalogEntry>) -> usize {
        let it = entries.into_iter();
        let (lo, _) = it.size_hint();
        self.map.reserve(lo);
        self.rows.reserve(lo);
        let mut new = 0;
        for e in it {
            new += usize::from(self.upsert(e));
        }
        new
    }

    /// Removes the entry for `key` and returns it. The removal reaches disk at the next
    /// checkpoint (as a tombstone).
    pub fn remove(&mut self, key: &Key) -> Option<CatalogEntry> {
        let i = self.map.remove(key)? as usize;
        let row = self.rows.swap_remove(i);
        if i < self.rows.len() {
            let moved = self.rows[i].entry.key;
            self.map.insert(moved, i as u32);
        }
        if row.dirty {
            self.dirty -= 1;
        }
        if row.part != NO_PART {
            self.tombs.push((row.entry.key, row.part));
        }
        Some(row.entry)
    }

    /// Records an access at `now_us`: `access_count += 1`, `last_accessed = max(last, now)`,
    /// and `heat_score = heat_score * 2^(-(now - last_accessed) / half_life) + 1` (an
    /// exponentially decayed access count: a key hit once per half-life settles near 2;
    /// time never runs backwards: `now < last_accessed` counts as no decay). Returns false
    /// when the key is absent.
    pub fn touch(&mut self, key: &Key, now_us: i64) -> bool {
        let Some(&i) = self.map.get(key) else {
            return false;
        };
        let hl = self.opts.heat_half_life_us as f64;
        let e = &mut self.rows[i as usize].entry;
        let dt = now_us.saturating_sub(e.last_accessed).max(0) as f64;
        e.heat_score = e.heat_score * (-dt / hl).exp2() + 1.0;
        e.access_count = e.access_count.saturating_add(1);
        e.last_accessed = e.last_accessed.max(now_us);
        self.mark(i as usize);
        true
    }

    /// `heat_score` of `key` decayed to `now_us` without recording an access (for eviction
    /// ranking); `None` when absent.
    pub fn heat_at(&self, key: &Key, now_us: i64) -> Option<f64> {
        let e = self.get(key)?;
        let dt = now_us.saturating_sub(e.last_accessed).max(0) as f64;
        Some(e.heat_score * (-dt / self.opts.heat_half_life_us as f64).exp2())
    }

    /// Sets the storage tier of `key` (on demotion/promotion). Returns false when absent.
    pub fn set_tier(&mut self, key: &Key, tier: StorageTier) -> bool {
        self.update(key, |e| e.storage_tier = tier)
    }

    /// Sets `is_pinned` of `key`. Returns false when absent.
    pub fn set_pinned(&mut self, key: &Key, pinned: bool) -> bool {
        self.update(key, |e| e.is_pinned = pinned)
    }

    /// Applies `f` to the entry of `key` (the key itself must not change: a changed key is
    /// restored). Returns false when absent.
    pub fn update(&mut self, key: &Key, f: impl FnOnce(&mut CatalogEntry)) -> bool {
        let Some(&i) = self.map.get(key) else {
            return false;
        };
        let e = &mut self.rows[i as usize].entry;
        f(e);
        e.key = *key;
        self.mark(i as usize);
        true
    }

    /// Runs `query` over the in-memory entries and returns one batch (the projected columns,
    /// rows in no particular order).
    ///
    /// A query with a `cid =` or `cid in (...)` filter looks those keys up in the index instead
    /// of scanning every row (the other filters are then applied to what it finds), so point
    /// lookups cost the same whatever the catalog's size.
    pub fn query(&self, query: &Query) -> Result<RecordBatch> {
        match point_keys(query) {
            Some(keys) => query.run(keys.iter().filter_map(|k| self.get(k))),
            None => query.run(self.iter()),
        }
    }

    fn require_dir(&self) -> Result<PathBuf> {
        self.dir.clone().ok_or_else(|| {
            Error::InvalidArgument(
                "this catalog is memory-only; open it with Catalog::open(dir, ..) to persist"
                    .into(),
            )
        })
    }

    fn part_dir(&mut self, name: &str) -> Result<(u32, PathBuf)> {
        let dir = self.require_dir()?;
        let pid = self.intern_part(name);
        let pdir = dir.join(name);
        if !pdir.is_dir() {
            persist::create_dir(&pdir)?;
            persist::fsync_dir(&dir)?;
        }
        Ok((pid, pdir))
    }

    /// Writes every change since the last checkpoint as delta files (crash-safe; see the
    /// module docs for the two phases), then compacts partitions that reached
    /// [`CatalogOptions::max_deltas`]. When it returns `Ok`, every change made before the call
    /// survives a crash. On error, what was not written stays pending and is retried by the
    /// next checkpoint.
    pub fn checkpoint(&mut self) -> Result<CheckpointStats> {
        let mut stats = CheckpointStats::default();
        self.require_dir()?;
        let strategy = self.opts.strategy;
        let preset = self.opts.preset;
        // Phase 1: live rows per target partition.
        let mut by_part: HashMap<String, Vec<usize>> = HashMap::new();
        if self.dirty > 0 {
            for (i, row) in self.rows.iter().enumerate().filter(|(_, r)| r.dirty) {
                by_part
                    .entry(strategy.partition_of(&row.entry))
                    .or_default()
                    .push(i);
            }
        }
        let mut groups: Vec<(String, Vec<usize>)> = by_part.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(groups.len());
        for (name, mut idxs) in groups {
            let (pid, dir) = self.part_dir(&name)?;
            sort_rows_by_key(&self.rows, &mut idxs);
            let seq = self.next_seq;
            self.next_seq += 1;
            jobs.push(WriteJob {
                pid,
                dir,
                seq,
                idxs,
            });
        }
        let results = self.write_jobs(&jobs, false);
        let mut first_err = None;
        for (job, res) in jobs.into_iter().zip(results) {
            let bytes = match res {
                Ok(b) => b,
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue; // those rows stay dirty
                }
            };
            stats.rows_written += job.idxs.len();
            stats.files_written += 1;
            stats.bytes_written += bytes;
            self.parts[job.pid as usize].files.push(FileRef {
                seq: job.seq,
                snapshot: false,
                path: job.dir.join(persist::file_name(job.seq, false)),
            });
            for i in job.idxs {
                let row = &mut self.rows[i];
                if row.part != NO_PART && row.part != job.pid {
                    self.tombs.push((row.entry.key, row.part));
                }
                row.part = job.pid;
                row.dirty = false;
                self.dirty -= 1;
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        // Phase 2: tombstones, skipping keys that are live again in that same partition.
        if !self.tombs.is_empty() {
            let mut by_part: HashMap<u32, Vec<Key>> = HashMap::new();
            for (key, pid) in &self.tombs {
                let live_here = self
                    .map
                    .get(key)
                    .is_some_and(|&i| self.rows[i as usize].part == *pid);
                if !live_here {
                    by_part.entry(*pid).or_default().push(*key);
                }
            }
            let mut groups: Vec<(u32, Vec<Key>)> = by_part.into_iter().collect();
            groups.sort_by_key(|g| g.0);
            for (pid, mut keys) in groups {
                keys.sort();
                keys.dedup();
                let name = self.parts[pid as usize].name.clone();
                let (_, pdir) = self.part_dir(&name)?;
                let seq = self.next_seq;
                self.next_seq += 1;
                let fname = persist::file_name(seq, false);
                let ents: Vec<CatalogEntry> =
                    keys.iter().map(|k| CatalogEntry::bare(*k, 0, 0)).collect();
                let refs: Vec<&CatalogEntry> = ents.iter().collect();
                let bytes = persist::write_entries(&pdir, &fname, &refs, true, preset)?;
                stats.tombstones_written += keys.len();
                stats.files_written += 1;
                stats.bytes_written += bytes;
                self.parts[pid as usize].files.push(FileRef {
                    seq,
                    snapshot: false,
                    path: pdir.join(&fname),
                });
                self.tombs.retain(|(_, p)| *p != pid);
            }
            self.tombs.clear();
        }
        // Automatic compaction.
        let max = self.opts.max_deltas.max(1);
        let due: Vec<u32> = (0..self.parts.len() as u32)
            .filter(|&p| {
                self.parts[p as usize]
                    .files
                    .iter()
                    .filter(|f| !f.snapshot)
                    .count()
                    >= max
            })
            .collect();
        if !due.is_empty() {
            self.compact_parts(&due, &mut stats)?;
        }
        Ok(stats)
    }

    /// Checkpoints, then rewrites every partition as a single snapshot (deleting its older
    /// files).
    pub fn compact(&mut self) -> Result<CheckpointStats> {
        let mut stats = self.checkpoint()?;
        let all: Vec<u32> = (0..self.parts.len() as u32)
            .filter(|&p| {
                let f = &self.parts[p as usize].files;
                !(f.len() == 1 && f[0].snapshot)
            })
            .collect();
        self.compact_parts(&all, &mut stats)?;
        Ok(stats)
    }

    /// Writes a snapshot for each partition in `pids` from the (clean) in-memory rows, then
    /// deletes the files it supersedes.
    fn compact_parts(&mut self, pids: &[u32], stats: &mut CheckpointStats) -> Result<()> {
        let mut members: HashMap<u32, Vec<usize>> = pids.iter().map(|&p| (p, Vec::new())).collect();
        for (i, row) in self.rows.iter().enumerate() {
            if let Some(v) = members.get_mut(&row.part) {
                v.push(i);
            }
        }
        let mut jobs: Vec<WriteJob> = Vec::with_capacity(pids.len());
        for &pid in pids {
            let mut idxs = members.remove(&pid).unwrap_or_default();
            sort_rows_by_key(&self.rows, &mut idxs);
            let name = self.parts[pid as usize].name.clone();
            let (_, dir) = self.part_dir(&name)?;
            let seq = self.next_seq;
            self.next_seq += 1;
            jobs.push(WriteJob {
                pid,
                dir,
                seq,
                idxs,
            });
        }
        let results = self.write_jobs(&jobs, true);
        let mut first_err = None;
        for (job, res) in jobs.into_iter().zip(results) {
            let bytes = match res {
                Ok(b) => b,
                Err(e) => {
                    first_err.get_or_insert(e);
                    continue; // the old files stay in use
                }
            };
            stats.files_written += 1;
            stats.bytes_written += bytes;
            stats.partitions_compacted += 1;
            let old = std::mem::replace(
                &mut self.parts[job.pid as usize].files,
                vec![FileRef {
                    seq: job.seq,
                    snapshot: true,
                    path: job.dir.join(persist::file_name(job.seq, true)),
                }],
            );
            for f in old {
                if let Err(e) = std::fs::remove_file(&f.path) {
                    // Harmless: recovery deletes files older than the newest snapshot.
                    tracing::warn!(file = %f.path.display(), error = %e, "could not delete superseded catalog file");
                }
            }
            persist::fsync_dir(&job.dir)?;
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes each job's rows as one file (snapshot or delta), partitions in parallel.
    fn write_jobs(&self, jobs: &[WriteJob], snapshot: bool) -> Vec<Result<u64>> {
        let threads = match self.opts.threads {
            0 => persist::cores(),
            n => n,
        };
        let preset = self.opts.preset;
        persist::parallel_map(jobs, threads, |job| {
            let entries: Vec<&CatalogEntry> =
                job.idxs.iter().map(|&i| &self.rows[i].entry).collect();
            let name = persist::file_name(job.seq, snapshot);
            persist::write_entries(&job.dir, &name, &entries, false, preset)
        })
    }

    /// Scans the persisted files of this catalog's directory (not the unsaved changes) with
    /// `query`; see [`scan_persisted`].
    pub fn scan_persisted(&self, query: &Query) -> Result<(Vec<RecordBatch>, ScanReport)> {
        let dir = self.require_dir()?;
        query::scan_persisted(&dir, query, self.opts.threads)
    }
}

/// Encodes `entries` as an Arrow IPC file of the catalog schema: the wire form of a batch
/// upsert ([`crate::Client::catalog_upsert`]).
pub fn entries_to_ipc(entries: &[CatalogEntry]) -> Result<Vec<u8>> {
    let refs: Vec<&CatalogEntry> = entries.iter().collect();
    let batch = schema::to_batch(&refs, &Column::ALL)?;
    crate::arrow::encode_ipc_file(&catalog_schema(), &[batch])
}

/// The distinct keys named by the first `cid =` / `cid in` filter of `query`, if it has one
/// (values that are not valid keys cannot match and are left out).
fn point_keys(query: &Query) -> Option<Vec<Key>> {
    let f = query
        .filters
        .iter()
        .find(|f| f.column == Column::Cid && matches!(f.op, CmpOp::Eq | CmpOp::In))?;
    let values: Vec<&Literal> = match (&f.op, &f.value) {
        (CmpOp::Eq, v) => vec![v],
        (CmpOp::In, Literal::List(items)) => items.iter().collect(),
        _ => return None,
    };
    let mut keys = Vec::with_capacity(values.len());
    for v in values {
        match v {
            Literal::Bytes(b) => {
                if let Ok(k) = Key::new(b) {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            _ => return None,
        }
    }
    Some(keys)
}

/// Decodes what [`entries_to_ipc`] wrote. The bytes are untrusted: any malformed file, column
/// or key is an error, never a panic.
pub fn entries_from_ipc(bytes: &[u8]) -> Result<Vec<CatalogEntry>> {
    let obj = crate::arrow::decode_ipc_file(&arrow_buffer::Buffer::from(bytes))?;
    let mut out = Vec::new();
    for b in &obj.batches {
        out.extend(schema::from_batch(b)?.into_iter().map(|(e, _)| e));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_sort_is_lexicographic_for_any_lengths() {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut rows = Vec::new();
        for i in 0..2000u32 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Short keys, zero bytes and shared prefixes longer than 16 bytes.
            let len = 1 + (s % 40) as usize;
            let mut b: Vec<u8> = (0..len).map(|j| ((s >> (j % 8)) & 3) as u8).collect();
            if i % 3 == 0 {
                b = [vec![0u8; 20], b].concat();
            }
            rows.push(Row {
                entry: CatalogEntry::bare(Key::new(&b[..b.len().min(63)]).unwrap(), 0, 0),
                part: NO_PART,
                dirty: false,
            });
        }
        let mut idxs: Vec<usize> = (0..rows.len()).collect();
        sort_rows_by_key(&rows, &mut idxs);
        for w in idxs.windows(2) {
            assert!(rows[w[0]].entry.key.as_bytes() <= rows[w[1]].entry.key.as_bytes());
        }
        assert_eq!(idxs.len(), rows.len());
    }

    /// Point lookups by `cid` go through the index and return exactly what a full scan with
    /// the same filters returns (duplicates in the list, unknown and invalid keys, other
    /// filters ANDed, limits).
    #[test]
    fn cid_point_queries_equal_full_scans() {
        let mut cat = Catalog::new();
        for i in 0..500u32 {
            let mut e = CatalogEntry::bare(
                Key::new(format!("key-{i}").as_bytes()).unwrap(),
                i as u64,
                0,
            );
            e.mimetype = Some(if i % 2 == 0 { "a/b" } else { "c/d" }.into());
            cat.upsert(e);
        }
        let hex = |s: &str| {
            format!(
                "0x{}",
                s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
        let cases: Vec<Vec<String>> = vec![
            vec![format!("cid={}", hex("key-7"))],
            vec![format!("cid={}", hex("absent"))],
            vec![format!(
                "cid in ({}, {}, {}, {})",
                hex("key-1"),
                hex("key-2"),
                hex("key-1"),
                hex("zzz")
            )],
            vec![
                format!("cid in ({}, {})", hex("key-3"), hex("key-4")),
                "mimetype=a/b".into(),
            ],
            vec!["size_bytes>10".into(), format!("cid={}", hex("key-400"))],
        ];
        let rows = |b: &RecordBatch| {
            let mut v: Vec<Vec<u8>> = (0..b.num_rows())
                .map(|i| {
                    arrow_array::cast::AsArray::as_binary::<i32>(b.column(0))
                        .value(i)
                        .to_vec()
                })
                .collect();
            v.sort();
            v
        };
        for filters in cases {
            let q = Query::parse(&filters, Some("cid,size_bytes")).unwrap();
            assert!(point_keys(&q).is_some(), "{filters:?}");
            let fast = cat.query(&q).unwrap();
            let full = q.run(cat.iter()).unwrap();
            assert_eq!(rows(&fast), rows(&full), "{filters:?}");
        }
        let mut q = Query::parse(
            &[format!("cid in ({}, {})", hex("key-5"), hex("key-6"))],
            None,
        )
        .unwrap();
        q.limit = Some(1);
        assert_eq!(cat.query(&q).unwrap().num_rows(), 1);
        assert_eq!(
            rows(
                &cat.query(&Query::parse(&[format!("cid={}", hex("key-9"))], None).unwrap())
                    .unwrap()
            ),
            vec![b"key-9".to_vec()]
        );
        // Other queries still scan.
        assert!(point_keys(&Query::parse(&["mimetype=a/b"], None).unwrap()).is_none());
    }
}
