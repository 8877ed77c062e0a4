//! One client connection: frame I/O, dispatch to the store, deferred replies for waiting gets.
//!
//! The connection is the client's lease: when it closes for any reason (the process exited or
//! died), the client's lease page and pins are dropped and its unsealed objects freed.

use super::store::{check_loaded, check_put_item, Lookup, Promotion, ScanStart, Sealing, Store};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::proto::{self, Header, HelloInfo, Request, Response, HEADER_LEN};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};

pub(crate) type Shared = Arc<Mutex<Store>>;
type Tx = mpsc::UnboundedSender<Vec<u8>>;

pub(crate) fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    // A panic while holding the lock is a bug; keep serving with the state as it is rather than
    // cascading the panic into every connection.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// Serves one connection until it closes.
pub(crate) async fn serve(store: Shared, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    // Buffered: a header and a small body usually arrive in one read instead of two.
    let mut rd = tokio::io::BufReader::with_capacity(64 << 10, rd);
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });

    let mut client: Option<u64> = None;
    // Set when the store ends this session (the client broke its lease page).
    let mut revoked: Option<Arc<Notify>> = None;
    // Waiting gets of this connection; aborted when it closes.
    let mut waits = tokio::task::JoinSet::new();
    let mut hdr = [0u8; HEADER_LEN];
    loop {
        let read = tokio::select! {
            r = rd.read_exact(&mut hdr) => r,
            () = revocation(&revoked) => break,
        };
        if read.is_err() {
            break;
        }
        let h = match Header::parse(&hdr) {
            Ok(h) => h,
            Err(e) => {
                // Framing is lost: answer once and close.
                tracing::warn!("closing connection after a bad frame header: {e}");
                let _ = tx.send(
                    Response::error(&e)
                        .encode(u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"))),
                );
                break;
            }
        };
        let mut body = vec![0u8; h.body_len as usize];
        if rd.read_exact(&mut body).await.is_err() {
            break;
        }
        let req = match Request::decode(h.msg_type, &body) {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Response::error(&e).encode(h.request_id));
                continue;
            }
        };
        let Some(cid) = client else {
            match req {
                Request::Hello {
                    version, writer, ..
                } => {
                    if version != proto::VERSION {
                        let e = Error::Protocol(format!(
                            "client speaks protocol {version}, this coordinator {}",
                            proto::VERSION
                        ));
                        let _ = tx.send(Response::error(&e).encode(h.request_id));
                        break;
                    }
                    let mut st = lock(&store);
                    match st.connect(writer) {
                        Ok((id, lease_name)) => {
                            client = Some(id);
                            revoked = st.revocation(id);
                            let info = HelloInfo {
                                client_id: id,
                                boot_id: st.boot_id,
                                store: st.store.clone(),
                                shm_dir: st.shm_dir.display().to_string(),
                                lease_name,
                                inline_max: st.inline_max,
                            };
                            let _ = tx.send(Response::Hello(info).encode(h.request_id));
                        }
                        Err(e) => {
                            let _ = tx.send(Response::error(&e).encode(h.request_id));
                            break;
                        }
                    }
                }
                _ => {
                    let e =
                        Error::Protocol("the first message on a connection must be Hello".into());
                    let _ = tx.send(Response::error(&e).encode(h.request_id));
                    break;
                }
            }
            continue;
        };
        if puts_arrow(&req) {
            // Arrow items are validated before they reach the store lock, off the async workers.
            // Awaited here: a connection has at most one such body in memory at a time.
            let resp = arrow_put(&store, cid, h, body).await;
            let _ = tx.send(resp.encode(h.request_id));
            continue;
        }
        match req {
            Request::Seal { key } if lock(&store).seal_adds_to_ipfs(cid, &key) => {
                let data = lock(&store).ipfs_seal_data(cid, &key);
                let (store, tx) = (store.clone(), tx.clone());
                waits.spawn(async move {
                    let r = super::ipfs::seal(store, cid, key, data).await;
                    let _ = tx.send(r.encode(h.request_id));
                });
            }
            Request::Seal { key } => match lock(&store).seal(cid, key) {
                Ok(Sealing::Validate(p)) => spawn_seal(&store, p, h.request_id, &tx),
                r => {
                    let resp = r.map_or_else(|e| Response::error(&e), |_| Response::Done);
                    let _ = tx.send(resp.encode(h.request_id));
                }
            },
            Request::Get { key, timeout_ms } => {
                if let Some(resp) = try_get(&store, &[key], timeout_ms, false) {
                    let _ = tx.send(resp.encode(h.request_id));
                } else {
                    let (store, tx) = (store.clone(), tx.clone());
                    waits.spawn(async move {
                        let r = wait_get(store, vec![key], timeout_ms, false).await;
                        let _ = tx.send(r.encode(h.request_id));
                    });
                }
            }
            Request::GetMany { keys, timeout_ms } => {
                if let Some(resp) = try_get(&store, &keys, timeout_ms, true) {
                    let _ = tx.send(resp.encode(h.request_id));
                } else {
                    let (store, tx) = (store.clone(), tx.clone());
                    waits.spawn(async move {
                        let r = wait_get(store, keys, timeout_ms, true).await;
                        let _ = tx.send(r.encode(h.request_id));
                    });
                }
            }
            Request::Put(it) if it.flags & proto::PUT_IPFS != 0 => {
                let (store, tx) = (store.clone(), tx.clone());
                let (key, flags, meta) = (it.key, it.flags, it.meta.to_vec());
                let data = bytes::Bytes::copy_from_slice(it.data);
                waits.spawn(async move {
                    let r = super::ipfs::put(store, cid, key, flags, meta, data).await;
                    let _ = tx.send(r.encode(h.request_id));
                });
            }
            Request::Scan { key, spec } => {
                let scan = match crate::scan::Scan::from_strings(&spec) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Response::error(&e).encode(h.request_id));
                        continue;
                    }
                };
                let start = lock(&store).begin_scan(&key, &scan);
                let (store, tx) = (store.clone(), tx.clone());
                waits.spawn(async move {
                    let r = run_scan(store, start, scan).await;
                    let _ = tx.send(r.encode(h.request_id));
                });
            }
            Request::CatalogQuery {
                filters,
                columns,
                limit,
                format,
            } => {
                let r = catalog_query(&store, &filters, &columns, limit, format);
                let _ = tx.send(
                    r.unwrap_or_else(|e| Response::error(&e))
                        .encode(h.request_id),
                );
            }
            Request::CatalogUpsert { ipc } => {
                // Decoded outside the store lock: it may be large, and it is untrusted.
                let r = crate::tier::catalog::entries_from_ipc(ipc)
                    .and_then(|entries| lock(&store).catalog_upsert(entries))
                    .map(|_| Response::Done);
                let _ = tx.send(
                    r.unwrap_or_else(|e| Response::error(&e))
                        .encode(h.request_id),
                );
            }
            other => {
                let resp = handle(&mut lock(&store), cid, other);
                let _ = tx.send(resp.encode(h.request_id));
            }
        }
    }
    waits.abort_all();
    while waits.join_next().await.is_some() {}
    if let Some(id) = client {
        lock(&store).disconnect(id);
    }
    drop(tx);
    let _ = writer.await;
}

