//! The coordinator's side of the IPFS tier: publishing what a read-through fetch brought back
//! (through the store's promotion machinery: one fetch per key however many wait for it),
//! prefetching a fetched node's children, and puts that also add the object to the IPFS node.
//!
//! A fetch runs detached from the connection that asked, so the other waiters of the key are
//! served even if that one goes away; its bytes are written into their shared-memory allocation
//! outside the store lock, and published (or freed) under it.

use super::session::{lock, Shared};
use super::store::Sealing;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::proto::{PutItem, Response, PUT_IPFS};
use crate::tier::ipfs::{Fetched, Ipfs};
use bytes::Bytes;
use cid::Cid;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Children of one node prefetched at most (a huge directory is not copied whole).
const MAX_PREFETCH_LINKS: usize = 1024;

/// What a prefetch may still do below the node that started it.
#[derive(Clone)]
pub(crate) struct Prefetch {
    /// Levels below this fetch that may still be prefetched.
    depth_left: u32,
    /// Bytes (by the links' declared sizes) left to the whole prefetch.
    budget: Arc<AtomicU64>,
}

/// Fetches `cid` from IPFS and publishes it under `key`, which the store has marked as being
/// promoted; `prefetch` is set when no get asked for it (yet).
pub(crate) fn spawn_fetch(
    store: &Shared,
    key: Key,
    ipfs: Arc<Ipfs>,
    cid: Cid,
    prefetch: Option<Prefetch>,
) {
    let store = store.clone();
    tokio::spawn(async move {
        let permits = ipfs.permit(prefetch.is_some()).await;
        let fetched = match ipfs.fetch(&cid).await {
            Ok(f) => f,
            Err(e) => return lock(&store).fail_fetch(key, e),
        };
        drop(permits);
        let len = fetched.len();
        let begun = lock(&store).begin_ipfs_fill(key, len);
        let (id, mut target) = match begun {
            Ok(x) => x,
            Err(e) => return lock(&store).fail_fetch(key, e),
        };
        let (links, written) = match fetched {
            Fetched::Block { bytes, links } => {
                target.bytes_mut()[..bytes.len()].copy_from_slice(&bytes);
                (links, Ok(()))
            }
            // A file may be large: assembled on the blocking pool.
            Fetched::File(plan) => {
                let r = tokio::task::spawn_blocking(move || {
                    plan.write_into(&mut target.bytes_mut()[..len as usize])
                })
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("the fetch task failed: {e}"))));
                (Vec::new(), r)
            }
        };
        let published = lock(&store).finish_ipfs_fill(key, id, written.map(|()| len));
        if !published || links.is_empty() {
            return;
        }
        let next = match prefetch {
            Some(p) => p.depth_left.checked_sub(1).map(|d| Prefetch {
                depth_left: d,
                budget: p.budget,
            }),
            None => {
                let c = ipfs.config();
                (c.prefetch_depth > 0).then(|| Prefetch {
                    depth_left: c.prefetch_depth - 1,
                    budget: Arc::new(AtomicU64::new(c.prefetch_bytes)),
                })
            }
        };
        if let Some(p) = next {
            prefetch_links(&store, &ipfs, &links, p);
        }
    });
}

/// Starts fetches of `links` that no tier holds, while the budget lasts.
fn prefetch_links(store: &Shared, ipfs: &Arc<Ipfs>, links: &[(Cid, u64)], p: Prefetch) {
    let max_block = ipfs.config().max_block;
    for (c, tsize) in links.iter().take(MAX_PREFETCH_LINKS) {
        // A link without a size counts as one block of the largest size.
        let cost = if *tsize == 0 { max_block } else { *tsize };
        let Ok(key) = Key::new(&c.to_bytes()) else {
            continue;
        };
        if p.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_sub(cost)
            })
            .is_err()
        {
            return;
        }
        match lock(store).start_prefetch(&key) {
            Some((ipfs, cid)) => spawn_fetch(store, key, ipfs, cid, Some(p.clone())),
            None => {
                p.budget.fetch_add(cost, Ordering::Relaxed);
            }
        }
    }
}

/// A put with [`PUT_IPFS`]: the object is added to the IPFS node first (so a failure stores
/// nothing anywhere), then stored here.
pub(crate) async fn put(
    store: Shared,
    client: u64,
    key: Key,
    flags: u32,
    meta: Vec<u8>,
    data: Bytes,
) -> Response {
    let r = async {
        let ipfs = lock(&store).ipfs_for_add(client)?;
        add(&store, &ipfs, &key, data.clone()).await?;
        let it = PutItem {
            key,
            flags: flags & !PUT_IPFS,
            meta: &meta,
            data: &data,
        };
        lock(&store).put(client, &it, false)
    };
    match r.await {
        Ok(None) => Response::Done,
        // A durable put: answered once its warm-tier write is synced.
        Ok(Some(p)) => super::ack::persisted(&store, p).await,
        Err(e) => Response::error(&e),
    }
}

/// The seal of an object created with [`PUT_IPFS`]: its bytes (copied when the seal arrived)
/// are added to the IPFS node, then it is sealed. If the add fails, it stays unsealed: the
/// creator may abort it or seal again.
pub(crate) async fn seal(store: Shared, client: u64, key: Key, data: Bytes) -> Response {
    let r = async {
        let ipfs = lock(&store).ipfs_for_add(client)?;
        add(&store, &ipfs, &key, data).await?;
        let sealing = lock(&store).seal(client, key)?;
        match sealing {
            Sealing::Done => Ok(None),
            Sealing::Persist(p) => Ok(Some(p)),
            // Arrow objects are refused with this flag at create; should one come, it is
            // validated like any other seal (it must reach `finish_seal`).
            Sealing::Validate(mut p) => {
                let (p, valid) = tokio::task::spawn_blocking(move || {
                    let v = p.validate();
                    (p, v)
                })
                .await
                .map_err(|e| Error::Internal(format!("the validation task failed: {e}")))?;
                lock(&store).finish_seal(p, valid)
            }
        }
    };
    match r.await {
        Ok(None) => Response::Done,
        // A durable put: answered once its warm-tier write is synced.
        Ok(Some(p)) => super::ack::persisted(&store, p).await,
        Err(e) => Response::error(&e),
    }
}

async fn add(store: &Shared, ipfs: &Ipfs, key: &Key, data: Bytes) -> Result<()> {
    let r = ipfs.add(key, data).await;
    lock(store).count_ipfs_add(&r);
    r
}
