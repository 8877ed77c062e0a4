//! Cache eviction / admission policies for the shared-memory cache coordinator.
//!
//! # Model
//!
//! The coordinator owns a policy object (`Box<dyn EvictionPolicy>`) and is its only user:
//! policies are **single-threaded** (`Send` so they can move to the coordinator's thread,
//! not `Sync`, never shared). Objects are named by the coordinator's `u64` object id and
//! carry a byte size; capacity is in bytes.
//!
//! Call protocol:
//! * [`EvictionPolicy::on_insert`] when an object becomes resident. Inserting an id that
//!   is already resident only updates its size.
//! * [`EvictionPolicy::on_hit`] for every harvested hit. Hits arrive late and in
//!   batches; a hit naming an id that is not resident (already removed, evicted, or only
//!   remembered in a ghost list) is ignored.
//! * [`EvictionPolicy::on_remove`] when an object disappears for reasons other than this
//!   policy's own eviction (explicit delete, eviction by someone else). Unknown ids are
//!   ignored; the policy forgets the id completely (including ghost history).
//! * [`EvictionPolicy::evict_into`] when bytes are needed. The policy picks victims,
//!   **forgets them as residents immediately** (they may stay in its ghost history), and
//!   returns them; the coordinator must then actually free them (it need not, and should
//!   not, call `on_remove` for them, though doing so is harmless). Candidates for which
//!   `is_evictable` returns `false` (pinned) are skipped and **kept resident**; they are
//!   rotated as if recently used so the next scan does not start on them again.
//!
//! Either order of "insert the newcomer" and "evict to make room" works. History-based
//! policies (ARC, S3-FIFO's ghost, W-TinyLFU's sketch) are slightly more accurate when
//! `on_insert` comes first, because their victim choice can then take the newcomer's
//! ghost hit into account (that is the order in which the papers define them, and the
//! order [`replay`] uses). Ghost history is only meaningful if the coordinator
//! gives the same content the same id across re-insertions (e.g. an id derived from the
//! content hash); with recycled ids it degrades to noise, never to incorrectness.
//!
//! # Costs
//!
//! Every operation is O(1) amortized: hash-map lookups plus list-link updates in a slab
//! (see `list.rs`). `on_hit` never allocates; `on_insert` allocates only while the slab
//! and maps grow to their high-water mark. `evict_into` is O(victims + skipped), where
//! skipped pinned objects are rotated away, so a pinned object costs O(1) per scan that
//! meets it; a scan that meets only pinned objects gives up after visiting each resident
//! object a bounded number of times and returns what it has (possibly fewer bytes than
//! asked).

mod arc;
mod clock;
pub(crate) mod list;
mod lru;
pub mod replay;
mod s3fifo;
mod wtinylfu;

use std::fmt;
use std::str::FromStr;

pub use arc::ArcPolicy;
pub use clock::Clock;
pub use lru::Lru;
pub use s3fifo::S3Fifo;
pub use wtinylfu::WTinyLfu;

/// An eviction/admission policy driven by the coordinator. See the module docs for the
/// call protocol. All methods are O(1) amortized (evict: per victim or skipped object).
pub trait EvictionPolicy: Send {
    /// Records that `id` (of `size` bytes) became resident. Re-inserting a resident id
    /// updates its size and counts as an access.
    fn on_insert(&mut self, id: u64, size: u64);

    /// Records a (possibly late) hit. Ignored for ids that are not resident. Never
    /// allocates.
    fn on_hit(&mut self, id: u64);

    /// Forgets `id` (resident or ghost). Ignored for unknown ids.
    fn on_remove(&mut self, id: u64);

    /// Chooses victims totalling at least `need_bytes` (when that many evictable bytes
    /// exist), appends them to `victims`, and returns the bytes they free. Victims are no
    /// longer resident in the policy when this returns. Objects for which `is_evictable`
    /// returns `false` are kept. Returns fewer bytes than asked only when no further
    /// evictable object could be found.
    fn evict_into(
        &mut self,
        need_bytes: u64,
        is_evictable: &mut dyn FnMut(u64) -> bool,
        victims: &mut Vec<u64>,
    ) -> u64;