/// Completes when the store has ended the session (never before Hello).
async fn revocation(n: &Option<Arc<Notify>>) {
    match n {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

fn handle(st: &mut Store, client: u64, req: Request<'_>) -> Response {
    let r: Result<Response> = match req {
        Request::Hello { .. } => Err(Error::Protocol("Hello sent twice".into())),
        Request::Create {
            key,
            data_len,
            meta_len,
            flags,
        } => st
            .create(client, key, data_len, meta_len, flags)
            .map(|(seg, offset, seg_size)| Response::Created {
                seg,
                offset,
                seg_size,
            }),
        Request::Abort { key } => st.abort(client, key).map(|_| Response::Done),
        // Arrow items never come this way (see `arrow_put`); the store refuses them.
        Request::Put(it) => st.put(client, &it, false).map(|_| Response::Done),
        Request::PutMany(items) => {
            let checks: Vec<Result<bool>> = items.iter().map(|_| Ok(false)).collect();
            Ok(Response::Statuses(st.put_many(client, &items, &checks)))
        }
        Request::Contains { key } => Ok(Response::Bool(st.contains(&key))),
        Request::Delete { key } => st.delete(client, key).map(|_| Response::Done),
        Request::List { cursor, limit } => {
            let (entries, next) = st.list(cursor, limit);
            Ok(Response::List { entries, next })
        }
        Request::Stats => {
            // Hits reported since the last periodic harvest count too.
            st.harvest_hits();
            Ok(Response::Stats(st.stats()))
        }
        Request::Get { .. }
        | Request::GetMany { .. }
        | Request::Seal { .. }
        | Request::Scan { .. }
        | Request::CatalogQuery { .. }
        | Request::CatalogUpsert { .. } => Err(Error::Internal(
            "gets, scans and catalog requests are dispatched separately".into(),
        )),
    };
    r.unwrap_or_else(|e| Response::error(&e))
}

/// Whether each key is present, and how many are missing. A key the warm tier found damaged
/// is not missing (nothing will come): its answer is `Corrupt`.
fn statuses(st: &mut Store, keys: &[Key]) -> (Vec<Result<bool>>, usize) {
    let present: Vec<Result<bool>> = keys
        .iter()
        .map(|k| match st.lookup(k) {
            Lookup::Present => Ok(true),
            Lookup::Missing => match st.warm_damage(k) {
                Some(why) => Err(Error::Corrupt(why)),
                None => Ok(false),
            },
        })
        .collect();
    let missing = present.iter().filter(|p| matches!(p, Ok(false))).count();
    (present, missing)
}

fn reply(present: Vec<Result<bool>>, many: bool) -> Response {
    if many {
        Response::Statuses(
            present
                .into_iter()
                .map(|p| match p {
                    Ok(true) => Ok(()),
                    Ok(false) => Err((crate::error::Code::NotFound, String::new())),
                    Err(e) => Err((e.code(), e.message())),
                })
                .collect(),
        )
    } else {
        match present.into_iter().next() {
            Some(Ok(p)) => Response::Bool(p),
            Some(Err(e)) => Response::error(&e),
            None => Response::Bool(false),
        }
    }
}

/// Whether `req` stores an Arrow object inline.
fn puts_arrow(req: &Request<'_>) -> bool {
    match req {
        Request::Put(it) => it.flags & proto::PUT_ARROW != 0,
        Request::PutMany(items) => items.iter().any(|it| it.flags & proto::PUT_ARROW != 0),
        _ => false,
    }
}

/// Validates the Arrow items of a `Put` or `PutMany` on the blocking pool (the request's own
/// copy of the bytes, which no other process can write), then stores the batch.
async fn arrow_put(store: &Shared, client: u64, h: Header, body: Vec<u8>) -> Response {
    if let Err(e) = lock(store).check_writer(client) {
        return Response::error(&e);
    }
    let store = store.clone();
    let r = tokio::task::spawn_blocking(move || match Request::decode(h.msg_type, &body) {
        Ok(Request::Put(it)) => match check_put_item(&it) {
            Ok(valid) => lock(&store).put(client, &it, valid).map(|_| Response::Done),
            Err(e) => {
                lock(&store).counters.arrow_rejected += 1;
                Err(e)
            }
        },
        Ok(Request::PutMany(items)) => {
            let checks: Vec<Result<bool>> = items.iter().map(check_put_item).collect();
            Ok(Response::Statuses(
                lock(&store).put_many(client, &items, &checks),
            ))
        }
        Ok(_) => Err(Error::Internal("not a put".into())),
        Err(e) => Err(e),
    })
    .await
    .unwrap_or_else(|e| Err(Error::Internal(format!("put task failed: {e}"))));
    r.unwrap_or_else(|e| Response::error(&e))
}

/// Validates an Arrow object being sealed on the blocking pool, then publishes it (or frees it)
/// and answers. Detached from the connection: the object is the coordinator's once its seal was
/// asked, and it is published even if its creator goes away meanwhile.
fn spawn_seal(store: &Shared, p: super::store::PendingSeal, request_id: u64, tx: &Tx) {
    let (store, tx) = (store.clone(), tx.clone());
    tokio::spawn(async move {
        let joined = tokio::task::spawn_blocking(move || {
            let mut p = p;
            // The decoder's panics are errors already; this keeps the object from being lost
            // (neither published nor freed) should anything else panic.
            let valid = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.validate()))
                .unwrap_or_else(|_| Err(Error::Internal("the validation panicked".into())));
            (p, valid)
        })
        .await;
        // Only a runtime shutting down cancels the task; nothing is left to answer then.
        let Ok((p, valid)) = joined else { return };
        let r = lock(&store).finish_seal(p, valid);
        let resp = r.map_or_else(|e| Response::error(&e), |_| Response::Done);
        let _ = tx.send(resp.encode(request_id));
    });
}

