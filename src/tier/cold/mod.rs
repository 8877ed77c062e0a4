//! The cold tier: objects the warm tier moved to object storage (`--cold URL`: S3 and
//! S3-compatible stores, GCS, Azure, local directories), through arrow-rs's `object_store`.
//!
//! One object per Parquet file, in the warm tier's own format and partition layout:
//! `PREFIX/[PARTITION/](arrow|raw)-HEXKEY.parquet`, so pyarrow and DuckDB read the bucket
//! directly. The name is the key, so daemons sharing a bucket read what the others moved there
//! (for content addresses, writing a key twice writes the same bytes). This module only talks
//! to the store (index, upload, fetch, quarantine, with retries and bounded concurrency); the
//! policy that moves files and the promotion of fetched files live in the warm tier
//! (`tier::warm::cold_link`), which owns the files.

use crate::error::{Error, Result};
use crate::key::Key;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When warm files move to the cold tier. A file moves when any rule says so.
#[derive(Debug, Clone)]
pub struct ColdPolicy {
    /// Files older than this (by modification time) move. `None`: age alone never moves one.
    pub after: Option<Duration>,
    /// Files at least this large move as soon as they are written. `None`: size alone never
    /// moves one.
    pub min_size: Option<u64>,
    /// When the warm tier's files exceed this percentage of its capacity, the oldest move
    /// until they fit under it again.
    pub high_water_pct: u8,
}

impl Default for ColdPolicy {
    fn default() -> Self {
        ColdPolicy {
            after: Some(Duration::from_secs(3600)),
            min_size: None,
            high_water_pct: 80,
        }
    }
}

/// The cold tier's configuration (`cidcached --cold URL --cold-option K=V ...`).
#[derive(Debug, Clone)]
pub struct ColdConfig {
    /// `s3://bucket/prefix`, `gs://…`, `az://…`, `file:///dir`.
    pub url: String,
    /// Store options (`endpoint`, `allow_http`, `region`, `access_key_id`, …), applied after
    /// the environment (`AWS_*` for S3).
    pub options: Vec<(String, String)>,
    /// When warm files move here.
    pub policy: ColdPolicy,
    /// Transfers in flight at once.
    pub concurrency: usize,
    /// Attempts after the first one before a transfer fails.
    pub retries: u32,
    /// How often the bucket is listed again to learn what other daemons moved there.
    pub relist: Duration,
}

impl ColdConfig {
    /// A configuration with the default policy, 8 transfers at once, 4 retries, relisting every
    /// 10 seconds.
    pub fn new(url: &str) -> ColdConfig {
        ColdConfig {
            url: url.to_string(),
            options: Vec::new(),
            policy: ColdPolicy::default(),
            concurrency: 8,
            retries: 4,
            relist: Duration::from_secs(10),
        }
    }
}

/// One object in the bucket.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Partition directory (`""`: the prefix itself).
    pub part: String,
    pub arrow: bool,
    pub size: u64,
}

#[derive(Default)]
struct Counters {
    uploads: u64,
    uploaded_bytes: u64,
    upload_errors: u64,
    fetches: u64,
    fetched_bytes: u64,
    fetch_errors: u64,
    retries: u64,
    quarantined: u64,
    listings: u64,
}

struct State {
    index: HashMap<Key, Entry>,
    /// Keys whose bucket object was found damaged, and why.
    damaged: HashMap<Key, String>,
    /// Keys whose last fetch failed (the store was down or refused), and why; told once to
    /// the get that asked, then forgotten (the next get tries again).
    failed: HashMap<Key, String>,
    last_list: Option<Instant>,
    counters: Counters,
}

