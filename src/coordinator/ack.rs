//! Acknowledging writes: a put or a seal is answered at once, or, when it is durable
//! (`--durability sync` or the put's own flag), once its warm-tier write is synced. The wait
//! happens outside the store lock; the object is published when it ends.

use super::session::Shared;
use super::store::{Persist, Store};
use crate::error::Result;
use crate::proto::{Request, Response};
use std::future::Future;
use std::pin::Pin;

/// The answer to a write request.
pub(crate) enum Ack {
    /// Ready now.
    Now(Response),
    /// Ready once the durable writes it waits for end.
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a `Put` or `PutMany` request of `client` whose items are not Arrow (those are
/// validated first, see `session::arrow_put`, then acknowledged with [`one`] or [`many`]).
pub(crate) fn write(store: &Shared, client: u64, req: Request<'_>) -> Ack {
    let mut st = lock(store);
    match req {
        Request::Put(it) => one(store, st.put(client, &it, false)),
        Request::PutMany(items) => {
            let checks: Vec<Result<bool>> = items.iter().map(|_| Ok(false)).collect();
            many(store, st.put_many(client, &items, &checks))
        }
        _ => Ack::Now(Response::error(&crate::error::Error::Internal(
            "not a write request".into(),
        ))),
    }
}

/// Waits for a durable write, then publishes (or drops) its object.
async fn settle(store: Shared, p: Persist) -> Result<()> {
    let r = p
        .ticket
        .await
        .unwrap_or_else(|_| Err("the warm tier stopped before writing it".into()));
    lock(&store).finish_persist(p.id, p.key, r)
}

/// The answer to a seal whose object waits for its durable write (then published).
pub(crate) fn persisted(
    store: &Shared,
    p: Persist,
) -> impl Future<Output = Response> + Send + 'static {
    let store = store.clone();
    async move {
        match settle(store, p).await {
            Ok(()) => Response::Done,
            Err(e) => Response::error(&e),
        }
    }
}

/// The answer to one put.
pub(crate) fn one(store: &Shared, r: Result<Option<Persist>>) -> Ack {
    match r {
        Ok(None) => Ack::Now(Response::Done),
        Err(e) => Ack::Now(Response::error(&e)),
        Ok(Some(p)) => {
            let store = store.clone();
            Ack::Later(Box::pin(async move {
                match settle(store, p).await {
                    Ok(()) => Response::Done,
                    Err(e) => Response::error(&e),
                }
            }))
        }
    }
}

/// The answer to a batch of puts.
pub(crate) fn many(store: &Shared, rs: Vec<Result<Option<Persist>>>) -> Ack {
    if rs.iter().all(|r| !matches!(r, Ok(Some(_)))) {
        return Ack::Now(Response::Statuses(Store::statuses(
            rs.into_iter().map(|r| r.map(|_| ())).collect(),
        )));
    }
    let store = store.clone();
    Ack::Later(Box::pin(async move {
        // The writes share group commits: waiting for them one after the other costs about
        // as long as the last one.
        let mut out = Vec::with_capacity(rs.len());
        for r in rs {
            out.push(match r {
                Ok(Some(p)) => settle(store.clone(), p).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            });
        }
        Response::Statuses(Store::statuses(out))
    }))
}
