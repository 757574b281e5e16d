//! # nemordp-store
//!
//! [`nemordp_core::Store`] backends: [`MemoryStore`] always; `sqlite` and `postgres` (sqlx)
//! behind features.
//!
//! The `sqlite` and `postgres` feature names are reserved today: the backends land with their
//! issue, and no placeholder type pretends to work before then.
#![deny(missing_docs)]

pub use nemordp_core::sim::store::MemoryStore;
