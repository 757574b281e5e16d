//! [`SqliteStore`]: the [`Store`](nemordp_core::Store) contract on SQLite (WAL mode, one writer
//! at a time via `BEGIN IMMEDIATE`, single-statement `UPDATE … RETURNING` claims).

use std::{fmt, str::FromStr};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::sql::Migration;

type Db = sqlx::Sqlite;
type DbRow = sqlx::sqlite::SqliteRow;
type This = SqliteStore;

/// Backend name reported by the store and its errors.
const NAME: &str = "sqlite";

/// The embedded, forward-only migrations.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/sqlite/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "records and index reservations",
        sql: include_str!("../migrations/sqlite/0002_records.sql"),
    },
    Migration {
        version: 3,
        description: "outbox failures",
        sql: include_str!("../migrations/sqlite/0003_outbox_failures.sql"),
    },
    Migration {
        version: 4,
        description: "one-statement provisioning steps",
        sql: include_str!("../migrations/sqlite/0004_commit_step.sql"),
    },
];

/// `column` is one of the ids in parameter `param`, a JSON array of strings.
fn id_in(column: &str, param: u8) -> String {
    format!("{column} IN (SELECT value FROM json_each(${param}))")
}

/// How `get_order_records` joins an order (`o`) to its instance (`i`) and credentials (`c`).
/// SQLite joins by nested loops over the primary keys.
const ORDER_RECORDS_JOINS: &str =
    "LEFT JOIN instances i ON i.order_id = o.id LEFT JOIN credentials c ON c.order_id = o.id";

/// Applies a provisioning step's batch in one statement (migration 4).
const COMMIT_STEP_SQL: &str = "INSERT INTO commit_step (doc) VALUES ($1)";

/// Applies several steps' batches, a JSON array of their documents, in one statement.
const COMMIT_STEPS_SQL: &str = "INSERT INTO commit_step (doc) SELECT value FROM json_each($1)";

/// SQLite serialises writers itself (`BEGIN IMMEDIATE`); nothing to lock.
const MIGRATION_LOCK_SQL: &str = "";

const FENCE_SQL: &str = "SELECT id FROM jobs WHERE id = $1 AND lease_owner = $2 \
     AND lease_epoch = $3 AND state = 'running'";

/// Due queued jobs and lapsed running ones, oldest `run_at` first: each kind is its own
/// ordered range scan of `jobs_due (state, run_at, id)` that stops after `$4` rows, instead of
/// sorting every due job on every claim.
const CLAIM_JOBS_SQL: &str = "WITH queued AS (SELECT id, run_at FROM jobs \
     WHERE state = 'queued' AND run_at <= $3 ORDER BY run_at, id LIMIT $4), \
     lapsed AS (SELECT id, run_at FROM jobs WHERE state = 'running' \
     AND (lease_until IS NULL OR lease_until <= $3) ORDER BY run_at, id LIMIT $4), \
     picked AS (SELECT id FROM (SELECT id, run_at FROM queued UNION ALL \
     SELECT id, run_at FROM lapsed) ORDER BY run_at, id LIMIT $4) \
     UPDATE jobs SET state = 'running', attempt = attempt + 1, \
     lease_owner = $1, lease_epoch = lease_epoch + 1, lease_until = $2, updated_at = $3 \
     WHERE id IN (SELECT id FROM picked) \
     RETURNING id, kind, order_id, unique_key, state, run_at, attempt, lease_owner, \
     lease_epoch, lease_until, last_error, note, created_at, updated_at";

const CLAIM_OUTBOX_SQL: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 \
     WHERE id IN (SELECT id FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL \
     AND next_attempt_at <= $2 \
     ORDER BY created_at, id LIMIT $3) \
     RETURNING id, order_id, kind, created_at, attempts, next_attempt_at, delivered_at, last_error, \
     failed_at, history";

/// A write transaction that takes SQLite's write lock up front, so a read inside it can never
/// be invalidated by another writer (no `SQLITE_BUSY` upgrade failures).
async fn begin_write(
    pool: &sqlx::Pool<Db>,
    operation: &'static str,
) -> nemordp_core::Result<sqlx::Transaction<'static, Db>> {
    pool.begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| crate::sql::db_err(NAME, operation, e))
}

/// A [`Store`](nemordp_core::Store) on SQLite.
///
/// ```no_run
/// # async fn demo() -> nemordp_core::Result<()> {
/// use nemordp_store::SqliteStore;
///
/// let store = SqliteStore::connect("sqlite://nemordp.db").await?; // created if missing
/// let scratch = SqliteStore::connect("sqlite::memory:").await?;
/// # let _ = (store, scratch);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    pool: sqlx::Pool<Db>,
    memory: bool,
    steps: std::sync::Arc<StepQueue>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("in_memory", &self.memory)
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://path.db`,
    /// `sqlite::memory:`) and applies the embedded migrations.
    ///
    /// An in-memory database lives in a single connection that the pool never closes.
    pub async fn connect(url: &str) -> nemordp_core::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| crate::sql::db_err(NAME, "connect", e))?;
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        Self::open(options, memory).await
    }

    /// Like [`Self::connect`] with explicit options (WAL mode for files, a busy timeout and
    /// create-if-missing are applied on top).
    pub async fn connect_with(options: SqliteConnectOptions) -> nemordp_core::Result<Self> {
        Self::open(options, false).await
    }

    /// Wraps an existing pool (configured by the caller: WAL, busy timeout, pool size) and
    /// applies the embedded migrations. For an in-memory database the pool must keep exactly
    /// one connection open forever.
    pub async fn from_pool(pool: sqlx::SqlitePool) -> nemordp_core::Result<Self> {
        let store = Self {
            pool,
            memory: false,
            steps: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// True for an in-memory database (held in one connection the pool never closes).
    pub fn is_in_memory(&self) -> bool {
        self.memory
    }

    async fn open(options: SqliteConnectOptions, memory: bool) -> nemordp_core::Result<Self> {
        // `sqlite::memory:` parses to a private shared-cache name `file:sqlx-in-memory-N`.
        let filename = options.get_filename().to_string_lossy().into_owned();
        let memory = memory
            || filename.contains(":memory:")
            || filename.contains("sqlx-in-memory")
            || filename.contains("mode=memory")
            || filename.is_empty();
        let options = options
            .create_if_missing(true)
            .busy_timeout(std::time::Duration::from_secs(10))
            .foreign_keys(true);
        let options = if memory {
            options
        } else {
            options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
        };
        // One connection, kept open: SQLite runs one writer at a time anyway, and writers on
        // several connections of one process would wait in SQLite's busy handler (sleeps of
        // 1-100 ms) instead of queueing for the connection: 4 connections gave 280 orders/s
        // where 1 gives 400 (benches/sql_stores.rs). An in-memory database must stay in its
        // one connection forever. `from_pool` lets a caller choose otherwise.
        // No ping before each acquire either: a local file connection does not go stale, and
        // the ping was a second trip to the connection's thread for every statement.
        let pool_options = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        let pool = pool_options
            .connect_with(options)
            .await
            .map_err(|e| crate::sql::db_err(NAME, "connect", e))?;
        let store = Self {
            pool,
            memory,
            steps: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }
}

include!("sql_common.rs");
