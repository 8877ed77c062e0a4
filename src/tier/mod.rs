//! Storage tiers below shared memory: the Parquet warm tier (objects the hot tier evicted, not
//! public: the coordinator drives it) and the CID metadata catalog.

pub mod catalog;
pub mod cold;
pub(crate) mod parquet_guard;
pub(crate) mod warm;