/// A connection to the cold tier's bucket. Thread-safe; transfers run on its own small runtime
/// and block the calling thread (never called under the store lock).
pub(crate) struct Cold {
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
    cfg: ColdConfig,
    rt: tokio::runtime::Runtime,
    state: Mutex<State>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The file name of `key` in the bucket.
pub(crate) fn object_name(key: &Key, arrow: bool) -> String {
    format!(
        "{}-{}.parquet",
        if arrow { "arrow" } else { "raw" },
        crate::tier::warm::table::hex(key.as_bytes())
    )
}

fn parse_name(name: &str) -> Option<(Key, bool)> {
    let stem = name.strip_suffix(".parquet")?;
    let (arrow, hex) = if let Some(h) = stem.strip_prefix("arrow-") {
        (true, h)
    } else {
        (false, stem.strip_prefix("raw-")?)
    };
    Key::new(&crate::tier::warm::table::unhex(hex)?)
        .ok()
        .map(|k| (k, arrow))
}

fn cold_err(e: impl std::fmt::Display) -> Error {
    Error::io("cold tier", std::io::Error::other(e.to_string()))
}

fn build_store(cfg: &ColdConfig) -> Result<(Arc<dyn ObjectStore>, StorePath)> {
    let url = url::Url::parse(&cfg.url)
        .map_err(|e| Error::InvalidArgument(format!("--cold {}: not a URL ({e})", cfg.url)))?;
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: cfg.retries as usize,
        retry_timeout: Duration::from_secs(120),
    };
    let bad = |k: &str, e: &dyn std::fmt::Display| {
        Error::InvalidArgument(format!("--cold-option {k}: {e}"))
    };
    match url.scheme() {
        "file" => {
            if !cfg.options.is_empty() {
                return Err(Error::InvalidArgument(
                    "--cold-option: a file:// cold tier takes no options".into(),
                ));
            }
            let dir = url.to_file_path().map_err(|_| {
                Error::InvalidArgument(format!("--cold {}: not a local path", cfg.url))
            })?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
            let s = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| bad("file", &e))?;
            Ok((Arc::new(s), StorePath::default()))
        }
        "s3" | "s3a" => {
            let mut b = object_store::aws::AmazonS3Builder::from_env()
                .with_url(cfg.url.clone())
                .with_retry(retry);
            for (k, v) in &cfg.options {
                let key: object_store::aws::AmazonS3ConfigKey =
                    k.to_ascii_lowercase().parse().map_err(|e| bad(k, &e))?;
                b = b.with_config(key, v);
            }
            let s = b.build().map_err(|e| bad("s3", &e))?;
            Ok((
                Arc::new(s),
                StorePath::from_url_path(url.path()).map_err(cold_err)?,
            ))
        }
        _ => {
            let (s, p) = object_store::parse_url_opts(&url, cfg.options.iter().cloned())
                .map_err(|e| Error::InvalidArgument(format!("--cold {}: {e}", cfg.url)))?;
            Ok((Arc::from(s), p))
        }
    }
}

