//! asyncio without a thread per call: operations of the Rust client's async API, completed on
//! the client's own socket reader thread, signalled through one eventfd per event loop.
//!
//! The same mechanism as the C ABI's non-blocking gets (`ffi/src/getop.rs`): the operation's
//! future is polled by a waker that the client's reader thread wakes when the coordinator
//! replies; the waker polls the future right there (library code only: a lock-free lookup and a
//! pin) and, once it completes, records the operation id in its `Poller`'s queue and writes the
//! poller's eventfd. The Python side registers that fd once per loop with `loop.add_reader`;
//! the callback drains the queue and resolves the asyncio futures on the loop's thread. No
//! Python code ever runs on the reader thread, and a hit completes before `start` returns
//! (no fd traffic at all).

use crate::errors::{instance, to_py};
use cidcache::proto::ListEntry;
use cidcache::{Error, ObjectRef};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rustix::event::{eventfd, EventfdFlags};
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll, Wake, Waker};

/// What an operation yields (converted to Python objects on the loop's thread).
pub(crate) enum Out {
    Get(Result<Option<ObjectRef>, Error>),
    GetMany(Vec<Result<Option<ObjectRef>, Error>>),
    Unit(Result<(), Error>),
    Bool(Result<bool, Error>),
    PutMany(Vec<Result<(), Error>>),
    List(Result<Vec<ListEntry>, Error>),
    Stats(Result<Vec<(String, u64)>, Error>),
}

pub(crate) type OpFuture = Pin<Box<dyn Future<Output = Out> + Send>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The per-loop completion channel: an eventfd that is readable while completed operation ids
/// wait in the queue.
struct PollerInner {
    fd: OwnedFd,
    done: Mutex<Vec<u64>>,
}

impl PollerInner {
    fn complete(&self, id: u64) {
        let first = {
            let mut q = lock(&self.done);
            q.push(id);
            q.len() == 1
        };
        if first {
            // The counter only needs to be non-zero; `drain` resets it. A write cannot fail
            // below the counter's maximum.
            let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
        }
    }
}

/// A completion channel for one event loop (`cidcache.Client` keeps one per loop).
///
/// Thread safety: completions are recorded from the client's reader thread; `drain` is called
/// on the loop's thread.
#[pyclass(module = "cidcache._native", name = "Poller", frozen)]
pub(crate) struct Poller {
    inner: Arc<PollerInner>,
    next: AtomicU64,
}

#[pymethods]
impl Poller {
    #[new]
    fn new() -> PyResult<Poller> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).map_err(|e| {
            to_py(Error::Io {
                context: "cannot create an eventfd for asyncio".into(),
                source: e.into(),
            })
        })?;
        Ok(Poller {
            inner: Arc::new(PollerInner {
                fd,
                done: Mutex::new(Vec::new()),
            }),
            next: AtomicU64::new(1),
        })
    }

    /// The file descriptor to register with `loop.add_reader` (owned by the poller).
    fn fileno(&self) -> i32 {
        self.inner.fd.as_raw_fd()
    }

    /// Resets the fd and returns the ids of the operations completed since the last call.
    fn drain(&self) -> Vec<u64> {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.inner.fd, &mut buf);
        std::mem::take(&mut *lock(&self.inner.done))
    }
}

enum State {
    Running(OpFuture),
    Done(Option<Out>),
}

struct Shared {
    state: Mutex<State>,
    /// Set by every wake; cleared by whoever polls next (see `run`).
    notified: AtomicBool,
    /// Set once `start` returned: completions from then on are announced on the poller.
    armed: AtomicBool,
    poller: Arc<PollerInner>,
    id: u64,
}

impl Shared {
    fn drive(self: &Arc<Self>) {
        self.notified.store(true, Ordering::SeqCst);
        self.run();
    }

