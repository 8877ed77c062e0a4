//! The warm tier: objects evicted from shared memory, kept as Parquet files in the store's data
//! directory (`DATA_DIR/warm/`), and promoted back into shared memory when a get misses.
//!
//! Guarantees:
//! - **Durable before visible.** A demoted object is served from memory until its file is
//!   written, `fsync`ed and renamed into place; only then is it recorded as being in a file. A
//!   crash loses at most the objects still queued, never a file half-written.
//! - **Recovery from the files alone.** At start every file is scanned (in parallel); the files
//!   are the truth and a deletion is made durable in `tombstones.log` before it is answered. A
//!   truncated or corrupt file is moved to `quarantine/` and reported; the rest loads.
//! - **Untrusted input.** Files are checked before they are decoded
//!   ([`crate::tier::parquet_guard`], lengths and counts against the file and against
//!   [`WarmConfig::max_object`]), raw objects carry a checksum, and a decoder panic is caught
//!   and turned into [`Error::Corrupt`]. A damaged object is quarantined alone (a get of it
//!   answers `Corrupt`); a file unreadable as a whole is moved to `quarantine/`.
//! - **Bounded.** Capacity is enforced on file bytes; the oldest files go first (their objects
//!   are dropped), and queued demotions are bounded in memory (the evicting call waits).
//! - **Failures are told, never silent.** A write that fails is counted per object
//!   (`warm.write_errors`); its objects stay queued (still served from memory) and are retried,
//!   and until a write succeeds again new demotions are refused with the reason, so the caller
//!   keeps the object or reports the error. A durable demotion (a put acknowledged only once it
//!   is in a synced file) gets the outcome of its own write: many of them share one file and
//!   one `fsync` (group commit).
//! - **The catalog row travels with the data.** What the catalog knows of an object beyond the
//!   tier's own records (MIME type, file name, properties, source) is written in the same file,
//!   so the catalog can rebuild its rows from the files after a crash or a damaged catalog.
//!
//! Thread safety: [`Warm`] is `Send + Sync`; one background thread writes files, promotions read
//! them from any thread. Layouts: [`raw`] for byte objects, [`table`] for Arrow objects.

mod cold_link;
pub(crate) mod external;
pub(crate) mod files;
pub(crate) mod raw;
pub(crate) mod table;

use crate::error::{Error, Result};
use crate::key::Key;
use crate::proto::PUT_ARROW;
use crate::tier::catalog::CatalogEntry;
use files::{Dirs, Staged};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use raw::RawLoc;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Compression of warm-tier files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmCompression {
    /// zstd level 1: the default, a good ratio at close to lz4 speed.
    Zstd,
    /// lz4 (raw): fastest to decode.
    Lz4,
    /// No compression.
    None,
}

impl std::str::FromStr for WarmCompression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "zstd" => Ok(WarmCompression::Zstd),
            "lz4" => Ok(WarmCompression::Lz4),
            "none" => Ok(WarmCompression::None),
            _ => Err(format!(
                "unknown warm-tier compression {s:?}; choose zstd, lz4 or none"
            )),
        }
    }
}

/// Settings of a warm tier.
#[derive(Debug, Clone)]
pub(crate) struct WarmConfig {
    /// Directory of the tier (created mode 0700).
    pub dir: PathBuf,
    /// Bytes of files kept; the oldest files are dropped above it.
    pub capacity: u64,
    pub compression: WarmCompression,
    /// Bytes of demotions queued in memory before an evicting call waits for the writer.
    pub queue_bytes: u64,
    /// Threads used to decode one promotion and to scan files at start.
    pub threads: usize,
    /// The largest object the hot tier could hold (the operator's memory limit): a file that
    /// declares a larger one is damaged, and no length in a file allocates beyond it.
    pub max_object: u64,
}

/// Where a warm object is.
#[derive(Debug, Clone, Copy)]
enum Place {
    Raw(RawLoc),
    Table,
}

#[derive(Debug, Clone, Copy)]
struct Located {
    file: u64,
    place: Place,
    data_len: u64,
    meta_len: u64,
    flags: u32,
}

/// An object queued for writing, served from memory until its file is committed.
pub(crate) struct Pending {
    key: Key,
    /// Partition directory (`""` = the tier's root).
    part: String,
    /// Data followed by metadata.
    bytes: Vec<u8>,
    data_len: usize,
    flags: u32,
    /// The catalog row written with the object (only when it says more than the file does).
    catalog: Option<CatalogEntry>,
    /// Told the outcome of the write (a durable put waiting for its acknowledgement). Such an
    /// object is not retried after a failure: its put is answered with the error.
    done: Mutex<Option<tokio::sync::oneshot::Sender<std::result::Result<(), String>>>>,
    /// A write of it failed once (it is counted once in `warm.write_errors`).
    failed: std::sync::atomic::AtomicBool,
}

impl Pending {
    fn durable(&self) -> bool {
        self.done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn tell(&self, r: std::result::Result<(), String>) {
        if let Some(tx) = self.done.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(r);
        }
    }
}

/// See [`Warm::state_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Held {
    Written,
    Queued,
    Absent,
}

/// An object to demote: see [`Warm::demote`].
pub(crate) struct Demotion<'a> {
    pub key: Key,
    pub data: &'a [u8],
    pub meta: &'a [u8],
    /// Put flags.
    pub flags: u32,
    /// Partition directory (`""`: the root).
    pub part: String,
    /// The object's catalog row, kept in its file when it carries user metadata.
    pub catalog: Option<CatalogEntry>,
    /// The caller waits for the synced write: [`Warm::demote`] returns a [`Ticket`].
    pub durable: bool,
}

/// The outcome of a durable demotion: `Ok` once the object is in a synced file, the reason
/// otherwise.
pub(crate) type Ticket = tokio::sync::oneshot::Receiver<std::result::Result<(), String>>;

struct FileInfo {
    path: PathBuf,
    bytes: u64,
    keys: Vec<Key>,
    raw: bool,
    /// Partition directory (`""` = the tier's root).
    part: String,
}

#[derive(Default)]
struct Counters {
    demotions: u64,
    demoted_bytes: u64,
    promotions: u64,
    promoted_bytes: u64,
    evictions: u64,
    evicted_files: u64,
    quarantined: u64,
    write_errors: u64,
    read_errors: u64,
    scans: u64,
    compactions: u64,
    compacted_files: u64,
    scan_row_groups_skipped: u64,
    scan_rows_skipped_by_pages: u64,
    damaged_objects: u64,
    cold_moved: u64,
    cold_moved_files: u64,
    cold_promotions: u64,
}

struct State {
    objects: HashMap<Key, Located>,
    pending: HashMap<Key, Arc<Pending>>,
    pending_bytes: u64,
    files: BTreeMap<u64, FileInfo>,
    file_bytes: u64,
    next_seq: u64,
    tombstones: std::fs::File,
    counters: Counters,
    /// Why the last write failed, until one succeeds: new demotions are refused meanwhile.
    failing: Option<String>,
    /// Objects of failed writes, still queued (served from memory), retried periodically.
    retry: Vec<Arc<Pending>>,
    /// Objects that never reached a file by the time the tier closed.
    lost: Vec<Key>,
    /// Objects found damaged (quarantined alone, their file keeps serving the others): the file
    /// still holding the damaged copy (none once the file was quarantined) and why. A get of
    /// one answers `Corrupt`. Forgotten when the key is deleted (a tombstone keeps it dead in
    /// that file) or stored again.
    damaged: HashMap<Key, (Option<u64>, String)>,
    /// Keys moved to the cold tier, not yet told to the catalog (bounded by `DAMAGED_MAX`).
    moved_cold: Vec<Key>,
}

