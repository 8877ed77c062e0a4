//! Storage tiers below shared memory.

pub mod catalog;
