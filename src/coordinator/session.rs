//! One client connection: frame I/O, dispatch to the store, deferred replies for waiting gets.
//!
//! The connection is the client's lease: when it closes for any reason (the process exited or
//! died), the client's lease page and pins are dropped and its unsealed objects freed.
//!
//! What one connection can make the coordinator hold is bounded: a frame body is read as it
//! arrives (a large one first takes its length from the shared [`FrameBudget`]), at most
//! [`MAX_IN_FLIGHT`] waiting requests (waiting for [`MAX_WAITING_KEYS`] keys at most), and at
//! most [`REPLY_QUEUE`] bytes of replies the client has not read: past either bound the
//! session stops reading its requests until the client catches up.

use super::store::{
    check_loaded, check_put_item, Lookup, PendingSeal, Promotion, ScanStart, Sealing, Store, Waiter,
};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::limits::{FrameBudget, FramePermit, BODY_STALL};
use crate::proto::{self, Header, HelloInfo, Request, Response, HEADER_LEN};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

pub(crate) type Shared = Arc<Mutex<Store>>;

/// Bytes of replies a connection may have queued that its client has not read yet.
pub(crate) const REPLY_QUEUE: usize = 1 << 20;
/// Requests of one connection waiting at once (gets waiting for a seal, scans).
pub(crate) const MAX_IN_FLIGHT: usize = 1024;
/// Keys the waiting requests of one connection wait for at once (a `GetMany` holds all of its
/// keys; one larger than this still goes alone).
pub(crate) const MAX_WAITING_KEYS: usize = 1 << 14;
/// Read buffer of a connection: a header and a small body usually arrive in one read.
const READ_BUFFER: usize = 16 << 10;

type Reader = tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>;

pub(crate) fn lock(store: &Shared) -> std::sync::MutexGuard<'_, Store> {
    // A panic while holding the lock is a bug; keep serving with the state as it is rather than
    // cascading the panic into every connection.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

/// The coordinator is stopping: every session finishes the request it is handling and ends.
/// Cheap to clone; thread-safe.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<(AtomicBool, Notify)>);

impl Stop {
    /// Tells every holder to stop.
    pub(crate) fn stop(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    /// Resolves once [`Stop::stop`] was called (at once if it already was).
    pub(crate) async fn wait(&self) {
        let n = self.0 .1.notified();
        tokio::pin!(n);
        n.as_mut().enable();
        if self.0 .0.load(Ordering::SeqCst) {
            return;
        }
        n.await;
    }
}

/// What every session shares: the store, the frame limits, the stop signal.
pub(crate) struct Ctx {
    pub store: Shared,
    /// Largest body accepted (at most [`proto::MAX_BODY`]).
    pub max_frame: u32,
    pub budget: Arc<FrameBudget>,
    pub stop: Stop,
}

/// The connection's queue of replies, bounded in bytes: a send waits for room.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::UnboundedSender<(Vec<u8>, OwnedSemaphorePermit)>,
    room: Arc<Semaphore>,
}

impl Outbox {
    /// Queues `frame` once there is room for it. False when the connection is finished (its
    /// writer failed) or the coordinator is stopping.
    async fn send(&self, frame: Vec<u8>, stop: &Stop) -> bool {
        // A reply larger than the queue takes all of it, so it still goes out.
        let n = frame.len().clamp(1, REPLY_QUEUE) as u32;
        let permit = tokio::select! {
            p = self.room.clone().acquire_many_owned(n) => match p {
                Ok(p) => p,
                Err(_) => return false,
            },
            _ = stop.wait() => return false,
        };
        self.tx.send((frame, permit)).is_ok()
    }
}

/// Why a body could not be read.
enum BodyError {
    /// The connection closed, or the coordinator is stopping.
    Closed,
    /// No byte of it arrived for [`BODY_STALL`].
    Stalled,
}