/// Damaged objects remembered (beyond, a get of one answers "missing" instead of `Corrupt`).
const DAMAGED_MAX: usize = 1 << 16;

impl State {
    /// Quarantines one object: it leaves the map (if it is still located in `file`) and a get
    /// of it answers `Corrupt`.
    fn damage(&mut self, key: Key, file: Option<u64>, why: &str) {
        if let Some(f) = file {
            match self.objects.get(&key) {
                // A newer copy is elsewhere: it stands.
                Some(l) if l.file > f => return,
                // This copy, or an older one that the damaged copy replaced: neither serves.
                Some(_) => {
                    self.objects.remove(&key);
                }
                None => {}
            }
        }
        tracing::error!(
            "warm tier: {key} is damaged ({why}); quarantined, the rest of its file serves"
        );
        self.counters.damaged_objects += 1;
        if self.damaged.len() < DAMAGED_MAX || self.damaged.contains_key(&key) {
            self.damaged.insert(key, (file, why.to_string()));
        }
    }
}

struct Inner {
    dirs: Dirs,
    cfg: WarmConfig,
    state: Mutex<State>,
    /// Parsed footers of raw files, so that a point read does not parse one each time.
    footers: Mutex<HashMap<u64, parquet::arrow::arrow_reader::ArrowReaderMetadata>>,
    /// Signalled when queued bytes drop or a flush completes.
    written: Condvar,
    /// The cold tier, once attached.
    cold: std::sync::OnceLock<Arc<crate::tier::cold::Cold>>,
    /// Files whose move to the cold tier failed: when to try again, and how many failures.
    cold_backoff: Mutex<HashMap<u64, (std::time::Instant, u32)>>,
    /// One promotion from the cold tier per key: callers of one key queue on its lock.
    cold_fetching: Mutex<HashMap<Key, Arc<Mutex<()>>>>,
    /// Tells the cold-tier mover to stop.
    stopping: std::sync::atomic::AtomicBool,
}

/// The warm tier of one store. Dropping it writes what is queued, then stops the writer.
pub(crate) struct Warm {
    inner: Arc<Inner>,
    tx: Option<mpsc::Sender<Arc<Pending>>>,
    writer: Option<std::thread::JoinHandle<()>>,
    mover: Option<std::thread::JoinHandle<()>>,
}

/// Where to load a warm object from; obtained under the store lock, loaded outside it.
pub(crate) struct Source {
    inner: Arc<Inner>,
    key: Key,
    from: Origin,
}

enum Origin {
    Memory(Arc<Pending>),
    File(u64, PathBuf, Located),
    /// Only in the cold tier: fetched into a warm file first.
    Cold,
}

/// A warm object read back, ready to publish in shared memory.
pub(crate) struct Loaded {
    /// Data followed by metadata.
    pub bytes: Vec<u8>,
    pub data_len: usize,
    pub flags: u32,
}

/// A committed file: its path, size and the objects placed in it.
type Written = (PathBuf, u64, Vec<(Key, Located)>);
/// The objects found in one file at start, and the damaged ones (key when known, why).
type Scanned = Result<(Vec<(Key, Located)>, Vec<(Option<Key>, String)>)>;