/// Answers at once when every key is present, or when the caller does not want to wait and no
/// missing key can be promoted from the warm tier.
fn try_get(store: &Shared, keys: &[Key], timeout_ms: i64, many: bool) -> Option<Response> {
    let mut st = lock(store);
    let (present, missing) = statuses(&mut st, keys);
    for (k, p) in keys.iter().zip(&present) {
        if !matches!(p, Ok(true)) {
            st.count_miss(k);
        }
    }
    let promotable = || {
        keys.iter()
            .zip(&present)
            .any(|(k, p)| matches!(p, Ok(false)) && st.can_supply(k))
    };
    if missing == 0 || (timeout_ms == 0 && !promotable()) {
        return Some(reply(present, many));
    }
    None
}

/// Loads a warm object on the blocking pool and publishes it; detached from the connection
/// that asked, so other waiters of the key are served even if that one goes away. An Arrow
/// table is encoded straight into its shared-memory allocation, outside the store lock.
fn spawn_promotion(store: &Shared, key: Key, src: crate::tier::warm::Source) {
    use crate::tier::warm::Prepared;
    let store = store.clone();
    tokio::spawn(async move {
        let prepared = match tokio::task::spawn_blocking(move || src.prepare()).await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("promotion task failed: {e}"))),
        };
        let (schema, batches, meta, flags, bound) = match prepared {
            Ok(Prepared::Table {
                schema,
                batches,
                meta,
                flags,
                bound,
            }) => (schema, batches, meta, flags, bound),
            Ok(Prepared::Bytes(l)) => {
                // Bytes read from a warm file: an invalid Arrow object stays readable as raw.
                let checked = tokio::task::spawn_blocking(move || check_loaded(l, &key, false))
                    .await
                    .unwrap_or_else(|e| {
                        Err(Error::Internal(format!("promotion task failed: {e}")))
                    });
                return lock(&store).finish_promotion(key, checked);
            }
            Err(e) => return lock(&store).finish_promotion(key, Err(e)),
        };
        let total = (bound + meta.len()) as u64;
        let begun = lock(&store).begin_fill(key, total, flags);
        let (id, mut target) = match begun {
            Ok(x) => x,
            Err(e) => return lock(&store).finish_promotion(key, Err(e)),
        };
        let filled = tokio::task::spawn_blocking(move || {
            let out = target.bytes_mut();
            match crate::arrow::encode_ipc_into(&schema, &batches, out) {
                Ok(n) => {
                    out[n..n + meta.len()].copy_from_slice(&meta);
                    // Decoded from an untrusted file and encoded by us: validated like any
                    // other Arrow object before it is published as one.
                    Ok(super::store::validate_arrow(&out[..n])
                        .map(|_| (n as u64, meta.len() as u64, true)))
                }
                // The bound was too small (it should not be): encode in memory instead.
                Err(e) => Err((e, schema, batches, meta)),
            }
        })
        .await;
        match filled {
            Ok(Ok(lens)) => lock(&store).finish_fill(key, id, lens),
            Ok(Err((e, schema, batches, meta))) => {
                tracing::warn!("promotion of {key}: direct encoding failed ({e}), copying");
                lock(&store).abort_fill(key, id);
                let r = tokio::task::spawn_blocking(move || {
                    let mut bytes = crate::arrow::encode_ipc_file(&schema, &batches)?;
                    let data_len = bytes.len();
                    bytes.extend_from_slice(&meta);
                    let l = crate::tier::warm::Loaded {
                        bytes,
                        data_len,
                        flags,
                    };
                    check_loaded(l, &key, true)
                })
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("promotion task failed: {e}"))));
                lock(&store).finish_promotion(key, r);
            }
            Err(e) => lock(&store).finish_fill(
                key,
                id,
                Err(Error::Internal(format!("promotion task failed: {e}"))),
            ),
        }
    });
}

