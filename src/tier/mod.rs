//! Storage tiers below shared memory: the Parquet warm tier (objects the hot tier evicted, not
//! public: the coordinator drives it), the CID metadata catalog, and IPFS as the source below
//! both (read-through and write-back through a kubo node or a trustless gateway).

pub mod catalog;
pub mod cold;
pub(crate) mod ipfs;
pub(crate) mod parquet_guard;
pub(crate) mod warm;