/// What opening a warm tier found.
#[derive(Debug, Default)]
pub(crate) struct Recovery {
    pub files: usize,
    pub objects: usize,
    pub quarantined: Vec<PathBuf>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn file_name(seq: u64, arrow: bool) -> String {
    format!("{}-{seq:016x}.parquet", if arrow { "arrow" } else { "raw" })
}

fn parse_name(name: &str) -> Option<(u64, bool)> {
    let stem = name.strip_suffix(".parquet")?;
    let (kind, seq) = stem.split_once('-')?;
    let arrow = match kind {
        "arrow" => true,
        "raw" => false,
        _ => return None,
    };
    Some((u64::from_str_radix(seq, 16).ok()?, arrow))
}

impl WarmConfig {
    fn props(&self, raw: bool) -> WriterProperties {
        let c = match self.compression {
            WarmCompression::Zstd => Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1")),
            WarmCompression::Lz4 => Compression::LZ4_RAW,
            WarmCompression::None => Compression::UNCOMPRESSED,
        };
        let mut b = WriterProperties::builder()
            .set_compression(c)
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(None)
            .set_created_by(format!("cidcache {}", env!("CARGO_PKG_VERSION")));
        if raw {
            let key = ColumnPath::from("key");
            b = b
                .set_column_dictionary_enabled(key.clone(), false)
                .set_column_bloom_filter_enabled(key, true)
                .set_column_dictionary_enabled(ColumnPath::from("data"), false)
                .set_column_encoding(ColumnPath::from("data"), Encoding::PLAIN)
                .set_column_statistics_enabled(ColumnPath::from("data"), EnabledStatistics::None)
                .set_column_statistics_enabled(ColumnPath::from("meta"), EnabledStatistics::None)
                .set_column_dictionary_enabled(ColumnPath::from("part"), false)
                .set_column_encoding(ColumnPath::from("part"), Encoding::DELTA_BINARY_PACKED);
        }
        b.build()
    }
}

impl Warm {
    /// Opens (or creates) the warm tier in `cfg.dir`: removes interrupted writes, scans every
    /// file, quarantines unreadable ones, applies the tombstones, and starts the writer.
    pub(crate) fn open(cfg: WarmConfig) -> Result<(Warm, Recovery)> {
        let dirs = Dirs::create(&cfg.dir)?;
        let mut found: Vec<(u64, bool, PathBuf)> = Vec::new();
        let mut parts_of: HashMap<u64, String> = HashMap::new();
        let mut list = |dir: &Path, part: &str| -> Result<Vec<PathBuf>> {
            let rd = std::fs::read_dir(dir)
                .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
            let mut subdirs = Vec::new();
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Some((seq, arrow)) = parse_name(name) {
                    found.push((seq, arrow, e.path()));
                    parts_of.insert(seq, part.to_string());
                } else if part.is_empty() && name.contains('=') && e.path().is_dir() {
                    subdirs.push(e.path());
                }
            }
            Ok(subdirs)
        };
        // Files sit in the root or in one level of partition directories (`KEY=VALUE`).
        for sub in list(&dirs.root, "")? {
            let part = sub
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            list(&sub, &part)?;
        }
        found.sort_by_key(|f| f.0);
        let scanned = scan_all(&found, cfg.threads, cfg.max_object);
        let mut rec = Recovery::default();
        let mut objects = HashMap::new();
        let mut files = BTreeMap::new();
        let mut file_bytes = 0;
        let mut damaged = Vec::new();
        for ((seq, arrow, path), r) in found.iter().zip(scanned) {
            match r {
                Ok((entries, bad)) => {
                    for (key, why) in bad {
                        let why = format!("{}: {why}", path.display());
                        match key {
                            Some(k) => damaged.push((k, *seq, why)),
                            None => tracing::error!("warm tier: {why}; those objects are lost"),
                        }
                    }
                    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    let mut keys = Vec::with_capacity(entries.len());
                    for (key, loc) in entries {
                        keys.push(key);
                        objects.insert(key, Located { file: *seq, ..loc });
                    }
                    file_bytes += bytes;
                    files.insert(
                        *seq,
                        FileInfo {
                            path: path.clone(),
                            bytes,
                            keys,
                            raw: !*arrow,
                            part: parts_of.remove(seq).unwrap_or_default(),
                        },
                    );
                }
                Err(e) => {
                    files::quarantine(&dirs, path, &e.to_string());
                    rec.quarantined.push(path.clone());
                }
            }
        }
        let tomb_path = dirs.root.join("tombstones.log");
        let min_seq = files.keys().next().copied().unwrap_or(u64::MAX);
        apply_tombstones(&dirs, &tomb_path, &mut objects, &mut damaged, min_seq);
        let tombstones = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&tomb_path)
            .map_err(|e| Error::io(format!("cannot open {}", tomb_path.display()), e))?;
        rec.files = files.len();
        rec.objects = objects.len();
        let next_seq = found.last().map_or(1, |f| f.0 + 1);
        let inner = Arc::new(Inner {
            dirs,
            cfg,
            state: Mutex::new(State {
                objects,
                pending: HashMap::new(),
                pending_bytes: 0,
                files,
                file_bytes,
                next_seq,
                tombstones,
                counters: Counters {
                    quarantined: rec.quarantined.len() as u64,
                    ..Counters::default()
                },
                failing: None,
                retry: Vec::new(),
                lost: Vec::new(),
                damaged: HashMap::new(),
                moved_cold: Vec::new(),
            }),
            written: Condvar::new(),
            footers: Mutex::new(HashMap::new()),
            cold: std::sync::OnceLock::new(),
            cold_backoff: Mutex::new(HashMap::new()),
            cold_fetching: Mutex::new(HashMap::new()),
            stopping: std::sync::atomic::AtomicBool::new(false),
        });
        {
            let mut st = lock(&inner.state);
            for (key, seq, why) in damaged {
                st.damage(key, Some(seq), &why);
            }
        }
        let (tx, rx) = mpsc::channel();
        let w = inner.clone();
        let writer = std::thread::Builder::new()
            .name("cidcached-warm".into())
            .spawn(move || writer_loop(&w, rx))
            .map_err(|e| Error::io("cannot start the warm-tier writer", e))?;
        // Files past the capacity (it may have been lowered) go now.
        inner.enforce_capacity(&mut lock(&inner.state));
        Ok((
            Warm {
                inner,
                tx: Some(tx),
                writer: Some(writer),
                mover: None,
            },
            rec,
        ))
    }

    /// Whether the tier holds `key` (in a file or queued). Memory only: never touches the disk.
    pub(crate) fn contains(&self, key: &Key) -> bool {
        let st = lock(&self.inner.state);
        st.objects.contains_key(key)
            || st.pending.contains_key(key)
            || self.inner.cold.get().is_some_and(|c| c.contains(key))
    }

    /// Why `key` is known damaged (a get of it answers `Corrupt`), if it is.
    pub(crate) fn damage(&self, key: &Key) -> Option<String> {
        lock(&self.inner.state)
            .damaged
            .get(key)
            .map(|(_, why)| why.clone())
            .or_else(|| self.inner.cold.get()?.damage(key))
    }

    /// Queues an object (evicted from the hot tier, or written through by a put); it replaces
    /// what the tier held under its key. Waits while the queue is over its bound (the writer
    /// needs no store lock, so this cannot deadlock). Refused with the reason while the tier
    /// cannot write (the last write failed and no retry has succeeded yet): the caller keeps
    /// the object or reports the error, so nothing is dropped silently. A durable demotion
    /// returns the [`Ticket`] its caller waits on.
    pub(crate) fn demote(&self, d: Demotion<'_>) -> std::result::Result<Option<Ticket>, String> {
        let mut st = lock(&self.inner.state);
        let len = (d.data.len() + d.meta.len()) as u64;
        loop {
            if let Some(why) = &st.failing {
                return Err(why.clone());
            }
            if st.pending_bytes == 0 || st.pending_bytes + len <= self.inner.cfg.queue_bytes {
                break;
            }
            st = self
                .inner
                .written
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
        let mut bytes = Vec::with_capacity(len as usize);
        bytes.extend_from_slice(d.data);
        bytes.extend_from_slice(d.meta);
        let (tx, ticket) = if d.durable {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let p = Arc::new(Pending {
            key: d.key,
            part: d.part,
            bytes,
            data_len: d.data.len(),
            flags: d.flags,
            catalog: d.catalog,
            done: Mutex::new(tx),
            failed: std::sync::atomic::AtomicBool::new(false),
        });
        if let Some(old) = st.pending.insert(d.key, p.clone()) {
            st.pending_bytes -= old.bytes.len() as u64;
        }
        st.pending_bytes += len;
        st.counters.demotions += 1;
        st.counters.demoted_bytes += len;
        drop(st);
        if let Some(tx) = &self.tx {
            let _ = tx.send(p);
        }
        Ok(ticket)
    }

    /// Where the tier is with `key`: in a written file with nothing newer queued (an object
    /// demoted under it is durable), queued, or absent (never demoted, or its file was dropped
    /// for the capacity since).
    pub(crate) fn state_of(&self, key: &Key) -> Held {
        let st = lock(&self.inner.state);
        if st.pending.contains_key(key) {
            Held::Queued
        } else if st.objects.contains_key(key) {
            Held::Written
        } else {
            Held::Absent
        }
    }

    /// Waits up to `t` for the writer to finish a file (or fail one).
    pub(crate) fn wait_progress(&self, t: Duration) {
        let st = lock(&self.inner.state);
        if st.pending.is_empty() {
            return;
        }
        let _ = self.inner.written.wait_timeout(st, t);
    }

    /// Why the tier cannot write now (its last write failed), if it cannot.
    pub(crate) fn failing(&self) -> Option<String> {
        lock(&self.inner.state).failing.clone()
    }

    /// Writes what is queued, stops the writer, and returns the objects that never reached a
    /// file (their writes kept failing). Reads keep working afterwards; demotions are lost.
    pub(crate) fn finish(&mut self) -> Vec<Key> {
        self.stop();
        let st = lock(&self.inner.state);
        st.lost.iter().chain(st.pending.keys()).copied().collect()
    }

    fn stop(&mut self) {
        // Closing the channel lets the writer drain the queue and stop.
        drop(self.tx.take());
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        // Then the cold tier's mover, which moves only files already written.
        self.inner
            .stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(m) = self.mover.take() {
            let _ = m.join();
        }
    }

    /// The catalog rows kept in the files with the objects `keys` (those that have one), for
    /// rebuilding a catalog that lost them. Reads only the footers of the files holding them.
    pub(crate) fn catalog_rows(&self, keys: &std::collections::HashSet<Key>) -> Vec<CatalogEntry> {
        let files: BTreeMap<u64, PathBuf> = {
            let st = lock(&self.inner.state);
            keys.iter()
                .filter_map(|k| st.objects.get(k))
                .filter_map(|l| Some((l.file, st.files.get(&l.file)?.path.clone())))
                .collect()
        };
        let mut out = Vec::new();
        for (seq, path) in files {
            let rows = match file_catalog(&path) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(
                        "warm tier: cannot read the catalog rows of {}: {e}",
                        path.display()
                    );
                    continue;
                }
            };
            let st = lock(&self.inner.state);
            out.extend(rows.into_iter().filter(|e| {
                keys.contains(&e.key) && st.objects.get(&e.key).is_some_and(|l| l.file == seq)
            }));
        }
        out
    }

    /// Every object the tier holds in a file: key, size (data + metadata), flags, and the
    /// time its file was written (µs since the epoch), for rebuilding catalog rows.
    pub(crate) fn records(&self) -> Vec<(Key, u64, u32, i64)> {
        let st = lock(&self.inner.state);
        let mut mtimes: HashMap<u64, i64> = HashMap::new();
        st.objects
            .iter()
            .map(|(k, l)| {
                let t = *mtimes.entry(l.file).or_insert_with(|| {
                    st.files
                        .get(&l.file)
                        .and_then(|f| std::fs::metadata(&f.path).ok())
                        .and_then(|m| m.modified().ok())
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_micros() as i64)
                });
                (*k, l.data_len + l.meta_len, l.flags, t)
            })
            .collect()
    }

    /// Where to load `key` from, if the tier holds it.
    pub(crate) fn source(&self, key: &Key) -> Option<Source> {
        let st = lock(&self.inner.state);
        let from = if let Some(p) = st.pending.get(key) {
            Origin::Memory(p.clone())
        } else if let Some(l) = st.objects.get(key).copied() {
            Origin::File(l.file, st.files.get(&l.file)?.path.clone(), l)
        } else if self.inner.cold.get().is_some_and(|c| c.contains(key)) {
            Origin::Cold
        } else {
            return None;
        };
        Some(Source {
            inner: self.inner.clone(),
            key: *key,
            from,
        })
    }

    /// Removes `key`; durable (a tombstone is synced) before it returns. False when absent.
    pub(crate) fn delete(&self, key: &Key) -> Result<bool> {
        self.remove(key, true)
    }

    /// Forgets `key` because a newer object replaced it in the hot tier. The tombstone is
    /// written but not synced: after a power loss the older copy may come back, which for a
    /// content address is the same bytes.
    pub(crate) fn invalidate(&self, key: &Key) {
        if let Err(e) = self.remove(key, false) {
            tracing::warn!("warm tier: {e}");
        }
    }

    fn remove(&self, key: &Key, sync: bool) -> Result<bool> {
        let mut in_cold = false;
        if let Some(c) = self.inner.cold.get() {
            in_cold = c.contains(key);
            if sync {
                // A deleted key must not come back from the bucket.
                c.delete(key)?;
            } else {
                // Replaced: the next move overwrites the bucket's copy.
                c.forget(key);
            }
        }
        let mut st = lock(&self.inner.state);
        let damaged = st.damaged.remove(key);
        let queued = st.pending.remove(key);
        if let Some(p) = &queued {
            st.pending_bytes -= p.bytes.len() as u64;
        }
        let file = match (st.objects.remove(key), &damaged) {
            (Some(l), _) => l.file,
            // A damaged copy still in its file: the tombstone keeps it from coming back
            // (as Corrupt) after a restart.
            (None, Some((Some(f), _))) => *f,
            (None, _) => return Ok(queued.is_some() || damaged.is_some() || in_cold),
        };
        let line = format!("{} {file}\n", table::hex(key.as_bytes()));
        st.tombstones
            .write_all(line.as_bytes())
            .and_then(|_| {
                if sync {
                    st.tombstones.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(|e| Error::io("cannot record a warm-tier deletion", e))?;
        Ok(true)
    }

    /// Counters and sizes, named `warm.*`.
    pub(crate) fn stats(&self) -> Vec<(&'static str, u64)> {
        let st = lock(&self.inner.state);
        let c = &st.counters;
        let data: u64 = st
            .objects
            .values()
            .map(|l| l.data_len + l.meta_len)
            .sum::<u64>()
            + st.pending_bytes;
        vec![
            ("warm.objects", (st.objects.len() + st.pending.len()) as u64),
            ("warm.bytes", data),
            ("warm.file_bytes", st.file_bytes),
            ("warm.files", st.files.len() as u64),
            ("warm.capacity", self.inner.cfg.capacity),
            ("warm.queued_objects", st.pending.len() as u64),
            ("warm.queued_bytes", st.pending_bytes),
            ("warm.demotions", c.demotions),
            ("warm.demoted_bytes", c.demoted_bytes),
            ("warm.promotions", c.promotions),
            ("warm.promoted_bytes", c.promoted_bytes),
            ("warm.evictions", c.evictions),
            ("warm.evicted_files", c.evicted_files),
            ("warm.quarantined_files", c.quarantined),
            ("warm.damaged_objects", c.damaged_objects),
            ("warm.write_errors", c.write_errors),
            ("warm.failing", st.failing.is_some() as u64),
            ("warm.retry_queued", st.retry.len() as u64),
            ("warm.read_errors", c.read_errors),
            ("warm.compactions", c.compactions),
            ("warm.compacted_files", c.compacted_files),
            ("warm.scans", c.scans),
            ("warm.scan_row_groups_skipped", c.scan_row_groups_skipped),
            (
                "warm.scan_rows_skipped_by_pages",
                c.scan_rows_skipped_by_pages,
            ),
            ("warm.cold_moved", c.cold_moved),
            ("warm.cold_moved_files", c.cold_moved_files),
            ("warm.cold_promotions", c.cold_promotions),
        ]
        .into_iter()
        .chain(self.inner.cold.get().map(|c| c.stats()).unwrap_or_default())
        .collect()
    }

    /// The tier's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.inner.dirs.root
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Key-value metadata entry of a warm file holding catalog rows (hex of an Arrow IPC file of
/// catalog entries).
const K_CATALOG: &str = "cidcache.catalog";

/// The catalog rows kept in a warm file (none when it has no such metadata).
fn file_catalog(path: &Path) -> Result<Vec<CatalogEntry>> {
    files::no_panic(&path.display().to_string(), || {
        use parquet::file::reader::FileReader;
        let f = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        // The footer is checked before the decoder parses it: the file is untrusted.
        crate::tier::parquet_guard::footer(&f, path)?;
        let r = parquet::file::reader::SerializedFileReader::new(f)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
        let Some(hex) = r
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .and_then(|kv| kv.iter().find(|e| e.key == K_CATALOG))
            .and_then(|e| e.value.clone())
        else {
            return Ok(Vec::new());
        };
        let ipc = table::unhex(&hex)
            .ok_or_else(|| Error::Corrupt(format!("{}: bad catalog metadata", path.display())))?;
        crate::tier::catalog::entries_from_ipc(&ipc)
    })
}

/// The key-value entry holding `rows` for a warm file, if there are any.
fn catalog_kv<'a>(rows: impl IntoIterator<Item = &'a CatalogEntry>) -> Option<(String, String)> {
    let rows: Vec<CatalogEntry> = rows.into_iter().cloned().collect();
    if rows.is_empty() {
        return None;
    }
    match crate::tier::catalog::entries_to_ipc(&rows) {
        Ok(ipc) => Some((K_CATALOG.to_string(), table::hex(&ipc))),
        Err(e) => {
            tracing::warn!("warm tier: cannot encode catalog rows: {e}");
            None
        }
    }
}

/// A warm object read back, in the form best suited to publishing it.
pub(crate) enum Prepared {
    /// Bytes to copy into shared memory.
    Bytes(Loaded),
    /// An Arrow table to encode straight into shared memory (no intermediate copy): at most
    /// `bound` bytes of IPC, then `meta`.
    Table {
        schema: arrow_schema::SchemaRef,
        batches: Vec<arrow_array::RecordBatch>,
        meta: Vec<u8>,
        flags: u32,
        bound: usize,
    },
}

impl Source {
    /// Reads the object (from memory or its file); an Arrow table from its Parquet file comes
    /// back decoded, for the caller to encode where it will live. Runs outside the store lock:
    /// it may decode a large file. A file that fails to decode is quarantined and its objects
    /// forgotten.
    pub(crate) fn prepare(mut self) -> Result<Prepared> {
        if let Origin::Cold = self.from {
            self.from = self.inner.promote_from_cold(&self.key)?;
        }
        let max_object = self.inner.cfg.max_object;
        // Whether a failure is the object's alone (its file's footer was fine).
        let mut object_only = false;
        let r = match &self.from {
            Origin::Cold => Err(Error::Internal("not fetched from the cold tier".into())),
            Origin::Memory(p) => Ok(Prepared::Bytes(Loaded {
                bytes: p.bytes.clone(),
                data_len: p.data_len,
                flags: p.flags,
            })),
            Origin::File(_, path, l) => match l.place {
                Place::Raw(loc) => self
                    .inner
                    .footer(l.file, path)
                    .and_then(|md| {
                        object_only = true;
                        raw::read(path, &md, loc, l.data_len)
                    })
                    .map(|(mut data, meta)| {
                        let data_len = data.len();
                        data.extend_from_slice(&meta);
                        Prepared::Bytes(Loaded {
                            bytes: data,
                            data_len,
                            flags: l.flags,
                        })
                    }),
                Place::Table => table::read(path, self.inner.cfg.threads, max_object).and_then(
                    |(schema, mut batches, info)| {
                        table::unify_dictionaries(&schema, &mut batches)?;
                        let bound = crate::arrow::ipc_size_bound(&schema, &batches);
                        Ok(Prepared::Table {
                            schema,
                            batches,
                            meta: info.meta,
                            flags: info.flags,
                            bound,
                        })
                    },
                ),
            },
        };
        let mut st = lock(&self.inner.state);
        match &r {
            Ok(p) => {
                st.counters.promotions += 1;
                st.counters.promoted_bytes += match p {
                    Prepared::Bytes(l) => l.bytes.len() as u64,
                    Prepared::Table { bound, meta, .. } => (*bound + meta.len()) as u64,
                };
            }
            Err(e) => {
                st.counters.read_errors += 1;
                if let (Error::Corrupt(why), Origin::File(seq, path, _)) = (e, &self.from) {
                    // A file that vanished meanwhile (dropped for capacity) is not corrupt.
                    if path.exists() && object_only {
                        // The object alone: the others in its file keep serving.
                        st.damage(self.key, Some(*seq), why);
                        return Err(Error::Corrupt(format!(
                            "{} is damaged in the warm tier ({why}); it was quarantined",
                            self.key
                        )));
                    }
                    if path.exists() {
                        let e = files::quarantine(&self.inner.dirs, path, &e.to_string());
                        let lost: Vec<Key> = st
                            .files
                            .get(seq)
                            .map(|f| f.keys.clone())
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|k| st.objects.get(k).is_some_and(|l| l.file == *seq))
                            .collect();
                        self.inner.forget_file(&mut st, *seq);
                        st.counters.quarantined += 1;
                        // They answer Corrupt too (not counted or logged one by one: the
                        // file's quarantine was).
                        let why = format!("its file is unreadable: {why}");
                        for k in lost {
                            if st.damaged.len() < DAMAGED_MAX {
                                st.damaged.insert(k, (None, why.clone()));
                            }
                        }
                        return Err(e);
                    }
                }
                tracing::warn!("warm tier: cannot promote {}: {e}", self.key);
            }
        }
        r
    }

    /// Reads the object as the bytes it had in shared memory (an Arrow table is encoded as
    /// Arrow IPC in memory).
    pub(crate) fn load(self) -> Result<Loaded> {
        match self.prepare()? {
            Prepared::Bytes(l) => Ok(l),
            Prepared::Table {
                schema,
                batches,
                meta,
                flags,
                ..
            } => {
                let mut bytes = crate::arrow::encode_ipc_file(&schema, &batches)?;
                let data_len = bytes.len();
                bytes.extend_from_slice(&meta);
                Ok(Loaded {
                    bytes,
                    data_len,
                    flags,
                })
            }
        }
    }
}

impl Source {
    /// Projects and filters the Arrow object this source names, reading only what the scan
    /// needs from its file; returns the result encoded as an Arrow IPC file.
    pub(crate) fn scan(mut self, scan: &crate::scan::Scan) -> Result<Loaded> {
        if let Origin::Cold = self.from {
            self.from = self.inner.promote_from_cold(&self.key)?;
        }
        let not_arrow = || {
            Error::NotArrow(format!(
                "{} was not stored as an Arrow object; use get()",
                self.key
            ))
        };
        let (schema, batches) = match &self.from {
            Origin::File(
                _,
                path,
                Located {
                    place: Place::Table,
                    ..
                },
            ) => {
                let (schema, batches, report) = table::scan(path, scan, self.inner.cfg.max_object)?;
                let mut st = lock(&self.inner.state);
                st.counters.scans += 1;
                st.counters.scan_row_groups_skipped += report.row_groups_skipped as u64;
                st.counters.scan_rows_skipped_by_pages += report.rows_skipped_by_pages as u64;
                drop(st);
                tracing::debug!(
                    "warm scan of {}: {} of {} row groups skipped by statistics, {} rows by pages",
                    self.key,
                    report.row_groups_skipped,
                    report.row_groups,
                    report.rows_skipped_by_pages
                );
                (schema, batches)
            }
            _ => {
                let flags = match &self.from {
                    Origin::Memory(p) => p.flags,
                    Origin::File(_, _, l) => l.flags,
                    Origin::Cold => return Err(Error::Internal("not fetched".into())),
                };
                if flags & PUT_ARROW == 0 {
                    return Err(not_arrow());
                }
                let l = self.load()?;
                let obj = crate::arrow::decode_ipc_file(&arrow_buffer::Buffer::from(
                    &l.bytes[..l.data_len],
                ))?;
                let (schema, mut batches) = scan.apply(&obj.schema, &obj.batches)?;
                table::unify_dictionaries(&schema, &mut batches)?;
                (schema, batches)
            }
        };
        let bytes = crate::arrow::encode_ipc_file(&schema, &batches)?;
        Ok(Loaded {
            data_len: bytes.len(),
            bytes,
            flags: PUT_ARROW,
        })
    }
}

/// Footers kept parsed; the cache is emptied when it grows past this.
const FOOTERS: usize = 512;

impl Inner {
    /// The parsed footer of raw file `seq`, from the cache or the file.
    fn footer(
        &self,
        seq: u64,
        path: &Path,
    ) -> Result<parquet::arrow::arrow_reader::ArrowReaderMetadata> {
        if let Some(m) = self
            .footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seq)
        {
            return Ok(m.clone());
        }
        let m = raw::metadata(path, self.cfg.max_object)?;
        let mut c = self.footers.lock().unwrap_or_else(|p| p.into_inner());
        if c.len() >= FOOTERS {
            c.clear();
        }
        c.insert(seq, m.clone());
        Ok(m)
    }

    /// Drops a file's objects from the map (the ones still located in it).
    fn forget_file(&self, st: &mut State, seq: u64) -> Option<FileInfo> {
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&seq);
        let f = st.files.remove(&seq)?;
        for k in &f.keys {
            if st.objects.get(k).is_some_and(|l| l.file == seq) {
                st.objects.remove(k);
            }
        }
        st.file_bytes -= f.bytes;
        Some(f)
    }

    /// Deletes the oldest files until the tier fits its capacity.
    fn enforce_capacity(&self, st: &mut State) {
        let cold = self.cold.get().is_some();
        let mut skip = 0;
        while st.file_bytes > self.cfg.capacity {
            // With a cold tier, a file goes only once the bucket holds all of it (the capacity
            // is exceeded meanwhile: the mover sends the oldest files first).
            let Some(&seq) = st.files.keys().nth(skip) else {
                break;
            };
            if cold && !self.safe_in_cold(st, seq) {
                skip += 1;
                continue;
            }
            let before = st.objects.len();
            if let Some(f) = self.forget_file(st, seq) {
                let _ = std::fs::remove_file(&f.path);
                st.counters.evicted_files += 1;
                st.counters.evictions += (before - st.objects.len()) as u64;
            }
        }
    }

    /// Writes one batch of queued objects: raw ones into one file, Arrow ones into a file each
    /// (or with the raw ones when they do not decode as Arrow IPC).
    fn write_batch(&self, batch: Vec<Arc<Pending>>) {
        let mut raws: Vec<&Arc<Pending>> = Vec::new();
        for p in &batch {
            if p.flags & PUT_ARROW != 0 {
                match self.write_table(p) {
                    Ok(()) => continue,
                    Err(e) => tracing::debug!("warm tier: {} is kept as raw bytes ({e})", p.key),
                }
            }
            raws.push(p);
        }
        // One raw file per partition.
        let mut by_part: BTreeMap<&str, Vec<&Arc<Pending>>> = BTreeMap::new();
        for p in raws {
            by_part.entry(p.part.as_str()).or_default().push(p);
        }
        for (part, raws) in by_part {
            self.write_raw(part, raws);
        }
    }

    /// The directory of partition `part` (created on first use).
    fn part_dir(&self, part: &str) -> Result<PathBuf> {
        if part.is_empty() {
            return Ok(self.dirs.root.clone());
        }
        let d = self.dirs.root.join(part);
        if !d.is_dir() {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::io(format!("cannot create {}", d.display()), e))?;
            files::sync_dir(&self.dirs.root)?;
        }
        Ok(d)
    }

    fn write_raw(&self, part: &str, raws: Vec<&Arc<Pending>>) {
        let seq = self.take_seq();
        let r = (|| -> Result<Written> {
            let name = file_name(seq, false);
            let (staged, f) = Staged::create(&self.dirs, &name)?;
            let mut w = raw::RawWriter::new(f, self.cfg.props(true))?;
            let mut placed = Vec::with_capacity(raws.len());
            for p in &raws {
                let (data, meta) = p.bytes.split_at(p.data_len);
                let loc = w.append(&p.key, p.flags, data, meta)?;
                placed.push((
                    p.key,
                    Located {
                        file: seq,
                        place: Place::Raw(loc),
                        data_len: data.len() as u64,
                        meta_len: meta.len() as u64,
                        flags: p.flags,
                    },
                ));
            }
            if let Some((k, v)) = catalog_kv(raws.iter().filter_map(|p| p.catalog.as_ref())) {
                w.add_metadata(k, v);
            }
            let f = w.finish()?;
            let dest = self.part_dir(part)?.join(&name);
            staged.commit(&f, &dest)?;
            let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
            Ok((dest, bytes, placed))
        })();
        self.install(seq, &raws, r);
    }

    /// Writes an Arrow object into a file of its own. On failure (not decodable as Arrow IPC,
    /// or a type Parquet cannot hold) nothing is recorded and the caller keeps it as raw bytes.
    fn write_table(&self, p: &Arc<Pending>) -> Result<()> {
        let (data, meta) = p.bytes.split_at(p.data_len);
        let obj = crate::arrow::decode_ipc_file(&arrow_buffer::Buffer::from(data))?;
        let seq = self.take_seq();
        let name = file_name(seq, true);
        let (staged, f) = Staged::create(&self.dirs, &name)?;
        let f = table::write(
            f,
            self.cfg.props(false),
            &p.key,
            &obj.schema,
            &obj.batches,
            meta,
            p.flags,
            data.len() as u64,
            catalog_kv(p.catalog.as_ref()),
        )?;
        let dest = self.part_dir(&p.part)?.join(&name);
        staged.commit(&f, &dest)?;
        let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        let l = Located {
            file: seq,
            place: Place::Table,
            data_len: data.len() as u64,
            meta_len: meta.len() as u64,
            flags: p.flags,
        };
        self.install(seq, &[p], Ok((dest, bytes, vec![(p.key, l)])));
        Ok(())
    }

    fn take_seq(&self) -> u64 {
        let mut st = lock(&self.state);
        st.next_seq += 1;
        st.next_seq - 1
    }

    /// Records a written file (or a failed write) and releases the queued objects.
    fn install(&self, seq: u64, items: &[&Arc<Pending>], r: Result<Written>) {
        let mut st = lock(&self.state);
        match r {
            Ok((path, bytes, placed)) => {
                let placed_kind = placed.first().map(|(_, l)| l.place);
                let mut keys = Vec::with_capacity(placed.len());
                for ((key, l), p) in placed.into_iter().zip(items) {
                    // Deleted (or deleted and demoted again) while being written: not indexed.
                    if st.pending.get(&key).is_some_and(|q| Arc::ptr_eq(q, p)) {
                        st.pending.remove(&key);
                        st.pending_bytes -= p.bytes.len() as u64;
                        st.objects.insert(key, l);
                        keys.push(key);
                    }
                }
                st.file_bytes += bytes;
                let raw = matches!(placed_kind, Some(Place::Raw(_)));
                let part = items.first().map(|p| p.part.clone()).unwrap_or_default();
                st.files.insert(
                    seq,
                    FileInfo {
                        path,
                        bytes,
                        keys,
                        raw,
                        part,
                    },
                );
                self.enforce_capacity(&mut st);
                if st.failing.take().is_some() {
                    tracing::info!("warm tier: writing again");
                }
                for p in items {
                    p.tell(Ok(()));
                }
            }
            Err(e) => {
                // Counted per object (once, however often it is retried). Objects of durable
                // puts fail with their put; the others (already acknowledged) stay queued and
                // are retried.
                st.counters.write_errors += items
                    .iter()
                    .filter(|p| !p.failed.swap(true, std::sync::atomic::Ordering::Relaxed))
                    .count() as u64;
                let why = format!("the warm tier cannot write ({e})");
                if st.failing.is_none() {
                    tracing::error!(
                        "warm tier: cannot write {} object(s): {e}; they stay queued (served from memory) and are retried every {} s, and new demotions are refused until a write succeeds",
                        items.len(),
                        RETRY_EVERY.as_secs()
                    );
                }
                st.failing = Some(why.clone());
                for p in items {
                    let current = st.pending.get(&p.key).is_some_and(|q| Arc::ptr_eq(q, p));
                    if p.durable() {
                        if current {
                            st.pending.remove(&p.key);
                            st.pending_bytes -= p.bytes.len() as u64;
                        }
                        p.tell(Err(why.clone()));
                    } else if current {
                        st.retry.push(Arc::clone(p));
                    }
                }
            }
        }
        drop(st);
        self.written.notify_all();
    }
}