/// Waits until every key is sealed or the timeout passes (negative = forever). Keys held by the
/// warm tier are promoted, and CIDs no tier holds fetched from IPFS when the store has a source
/// (one promotion or fetch per key however many wait for it), and waited for even past the
/// timeout: they are coming. A fetch this request waited for that failed answers its error.
async fn wait_get(store: Shared, keys: Vec<Key>, timeout_ms: i64, many: bool) -> Response {
    let deadline = (timeout_ms >= 0)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(timeout_ms as u64));
    let notify = Arc::new(Notify::new());
    // Unregisters on every exit, including the task being aborted with its connection.
    struct Unwait<'a>(&'a Shared, &'a [Key], &'a Arc<Notify>);
    impl Drop for Unwait<'_> {
        fn drop(&mut self) {
            lock(self.0).unwait(self.1, self.2);
        }
    }
    let _unwait = Unwait(&store, &keys, &notify);
    let mut tried: Vec<Key> = Vec::new();
    // Keys whose fetch from IPFS this request waited for: its failure is the answer.
    let mut followed: Vec<Key> = Vec::new();
    loop {
        let promoting = {
            let mut st = lock(&store);
            let (mut present, mut missing) = statuses(&mut st, &keys);
            let mut promoting = false;
            for (k, p) in keys.iter().zip(present.iter_mut()) {
                if !matches!(p, Ok(false)) {
                    continue;
                }
                match st.promotion(k, !tried.contains(k)) {
                    Promotion::No => {
                        if let Some(e) = followed.contains(k).then(|| st.fetch_failure(k)).flatten()
                        {
                            *p = Err(e);
                            missing -= 1;
                        }
                    }
                    Promotion::InProgress => {
                        promoting = true;
                        if !followed.contains(k) {
                            followed.push(*k);
                        }
                    }
                    Promotion::Start(src) => {
                        tried.push(*k);
                        promoting = true;
                        spawn_promotion(&store, *k, src);
                    }
                    Promotion::Fetch(ipfs, cid) => {
                        tried.push(*k);
                        followed.push(*k);
                        promoting = true;
                        super::ipfs::spawn_fetch(&store, *k, ipfs, cid, None);
                    }
                }
            }
            let expired = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if missing == 0 || (expired && !promoting) {
                return reply(present, many);
            }
            // Registered under the same lock as the check: a seal cannot slip in between.
            st.unwait(&keys, &notify);
            for (k, p) in keys.iter().zip(&present) {
                if matches!(p, Ok(false)) {
                    st.wait_for(*k, &notify);
                }
            }
            promoting
        };
        match deadline {
            Some(d) if !promoting => {
                let _ = tokio::time::timeout_at(d, notify.notified()).await;
            }
            _ => notify.notified().await,
        }
    }
}

