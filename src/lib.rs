//! # cidcache
//!
//! A shared-memory, cross-process cache for content-addressed data (IPFS CIDs) and Arrow
//! datasets. A coordinator daemon (`cidcached`) owns the storage tiers and publishes objects in
//! named shared-memory segments, indexed by a lock-free hash table; any local process maps those
//! segments and reads hot objects zero-copy, with no system call and no lock on a hit.
//!
//! Start with [`Client`]. The shared layouts are described in `docs/layout.md` and the wire
//! protocol in `docs/protocol.md`.

#![warn(missing_docs)]

pub mod arena;
pub mod arrow;
pub mod cid;
mod client;
pub mod config;
pub mod coordinator;
pub mod error;
pub mod flight;
#[doc(hidden)]
pub mod fuzzing;
#[doc(hidden)]
pub mod harness;
pub mod index;
pub mod key;
pub mod layout;
pub mod limits;
pub mod peer;
pub mod pins;
pub mod plasma;
pub mod policy;
pub mod proto;
pub mod scan;
pub mod shm;
pub mod sketch;
pub(crate) mod sync;
pub mod tier;

#[doc(hidden)]
pub use tier::warm::bench as __warm_bench;

pub use client::{Client, ConnectOptions, ObjectRef, PutOptions, WriteObject};
pub use error::{Code, Error, Result};
pub use key::Key;

/// Constructors that the criterion micro-benchmarks (`benches/micro.rs`) need and that the
/// public API does not offer. Not a stable API.
#[doc(hidden)]
pub mod bench_support {
    use crate::index::Slot;

    /// `n` empty index slots (all words zero), as a fresh control segment holds them.
    pub fn empty_slots(n: usize) -> Vec<Slot> {
        (0..n).map(|_| Slot::empty()).collect()
    }
}