/// Reads a body of `len` bytes as it arrives: the buffer grows with what was received, never
/// to what the header declared up front; a body over [`crate::limits::SMALL_BODY`] first takes
/// its length from the budget (waiting for other connections to give bytes back).
async fn read_body(
    rd: &mut Reader,
    len: usize,
    ctx: &Ctx,
) -> std::result::Result<(Vec<u8>, Option<FramePermit>), BodyError> {
    let permit = if len as u64 > crate::limits::SMALL_BODY {
        tokio::select! {
            p = ctx.budget.take(len as u64) => Some(p),
            _ = ctx.stop.wait() => return Err(BodyError::Closed),
            _ = hung_up(rd.get_ref().as_ref()) => return Err(BodyError::Closed),
        }
    } else {
        None
    };
    let chunk = crate::limits::SMALL_BODY as usize;
    let mut body = Vec::with_capacity(len.min(chunk));
    while body.len() < len {
        let left = len - body.len();
        if body.capacity() == body.len() {
            // Doubling, capped at what is left: never more than received + a chunk ahead.
            body.reserve_exact(left.min(body.len().max(chunk)));
        }
        let mut part = (&mut *rd).take(left as u64);
        tokio::select! {
            r = tokio::time::timeout(BODY_STALL, part.read_buf(&mut body)) => match r {
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return Err(BodyError::Closed),
                Err(_) => return Err(BodyError::Stalled),
            },
            _ = ctx.stop.wait() => return Err(BodyError::Closed),
        }
    }
    Ok((body, permit))
}

/// Resolves once the client has closed its connection (both directions: a client that only
/// stopped sending may still read its replies). Checked once a second: it is what a session
/// that stopped reading, and so cannot see the end of the stream, waits on.
async fn hung_up(sock: &UnixStream) {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut p = [PollFd::new(sock, PollFlags::empty())];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if poll(&mut p, Some(&zero)).is_ok()
            && p[0].revents().intersects(PollFlags::HUP | PollFlags::ERR)
        {
            return;
        }
    }
}

/// Answers a connection the coordinator will not serve: reads its first request's header (so
/// the error carries its id, as a client expects), replies with `e`, closes.
pub(crate) async fn refuse(mut stream: UnixStream, e: Error) {
    let mut hdr = [0u8; HEADER_LEN];
    let t = Duration::from_secs(2);
    let id = match tokio::time::timeout(t, stream.read_exact(&mut hdr)).await {
        Ok(Ok(_)) => u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes")),
        _ => 0,
    };
    let frame = Response::error(&e).encode(id);
    let _ = tokio::time::timeout(t, stream.write_all(&frame)).await;
}

