//! Non-blocking gets and puts for event loops: an operation with a pollable file descriptor.
//!
//! Why a file descriptor and not a completion callback: an fd that becomes readable when the
//! result is ready plugs into whatever loop the caller already runs (epoll, poll, libuv's
//! `uv_poll_t`, Go's netpoller through `os.NewFile`, asyncio's `add_reader`), and the caller's
//! code runs on the caller's thread. A callback would run user code on the library's socket
//! reader thread, where a slow or blocking callback stalls every reply of the connection, and
//! where Go code cannot run without cgo callback overhead and runtime thread locking.
//!
//! Mechanism: the Rust client's async get (a future) is driven by a waker that the client's
//! reader thread wakes when the coordinator replies. The waker polls the future right there (it
//! is library code: a lock-free lookup and a pin) and, once it completes, stores the result and
//! signals an eventfd. Nothing the user wrote runs on that thread.

use crate::client::{cidcache_client, cidcache_object, hand_out, timeout_of};
use crate::status::{cidcache_status, guard, guard_void};
use crate::util::{bytes, get_ref, invalid};
use cidcache_core::{Error, ObjectRef};
use rustix::event::{eventfd, EventfdFlags};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

type OpFuture<T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send>>;

enum OpState<T> {
    Running(OpFuture<T>),
    /// The result, until taken by the `*_op_result` call (then `None`).
    Done(Option<Result<T, Error>>),
}

type Slot<T> = (OpState<T>, Option<OwnedFd>);

/// One operation: its future (or result) and its eventfd. `T` is what it yields (an object for
/// a get, nothing for a put).
struct Shared<T> {
    state: Mutex<Slot<T>>,
    /// Set by every wake; cleared by whoever polls next (see `drive`).
    notified: AtomicBool,
}

impl<T: Send + 'static> Shared<T> {
    /// A new operation running `fut`, signalling `fd` when done; polled once at once.
    fn start(fut: OpFuture<T>, fd: OwnedFd) -> Arc<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new((OpState::Running(fut), Some(fd))),
            notified: AtomicBool::new(false),
        });
        shared.drive();
        shared
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a wake and polls the future (see `run`).
    fn drive(self: &Arc<Self>) {
        self.notified.store(true, Ordering::SeqCst);
        self.run();
    }

    /// Locks the state for a caller that does not poll (ready / result / free). On unlock it
    /// honours a wake that arrived meanwhile (`run`), so that no wake is lost.
    fn with_state<R>(self: &Arc<Self>, f: impl FnOnce(&mut Slot<T>) -> R) -> R {
        let r = f(&mut self.lock());
        if self.notified.load(Ordering::SeqCst) {
            self.run();
        }
        r
    }

    /// Polls the future while wakes are outstanding, until it is pending or done. Whoever holds
    /// the lock polls; a wake that finds the lock taken only sets `notified`, which every lock
    /// holder checks after unlocking (so no wake is lost and no waker blocks on the lock).
    fn run(self: &Arc<Self>) {
        loop {
            let mut st = match self.state.try_lock() {
                Ok(g) => g,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            if !self.notified.swap(false, Ordering::SeqCst) {
                return;
            }
            let (state, fd) = &mut *st;
            if let OpState::Running(fut) = state {
                let waker = Waker::from(self.clone());
                let mut cx = Context::from_waker(&waker);
                let r = match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready(r)) => Some(r),
                    Err(_) => Some(Err(Error::Internal(
                        "a panic was caught while completing an asynchronous get".into(),
                    ))),
                };
                if let Some(r) = r {
                    *state = OpState::Done(Some(r));
                    if let Some(fd) = fd {
                        // The counter becomes 1 and is never read back: the fd stays readable
                        // (level-triggered) until the operation is freed. A failed write cannot
                        // happen for an eventfd below its maximum count.
                        let _ = rustix::io::write(&*fd, &1u64.to_ne_bytes());
                    }
                }
            }
            drop(st);
            if !self.notified.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

impl<T: Send + 'static> Wake for Shared<T> {
    fn wake(self: Arc<Self>) {
        self.drive();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.drive();
    }
}