/// Largest batch of queued objects written into one file.
const BATCH_BYTES: u64 = 64 << 20;
const BATCH_ITEMS: usize = 4096;
/// How long the writer waits for more objects before writing a partial batch.
const LINGER: Duration = Duration::from_millis(5);

/// How often objects whose write failed are tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

fn writer_loop(inner: &Inner, rx: mpsc::Receiver<Arc<Pending>>) {
    let mut open = true;
    while open {
        let retrying = !lock(&inner.state).retry.is_empty();
        let first = if retrying {
            match rx.recv_timeout(RETRY_EVERY) {
                Ok(p) => Some(p),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            match rx.recv() {
                Ok(p) => Some(p),
                Err(_) => {
                    open = false;
                    None
                }
            }
        };
        let mut batch = std::mem::take(&mut lock(&inner.state).retry);
        let mut bytes: u64 = batch.iter().map(|p| p.bytes.len() as u64).sum();
        if let Some(first) = first {
            bytes += first.bytes.len() as u64;
            batch.push(first);
            while bytes < BATCH_BYTES && batch.len() < BATCH_ITEMS {
                // Group commit: a durable put waiting in the batch takes only what is already
                // queued (no lingering); its file then carries every put queued meanwhile.
                let wait = if batch.iter().any(|p| p.durable()) {
                    Duration::ZERO
                } else {
                    LINGER
                };
                match rx.recv_timeout(wait) {
                    Ok(p) => {
                        bytes += p.bytes.len() as u64;
                        batch.push(p);
                    }
                    Err(_) => break,
                }
            }
        }
        // Objects deleted or replaced while queued are skipped.
        let batch: Vec<Arc<Pending>> = {
            let st = lock(&inner.state);
            batch
                .into_iter()
                .filter(|p| {
                    let current = st.pending.get(&p.key).is_some_and(|q| Arc::ptr_eq(q, p));
                    if !current {
                        p.tell(Err(
                            "it was deleted or replaced before it was written".into()
                        ));
                    }
                    current
                })
                .collect()
        };
        if !batch.is_empty() {
            inner.write_batch(batch);
        }
        inner.compact();
    }
    // The queue is closed and drained: what still waits for a retry could not be written.
    let mut st = lock(&inner.state);
    let failed = std::mem::take(&mut st.retry);
    for p in &failed {
        if st.pending.get(&p.key).is_some_and(|q| Arc::ptr_eq(q, p)) {
            st.pending.remove(&p.key);
            st.pending_bytes -= p.bytes.len() as u64;
            st.lost.push(p.key);
        }
    }
    if !st.lost.is_empty() {
        tracing::error!(
            "warm tier: {} object(s) could not be written before the tier closed ({})",
            st.lost.len(),
            st.failing.as_deref().unwrap_or("write failed")
        );
    }
}

/// An object copied by compaction: (old file, key, old place, new place).
type Moved = (u64, Key, Located, Located);

/// Raw files below this size are merged by compaction...
const SMALL_FILE: u64 = 8 << 20;
/// ...once there are this many of them...
const COMPACT_AT: usize = 8;
/// ...up to this many input bytes at a time.
const COMPACT_MAX: u64 = 128 << 20;

impl Inner {
    /// Merges small raw files (the writer makes one per batch, small under a light load) into
    /// one, dropping the rows of deleted and replaced objects. Runs on the writer thread, so no
    /// demotion is written meanwhile; deletions made meanwhile are re-recorded against the new
    /// file so that recovery never brings them back.
    fn compact(&self) {
        let (part, olds): (String, Vec<(u64, PathBuf)>) = {
            let st = lock(&self.state);
            // Within one partition: the first one with enough small files.
            let mut by_part: BTreeMap<&str, Vec<(u64, PathBuf, u64)>> = BTreeMap::new();
            for (&s, f) in &st.files {
                if f.raw && f.bytes < SMALL_FILE {
                    by_part
                        .entry(f.part.as_str())
                        .or_default()
                        .push((s, f.path.clone(), f.bytes));
                }
            }
            let Some((part, small)) = by_part.into_iter().find(|(_, v)| v.len() >= COMPACT_AT)
            else {
                return;
            };
            let part = part.to_string();
            let mut total = 0;
            let olds = small
                .into_iter()
                .take_while(|(_, _, b)| {
                    total += b;
                    total <= COMPACT_MAX
                })
                .map(|(s, p, _)| (s, p))
                .collect();
            (part, olds)
        };
        let seq = self.take_seq();
        let name = file_name(seq, false);
        let r = (|| -> Result<(Staged, std::fs::File, Vec<Moved>)> {
            let (staged, f) = Staged::create(&self.dirs, &name)?;
            let mut w = raw::RawWriter::new(f, self.cfg.props(true))?;
            let mut moved = Vec::new();
            for (old, path) in &olds {
                // Only the objects still located in that file are carried over.
                let live: HashMap<Key, Located> = {
                    let st = lock(&self.state);
                    st.files
                        .get(old)
                        .map(|f| {
                            f.keys
                                .iter()
                                .filter_map(|k| {
                                    st.objects
                                        .get(k)
                                        .filter(|l| l.file == *old)
                                        .map(|l| (*k, *l))
                                })
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let objects = match raw::read_all(path, self.cfg.max_object) {
                    Ok((v, listed)) => {
                        let mut st = lock(&self.state);
                        for (key, why) in listed.damaged {
                            let why = format!("{}: {why}", path.display());
                            match key {
                                // Only what still lives in this file (not what was deleted).
                                Some(k) => {
                                    if st.objects.get(&k).is_some_and(|l| l.file == *old) {
                                        st.damage(k, Some(*old), &why);
                                    }
                                }
                                None => tracing::error!("warm tier: {why}; those objects are lost"),
                            }
                        }
                        v
                    }
                    Err(e) => {
                        let mut st = lock(&self.state);
                        if !st.files.contains_key(old) {
                            // Moved to the cold tier meanwhile: nothing to carry over.
                            continue;
                        }
                        files::quarantine(&self.dirs, path, &e.to_string());
                        self.forget_file(&mut st, *old);
                        st.counters.quarantined += 1;
                        continue;
                    }
                };
                for o in objects {
                    let Some(l) = live.get(&o.key) else { continue };
                    if !matches!(l.place, Place::Raw(loc) if loc == o.loc) {
                        continue;
                    }
                    let loc = w.append(&o.key, o.flags, &o.data, &o.meta)?;
                    let new = Located {
                        file: seq,
                        place: Place::Raw(loc),
                        ..*l
                    };
                    moved.push((*old, o.key, *l, new));
                }
            }
            // The catalog rows kept with the objects move with them.
            let moved_keys: std::collections::HashSet<Key> = moved.iter().map(|m| m.1).collect();
            let rows: Vec<CatalogEntry> = olds
                .iter()
                .flat_map(|(_, path)| file_catalog(path).unwrap_or_default())
                .filter(|e| moved_keys.contains(&e.key))
                .collect();
            if let Some((k, v)) = catalog_kv(&rows) {
                w.add_metadata(k, v);
            }
            let f = w.finish()?;
            Ok((staged, f, moved))
        })();
        let (staged, f, moved) = match r {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("warm tier: compaction failed, files left as they are: {e}");
                return;
            }
        };
        let dest = match self.part_dir(&part) {
            Ok(d) => d.join(&name),
            Err(e) => {
                tracing::warn!("warm tier: compaction failed, files left as they are: {e}");
                return;
            }
        };
        // Under the state lock from here: no deletion can slip between the tombstones written
        // for the objects that died meanwhile and the new file becoming visible.
        let mut st = lock(&self.state);
        let mut keys = Vec::with_capacity(moved.len());
        let mut live = Vec::with_capacity(moved.len());
        let mut gone = String::new();
        for (old, key, was, now) in moved {
            let still = st.objects.get(&key).is_some_and(|l| {
                l.file == old
                    && matches!((l.place, was.place), (Place::Raw(a), Place::Raw(b)) if a == b)
            });
            if still {
                live.push((key, now));
            } else {
                // Deleted or replaced while compacting: its copy in the new file must stay dead.
                gone.push_str(&format!("{} {seq}\n", table::hex(key.as_bytes())));
            }
        }
        if !gone.is_empty() {
            let r = st
                .tombstones
                .write_all(gone.as_bytes())
                .and_then(|_| st.tombstones.sync_data());
            if let Err(e) = r {
                tracing::warn!("warm tier: compaction abandoned, cannot record deletions: {e}");
                return;
            }
        }
        if let Err(e) = staged.commit(&f, &dest) {
            tracing::warn!("warm tier: compaction failed, files left as they are: {e}");
            return;
        }
        for (key, now) in live {
            st.objects.insert(key, now);
            keys.push(key);
        }
        let bytes = f.metadata().map(|m| m.len()).unwrap_or(0);
        st.file_bytes += bytes;
        st.files.insert(
            seq,
            FileInfo {
                path: dest,
                bytes,
                keys,
                raw: true,
                part,
            },
        );
        for (old, _) in &olds {
            if let Some(f) = st.files.remove(old) {
                st.file_bytes -= f.bytes;
                let _ = std::fs::remove_file(&f.path);
                st.counters.compacted_files += 1;
            }
        }
        st.counters.compactions += 1;
        drop(st);
        let _ = files::sync_dir(&self.dirs.root);
    }
}

/// Scans every file on `threads` threads; one result per file, in order.
fn scan_all(found: &[(u64, bool, PathBuf)], threads: usize, max_object: u64) -> Vec<Scanned> {
    let scan = |(seq, arrow, path): &(u64, bool, PathBuf)| -> Scanned {
        if *arrow {
            let i = table::info(path, max_object)?;
            let entry = vec![(
                i.key,
                Located {
                    file: *seq,
                    place: Place::Table,
                    data_len: i.ipc_len,
                    meta_len: i.meta.len() as u64,
                    flags: i.flags,
                },
            )];
            Ok((entry, Vec::new()))
        } else {
            let listed = raw::scan(path, max_object)?;
            let entries = listed
                .entries
                .into_iter()
                .map(|e| {
                    (
                        e.key,
                        Located {
                            file: *seq,
                            place: Place::Raw(e.loc),
                            data_len: e.data_len,
                            meta_len: e.meta_len,
                            flags: e.flags,
                        },
                    )
                })
                .collect();
            Ok((entries, listed.damaged))
        }
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: Mutex<Vec<Option<Scanned>>> = Mutex::new((0..found.len()).map(|_| None).collect());
    let work = || loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(f) = found.get(i) else { break };
        let r = scan(f);
        out.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 1..threads.max(1).min(found.len()) {
            s.spawn(work);
        }
        work();
    });
    out.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Internal("file not scanned".into()))))
        .collect()
}