impl Cold {
    /// Connects to the bucket and lists what it holds.
    pub(crate) fn open(cfg: ColdConfig) -> Result<Cold> {
        let (store, prefix) = build_store(&cfg)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cidcached-cold-io")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the cold tier's runtime", e))?;
        let c = Cold {
            store,
            prefix,
            cfg,
            rt,
            state: Mutex::new(State {
                index: HashMap::new(),
                damaged: HashMap::new(),
                failed: HashMap::new(),
                last_list: None,
                counters: Counters::default(),
            }),
        };
        // A bucket unreachable at start is no reason not to serve: the mover lists it again.
        if let Err(e) = c.relist() {
            tracing::error!("cold tier {}: {e}; retrying in the background", c.cfg.url);
        }
        Ok(c)
    }

    pub(crate) fn policy(&self) -> &ColdPolicy {
        &self.cfg.policy
    }

    /// Whether the bucket holds `key` (as last listed or written). Memory only.
    pub(crate) fn contains(&self, key: &Key) -> bool {
        lock(&self.state).index.contains_key(key)
    }

    pub(crate) fn entry(&self, key: &Key) -> Option<Entry> {
        lock(&self.state).index.get(key).cloned()
    }

    /// Runs `f` to completion on the cold tier's runtime. Callers may be inside another runtime
    /// (the daemon's sessions): then a scoped thread waits instead, since a runtime cannot be
    /// blocked on from within one.
    fn block<F: std::future::Future + Send>(&self, f: F) -> F::Output
    where
        F::Output: Send,
    {
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| self.rt.block_on(f))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            })
        } else {
            self.rt.block_on(f)
        }
    }

    /// Why the last fetch of `key` failed, once.
    pub(crate) fn take_failure(&self, key: &Key) -> Option<String> {
        lock(&self.state).failed.remove(key)
    }

    /// Why `key`'s bucket object was quarantined, if it was.
    pub(crate) fn damage(&self, key: &Key) -> Option<String> {
        lock(&self.state).damaged.get(key).cloned()
    }

    /// Forgets `key` locally (a newer object replaced it; the next move overwrites the bucket's
    /// copy).
    pub(crate) fn forget(&self, key: &Key) {
        let mut st = lock(&self.state);
        st.index.remove(key);
        st.damaged.remove(key);
    }

    fn path(&self, key: &Key, e: &Entry) -> StorePath {
        let mut p = self.prefix.clone();
        if !e.part.is_empty() {
            p = p.clone().join(e.part.as_str());
        }
        p.join(object_name(key, e.arrow).as_str())
    }

    /// Lists the bucket again if the last listing is older than the relist interval.
    pub(crate) fn relist_if_due(&self) {
        let due = lock(&self.state)
            .last_list
            .is_none_or(|t| t.elapsed() >= self.cfg.relist);
        if due {
            if let Err(e) = self.relist() {
                tracing::warn!("cold tier {}: {e}", self.cfg.url);
            }
        }
    }

    /// Lists the bucket: `PREFIX/NAME` and `PREFIX/PARTITION/NAME` (not `quarantine/`).
    pub(crate) fn relist(&self) -> Result<()> {
        let found: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&self.prefix)).try_collect())
            .map_err(|e| {
                Error::io(
                    format!("cannot list the cold tier {}", self.cfg.url),
                    std::io::Error::other(e.to_string()),
                )
            })?;
        let mut index = HashMap::new();
        for m in found {
            let Some(rel) = m.location.prefix_match(&self.prefix) else {
                continue;
            };
            let parts: Vec<String> = rel.map(|p| p.as_ref().to_string()).collect();
            let (part, name) = match parts.as_slice() {
                [name] => (String::new(), name),
                [part, name] if part.contains('=') => (part.clone(), name),
                _ => continue,
            };
            if let Some((key, arrow)) = parse_name(name) {
                index.insert(
                    key,
                    Entry {
                        part,
                        arrow,
                        size: m.size,
                    },
                );
            }
        }
        let mut st = lock(&self.state);
        for k in st.damaged.keys() {
            index.remove(k);
        }
        st.index = index;
        st.last_list = Some(Instant::now());
        st.counters.listings += 1;
        Ok(())
    }

    /// Runs `op` with retries and exponential backoff (100 ms doubling, at most 5 s); a missing
    /// object is not retried.
    async fn retried<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, object_store::Error>>,
    {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e @ object_store::Error::NotFound { .. }) => {
                    return Err(Error::NotFound(format!(
                        "{what}: not in the cold tier {} ({e})",
                        self.cfg.url
                    )))
                }
                Err(e) if attempt >= self.cfg.retries => {
                    return Err(Error::io(
                        format!(
                            "{what} failed after {} attempt(s) on the cold tier {}",
                            attempt + 1,
                            self.cfg.url
                        ),
                        std::io::Error::other(e.to_string()),
                    ))
                }
                Err(e) => {
                    tracing::debug!("cold tier: {what}: {e}; retrying in {delay:?}");
                    lock(&self.state).counters.retries += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    /// Uploads objects (key, entry, file bytes), at most `concurrency` at once; each result says
    /// whether that object is now safely in the bucket (only then may the warm copy go).
    pub(crate) fn upload_many(&self, items: Vec<(Key, Entry, Vec<u8>)>) -> Vec<Result<()>> {
        let futs = items.into_iter().map(|(key, e, bytes)| async move {
            let path = self.path(&key, &e);
            let payload = PutPayload::from(bytes);
            let len = payload.content_length() as u64;
            let r = self
                .retried(&format!("uploading {key} to {path}"), || {
                    self.store.put(&path, payload.clone())
                })
                .await;
            let mut st = lock(&self.state);
            match &r {
                Ok(_) => {
                    st.counters.uploads += 1;
                    st.counters.uploaded_bytes += len;
                    st.damaged.remove(&key);
                    st.index.insert(key, Entry { size: len, ..e });
                }
                Err(err) => {
                    st.counters.upload_errors += 1;
                    tracing::error!("cold tier: {err}; the warm copy stays");
                }
            }
            r.map(|_| ())
        });
        let n = self.cfg.concurrency.max(1);
        self.block(futures::stream::iter(futs).buffered(n).collect::<Vec<_>>())
    }

    /// Downloads `key`'s file; refuses one larger than `max_bytes` before reading it.
    pub(crate) fn fetch(&self, key: &Key, max_bytes: u64) -> Result<(Entry, Vec<u8>)> {
        let e = self.entry(key).ok_or_else(|| {
            Error::NotFound(format!("{key} is not in the cold tier {}", self.cfg.url))
        })?;
        let path = self.path(key, &e);
        let r = self.block(async {
            self.retried(&format!("fetching {key} from {path}"), || async {
                let got = self.store.get(&path).await?;
                if got.meta.size > max_bytes {
                    return Ok(Err(got.meta.size));
                }
                got.bytes().await.map(Ok)
            })
            .await
        });
        let mut st = lock(&self.state);
        match r {
            Ok(Ok(b)) => {
                st.failed.remove(key);
                st.counters.fetches += 1;
                st.counters.fetched_bytes += b.len() as u64;
                Ok((e, b.to_vec()))
            }
            Ok(Err(size)) => {
                st.counters.fetch_errors += 1;
                drop(st);
                let why = format!("its file holds {size} bytes, over the limit of {max_bytes}");
                Err(self.quarantine(key, &why))
            }
            Err(err) => {
                st.counters.fetch_errors += 1;
                if matches!(err, Error::NotFound(_)) {
                    // Deleted by another daemon since the listing.
                    st.index.remove(key);
                } else if st.failed.len() < 1 << 16 {
                    st.failed.insert(*key, err.to_string());
                }
                Err(err)
            }
        }
    }

    /// Moves `key`'s bucket object to `PREFIX/quarantine/` (best effort) and remembers why;
    /// returns the `Corrupt` error a get of it answers.
    pub(crate) fn quarantine(&self, key: &Key, why: &str) -> Error {
        let e = self.entry(key);
        let mut moved_to = String::from("(not moved)");
        if let Some(e) = &e {
            let from = self.path(key, e);
            let to = self
                .prefix
                .clone()
                .join("quarantine")
                .join(object_name(key, e.arrow).as_str());
            let r = self.block(async {
                self.store.copy(&from, &to).await?;
                self.store.delete(&from).await
            });
            match r {
                Ok(()) => moved_to = to.to_string(),
                Err(err) => tracing::warn!("cold tier: cannot quarantine {from}: {err}"),
            }
        }
        let msg = format!(
            "{key} is damaged in the cold tier {} ({why}); it was quarantined to {moved_to}",
            self.cfg.url
        );
        tracing::error!("cold tier: {msg}");
        let mut st = lock(&self.state);
        st.index.remove(key);
        st.damaged.insert(*key, msg.clone());
        st.counters.quarantined += 1;
        Error::Corrupt(msg)
    }

    /// Deletes `key`'s bucket object. A missing one is no error.
    pub(crate) fn delete(&self, key: &Key) -> Result<()> {
        let e = {
            let mut st = lock(&self.state);
            st.damaged.remove(key);
            st.index.remove(key)
        };
        let Some(e) = e else { return Ok(()) };
        let path = self.path(key, &e);
        match self.block(self.retried(&format!("deleting {path}"), || self.store.delete(&path))) {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Counters, named `cold.*`.
    pub(crate) fn stats(&self) -> Vec<(&'static str, u64)> {
        let st = lock(&self.state);
        let c = &st.counters;
        vec![
            ("cold.objects", st.index.len() as u64),
            ("cold.bytes", st.index.values().map(|e| e.size).sum::<u64>()),
            ("cold.uploads", c.uploads),
            ("cold.uploaded_bytes", c.uploaded_bytes),
            ("cold.upload_errors", c.upload_errors),
            ("cold.fetches", c.fetches),
            ("cold.fetched_bytes", c.fetched_bytes),
            ("cold.fetch_errors", c.fetch_errors),
            ("cold.retries", c.retries),
            ("cold.quarantined", c.quarantined),
            ("cold.listings", c.listings),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        let k = Key::new(b"abc").unwrap();
        assert_eq!(parse_name(&object_name(&k, true)), Some((k, true)));
        assert_eq!(parse_name(&object_name(&k, false)), Some((k, false)));
        assert_eq!(parse_name("arrow-zz.parquet"), None);
        assert_eq!(parse_name("other.parquet"), None);
    }
}
