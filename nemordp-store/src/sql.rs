//! Helpers shared by the SQL backends: error mapping, JSON columns and integer conversions.

use std::fmt::Display;

use nemordp_core::{Error, ErrorKind, Result, Timestamp};
use serde::{Serialize, de::DeserializeOwned};

/// A store error naming backend and operation.
pub(crate) fn err(
    backend: &'static str,
    kind: ErrorKind,
    operation: &'static str,
    message: impl Into<String>,
) -> Error {
    Error::new(kind, message)
        .with_backend(backend)
        .with_operation(operation)
}

/// Maps a driver error. Messages carry the driver's text only (never bound values or URLs).
pub(crate) fn db_err(backend: &'static str, operation: &'static str, e: sqlx::Error) -> Error {
    let kind = match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ErrorKind::Conflict,
        sqlx::Error::Database(d) if d.code().as_deref() == Some("40001") => ErrorKind::Conflict,
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Tls(_) => ErrorKind::Unavailable,
        sqlx::Error::Database(d) if is_busy(d.code().as_deref()) => ErrorKind::Unavailable,
        sqlx::Error::Configuration(_) => ErrorKind::InvalidConfig,
        _ => ErrorKind::Unexpected,
    };
    let message = match &e {
        sqlx::Error::Configuration(_) => "invalid database configuration".to_owned(),
        other => format!("database error: {other}"),
    };
    err(backend, kind, operation, message).with_source(e)
}

/// SQLite's "database is locked/busy" codes (5, 6 and their extended forms).
fn is_busy(code: Option<&str>) -> bool {
    code.and_then(|c| c.parse::<i64>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// A corrupt row: names table, row id and column.
pub(crate) fn corrupt(
    backend: &'static str,
    operation: &'static str,
    table: &str,
    id: &str,
    column: &str,
    why: impl Display,
) -> Error {
    err(
        backend,
        ErrorKind::Unexpected,
        operation,
        format!("corrupt row in table {table} (id {id}), column {column}: {why}"),
    )
}

/// JSON text of a value we own (serialising our own types cannot fail in practice).
pub(crate) fn to_json<T: Serialize>(
    backend: &'static str,
    operation: &'static str,
    value: &T,
) -> Result<String> {
    serde_json::to_string(value).map_err(|e| {
        err(
            backend,
            ErrorKind::Unexpected,
            operation,
            format!("cannot encode a record as JSON: {e}"),
        )
    })
}

/// The snake-case name of a unit enum variant (how enums are stored).
pub(crate) fn enum_name<T: Serialize>(
    backend: &'static str,
    operation: &'static str,
    value: &T,
) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(err(
            backend,
            ErrorKind::Unexpected,
            operation,
            "cannot encode an enum name",
        )),
    }
}

/// Decodes a JSON column.
pub(crate) fn from_json<T: DeserializeOwned>(
    backend: &'static str,
    operation: &'static str,
    table: &str,
    id: &str,
    column: &str,
    text: &str,
) -> Result<T> {
    serde_json::from_str(text).map_err(|e| corrupt(backend, operation, table, id, column, e))
}

/// Decodes an enum stored by [`enum_name`].
pub(crate) fn from_enum_name<T: DeserializeOwned>(
    backend: &'static str,
    operation: &'static str,
    table: &str,
    id: &str,
    column: &str,
    name: &str,
) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|e| corrupt(backend, operation, table, id, column, e))
}

/// Parses an id column.
pub(crate) fn parse_id<T: std::str::FromStr>(
    backend: &'static str,
    operation: &'static str,
    table: &str,
    id: &str,
    column: &str,
    text: &str,
) -> Result<T> {
    text.parse()
        .map_err(|_| corrupt(backend, operation, table, id, column, "not a valid id"))
}

/// A non-negative counter column.
pub(crate) fn to_u32(
    backend: &'static str,
    operation: &'static str,
    table: &str,
    id: &str,
    column: &str,
    v: i64,
) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(backend, operation, table, id, column, "out of range"))
}

/// A non-negative version/epoch column.
pub(crate) fn to_u64(
    backend: &'static str,
    operation: &'static str,
    table: &str,
    id: &str,
    column: &str,
    v: i64,
) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(backend, operation, table, id, column, "out of range"))
}

/// A version or epoch as a BIGINT.
pub(crate) fn to_i64(backend: &'static str, operation: &'static str, v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| {
        err(
            backend,
            ErrorKind::InvalidInput,
            operation,
            format!("value {v} does not fit a BIGINT"),
        )
    })
}

/// Milliseconds of a timestamp.
pub(crate) const fn ms(t: Timestamp) -> i64 {
    t.as_unix_millis()
}

/// A timestamp column.
pub(crate) const fn ts(v: i64) -> Timestamp {
    Timestamp::from_unix_millis(v)
}

/// Page size for `limit == 0`.
pub(crate) fn page_limit(limit: u32) -> i64 {
    if limit == 0 { 100 } else { i64::from(limit) }
}

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    /// Version (strictly increasing).
    pub(crate) version: i64,
    /// Short description.
    pub(crate) description: &'static str,
    /// The SQL (may hold several statements).
    pub(crate) sql: &'static str,
}

/// The error for a database migrated by a newer binary.
pub(crate) fn too_new(backend: &'static str, applied: i64, known: i64) -> Error {
    err(
        backend,
        ErrorKind::InvalidConfig,
        "migrate",
        format!(
            "database schema is at version {applied}, newer than the {known} this binary knows; \
             upgrade nemordp before using this database"
        ),
    )
}