/// Serves one connection until it closes or the coordinator stops.
pub(crate) async fn serve(ctx: Arc<Ctx>, stream: UnixStream) {
    let store = &ctx.store;
    let stop = &ctx.stop;
    let (rd, mut wr) = stream.into_split();
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<u8>, OwnedSemaphorePermit)>();
    let out = Outbox {
        tx,
        room: Arc::new(Semaphore::new(REPLY_QUEUE)),
    };
    let room = out.room.clone();
    let mut writer = tokio::spawn(async move {
        // Each frame's permit is given back once the frame is written.
        while let Some((frame, _permit)) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
        // Senders waiting for room fail at once instead of waiting forever.
        room.close();
    });

    let mut client: Option<u64> = None;
    // Set when the store ends this session (the client broke its lease page).
    let mut revoked: Option<Arc<Notify>> = None;
    // Waiting gets of this connection (each returns the number of keys it waited for);
    // aborted when it closes.
    let mut waits = tokio::task::JoinSet::<usize>::new();
    let mut waiting_keys = 0usize;
    let mut hdr = [0u8; HEADER_LEN];
    'conn: loop {
        while let Some(r) = waits.try_join_next() {
            waiting_keys = waiting_keys.saturating_sub(r.unwrap_or(0));
        }
        if waits.is_empty() {
            waiting_keys = 0;
        }
        // At the cap, read no further request until one of the waiting ones is answered.
        while waits.len() >= MAX_IN_FLIGHT
            || (waiting_keys >= MAX_WAITING_KEYS && !waits.is_empty())
        {
            tokio::select! {
                r = waits.join_next() => {
                    let n = r.and_then(|r| r.ok()).unwrap_or(0);
                    waiting_keys = waiting_keys.saturating_sub(n);
                    if waits.is_empty() {
                        // (A wait that panicked returned no count.)
                        waiting_keys = 0;
                    }
                }
                _ = stop.wait() => break 'conn,
                () = revocation(&revoked) => break 'conn,
                _ = hung_up(rd.get_ref().as_ref()) => break 'conn,
            }
        }
        // Yield now and then: a client pipelining requests must not hold a worker thread.
        tokio::task::coop::consume_budget().await;
        tokio::select! {
            r = rd.read_exact(&mut hdr) => if r.is_err() { break },
            _ = stop.wait() => break,
            () = revocation(&revoked) => break,
        }
        let h = match Header::parse(&hdr) {
            Ok(h) if h.body_len <= ctx.max_frame => h,
            Ok(h) => {
                let e = Error::Protocol(format!(
                    "frame body of {} bytes exceeds this coordinator's {}-byte limit (--max-frame)",
                    h.body_len, ctx.max_frame
                ));
                tracing::warn!("closing connection after an oversized frame: {e}");
                out.send(Response::error(&e).encode(h.request_id), stop)
                    .await;
                break;
            }
            Err(e) => {
                // Framing is lost: answer once and close.
                tracing::warn!("closing connection after a bad frame header: {e}");
                let id = u64::from_le_bytes(hdr[8..16].try_into().expect("8 bytes"));
                out.send(Response::error(&e).encode(id), stop).await;
                break;
            }
        };
        let (body, _permit) = match read_body(&mut rd, h.body_len as usize, &ctx).await {
            Ok(b) => b,
            Err(BodyError::Closed) => break,
            Err(BodyError::Stalled) => {
                tracing::warn!(
                    "closing a connection whose {}-byte frame body stalled for {}s",
                    h.body_len,
                    BODY_STALL.as_secs()
                );
                break;
            }
        };
        let req = match Request::decode(h.msg_type, &body) {
            Ok(r) => r,
            Err(e) => {
                if !out
                    .send(Response::error(&e).encode(h.request_id), stop)
                    .await
                {
                    break;
                }
                continue;
            }
        };
        let Some(cid) = client else {
            let (reply, keep) = match req {
                Request::Hello {
                    version, writer, ..
                } => {
                    if version != proto::VERSION {
                        let e = Error::Protocol(format!(
                            "client speaks protocol {version}, this coordinator {}",
                            proto::VERSION
                        ));
                        (Response::error(&e), false)
                    } else {
                        let mut st = lock(store);
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
                                (Response::Hello(info), true)
                            }
                            Err(e) => (Response::error(&e), false),
                        }
                    }
                }
                _ => {
                    let e =
                        Error::Protocol("the first message on a connection must be Hello".into());
                    (Response::error(&e), false)
                }
            };
            if !out.send(reply.encode(h.request_id), stop).await || !keep {
                break;
            }
            continue;
        };
        let id = h.request_id;
        if puts_arrow(&req) {
            // Arrow items are validated before they reach the store lock, off the async workers.
            // Awaited here: a connection has at most one such body in memory at a time.
            let resp = arrow_put(store, cid, h, body).await;
            if !out.send(resp.encode(id), stop).await {
                break;
            }
            continue;
        }
        let reply = match req {
            Request::Seal { key } if lock(store).seal_adds_to_ipfs(cid, &key) => {
                let data = lock(store).ipfs_seal_data(cid, &key);
                let (store, out, stop) = (store.clone(), out.clone(), stop.clone());
                waiting_keys += 1;
                waits.spawn(async move {
                    let r = super::ipfs::seal(store, cid, key, data).await;
                    out.send(r.encode(id), &stop).await;
                    1
                });
                continue;
            }
            Request::Seal { key } => match lock(store).seal(cid, key) {
                Ok(Sealing::Validate(p)) => {
                    spawn_seal(store, p, id, &out, stop);
                    continue;
                }
                Ok(Sealing::Persist(p)) => {
                    // A durable seal is answered once its warm-tier write is synced.
                    let done = super::ack::persisted(store, p);
                    let (out, stop) = (out.clone(), stop.clone());
                    waits.spawn(async move {
                        out.send(done.await.encode(id), &stop).await;
                        0
                    });
                    continue;
                }
                r => r.map_or_else(|e| Response::error(&e), |_| Response::Done),
            },
            Request::Get { key, timeout_ms } => match try_get(store, &[key], timeout_ms, false) {
                Some(resp) => resp,
                None => {
                    let (store, out, stop) = (store.clone(), out.clone(), stop.clone());
                    waiting_keys += 1;
                    waits.spawn(async move {
                        let r = wait_get(store, vec![key], timeout_ms, false).await;
                        out.send(r.encode(id), &stop).await;
                        1
                    });
                    continue;
                }
            },
            Request::GetMany { keys, timeout_ms } => {
                match try_get(store, &keys, timeout_ms, true) {
                    Some(resp) => resp,
                    None => {
                        let (store, out, stop) = (store.clone(), out.clone(), stop.clone());
                        let n = keys.len();
                        waiting_keys += n;
                        waits.spawn(async move {
                            let r = wait_get(store, keys, timeout_ms, true).await;
                            out.send(r.encode(id), &stop).await;
                            n
                        });
                        continue;
                    }
                }
            }
            Request::Put(it) if it.flags & proto::PUT_IPFS != 0 => {
                let (store, out, stop) = (store.clone(), out.clone(), stop.clone());
                let (key, flags, meta) = (it.key, it.flags, it.meta.to_vec());
                let data = bytes::Bytes::copy_from_slice(it.data);
                waiting_keys += 1;
                waits.spawn(async move {
                    let r = super::ipfs::put(store, cid, key, flags, meta, data).await;
                    out.send(r.encode(id), &stop).await;
                    1
                });
                continue;
            }
            Request::Scan { key, spec } => {
                let scan = match crate::scan::Scan::from_strings(&spec) {
                    Ok(s) => s,
                    Err(e) => {
                        if !out.send(Response::error(&e).encode(id), stop).await {
                            break;
                        }
                        continue;
                    }
                };
                let start = lock(store).begin_scan(&key, &scan);
                let (store, out, stop) = (store.clone(), out.clone(), stop.clone());
                waiting_keys += 1;
                waits.spawn(async move {
                    let r = run_scan(store, start, scan).await;
                    out.send(r.encode(id), &stop).await;
                    1
                });
                continue;
            }
            Request::CatalogQuery {
                filters,
                columns,
                limit,
                format,
            } => catalog_query(store, &filters, &columns, limit, format)
                .unwrap_or_else(|e| Response::error(&e)),
            Request::CatalogUpsert { ipc } => {
                // Decoded outside the store lock: it may be large, and it is untrusted.
                crate::tier::catalog::entries_from_ipc(ipc)
                    .and_then(|entries| lock(store).catalog_upsert(entries))
                    .map(|_| Response::Done)
                    .unwrap_or_else(|e| Response::error(&e))
            }
            req @ (Request::Put(_) | Request::PutMany(_)) => {
                // A durable put is answered once its warm-tier write is synced.
                match super::ack::write(store, cid, req) {
                    super::ack::Ack::Now(resp) => resp,
                    super::ack::Ack::Later(done) => {
                        let (out, stop) = (out.clone(), stop.clone());
                        waits.spawn(async move {
                            out.send(done.await.encode(id), &stop).await;
                            0
                        });
                        continue;
                    }
                }
            }
            other => handle(&mut lock(store), cid, other),
        };
        if !out.send(reply.encode(id), stop).await {
            break;
        }
    }
    waits.abort_all();
    while waits.join_next().await.is_some() {}
    if let Some(id) = client {
        lock(store).disconnect(id);
    }
    drop(out);
    // The writer sends what is queued, unless the coordinator is stopping.
    tokio::select! {
        _ = &mut writer => {}
        _ = stop.wait() => writer.abort(),
    }
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
        Request::Put(_) | Request::PutMany(_) => {
            Err(Error::Internal("puts are acknowledged by `ack`".into()))
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
                // The cold tier holds it but could not deliver it: an error, not a miss.
                None => match st.take_cold_failure(k) {
                    Some(why) => Err(Error::io(
                        format!("cannot promote {k} from the cold tier"),
                        std::io::Error::other(why),
                    )),
                    None => Ok(false),
                },
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
            Ok(valid) => Ok(super::ack::one(
                &store,
                lock(&store).put(client, &it, valid),
            )),
            Err(e) => {
                lock(&store).counters.arrow_rejected += 1;
                Err(e)
            }
        },
        Ok(Request::PutMany(items)) => {
            let checks: Vec<Result<bool>> = items.iter().map(check_put_item).collect();
            let rs = lock(&store).put_many(client, &items, &checks);
            Ok(super::ack::many(&store, rs))
        }
        Ok(_) => Err(Error::Internal("not a put".into())),
        Err(e) => Err(e),
    })
    .await
    .unwrap_or_else(|e| Err(Error::Internal(format!("put task failed: {e}"))));
    match r {
        Ok(super::ack::Ack::Now(resp)) => resp,
        // A durable Arrow put: awaited here like its validation (one at a time per connection).
        Ok(super::ack::Ack::Later(done)) => done.await,
        Err(e) => Response::error(&e),
    }
}

