//! What one client can make the daemon hold, and how the daemon behaves at its own limits.
//!
//! * [`FrameBudget`]: bytes of frame bodies being received, across every connection of both
//!   front-ends. A body is read as it arrives (never allocated from the length its header
//!   declares), and a large one first takes its length from the budget, so stalled or slow
//!   senders hold at most the budget however many they are.
//! * [`raise_nofile_limit`], [`Spare`], [`is_exhaustion`]: at start the descriptor limit is raised
//!   to its hard limit; at the limit an accept loop closes a spare descriptor to accept the
//!   waiting connection, tells it no, and backs off instead of spinning.
//! * [`RateLimited`]: warnings that a client can trigger are logged at a bounded rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Frame bodies up to this size are read without taking from the [`FrameBudget`]: they are
/// what every control request needs, and a connection reads one at a time.
pub const SMALL_BODY: u64 = 64 << 10;

/// A body that makes no progress for this long closes its connection (and frees its budget).
pub const BODY_STALL: Duration = Duration::from_secs(30);

/// Bytes of frame bodies being received at once, shared by all connections.
///
/// Thread-safe; taken synchronously ([`FrameBudget::try_take`], the Plasma event loop) or
/// asynchronously ([`FrameBudget::take`], native sessions).
pub struct FrameBudget {
    limit: u64,
    used: Mutex<u64>,
    freed: tokio::sync::Notify,
}

/// Bytes taken from a [`FrameBudget`]; given back when dropped.
pub struct FramePermit {
    budget: Arc<FrameBudget>,
    bytes: u64,
}

impl FrameBudget {
    /// A budget of `limit` bytes (at least one byte).
    pub fn new(limit: u64) -> Arc<FrameBudget> {
        Arc::new(FrameBudget {
            limit: limit.max(1),
            used: Mutex::new(0),
            freed: tokio::sync::Notify::new(),
        })
    }

    /// The budget's size.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes taken now.
    pub fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `bytes` (clamped to the budget's size, so a request is always satisfiable
    /// eventually) if they are free now.
    pub fn try_take(self: &Arc<Self>, bytes: u64) -> Option<FramePermit> {
        let bytes = bytes.min(self.limit);
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if *used + bytes > self.limit {
            return None;
        }
        *used += bytes;
        Some(FramePermit {
            budget: self.clone(),
            bytes,
        })
    }

    /// Takes `bytes`, waiting until other connections give enough back.
    pub async fn take(self: &Arc<Self>, bytes: u64) -> FramePermit {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(p) = self.try_take(bytes) {
                return p;
            }
            freed.await;
        }
    }
}

impl FramePermit {
    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for FramePermit {
    fn drop(&mut self) {
        {
            let mut used = self.budget.used.lock().unwrap_or_else(|p| p.into_inner());
            *used -= self.bytes;
        }
        self.budget.freed.notify_waiters();
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (every connection costs a descriptor).
/// Returns the soft limit before and after.
pub fn raise_nofile_limit() -> (Option<u64>, Option<u64>) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let old = getrlimit(Resource::Nofile);
    if old.current == old.maximum {
        return (old.current, old.current);
    }
    let new = Rlimit {
        current: old.maximum,
        maximum: old.maximum,
    };
    match setrlimit(Resource::Nofile, new) {
        Ok(()) => (old.current, old.maximum),
        Err(_) => (old.current, old.current),
    }
}

/// Whether an `accept` failure means the process or system ran out of a resource (then the
/// same call fails again at once: back off rather than retry).
pub fn is_exhaustion(e: rustix::io::Errno) -> bool {
    use rustix::io::Errno;
    e == Errno::MFILE || e == Errno::NFILE || e == Errno::NOBUFS || e == Errno::NOMEM
}

/// A descriptor kept open so that, at the descriptor limit, closing it lets the accept loop
/// take one waiting connection to refuse it (instead of leaving it hanging in the backlog).
pub struct Spare(Option<rustix::fd::OwnedFd>);

impl Spare {
    /// Opens the spare (`/dev/null`).
    pub fn new() -> Spare {
        let mut s = Spare(None);
        s.restore();
        s
    }

    /// Closes the spare; false if there was none.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Reopens the spare if it is closed (fails quietly at the limit: tried again later).
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .ok();
        }
    }
}

impl Default for Spare {
    fn default() -> Self {
        Spare::new()
    }
}

/// A warning that clients can cause, logged at most once per period; the lines suppressed in
/// between are counted in the next one.
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Logs `msg()` at warn level unless a line was logged less than the period ago.
    pub fn warn(&mut self, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return;
        }
        let s = std::mem::take(&mut self.suppressed);
        if s > 0 {
            tracing::warn!("{} ({s} similar warnings suppressed)", msg());
        } else {
            tracing::warn!("{}", msg());
        }
        self.last = Some(now);
    }
}

/// A [`RateLimited`] shared between tasks.
pub type SharedRateLimited = Arc<Mutex<RateLimited>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_never_exceeded_and_is_given_back() {
        let b = FrameBudget::new(100);
        let p = b.try_take(60).unwrap();
        assert!(b.try_take(60).is_none());
        let q = b.try_take(40).unwrap();
        assert_eq!(b.in_use(), 100);
        drop(p);
        assert_eq!(b.in_use(), 40);
        // Larger than the budget: clamped, so it can be satisfied once the rest is free.
        assert!(b.try_take(1000).is_none());
        drop(q);
        assert_eq!(b.try_take(1000).unwrap().bytes(), 100);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_waiting_take_wakes_when_bytes_are_given_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let b = FrameBudget::new(10);
            let p = b.try_take(10).unwrap();
            let b2 = b.clone();
            let waiter = tokio::spawn(async move { b2.take(5).await.bytes() });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            drop(p);
            assert_eq!(waiter.await.unwrap(), 5);
        });
    }

    #[test]
    fn rate_limited_suppresses_within_the_period() {
        let mut r = RateLimited::new(Duration::from_secs(3600));
        for _ in 0..1000 {
            r.warn(|| "x".into());
        }
        assert!(r.last.is_some());
        assert_eq!(r.suppressed, 999);
    }
}
