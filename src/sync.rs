//! Atomics used by the shared-memory layouts, swapped for loom's under `cfg(cidcache_loom)` so that the
//! seqlock and pin protocols can be model-checked with the very code that runs in production.

#[cfg(cidcache_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU64, Ordering};
#[cfg(not(cidcache_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Busy-wait hint (a real spin hint outside loom, a yield to the model checker inside it).
#[inline]
pub(crate) fn spin() {
    #[cfg(cidcache_loom)]
    loom::thread::yield_now();
    #[cfg(not(cidcache_loom))]
    std::hint::spin_loop();
}
