//! The warm tier's side of the cold tier: the mover that sends warm files to the bucket by the
//! policy (age, size, space) and drops a warm file only once every object in it is confirmed
//! in the bucket, and the promotion of a bucket object back into a warm file (checked by the
//! same guards as any warm file, quarantined in the bucket when damaged).

use super::*;
use crate::tier::cold::{Cold, Entry};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

/// How often the mover looks at the warm files.
const TICK: Duration = Duration::from_millis(250);

impl Inner {
    fn cold(&self) -> Option<&Arc<Cold>> {
        self.cold.get()
    }

    /// Whether every object still located in file `seq` is in the bucket.
    pub(super) fn safe_in_cold(&self, st: &State, seq: u64) -> bool {
        let Some(c) = self.cold() else { return false };
        st.files.get(&seq).is_some_and(|f| {
            f.keys
                .iter()
                .filter(|k| st.objects.get(k).is_some_and(|l| l.file == seq))
                .all(|k| c.contains(k))
        })
    }

    /// Files the policy moves now, oldest first.
    fn candidates(&self, cold: &Cold) -> Vec<u64> {
        let p = cold.policy();
        let st = lock(&self.state);
        let high = self.cfg.capacity / 100 * u64::from(p.high_water_pct.min(100));
        let mut over = st.file_bytes.saturating_sub(high);
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (&seq, f) in &st.files {
            if self
                .cold_backoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&seq)
                .is_some_and(|(t, _)| *t > Instant::now())
            {
                continue;
            }
            let old = p.after.is_some_and(|a| {
                std::fs::metadata(&f.path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .is_some_and(|age| age >= a)
            });
            let big = p.min_size.is_some_and(|m| f.bytes >= m);
            if over > 0 || old || big {
                over = over.saturating_sub(f.bytes);
                out.push(seq);
            }
        }
        out
    }

    /// Uploads what file `seq` holds that the bucket lacks; drops the warm file when all of it
    /// is confirmed there. Errors leave the file in place (retried later, with backoff).
    fn move_file(&self, cold: &Cold, seq: u64) {
        let (path, raw, part, keys) = {
            let st = lock(&self.state);
            let Some(f) = st.files.get(&seq) else { return };
            let keys: Vec<(Key, Located)> = f
                .keys
                .iter()
                .filter_map(|k| {
                    st.objects
                        .get(k)
                        .filter(|l| l.file == seq)
                        .map(|l| (*k, *l))
                })
                .filter(|(k, _)| !cold.contains(k))
                .collect();
            (f.path.clone(), f.raw, f.part.clone(), keys)
        };
        let mut items = Vec::with_capacity(keys.len());
        let mut failed = false;
        for (key, l) in keys {
            let e = Entry {
                part: part.clone(),
                arrow: !raw,
                size: 0,
            };
            let bytes = if raw {
                self.single_raw_file(seq, &path, &key, &l)
            } else {
                std::fs::read(&path)
                    .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))
            };
            match bytes {
                Ok(b) => items.push((key, e, b)),
                Err(err) => {
                    // A file compacted away meanwhile is no failure: its objects moved on.
                    if path.exists() {
                        tracing::warn!("cold tier: cannot prepare {key} for upload: {err}");
                    }
                    failed = true;
                }
            }
        }
        for r in cold.upload_many(items) {
            failed |= r.is_err();
        }
        let mut st = lock(&self.state);
        if !failed && self.safe_in_cold(&st, seq) {
            let before = st.objects.len();
            if let Some(f) = self.forget_file(&mut st, seq) {
                let _ = std::fs::remove_file(&f.path);
                st.counters.cold_moved_files += 1;
                st.counters.cold_moved += (before - st.objects.len()) as u64;
                if st.moved_cold.len() < DAMAGED_MAX {
                    st.moved_cold.extend(f.keys);
                }
            }
            self.cold_backoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&seq);
        } else {
            drop(st);
            let mut b = self.cold_backoff.lock().unwrap_or_else(|p| p.into_inner());
            let n = b.get(&seq).map_or(0, |(_, n)| *n + 1);
            let wait = Duration::from_millis(500 << n.min(6));
            b.insert(seq, (Instant::now() + wait, n));
        }
    }

    /// One raw object as a raw-layout file of its own (the bytes to upload).
    fn single_raw_file(&self, seq: u64, path: &Path, key: &Key, l: &Located) -> Result<Vec<u8>> {
        let Place::Raw(loc) = l.place else {
            return Err(Error::Internal("a table object in a raw file".into()));
        };
        let md = self.footer(seq, path)?;
        let (data, meta) = raw::read(path, &md, loc, l.data_len)?;
        let name = format!("cold-{}-{}.tmp", std::process::id(), self.take_seq());
        let (staged, f) = Staged::create(&self.dirs, &name)?;
        let mut w = raw::RawWriter::new(f, self.cfg.props(true))?;
        w.append(key, l.flags, &data, &meta)?;
        let f = w.finish()?;
        drop(f);
        let tmp = self.dirs.tmp.join(&name);
        let r =
            std::fs::read(&tmp).map_err(|e| Error::io(format!("cannot read {}", tmp.display()), e));
        drop(staged);
        r
    }

    /// Fetches `key` from the bucket into a warm file of its own and indexes it; returns where
    /// it now is. One fetch per key: concurrent callers wait for the first and find its file.
    pub(super) fn promote_from_cold(&self, key: &Key) -> Result<Origin> {
        let cold = self
            .cold()
            .ok_or_else(|| Error::Internal("no cold tier".into()))?;
        let gate = self
            .cold_fetching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*key)
            .or_default()
            .clone();
        let _one = gate.lock().unwrap_or_else(|p| p.into_inner());
        let local = |st: &State| -> Option<Origin> {
            let l = *st.objects.get(key)?;
            Some(Origin::File(l.file, st.files.get(&l.file)?.path.clone(), l))
        };
        let r = (|| {
            if let Some(o) = local(&lock(&self.state)) {
                return Ok(o);
            }
            if let Some(why) = cold.damage(key) {
                return Err(Error::Corrupt(why));
            }
            // The largest file an object within the limit can make, with room for Parquet's
            // framing; the guards below check the rest.
            let max = self
                .cfg
                .max_object
                .saturating_mul(2)
                .saturating_add(8 << 20);
            let (e, bytes) = cold.fetch(key, max)?;
            let seq = self.take_seq();
            let name = file_name(seq, e.arrow);
            let (staged, mut f) = Staged::create(&self.dirs, &name)?;
            f.write_all(&bytes)
                .map_err(|err| Error::io(format!("cannot write {name}"), err))?;
            let part = if e.part.contains('/') || e.part.contains("..") {
                String::new()
            } else {
                e.part.clone()
            };
            let dest = self.part_dir(&part)?.join(&name);
            staged.commit(&f, &dest)?;
            let found = [(seq, e.arrow, dest.clone())];
            let scanned = scan_all(&found, 1, self.cfg.max_object)
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("file not scanned".into())));
            let entries = match scanned {
                Ok((entries, bad))
                    if bad.is_empty() && entries.len() == 1 && entries[0].0 == *key =>
                {
                    entries
                }
                Ok((entries, bad)) => {
                    let _ = std::fs::remove_file(&dest);
                    let why = match bad.first() {
                        Some((_, why)) => why.clone(),
                        None => {
                            format!("the file holds {} object(s), not just {key}", entries.len())
                        }
                    };
                    return Err(cold.quarantine(key, &why));
                }
                Err(err) => {
                    let _ = std::fs::remove_file(&dest);
                    return Err(cold.quarantine(key, &err.to_string()));
                }
            };
            let mut st = lock(&self.state);
            let l = entries[0].1;
            st.objects.insert(*key, l);
            st.file_bytes += bytes.len() as u64;
            st.files.insert(
                seq,
                FileInfo {
                    path: dest.clone(),
                    bytes: bytes.len() as u64,
                    keys: vec![*key],
                    raw: !e.arrow,
                    part,
                },
            );
            st.counters.cold_promotions += 1;
            Ok(Origin::File(seq, dest, l))
        })();
        drop(_one);
        let mut g = self.cold_fetching.lock().unwrap_or_else(|p| p.into_inner());
        if g.get(key).is_some_and(|a| Arc::strong_count(a) <= 2) {
            g.remove(key);
        }
        r
    }
}