/// Runs (or waits for) a warm scan and answers with the key of its result.
async fn run_scan(store: Shared, start: ScanStart, scan: crate::scan::Scan) -> Response {
    let derived = match start {
        ScanStart::Hot => return Response::Bool(true),
        ScanStart::Missing => return Response::Bool(false),
        ScanStart::Ready(d) => return Response::Key(d),
        ScanStart::Start(src, d) => {
            let r = match tokio::task::spawn_blocking(move || {
                src.scan(&scan).and_then(|l| check_loaded(l, &d, true))
            })
            .await
            {
                Ok(r) => r,
                Err(e) => Err(Error::Internal(format!("scan task failed: {e}"))),
            };
            return match lock(&store).finish_scan(d, r) {
                Ok(()) => Response::Key(d),
                Err(e) => Response::error(&e),
            };
        }
        ScanStart::InProgress(d) => d,
    };
    // Another request runs the same scan: wait for its end.
    let notify = Arc::new(Notify::new());
    loop {
        {
            let mut st = lock(&store);
            if matches!(st.lookup(&derived), Lookup::Present) {
                st.unwait(&[derived], &notify);
                return Response::Key(derived);
            }
            if !st.is_promoting(&derived) {
                st.unwait(&[derived], &notify);
                return Response::error(&Error::NotFound(
                    "the same scan, run by another request, failed".into(),
                ));
            }
            st.unwait(&[derived], &notify);
            st.wait_for(derived, &notify);
        }
        notify.notified().await;
    }
}

/// Runs a catalog query: the rows are selected under the store lock, formatted outside it.
fn catalog_query(
    store: &Shared,
    filters: &[String],
    columns: &str,
    limit: u64,
    format: u8,
) -> Result<Response> {
    use crate::tier::catalog::{output_schema, write_output, OutputFormat, Query};
    let format = match format {
        0 => OutputFormat::Table,
        1 => OutputFormat::Ipc,
        2 => OutputFormat::Parquet,
        f => {
            return Err(Error::InvalidArgument(format!(
                "unknown output format {f}; 0 table, 1 Arrow IPC, 2 Parquet"
            )))
        }
    };
    let mut q = Query::parse(filters, (!columns.is_empty()).then_some(columns))?;
    q.limit = (limit > 0).then_some(limit as usize);
    let batch = lock(store).catalog()?.query(&q)?;
    let mut out = Vec::new();
    write_output(&mut out, format, &output_schema(&q), &[batch])?;
    if out.len() > proto::MAX_BODY as usize - 64 {
        return Err(Error::InvalidArgument(format!(
            "the result is {} bytes, over the {}-byte frame limit; add filters, a projection or a limit",
            out.len(),
            proto::MAX_BODY
        )));
    }
    Ok(Response::Bytes(out))
}