/// Applies `tombstones.log` (lines `HEXKEY FILESEQ`): a key deleted while in file `FILESEQ` is
/// dropped when it is found in that file or an older one (a later demotion brings it back).
/// Lines that no remaining file can need (`FILESEQ` older than every file) are compacted away.
/// Damaged objects found at start (`damaged`: key, file, why) are dropped the same way: a
/// deleted key does not come back as `Corrupt`.
fn apply_tombstones(
    dirs: &Dirs,
    path: &Path,
    objects: &mut HashMap<Key, Located>,
    damaged: &mut Vec<(Key, u64, String)>,
    min_seq: u64,
) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let mut keep = String::new();
    let mut dropped = false;
    for line in text.lines() {
        let parsed = line.split_once(' ').and_then(|(k, seq)| {
            Some((
                table::unhex(k).and_then(|b| Key::new(&b).ok())?,
                seq.parse::<u64>().ok()?,
            ))
        });
        // A torn last line (a crash while appending) parses as nothing and is dropped.
        let Some((key, seq)) = parsed else {
            dropped = true;
            continue;
        };
        if objects.get(&key).is_some_and(|l| l.file <= seq) {
            objects.remove(&key);
        }
        if !damaged.is_empty() {
            damaged.retain(|(k, file, _)| *k != key || *file > seq);
        }
        if seq >= min_seq {
            keep.push_str(line);
            keep.push('\n');
        } else {
            dropped = true;
        }
    }
    if dropped {
        let r = Staged::create(dirs, "tombstones.log").and_then(|(staged, mut f)| {
            f.write_all(keep.as_bytes())
                .map_err(|e| Error::io("cannot compact tombstones.log", e))?;
            staged.commit(&f, path)
        });
        if let Err(e) = r {
            tracing::warn!("warm tier: {e}");
        }
    }
}