/// The mover thread: every tick, relists the bucket when due and moves the files the policy
/// selects.
pub(super) fn mover_loop(inner: &Inner) {
    let Some(cold) = inner.cold().cloned() else {
        return;
    };
    while !inner.stopping.load(Ordering::Acquire) {
        cold.relist_if_due();
        for seq in inner.candidates(&cold) {
            if inner.stopping.load(Ordering::Acquire) {
                return;
            }
            inner.move_file(&cold, seq);
        }
        std::thread::sleep(TICK);
    }
}

impl Warm {
    /// Attaches the cold tier: starts the mover, and from now on misses reach the bucket.
    pub(crate) fn attach_cold(&mut self, cold: Cold) -> Result<()> {
        let _ = self.inner.cold.set(Arc::new(cold));
        let w = self.inner.clone();
        let h = std::thread::Builder::new()
            .name("cidcached-cold".into())
            .spawn(move || mover_loop(&w))
            .map_err(|e| Error::io("cannot start the cold-tier mover", e))?;
        self.mover = Some(h);
        Ok(())
    }

    /// Why the last promotion of `key` from the cold tier failed (the store was down or
    /// refused), once: the get that missed answers this error instead of "missing".
    pub(crate) fn take_cold_failure(&self, key: &Key) -> Option<String> {
        self.inner.cold()?.take_failure(key)
    }

    /// Keys moved to the cold tier since the last call (for the catalog).
    pub(crate) fn take_cold_moves(&self) -> Vec<Key> {
        std::mem::take(&mut lock(&self.inner.state).moved_cold)
    }

    /// Which tier below shared memory holds `key`: the warm files (or queue), else the bucket.
    pub(crate) fn tier_of(&self, key: &Key) -> crate::tier::catalog::StorageTier {
        use crate::tier::catalog::StorageTier;
        let st = lock(&self.inner.state);
        if st.objects.contains_key(key) || st.pending.contains_key(key) {
            StorageTier::Warm
        } else if self.inner.cold().is_some_and(|c| c.contains(key)) {
            StorageTier::Cold
        } else {
            StorageTier::None
        }
    }
}