/// An asynchronous get in flight (opaque). Wait for its fd (`cidcache_get_op_fd`) to become
/// readable, then take the result with `cidcache_get_op_result`; free it with
/// `cidcache_get_op_free`.
pub struct cidcache_get_op {
    shared: Arc<Shared<Option<ObjectRef>>>,
    fd: i32,
    /// For the status and message of a get that found nothing.
    key: Vec<u8>,
    timeout_ms: i64,
}

/// Starts a non-blocking get of `key` that waits up to `timeout_ms` milliseconds for the object
/// (0: do not wait; negative: without limit). Returns at once.
///
/// Completion is signalled through a file descriptor (`cidcache_get_op_fd`) that becomes
/// readable, and stays readable, when the result is ready: register it with epoll / poll /
/// libuv / Go's netpoller, or call `cidcache_get_op_result` after it polls readable. A hit
/// completes before this call returns (the fd is readable at once). No user code ever runs on a
/// library thread.
///
/// Ownership: on success `*out` is a new operation owned by the caller, to be freed with
/// `cidcache_get_op_free` (whether or not it completed); on failure `*out` is NULL. The key is
/// copied.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed. The client handle may
/// be disconnected while operations are in flight (they keep the connection alive).
///
/// # Safety
/// `client` must be a live handle; `key` valid for `key_len` bytes; `out` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_async(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    timeout_ms: i64,
    out: *mut *mut cidcache_get_op,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out = unsafe { crate::util::get_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract.
        let key = unsafe { bytes(key, key_len, "key") }?.to_vec();
        let key_copy = key.clone();
        let fd = new_eventfd("get")?;
        let raw = fd.as_raw_fd();
        let client = c.client.clone();
        let timeout = timeout_of(timeout_ms);
        let fut: OpFuture<Option<ObjectRef>> =
            Box::pin(async move { client.get_async(&key, timeout).await });
        let shared = Shared::start(fut, fd);
        *out = Box::into_raw(Box::new(cidcache_get_op {
            shared,
            fd: raw,
            key: key_copy,
            timeout_ms,
        }));
        Ok(cidcache_status::CIDCACHE_OK)
    })
}

/// The file descriptor of an operation: readable once the result is ready (it stays readable;
/// do not read from it). It belongs to the operation and is closed by `cidcache_get_op_free`.
/// Returns -1 when `op` is NULL.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `op` must be NULL or a live operation.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_op_fd(op: *const cidcache_get_op) -> i32 {
    let mut fd = -1;
    guard_void(|| {
        // SAFETY: caller contract.
        if let Some(op) = unsafe { op.as_ref() } {
            fd = op.fd;
        }
    });
    fd
}

/// Whether the operation has completed (its result is ready or was taken). Never blocks.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `op` must be NULL or a live operation.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_op_ready(op: *const cidcache_get_op) -> bool {
    let mut ready = false;
    guard_void(|| {
        // SAFETY: caller contract.
        if let Some(op) = unsafe { op.as_ref() } {
            ready = op.shared.with_state(|st| matches!(st.0, OpState::Done(_)));
        }
    });
    ready
}

/// Takes the result of a completed operation; never blocks. Returns what `cidcache_get` would:
/// `CIDCACHE_OK` with `*out` a new pinned object (and `*view` its bytes when `view` is not NULL),
/// `CIDCACHE_TIMEOUT` when the object was not sealed before the timeout (`CIDCACHE_NOT_FOUND`
/// with a timeout of 0), or an error. Before
/// completion it returns `CIDCACHE_INVALID_ARGUMENT` ("not complete"), and so does a second call
/// after the result was taken.
///
/// Ownership: the caller owns `*out` and releases it with `cidcache_release`; the operation must
/// still be freed with `cidcache_get_op_free`.
///
/// Thread safety: thread-safe; the result is handed out once.
///
/// # Safety
/// `op` must be a live operation; `out` valid for a write; `view` NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_op_result(
    op: *mut cidcache_get_op,
    out: *mut *mut cidcache_object,
    view: *mut crate::client::cidcache_view,
) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let out_ref = unsafe { crate::util::get_mut(out, "out") }?;
        *out_ref = std::ptr::null_mut();
        // SAFETY: caller contract.
        let op = unsafe { get_ref(op as *const cidcache_get_op, "op") }?;
        let r = match op.shared.with_state(|st| match &mut st.0 {
            OpState::Running(_) => None,
            OpState::Done(r) => Some(r.take()),
        }) {
            None => {
                return Err(invalid(
                    "the asynchronous get is not complete: wait until its fd is readable",
                ))
            }
            Some(r) => r,
        };
        match r {
            None => Err(invalid(
                "the result of this asynchronous get was already taken",
            )),
            // SAFETY: `out` checked above; `view` per the caller.
            Some(Ok(o)) => unsafe { hand_out(o, out, view, &op.key, op.timeout_ms) },
            Some(Err(e)) => Err(e),
        }
    })
}

