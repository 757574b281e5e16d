//! # nemordp-store
//!
//! [`nemordp_core::Store`] backends:
//!
//! - [`MemoryStore`], always: everything in process memory (tests, demos, one process).
//! - `SqliteStore` (feature `sqlite`): one file (`sqlite://nemordp.db`, created if missing) in
//!   WAL mode; writers take the lock with `BEGIN IMMEDIATE`, claims are single
//!   `UPDATE … RETURNING` statements. Good for one host.
//! - `PostgresStore` (feature `postgres`): several Provisioner processes on one database;
//!   fenced writes lock the job row and claims use `FOR UPDATE SKIP LOCKED`.
//!
//! Both SQL stores embed versioned, forward-only migrations (`migrations/{sqlite,postgres}`)
//! that `connect` applies, and refuse with [`ErrorKind::InvalidConfig`](nemordp_core::ErrorKind)
//! a database migrated by a newer binary. Complex fields are stored as JSON next to the scalar
//! columns that are queried; timestamps are unix milliseconds. A row that cannot be decoded
//! yields an `Unexpected` error naming the table and row id. Both pass
//! `nemordp_core::testkit::store::run_all`.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use nemordp_core::sim::store::MemoryStore;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use sqlite::SqliteStore;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use postgres::PostgresStore;