/// Measurement hooks for `benches/warm.rs`; not part of the API.
#[doc(hidden)]
pub mod bench {
    use super::*;

    /// Times, on the Arrow-table file at `path` (median of `rounds`), the checks made before
    /// decoding (footer and every page header, [`crate::tier::parquet_guard`]) and a whole
    /// read of the table; returns milliseconds `(checks, read)`.
    pub fn table_check_ms(path: &Path, rounds: usize) -> (f64, f64) {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let mut check = Vec::new();
        let mut read = Vec::new();
        for _ in 0..rounds.max(1) {
            let t = std::time::Instant::now();
            let f = std::fs::File::open(path).expect("open");
            crate::tier::parquet_guard::footer(&f, path).expect("footer");
            let md =
                parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&f, Default::default())
                    .expect("metadata");
            crate::tier::parquet_guard::pages(&f, path, md.metadata(), None, None, u64::MAX)
                .expect("pages");
            check.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            table::read(path, 2, u64::MAX).expect("read");
            read.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median(check), median(read))
    }

    /// Times, on the raw file at `path` (median of `rounds`), loading its footer and page index
    /// as the point-read cache does with the checks made before decoding, and without them;
    /// returns milliseconds `(checked, unchecked)`. The cache pays this once per file.
    pub fn raw_footer_ms(path: &Path, rounds: usize) -> (f64, f64) {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (mut checked, mut plain) = (Vec::new(), Vec::new());
        for _ in 0..rounds.max(1) {
            let t = std::time::Instant::now();
            raw::metadata(path, u64::MAX >> 8).expect("metadata");
            checked.push(t.elapsed().as_secs_f64() * 1e3);
            let t = std::time::Instant::now();
            let f = std::fs::File::open(path).expect("open");
            parquet::arrow::arrow_reader::ArrowReaderMetadata::load(
                &f,
                parquet::arrow::arrow_reader::ArrowReaderOptions::new()
                    .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Optional),
            )
            .expect("metadata");
            plain.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median(checked), median(plain))
    }

    /// Opens a warm tier in `dir` holding `objects` small objects (written to a file), then
    /// times `lookups` lookups of keys it does not hold, in groups of 1,000; returns the
    /// nanoseconds per lookup of each group.
    pub fn negative_lookup_ns(dir: &Path, objects: usize, lookups: usize) -> Vec<f64> {
        let (w, _) = Warm::open(WarmConfig {
            dir: dir.to_path_buf(),
            capacity: u64::MAX,
            compression: WarmCompression::Lz4,
            queue_bytes: 1 << 30,
            threads: 2,
            max_object: 1 << 30,
        })
        .expect("open warm tier");
        for i in 0..objects {
            let k = Key::new(format!("present-{i}").as_bytes()).expect("key");
            w.demote(Demotion {
                key: k,
                data: &[i as u8; 64],
                meta: &[],
                flags: 0,
                part: String::new(),
                catalog: None,
                durable: false,
            })
            .expect("the tier writes");
        }
        while lock(&w.inner.state).pending_bytes > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let keys: Vec<Key> = (0..1000)
            .map(|i| Key::new(format!("absent-{i}").as_bytes()).expect("key"))
            .collect();
        (0..lookups.div_ceil(1000))
            .map(|_| {
                let t = std::time::Instant::now();
                for k in &keys {
                    assert!(!std::hint::black_box(w.contains(std::hint::black_box(k))));
                }
                t.elapsed().as_nanos() as f64 / keys.len() as f64
            })
            .collect()
    }
}
