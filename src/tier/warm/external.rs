//! The warm tier as a Plasma external store (`-e parquet:///DIR`): objects the Plasma front-end
//! evicts are written to Parquet in `DIR` and come back on a Get, also after a restart.

use super::{Warm, WarmCompression, WarmConfig};
use crate::key::Key;
use crate::plasma::codec::ObjectId;
use crate::plasma::server::ExternalStore;
use std::path::PathBuf;

/// A warm tier of its own, in the directory the endpoint names, keyed by the 20-byte ids.
pub(crate) struct ParquetExternalStore {
    warm: Warm,
}

impl ParquetExternalStore {
    /// Opens (and recovers) the tier in `dir`, sized to a quarter of its filesystem's free space.
    pub(crate) fn open(dir: PathBuf) -> crate::Result<ParquetExternalStore> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| crate::Error::io(format!("cannot create {}", dir.display()), e))?;
        let v = rustix::fs::statvfs(&dir)
            .map_err(|e| crate::Error::io(format!("cannot stat {}", dir.display()), e))?;
        let (warm, rec) = Warm::open(WarmConfig {
            dir,
            capacity: v.f_bavail.saturating_mul(v.f_frsize) / 4,
            compression: WarmCompression::Zstd,
            queue_bytes: 256 << 20,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            // The Plasma store's memory limit is not known here: objects are bounded by what
            // their files hold (lengths never allocate ahead of the bytes read), pages by
            // Parquet's 2 GiB.
            max_object: i32::MAX as u64,
        })?;
        tracing::info!(
            "Plasma external store: {} objects in {} Parquet files",
            rec.objects,
            rec.files
        );
        Ok(ParquetExternalStore { warm })
    }
}

fn key(id: &ObjectId) -> Key {
    Key::new(id).expect("20 bytes is a valid key")
}

impl ExternalStore for ParquetExternalStore {
    fn put(&mut self, id: &ObjectId, data: Vec<u8>) {
        // Plasma's `data ‖ metadata` is opaque here; it comes back whole.
        let d = super::Demotion {
            key: key(id),
            data: &data,
            meta: &[],
            flags: 0,
            part: String::new(),
            catalog: None,
            durable: false,
        };
        // The Plasma protocol has no way to refuse a spill: say so in the log.
        if let Err(why) = self.warm.demote(d) {
            tracing::error!("Plasma external store: cannot spill {}: {why}", key(id));
        }
    }

    fn take(&mut self, id: &ObjectId) -> Option<Vec<u8>> {
        let k = key(id);
        let loaded = match self.warm.source(&k)?.load() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("Plasma external store: cannot restore {k}: {e}");
                return None;
            }
        };
        if let Err(e) = self.warm.delete(&k) {
            tracing::warn!("Plasma external store: {e}");
        }
        Some(loaded.bytes)
    }

    fn remove(&mut self, id: &ObjectId) {
        if let Err(e) = self.warm.delete(&key(id)) {
            tracing::warn!("Plasma external store: {e}");
        }
    }
}
