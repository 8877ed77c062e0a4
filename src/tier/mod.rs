//! Storage tiers below shared memory: the Parquet warm tier (objects the hot tier evicted) and
//! the CID metadata catalog.

pub(crate) mod warm;