/// Frees an operation, cancelling it if it is still running (a late reply is then discarded, and
/// an object not taken is released). Closes its fd: remove the fd from your poller first. NULL is
/// ignored.
///
/// Ownership: takes `op`.
///
/// Thread safety: must not run concurrently with another call on the same operation.
///
/// # Safety
/// `op` must be NULL or a live operation, freed only once.
#[no_mangle]
pub unsafe extern "C" fn cidcache_get_op_free(op: *mut cidcache_get_op) {
    guard_void(|| {
        if op.is_null() {
            return;
        }
        // SAFETY: made by Box::into_raw in cidcache_get_async, freed only here.
        let op = unsafe { Box::from_raw(op) };
        // Drop the future (cancelling the wait) and close the fd now; a waker still held by the
        // connection only finds a finished, fd-less operation.
        let (state, fd) = {
            let mut g = op.shared.lock();
            (std::mem::replace(&mut g.0, OpState::Done(None)), g.1.take())
        };
        drop(state);
        drop(fd);
    })
}

/// An asynchronous put in flight (opaque). Wait for its fd (`cidcache_put_op_fd`) to become
/// readable, then take the status with `cidcache_put_op_result`; free it with
/// `cidcache_put_op_free`.
pub struct cidcache_put_op {
    shared: Arc<Shared<()>>,
    fd: i32,
}

/// Starts a non-blocking put of `data` and `metadata` under `key` (`flags`: `CIDCACHE_PUT_*`
/// bits, as for `cidcache_put_ex`). Returns at once: the round trips (inline put, or create and
/// seal for a large object) complete on the library's reader thread, and the operation's fd
/// (`cidcache_put_op_fd`) becomes readable, and stays readable, when the outcome is known. A large
/// object's bytes are copied into shared memory on that thread too. No user code runs there.
///
/// Ownership: the key, data and metadata are copied during the call (the caller's buffers are free
/// on return). On success `*out` is a new operation owned by the caller, to be freed with
/// `cidcache_put_op_free` (freeing a running put cancels the wait for its outcome, not the
/// put itself if the coordinator already received it); on failure `*out` is NULL.
///
/// Thread safety: thread-safe; concurrent calls on one client are allowed.
///
/// # Safety
/// `client` must be a live handle; each buffer valid for its length (NULL allowed for length 0);
/// `out` valid for a write.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cidcache_put_async(
    client: *const cidcache_client,
    key: *const u8,
    key_len: usize,
    data: *const u8,
    data_len: usize,
    metadata: *const u8,
    metadata_len: usize,
    flags: u32,
    out: *mut *mut cidcache_put_op,
) -> cidcache_status {
    use crate::client::{
        CIDCACHE_PUT_DURABLE, CIDCACHE_PUT_EPHEMERAL, CIDCACHE_PUT_IPFS, CIDCACHE_PUT_VERIFY_CID,
    };
    guard(|| {
        // SAFETY: caller contract.
        let out = unsafe { crate::util::get_mut(out, "out") }?;
        *out = std::ptr::null_mut();
        // SAFETY: caller contract.
        let c = unsafe { get_ref(client, "client") }?;
        // SAFETY: caller contract on the three buffers.
        let (key, data, metadata) = unsafe {
            (
                bytes(key, key_len, "key")?.to_vec(),
                bytes(data, data_len, "data")?.to_vec(),
                bytes(metadata, metadata_len, "metadata")?.to_vec(),
            )
        };
        if flags
            & !(CIDCACHE_PUT_EPHEMERAL
                | CIDCACHE_PUT_VERIFY_CID
                | CIDCACHE_PUT_IPFS
                | CIDCACHE_PUT_DURABLE)
            != 0
        {
            return Err(invalid(format!("unknown put flags {flags:#x}")));
        }
        let fd = new_eventfd("put")?;
        let raw = fd.as_raw_fd();
        let client = c.client.clone();
        let fut: OpFuture<()> = Box::pin(async move {
            let opts = cidcache_core::PutOptions {
                metadata: &metadata,
                ephemeral: flags & CIDCACHE_PUT_EPHEMERAL != 0,
                verify_cid: flags & CIDCACHE_PUT_VERIFY_CID != 0,
                ipfs: flags & CIDCACHE_PUT_IPFS != 0,
                durable: flags & CIDCACHE_PUT_DURABLE != 0,
            };
            client.put_async(&key, &data, opts).await
        });
        let shared = Shared::start(fut, fd);
        *out = Box::into_raw(Box::new(cidcache_put_op { shared, fd: raw }));
        Ok(cidcache_status::CIDCACHE_OK)
    })
}

