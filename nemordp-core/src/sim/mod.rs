//! In-process backends for docs, examples, tests and benchmarks: no keys, no network,
//! deterministic under a seed.

pub mod cloud;
pub mod notify;
pub mod payments;
pub mod rates;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod remote;
pub mod store;
