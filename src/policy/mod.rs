//! Eviction policies of the hot tier. A policy only orders candidates: the coordinator decides
//! what is evictable (sealed and unpinned) and does the evicting.
//!
//! Policies are single-threaded values owned by the coordinator's store. Hits reach them late
//! and in batches (harvested from the clients' hit rings), so they may name objects that are
//! already gone; policies ignore those.

mod clock;

pub(crate) use clock::Clock;

/// An eviction policy over objects identified by the coordinator's `u64` handles.
pub(crate) trait EvictionPolicy: Send {
    /// A sealed object entered the hot tier.
    fn on_insert(&mut self, id: u64, size: u64);
    /// A client read the object.
    fn on_hit(&mut self, id: u64);
    /// The object left the hot tier for another reason (deleted, or evicted by the caller).
    fn on_remove(&mut self, id: u64);
    /// Picks the next victim among objects for which `is_evictable` is true and forgets it.
    /// Objects that are not evictable now are kept. `None` when no tracked object is evictable.
    fn victim(&mut self, is_evictable: &mut dyn FnMut(u64) -> bool) -> Option<u64>;
    /// Name for stats.
    fn name(&self) -> &'static str;
}

/// Builds the policy named `name`.
pub(crate) fn by_name(name: &str) -> Result<Box<dyn EvictionPolicy>, String> {
    match name {
        "clock" => Ok(Box::new(Clock::default())),
        other => Err(format!("unknown eviction policy {other:?} (known: clock)")),
    }
}
