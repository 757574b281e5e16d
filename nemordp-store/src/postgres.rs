//! [`PostgresStore`]: the [`Store`](nemordp_core::Store) contract on PostgreSQL (row locks for
//! fencing, `FOR UPDATE SKIP LOCKED` claims so concurrent workers never wait on each other).

use std::{fmt, str::FromStr};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::sql::Migration;

type Db = sqlx::Postgres;
type DbRow = sqlx::postgres::PgRow;
type This = PostgresStore;

/// Backend name reported by the store and its errors.
const NAME: &str = "postgres";

/// The embedded, forward-only migrations.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "initial",
        sql: include_str!("../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        description: "records and index reservations",
        sql: include_str!("../migrations/postgres/0002_records.sql"),
    },
    Migration {
        version: 3,
        description: "outbox failures",
        sql: include_str!("../migrations/postgres/0003_outbox_failures.sql"),
    },
    Migration {
        version: 4,
        description: "one-statement provisioning steps",
        sql: include_str!("../migrations/postgres/0004_commit_step.sql"),
    },
];

/// `column` is one of the ids in parameter `param`, a JSON array of strings. The array is
/// unpacked once, so `= ANY` probes an index (a join against the set-returning function was
/// planned as a scan of the whole table).
fn id_in(column: &str, param: u8) -> String {
    format!("{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)))")
}

/// How `get_order_records` joins an order (`o`) to its instance (`i`) and credentials (`c`).
/// Lateral subqueries that the planner cannot flatten (`LIMIT 1`; a primary key matches at
/// most one row anyway), so each order's rows are fetched by primary key: plain joins were
/// planned as hash joins over whole-table scans.
const ORDER_RECORDS_JOINS: &str = "LEFT JOIN LATERAL \
     (SELECT * FROM instances WHERE order_id = o.id LIMIT 1) i ON true \
     LEFT JOIN LATERAL (SELECT * FROM credentials WHERE order_id = o.id LIMIT 1) c ON true";

/// Applies a provisioning step's batch in one statement (migration 4).
const COMMIT_STEP_SQL: &str = "SELECT nemordp_commit_step($1::jsonb)";

/// Applies several steps' batches, a JSON array of their documents, in one statement, in
/// array order.
const COMMIT_STEPS_SQL: &str = "SELECT nemordp_commit_step(step) FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY \
     AS steps(step, n) ORDER BY n";

/// Serialises concurrent migrators of one schema.
const MIGRATION_LOCK_SQL: &str =
    "SELECT pg_advisory_xact_lock(74116982, hashtext(current_schema()))::text";

/// Locks the job row, so a concurrent claim skips it until this batch commits.
const FENCE_SQL: &str = "SELECT id FROM jobs WHERE id = $1 AND lease_owner = $2 \
     AND lease_epoch = $3 AND state = 'running' FOR UPDATE";

/// Due queued jobs and lapsed running ones, oldest `run_at` first. Each kind is its own
/// ordered range scan of `jobs_due (state, run_at, id)` that stops after `$4` rows; one
/// `WHERE (queued …) OR (running …)` over both would sort every due job on every claim
/// (9 ms per claim with 10,000 queued). Both branches lock their candidates with
/// `SKIP LOCKED`; the best `$4` of at most `2 × $4` are taken, and updated through `= ANY` of
/// their ids, which probes the primary key (`IN (SELECT …)` was planned as a hash join over a
/// scan of the whole table).
const CLAIM_JOBS_SQL: &str = "WITH queued AS (SELECT id, run_at FROM jobs \
     WHERE state = 'queued' AND run_at <= $3 ORDER BY run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED), \
     lapsed AS (SELECT id, run_at FROM jobs WHERE state = 'running' \
     AND (lease_until IS NULL OR lease_until <= $3) ORDER BY run_at, id LIMIT $4 \
     FOR UPDATE SKIP LOCKED), \
     picked AS (SELECT id FROM (SELECT id, run_at FROM queued UNION ALL \
     SELECT id, run_at FROM lapsed) due ORDER BY run_at, id LIMIT $4) \
     UPDATE jobs SET state = 'running', attempt = attempt + 1, \
     lease_owner = $1, lease_epoch = lease_epoch + 1, lease_until = $2, updated_at = $3 \
     WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
     RETURNING id, kind, order_id, unique_key, state, run_at, attempt, lease_owner, \
     lease_epoch, lease_until, last_error, note, created_at, updated_at";

/// Due pending entries, oldest first, locked with `SKIP LOCKED` and updated through `= ANY` of
/// their ids (primary-key probes, as in `CLAIM_JOBS_SQL`).
const CLAIM_OUTBOX_SQL: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 \
     WHERE id = ANY(ARRAY(SELECT id FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL \
     AND next_attempt_at <= $2 \
     ORDER BY created_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)) \
     RETURNING id, order_id, kind, created_at, attempts, next_attempt_at, delivered_at, last_error, \
     failed_at, history";

async fn begin_write(
    pool: &sqlx::Pool<Db>,
    operation: &'static str,
) -> nemordp_core::Result<sqlx::Transaction<'static, Db>> {
    pool.begin()
        .await
        .map_err(|e| crate::sql::db_err(NAME, operation, e))
}

/// A [`Store`](nemordp_core::Store) on PostgreSQL.
///
/// ```no_run
/// # async fn demo() -> nemordp_core::Result<()> {
/// use nemordp_store::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://nemordp@127.0.0.1:5432/nemordp").await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: sqlx::Pool<Db>,
    steps: std::sync::Arc<StepQueue>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("connections", &self.pool.size())
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/db`) and applies the embedded migrations.
    pub async fn connect(url: &str) -> nemordp_core::Result<Self> {
        let options =
            PgConnectOptions::from_str(url).map_err(|e| crate::sql::db_err(NAME, "connect", e))?;
        Self::connect_with(options).await
    }

    /// Like [`Self::connect`] with explicit options, e.g. a `search_path` for a schema:
    /// `options.options([("search_path", "tenant_a")])`.
    pub async fn connect_with(options: PgConnectOptions) -> nemordp_core::Result<Self> {
        // No ping before each acquire: it doubled the round trips of every statement. A
        // connection the server dropped fails its next statement with a retryable
        // `Unavailable` and is replaced; `from_pool` lets a caller choose otherwise.
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|e| crate::sql::db_err(NAME, "connect", e))?;
        Self::from_pool(pool).await
    }

    /// Wraps an existing pool and applies the embedded migrations.
    pub async fn from_pool(pool: sqlx::PgPool) -> nemordp_core::Result<Self> {
        let store = Self {
            pool,
            steps: std::sync::Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }
}

include!("sql_common.rs");