    /// Convenience wrapper around [`EvictionPolicy::evict_into`] that allocates the
    /// result vector.
    fn evict(&mut self, need_bytes: u64, is_evictable: &mut dyn FnMut(u64) -> bool) -> Vec<u64> {
        let mut v = Vec::new();
        self.evict_into(need_bytes, is_evictable, &mut v);
        v
    }

    /// Whether `id` is resident (ghost entries are not resident).
    fn contains(&self, id: u64) -> bool;

    /// Number of resident objects.
    fn len(&self) -> usize;

    /// Whether no object is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of the sizes of resident objects, in bytes.
    fn resident_bytes(&self) -> u64;

    /// Which policy this is.
    fn kind(&self) -> PolicyKind;
}

/// Sizing parameters shared by all policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Cache capacity in bytes. Policies use it to size their internal partitions (S3-FIFO's
    /// small queue, ARC's target, W-TinyLFU's window); the coordinator still decides when
    /// to call `evict`.
    pub capacity_bytes: u64,
    /// Expected number of resident objects; sizes hash maps and W-TinyLFU's sketch.
    pub expected_objects: u64,
}

impl PolicyConfig {
    /// Config for a cache of `capacity_bytes` whose objects average `avg_object_bytes`.
    pub fn new(capacity_bytes: u64, avg_object_bytes: u64) -> Self {
        PolicyConfig {
            capacity_bytes,
            expected_objects: (capacity_bytes / avg_object_bytes.max(1)).max(1),
        }
    }

    /// Config for unit-size objects (trace replay): capacity = `n` objects of 1 byte.
    pub fn unit(n: u64) -> Self {
        PolicyConfig {
            capacity_bytes: n,
            expected_objects: n.max(1),
        }
    }

    /// `expected_objects` clamped to a sane preallocation size.
    fn prealloc(&self) -> usize {
        usize::try_from(self.expected_objects.min(1 << 22)).unwrap_or(1 << 22)
    }
}

/// The available policies; parsed from config strings by [`FromStr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// S3-FIFO (Yang et al., SOSP'23): small FIFO + main FIFO + ghost FIFO.
    S3Fifo,
    /// CLOCK (second chance).
    Clock,
    /// Least recently used.
    Lru,
    /// Adaptive Replacement Cache (Megiddo & Modha, FAST'03).
    Arc,
    /// W-TinyLFU (Einziger et al.): window LRU + SLRU main + TinyLFU admission.
    WTinyLfu,
}

impl PolicyKind {
    /// All policies, in a stable order.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Lru,
        PolicyKind::Clock,
        PolicyKind::Arc,
        PolicyKind::S3Fifo,
        PolicyKind::WTinyLfu,
    ];

    /// The config spelling ("s3fifo", "clock", "lru", "arc", "wtinylfu").
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::S3Fifo => "s3fifo",
            PolicyKind::Clock => "clock",
            PolicyKind::Lru => "lru",
            PolicyKind::Arc => "arc",
            PolicyKind::WTinyLfu => "wtinylfu",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an unknown policy name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownPolicy(pub String);

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown eviction policy {:?} (expected one of: s3fifo, clock, lru, arc, wtinylfu)",
            self.0
        )
    }
}

impl std::error::Error for UnknownPolicy {}

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    /// Case-insensitive; also accepts "s3-fifo", "w-tinylfu" and "tinylfu".
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "s3fifo" | "s3-fifo" => Ok(PolicyKind::S3Fifo),
            "clock" => Ok(PolicyKind::Clock),
            "lru" => Ok(PolicyKind::Lru),
            "arc" => Ok(PolicyKind::Arc),
            "wtinylfu" | "w-tinylfu" | "tinylfu" => Ok(PolicyKind::WTinyLfu),
            _ => Err(UnknownPolicy(s.to_string())),
        }
    }
}

/// Builds a policy of the given kind.
pub fn new_policy(kind: PolicyKind, config: PolicyConfig) -> Box<dyn EvictionPolicy> {
    match kind {
        PolicyKind::S3Fifo => Box::new(S3Fifo::new(config)),
        PolicyKind::Clock => Box::new(Clock::new(config)),
        PolicyKind::Lru => Box::new(Lru::new(config)),
        PolicyKind::Arc => Box::new(ArcPolicy::new(config)),
        PolicyKind::WTinyLfu => Box::new(WTinyLfu::new(config)),
    }
}

#[cfg(test)]
mod tests;
