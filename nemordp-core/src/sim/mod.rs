//! In-process backends for docs, examples, tests and benchmarks: no keys, no network,
//! deterministic under a seed.

pub mod cloud;
pub mod notify;
pub mod payments;
pub mod rates;
pub mod store;