    /// Polls while wakes are outstanding; whoever holds the lock polls, a wake that finds it
    /// taken only sets `notified`, which the holder re-checks after unlocking (no lost wake, no
    /// waker blocking on the lock).
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
            let mut completed = false;
            if let State::Running(fut) = &mut *st {
                let waker = Waker::from(self.clone());
                let mut cx = Context::from_waker(&waker);
                let r = match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(&mut cx))) {
                    Ok(Poll::Pending) => None,
                    Ok(Poll::Ready(r)) => Some(r),
                    Err(_) => Some(Out::Unit(Err(Error::Internal(
                        "a panic was caught while completing an asynchronous operation".into(),
                    )))),
                };
                if let Some(r) = r {
                    *st = State::Done(Some(r));
                    completed = true;
                }
            }
            drop(st);
            if completed && self.armed.load(Ordering::SeqCst) {
                self.poller.complete(self.id);
            }
            if !self.notified.load(Ordering::SeqCst) {
                return;
            }
        }
    }
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.drive();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.drive();
    }
}

/// One asynchronous operation in flight (see the module documentation).
#[pyclass(module = "cidcache._native", name = "Op", frozen)]
pub(crate) struct Op {
    shared: Arc<Shared>,
}

impl Op {
    /// Starts `fut`: polls it once here (a hit completes at once), then arms the completion
    /// signal on `poller`.
    pub(crate) fn start(poller: &Poller, fut: OpFuture) -> Op {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::Running(fut)),
            notified: AtomicBool::new(false),
            armed: AtomicBool::new(false),
            poller: poller.inner.clone(),
            id: poller.next.fetch_add(1, Ordering::Relaxed),
        });
        shared.drive();
        // A completion after this store is announced; one before it is seen by `done()`. (Both
        // may happen; the Python side ignores ids it no longer waits for.)
        shared.armed.store(true, Ordering::SeqCst);
        Op { shared }
    }
}

fn convert(py: Python<'_>, out: Out) -> PyResult<Py<PyAny>> {
    use crate::object::new_object;
    Ok(match out {
        Out::Get(r) => match r.map_err(to_py)? {
            Some(o) => new_object(py, o)?,
            None => py.None(),
        },
        Out::GetMany(v) => {
            let l = PyList::empty(py);
            for r in v {
                l.append(match r {
                    Ok(Some(o)) => new_object(py, o)?,
                    Ok(None) => py.None(),
                    Err(e) => instance(py, &e),
                })?;
            }
            l.into_any().unbind()
        }
        Out::Unit(r) => {
            r.map_err(to_py)?;
            py.None()
        }
        Out::Bool(r) => pyo3::types::PyBool::new(py, r.map_err(to_py)?)
            .to_owned()
            .into_any()
            .unbind(),
        Out::PutMany(v) => {
            let l = PyList::empty(py);
            for r in v {
                l.append(match r {
                    Ok(()) => py.None(),
                    Err(e) => instance(py, &e),
                })?;
            }
            l.into_any().unbind()
        }
        Out::List(r) => crate::client::list_to_py(py, r.map_err(to_py)?)?,
        Out::Stats(r) => {
            let d = PyDict::new(py);
            for (k, v) in r.map_err(to_py)? {
                d.set_item(k, v)?;
            }
            d.into_any().unbind()
        }
    })
}

#[pymethods]
impl Op {
    /// The id announced by the poller when the operation completes.
    #[getter]
    fn id(&self) -> u64 {
        self.shared.id
    }

    /// Whether the result is ready (or was taken). Never blocks.
    fn done(&self) -> bool {
        matches!(*lock(&self.shared.state), State::Done(_))
    }

    /// Takes the result: the value, or raises the operation's exception. Raises
    /// `InvalidArgument` when not done yet or taken already.
    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let out = match &mut *lock(&self.shared.state) {
            State::Done(r) => r.take(),
            State::Running(_) => None,
        };
        match out {
            Some(o) => convert(py, o),
            None => Err(to_py(Error::InvalidArgument(
                "the operation has not completed, or its result was taken".into(),
            ))),
        }
    }

    /// Abandons the operation: drops its future (the coordinator's eventual reply is ignored)
    /// or its unclaimed result (unpinning any object in it).
    fn cancel(&self) {
        let old = std::mem::replace(&mut *lock(&self.shared.state), State::Done(None));
        drop(old);
    }
}