/// Validates an Arrow object being sealed on the blocking pool, then publishes it (or frees it)
/// and answers. Detached from the connection: the object is the coordinator's once its seal was
/// asked, and it is published even if its creator goes away meanwhile.
fn spawn_seal(store: &Shared, p: PendingSeal, request_id: u64, out: &Outbox, stop: &Stop) {
    let (store, out, stop) = (store.clone(), out.clone(), stop.clone());
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
        let resp = match r {
            Ok(None) => Response::Done,
            // A durable seal: answered once its warm-tier write is synced.
            Ok(Some(p)) => super::ack::persisted(&store, p).await,
            Err(e) => Response::error(&e),
        };
        out.send(resp.encode(request_id), &stop).await;
    });
}

/// Validates again, one after the other on the blocking pool, the adopted Arrow objects that
/// were validated before a crash (see [`Store::next_revalidation`]); ends when none is left.
pub(crate) async fn revalidate(store: Shared) {
    loop {
        let Some(p) = lock(&store).next_revalidation() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || {
            let mut p = p;
            let valid = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.validate()))
                .unwrap_or_else(|_| Err(Error::Internal("the validation panicked".into())));
            (p, valid)
        })
        .await;
        // Only a runtime shutting down cancels the task.
        let Ok((p, valid)) = joined else { return };
        lock(&store).finish_revalidation(p, valid);
    }
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
/// timeout: they are coming. A fetch this request waited for that failed answers its error. A
/// key whose creator aborts it, or disconnects before sealing it, ends the wait for that key
/// with an error (a `Get`'s error reply, a `NotFound` status with the reason in a `GetMany`).
async fn wait_get(store: Shared, keys: Vec<Key>, timeout_ms: i64, many: bool) -> Response {
    // A timeout too far ahead to represent is no timeout.
    let deadline = (timeout_ms >= 0)
        .then(|| tokio::time::Instant::now().checked_add(Duration::from_millis(timeout_ms as u64)))
        .flatten();
    let waiter = Waiter::new();
    // Unregisters on every exit, including the task being aborted with its connection.
    struct Unwait<'a>(&'a Shared, &'a [Key], &'a Arc<Waiter>);
    impl Drop for Unwait<'_> {
        fn drop(&mut self) {
            lock(self.0).unwait(self.1, self.2);
        }
    }
    let _unwait = Unwait(&store, &keys, &waiter);
    let mut tried: Vec<Key> = Vec::new();
    let mut abandoned: Vec<Key> = Vec::new();
    // Keys whose fetch from IPFS this request waited for: its failure is the answer.
    let mut followed: Vec<Key> = Vec::new();
    loop {
        let promoting = {
            let mut st = lock(&store);
            for k in waiter.take_abandoned() {
                if !abandoned.contains(&k) {
                    abandoned.push(k);
                }
            }
            let (mut present, _) = statuses(&mut st, &keys);
            let mut promoting = false;
            let mut missing = 0;
            for (k, p) in keys.iter().zip(present.iter_mut()) {
                if !matches!(p, Ok(false)) || abandoned.contains(k) {
                    continue;
                }
                missing += 1;
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
            // A key the warm tier holds but could not bring in is an error, not a miss.
            if !promoting {
                let failed = keys.iter().zip(&present).find_map(|(k, p)| {
                    (matches!(p, Ok(false)) && tried.contains(k)).then(|| st.promotion_error(k))?
                });
                if let Some(e) = failed {
                    return Response::error(&e);
                }
            }
            let expired = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if missing == 0 || (expired && !promoting) {
                return reply_waited(&keys, present, &abandoned, many);
            }
            // Registered under the same lock as the check: a seal cannot slip in between.
            st.unwait(&keys, &waiter);
            for (k, p) in keys.iter().zip(&present) {
                if matches!(p, Ok(false)) && !abandoned.contains(k) {
                    st.wait_for(*k, &waiter);
                }
            }
            promoting
        };
        match deadline {
            Some(d) if !promoting => {
                let _ = tokio::time::timeout_at(d, waiter.notified()).await;
            }
            _ => waiter.notified().await,
        }
    }
}

/// The reply to a wait that ended: as [`reply`], with an error for the keys whose creation
/// was abandoned (and that nobody stored since).
fn reply_waited(
    keys: &[Key],
    present: Vec<Result<bool>>,
    abandoned: &[Key],
    many: bool,
) -> Response {
    let why = |k: &Key| {
        format!("{k} was not sealed: the client creating it aborted it or disconnected first")
    };
    let lost = |(k, p): (&Key, &Result<bool>)| matches!(p, Ok(false)) && abandoned.contains(k);
    if !many {
        return match keys.iter().zip(&present).find(|x| lost(*x)) {
            Some((k, _)) => Response::error(&Error::NotFound(why(k))),
            None => reply(present, false),
        };
    }
    Response::Statuses(
        keys.iter()
            .zip(present)
            .map(|(k, p)| match p {
                Ok(true) => Ok(()),
                Ok(false) if abandoned.contains(k) => Err((crate::error::Code::NotFound, why(k))),
                Ok(false) => Err((crate::error::Code::NotFound, String::new())),
                Err(e) => Err((e.code(), e.message())),
            })
            .collect(),
    )
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
    let notify = Waiter::new();
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