fn new_eventfd(what: &str) -> Result<OwnedFd, Error> {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| Error::Io {
        context: format!("cannot create an eventfd for an asynchronous {what}"),
        source: e.into(),
    })
}

/// The file descriptor of a put operation: readable once its outcome is known (it stays
/// readable; do not read from it). Closed by `cidcache_put_op_free`. -1 when `op` is NULL.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `op` must be NULL or a live operation.
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_op_fd(op: *const cidcache_put_op) -> i32 {
    // SAFETY: caller contract.
    unsafe { op.as_ref() }.map_or(-1, |op| op.fd)
}

/// Whether the put has completed (its outcome is ready or was taken). Never blocks.
///
/// Thread safety: thread-safe.
///
/// # Safety
/// `op` must be NULL or a live operation.
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_op_ready(op: *const cidcache_put_op) -> bool {
    let mut ready = false;
    guard_void(|| {
        // SAFETY: caller contract.
        if let Some(op) = unsafe { op.as_ref() } {
            ready = op.shared.with_state(|st| matches!(st.0, OpState::Done(_)));
        }
    });
    ready
}

/// The outcome of a completed put, as `cidcache_put_ex` would return it (`CIDCACHE_OK`,
/// `CIDCACHE_ALREADY_EXISTS`, ...); never blocks. Before completion, and on a second call, it
/// returns `CIDCACHE_INVALID_ARGUMENT`.
///
/// Thread safety: thread-safe; the outcome is handed out once.
///
/// # Safety
/// `op` must be a live operation.
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_op_result(op: *mut cidcache_put_op) -> cidcache_status {
    guard(|| {
        // SAFETY: caller contract.
        let op = unsafe { get_ref(op as *const cidcache_put_op, "op") }?;
        match op.shared.with_state(|st| match &mut st.0 {
            OpState::Running(_) => None,
            OpState::Done(r) => Some(r.take()),
        }) {
            None => Err(invalid(
                "the asynchronous put is not complete: wait until its fd is readable",
            )),
            Some(None) => Err(invalid(
                "the outcome of this asynchronous put was already taken",
            )),
            Some(Some(r)) => r.map(|()| cidcache_status::CIDCACHE_OK),
        }
    })
}

/// Frees a put operation, closing its fd (remove it from your poller first). NULL is ignored.
///
/// Ownership: takes `op`.
///
/// Thread safety: must not run concurrently with another call on the same operation.
///
/// # Safety
/// `op` must be NULL or a live operation, freed only once.
#[no_mangle]
pub unsafe extern "C" fn cidcache_put_op_free(op: *mut cidcache_put_op) {
    guard_void(|| {
        if op.is_null() {
            return;
        }
        // SAFETY: made by Box::into_raw in cidcache_put_async, freed only here.
        let op = unsafe { Box::from_raw(op) };
        let (state, fd) = {
            let mut g = op.shared.lock();
            (std::mem::replace(&mut g.0, OpState::Done(None)), g.1.take())
        };
        drop(state);
        drop(fd);
    })
}
