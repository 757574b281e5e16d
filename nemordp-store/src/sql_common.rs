// Shared body of the SQL stores, `include!`d by `sqlite.rs` and `postgres.rs`. Each includer
// defines `Db`, `DbRow`, `NAME`, `MIGRATIONS`, `FENCE_SQL`, `CLAIM_JOBS_SQL`,
// `CLAIM_OUTBOX_SQL`, `MIGRATION_LOCK_SQL`, `begin_write` and the store type `This` with a
// `pool` field. The SQL uses `$n` placeholders, which both drivers accept.

use std::time::Duration;

use nemordp_core::{
    ErrorKind, JobId, NotificationId, OrderId, PaymentId, Result, Store, Timestamp,
    order::Order,
    payment::Payment,
    store::{
        Batch, ClaimRequest, ClaimedJob, CommitOutcome, InstanceRecord, Job, JobOutcome, JobState,
        Lease, LeaseInfo, OrderQuery, OrderRecords, OrderWrite, OutboxEntry, PaymentWrite, Record,
        RecordWrite, SealedCredentials,
    },
};
use sqlx::{Row as _, pool::Pool};

use crate::sql::{
    corrupt, db_err, enum_name, err, from_enum_name, from_json, ms, page_limit, parse_id, to_i64,
    to_json, to_u32, to_u64, too_new, ts,
};

type Tx = sqlx::Transaction<'static, Db>;

const JOB_COLUMNS: &str = "id, kind, order_id, unique_key, state, run_at, attempt, lease_owner, \
     lease_epoch, lease_until, last_error, note, created_at, updated_at";
const RECORD_COLUMNS: &str = "collection, record_key, version, data, updated_at";
const OUTBOX_COLUMNS: &str = "id, order_id, kind, created_at, attempts, next_attempt_at, \
     delivered_at, last_error, failed_at, history";

fn get<'r, T>(row: &'r DbRow, op: &'static str, table: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Db> + sqlx::Type<Db>,
{
    row.try_get::<T, _>(column).map_err(|e| {
        let id: String = row
            .try_get::<String, _>(0)
            .unwrap_or_else(|_| "?".to_owned());
        corrupt(NAME, op, table, &id, column, e)
    })
}

fn decode_order(row: &DbRow, op: &'static str) -> Result<Order> {
    let id: String = get(row, op, "orders", "id")?;
    let data: String = get(row, op, "orders", "data")?;
    let version: i64 = get(row, op, "orders", "version")?;
    let mut order: Order = from_json(NAME, op, "orders", &id, "data", &data)?;
    order.version = to_u64(NAME, op, "orders", &id, "version", version)?;
    Ok(order)
}

fn decode_payment(row: &DbRow, op: &'static str) -> Result<Payment> {
    let id: String = get(row, op, "payments", "id")?;
    let data: String = get(row, op, "payments", "data")?;
    let version: i64 = get(row, op, "payments", "version")?;
    let mut payment: Payment = from_json(NAME, op, "payments", &id, "data", &data)?;
    payment.version = to_u64(NAME, op, "payments", &id, "version", version)?;
    Ok(payment)
}

fn decode_instance(row: &DbRow, op: &'static str) -> Result<InstanceRecord> {
    decode_instance_as(row, op, "")
}

/// An instance record from columns named `{prefix}{column}` (a join's aliases).
fn decode_instance_as(row: &DbRow, op: &'static str, prefix: &str) -> Result<InstanceRecord> {
    const T: &str = "instances";
    let col = |c: &str| format!("{prefix}{c}");
    let id: String = get(row, op, T, &col("order_id"))?;
    let data: String = get(row, op, T, &col("data"))?;
    let sealed: Option<Vec<u8>> = get(row, op, T, &col("sealed_password"))?;
    let mut record: InstanceRecord = from_json(NAME, op, T, &id, "data", &data)?;
    record.sealed_password = sealed;
    Ok(record)
}

fn decode_credentials(row: &DbRow, op: &'static str) -> Result<SealedCredentials> {
    decode_credentials_as(row, op, "")
}

/// Sealed credentials from columns named `{prefix}{column}` (a join's aliases).
fn decode_credentials_as(row: &DbRow, op: &'static str, prefix: &str) -> Result<SealedCredentials> {
    const T: &str = "credentials";
    let col = |c: &str| format!("{prefix}{c}");
    let id: String = get(row, op, T, &col("order_id"))?;
    Ok(SealedCredentials::new(
        parse_id(NAME, op, T, &id, "order_id", &id)?,
        get::<String>(row, op, T, &col("username"))?,
        get::<String>(row, op, T, &col("key_id"))?,
        get::<Vec<u8>>(row, op, T, &col("sealed_password"))?,
        ts(get(row, op, T, &col("created_at"))?),
    ))
}

/// Orders with their instance records and credentials, by id (`Store::get_order_records`).
static GET_ORDER_RECORDS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT o.id AS id, o.data AS data, o.version AS version, \
         i.order_id AS i_order_id, i.sealed_password AS i_sealed_password, i.data AS i_data, \
         c.order_id AS c_order_id, c.username AS c_username, c.key_id AS c_key_id, \
         c.sealed_password AS c_sealed_password, c.created_at AS c_created_at \
         FROM orders o {} WHERE {}",
        ORDER_RECORDS_JOINS,
        id_in("o.id", 1)
    )
});

/// Marks outbox entries delivered by id (`Store::mark_outbox_delivered_many`).
static MARK_DELIVERED_MANY_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE outbox SET delivered_at = COALESCE(delivered_at, $1) WHERE {}",
        id_in("id", 2)
    )
});

fn decode_outbox(row: &DbRow, op: &'static str) -> Result<OutboxEntry> {
    const T: &str = "outbox";
    let id: String = get(row, op, T, "id")?;
    let order_id: String = get(row, op, T, "order_id")?;
    let kind: String = get(row, op, T, "kind")?;
    let mut entry = OutboxEntry::new(
        parse_id(NAME, op, T, &id, "order_id", &order_id)?,
        from_json(NAME, op, T, &id, "kind", &kind)?,
        ts(get(row, op, T, "created_at")?),
    );
    entry.id = parse_id(NAME, op, T, &id, "id", &id)?;
    entry.attempts = to_u32(NAME, op, T, &id, "attempts", get(row, op, T, "attempts")?)?;
    entry.next_attempt_at = ts(get(row, op, T, "next_attempt_at")?);
    entry.delivered_at = get::<Option<i64>>(row, op, T, "delivered_at")?.map(ts);
    entry.last_error = get(row, op, T, "last_error")?;
    entry.failed_at = get::<Option<i64>>(row, op, T, "failed_at")?.map(ts);
    let history: String = get(row, op, T, "history")?;
    entry.history = from_json(NAME, op, T, &id, "history", &history)?;
    Ok(entry)
}

fn decode_record(row: &DbRow, op: &'static str) -> Result<Record> {
    const T: &str = "records";
    Ok(Record {
        collection: get(row, op, T, "collection")?,
        key: get(row, op, T, "record_key")?,
        version: to_u64(
            NAME,
            op,
            T,
            &get::<String>(row, op, T, "record_key")?,
            "version",
            get(row, op, T, "version")?,
        )?,
        data: get(row, op, T, "data")?,
        updated_at: ts(get(row, op, T, "updated_at")?),
    })
}

fn decode_job(row: &DbRow, op: &'static str) -> Result<Job> {
    const T: &str = "jobs";
    let id: String = get(row, op, T, "id")?;
    let kind: String = get(row, op, T, "kind")?;
    let order_id: String = get(row, op, T, "order_id")?;
    let state: String = get(row, op, T, "state")?;
    let mut job = Job::new(
        from_enum_name(NAME, op, T, &id, "kind", &kind)?,
        parse_id(NAME, op, T, &id, "order_id", &order_id)?,
        ts(get(row, op, T, "run_at")?),
    );
    job.id = parse_id(NAME, op, T, &id, "id", &id)?;
    job.unique_key = get(row, op, T, "unique_key")?;
    job.state = from_enum_name(NAME, op, T, &id, "state", &state)?;
    job.attempt = to_u32(NAME, op, T, &id, "attempt", get(row, op, T, "attempt")?)?;
    let owner: Option<String> = get(row, op, T, "lease_owner")?;
    let epoch = to_u64(
        NAME,
        op,
        T,
        &id,
        "lease_epoch",
        get(row, op, T, "lease_epoch")?,
    )?;
    let until: Option<i64> = get(row, op, T, "lease_until")?;
    job.lease = match (owner, until) {
        (Some(owner), Some(until)) => Some(LeaseInfo {
            owner,
            epoch,
            expires_at: ts(until),
        }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                NAME,
                op,
                T,
                &id,
                "lease_owner",
                "lease_owner and lease_until must be set together",
            ));
        }
    };
    job.last_error = get(row, op, T, "last_error")?;
    job.note = get(row, op, T, "note")?;
    job.created_at = ts(get(row, op, T, "created_at")?);
    job.updated_at = ts(get(row, op, T, "updated_at")?);
    Ok(job)
}

fn job_state_name(state: JobState) -> Result<String> {
    enum_name(NAME, "commit", &state)
}

/// Runs the embedded migrations on `pool` after refusing a database newer than this binary.
async fn run_migrations(pool: &Pool<Db>) -> Result<()> {
    const OP: &str = "migrate";
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut tx = begin_write(pool, OP).await?;
    if !MIGRATION_LOCK_SQL.is_empty() {
        sqlx::query(MIGRATION_LOCK_SQL)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err(NAME, OP, e))?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS nemordp_migrations (version BIGINT PRIMARY KEY NOT NULL, \
         description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| db_err(NAME, OP, e))?;
    let applied: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM nemordp_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get::<Option<i64>, _>(0))
        .map_err(|e| db_err(NAME, OP, e))?;
    let applied = applied.unwrap_or(0);
    if applied > known {
        return Err(too_new(NAME, applied, known));
    }
    let now = ms(Timestamp::from_system_time(std::time::SystemTime::now()));
    for migration in MIGRATIONS.iter().filter(|m| m.version > applied) {
        sqlx::raw_sql(migration.sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| db_err(NAME, OP, e))?;
        sqlx::query(
            "INSERT INTO nemordp_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(migration.version)
        .bind(migration.description)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_err(NAME, OP, e))?;
    }
    tx.commit().await.map_err(|e| db_err(NAME, OP, e))
}

/// Why an order update matched no row: the order is gone, or at `current`, another version.
fn order_write_refused(order: &Order, current: Option<i64>) -> nemordp_core::Error {
    match current {
        None => err(
            NAME,
            ErrorKind::NotFound,
            "commit",
            format!("order {} not found", order.id),
        ),
        Some(v) => err(
            NAME,
            ErrorKind::Conflict,
            "commit",
            format!(
                "order {} is at version {v}, not {}",
                order.id, order.version
            ),
        ),
    }
}

/// The document for `COMMIT_STEP_SQL` (migration 4) when `batch` has the shape of a
/// provisioning step: fenced; at most one order update, one instance record and one set of
/// credentials; any outbox entries; optionally finishing the job; nothing else. `None` sends
/// the batch down the general path, which handles every shape.
fn commit_step_doc(batch: &Batch, now: Timestamp) -> Result<Option<String>> {
    use serde_json::{Value, json};
    const OP: &str = "commit";
    let Some(lease) = &batch.fence else {
        return Ok(None);
    };
    if batch.inbound_event.is_some()
        || !batch.payments.is_empty()
        || !batch.jobs.is_empty()
        || !batch.records.is_empty()
        || batch.orders.len() > 1
        || batch.instances.len() > 1
        || batch.credentials.len() > 1
    {
        return Ok(None);
    }
    let mut doc = serde_json::Map::new();
    doc.insert("now".into(), json!(ms(now)));
    doc.insert(
        "fence".into(),
        json!({
            "job_id": lease.job_id.to_string(),
            "owner": lease.owner,
            "epoch": to_i64(NAME, OP, lease.epoch)?,
        }),
    );
    match batch.orders.first() {
        None => {}
        Some(OrderWrite::Update(order)) => {
            let mut next = order.clone();
            next.version = order.version.saturating_add(1);
            doc.insert(
                "order".into(),
                json!({
                    "id": order.id.to_string(),
                    "expected": to_i64(NAME, OP, order.version)?,
                    "version": to_i64(NAME, OP, next.version)?,
                    "state_kind": enum_name(NAME, OP, &next.state.kind())?,
                    "updated_at": ms(next.updated_at),
                    "data": to_json(NAME, OP, &next)?,
                }),
            );
        }
        // Inserts (and any future write) take the general path.
        Some(_) => return Ok(None),
    }
    if let Some(record) = batch.instances.first() {
        let mut data = record.clone();
        data.sealed_password = None;
        doc.insert(
            "instance".into(),
            json!({
                "order_id": record.order_id.to_string(),
                // Hex, which `unhex` (SQLite) and `decode(…, 'hex')` (PostgreSQL) read back.
                "sealed_password": record.sealed_password.as_deref().map(hex::encode),
                "updated_at": ms(record.updated_at),
                "data": to_json(NAME, OP, &data)?,
            }),
        );
    }
    if let Some(creds) = batch.credentials.first() {
        doc.insert(
            "credentials".into(),
            json!({
                "order_id": creds.order_id.to_string(),
                "username": creds.username,
                "key_id": creds.key_id,
                "sealed_password": hex::encode(&creds.sealed_password),
                "created_at": ms(creds.created_at),
            }),
        );
    }
    let outbox = batch
        .outbox
        .iter()
        .map(|entry| {
            Ok(json!({
                "id": entry.id.to_string(),
                "order_id": entry.order_id.to_string(),
                "kind": to_json(NAME, OP, &entry.kind)?,
                "created_at": ms(entry.created_at),
                "attempts": i64::from(entry.attempts),
                "next_attempt_at": ms(entry.next_attempt_at),
                "delivered_at": entry.delivered_at.map(ms),
                "last_error": entry.last_error,
                "failed_at": entry.failed_at.map(ms),
                "history": to_json(NAME, OP, &entry.history)?,
            }))
        })
        .collect::<Result<Vec<Value>>>()?;
    doc.insert("outbox".into(), Value::Array(outbox));
    if let Some(outcome) = &batch.finish_job {
        let finish = FinishColumns::of(outcome)?;
        doc.insert(
            "finish".into(),
            json!({
                "state": job_state_name(finish.state)?,
                "run_at": finish.run_at,
                "set_error": finish.set_error,
                "error": finish.error,
            }),
        );
    }
    to_json(NAME, OP, &Value::Object(doc)).map(Some)
}

/// The job columns a finished job gets.
struct FinishColumns {
    state: JobState,
    /// The next run (kept when `None`).
    run_at: Option<i64>,
    /// Whether `last_error` is replaced (by `error`, which may clear it).
    set_error: bool,
    error: Option<String>,
}

impl FinishColumns {
    fn of(outcome: &JobOutcome) -> Result<Self> {
        let (state, run_at, set_error, error) = match outcome {
            JobOutcome::Done => (JobState::Done, None, false, None),
            JobOutcome::Retry { run_at, error } => {
                (JobState::Queued, Some(ms(*run_at)), true, error.clone())
            }
            JobOutcome::Failed { error } => (JobState::Failed, None, true, Some(error.clone())),
            _ => {
                return Err(err(
                    NAME,
                    ErrorKind::InvalidInput,
                    "commit",
                    "unknown job outcome",
                ));
            }
        };
        Ok(Self {
            state,
            run_at,
            set_error,
            error,
        })
    }
}

/// Step batches waiting to be written together (group commit): while one group is being
/// written, the steps that arrive queue up and go out as the next group, in one statement.
#[derive(Default)]
struct StepQueue {
    state: std::sync::Mutex<StepQueueState>,
}

#[derive(Default)]
struct StepQueueState {
    waiting: Vec<PendingStep>,
    flushing: bool,
}

struct PendingStep {
    batch: Batch,
    doc: String,
    done: tokio::sync::oneshot::Sender<Result<CommitOutcome>>,
}

/// At most this many steps go into one statement.
const MAX_STEP_GROUP: usize = 256;

impl StepQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, StepQueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends a flush however it ends: a flusher that panicked or was dropped with the runtime
/// fails the steps still waiting (their callers see an error, not a hang) and lets the next
/// step start a new flusher.
struct FlushGuard {
    queue: std::sync::Arc<StepQueue>,
    finished: bool,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.queue.lock();
            state.flushing = false;
            state.waiting.clear();
        }
    }
}

impl This {
    /// Queues a step's batch for the next group and waits for its own outcome.
    async fn commit_step_grouped(&self, batch: Batch, doc: String) -> Result<CommitOutcome> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let lead = {
            let mut state = self.steps.lock();
            state.waiting.push(PendingStep { batch, doc, done });
            !std::mem::replace(&mut state.flushing, true)
        };
        if lead {
            let store = self.clone();
            tokio::spawn(async move { store.flush_steps().await });
        }
        outcome.await.unwrap_or_else(|_| {
            Err(err(
                NAME,
                ErrorKind::Unavailable,
                "commit",
                "the group commit stopped before this step was written",
            ))
        })
    }

    /// Writes groups until no step waits.
    async fn flush_steps(&self) {
        let mut guard = FlushGuard {
            queue: self.steps.clone(),
            finished: false,
        };
        loop {
            let group: Vec<PendingStep> = {
                let mut state = guard.queue.lock();
                if state.waiting.is_empty() {
                    // Under the lock: a step queued after this starts a flusher of its own.
                    state.flushing = false;
                    guard.finished = true;
                    return;
                }
                let n = state.waiting.len().min(MAX_STEP_GROUP);
                state.waiting.drain(..n).collect()
            };
            self.write_step_group(group).await;
        }
    }

    /// One statement for the whole group; if it is refused (some step's fence, version or
    /// outbox id, or a database error), nothing of it was written, and each step is applied
    /// on its own for its own answer.
    async fn write_step_group(&self, group: Vec<PendingStep>) {
        if group.len() > 1 {
            let mut docs = String::with_capacity(group.iter().map(|p| p.doc.len() + 1).sum());
            docs.push('[');
            for (i, step) in group.iter().enumerate() {
                if i > 0 {
                    docs.push(',');
                }
                docs.push_str(&step.doc);
            }
            docs.push(']');
            if sqlx::query(COMMIT_STEPS_SQL)
                .bind(docs)
                .execute(&self.pool)
                .await
                .is_ok()
            {
                for step in group {
                    let _ = step.done.send(Ok(CommitOutcome::Applied));
                }
                return;
            }
        }
        for step in group {
            let outcome = self.commit_step(&step.batch, step.doc).await;
            let _ = step.done.send(outcome);
        }
    }
}

impl This {
    /// Applies a provisioning step's batch in one statement (`COMMIT_STEP_SQL`), turning the
    /// statement's named refusals into the errors the general path gives.
    async fn commit_step(&self, batch: &Batch, doc: String) -> Result<CommitOutcome> {
        const OP: &str = "commit";
        let Err(e) = sqlx::query(COMMIT_STEP_SQL)
            .bind(doc)
            .execute(&self.pool)
            .await
        else {
            return Ok(CommitOutcome::Applied);
        };
        let refusal = match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => "nemordp:outbox_exists",
            sqlx::Error::Database(d) => ["nemordp:lease_lost", "nemordp:order_conflict"]
                .into_iter()
                .find(|r| d.message().contains(r))
                .unwrap_or_default(),
            _ => "",
        };
        Err(match refusal {
            "nemordp:lease_lost" => {
                let lease = batch.fence.as_ref().ok_or_else(|| db_err(NAME, OP, e))?;
                err(
                    NAME,
                    ErrorKind::Conflict,
                    OP,
                    format!(
                        "lease lost: job {} is no longer held by {} at epoch {}",
                        lease.job_id, lease.owner, lease.epoch
                    ),
                )
            }
            "nemordp:order_conflict" => {
                let Some(OrderWrite::Update(order)) = batch.orders.first() else {
                    return Err(db_err(NAME, OP, e));
                };
                let current: Option<i64> = sqlx::query("SELECT version FROM orders WHERE id = $1")
                    .bind(order.id.to_string())
                    .fetch_optional(&self.pool)
                    .await
                    .and_then(|row| row.map(|r| r.try_get::<i64, _>(0)).transpose())
                    .map_err(|e| db_err(NAME, OP, e))?;
                order_write_refused(order, current)
            }
            "nemordp:outbox_exists" => err(
                NAME,
                ErrorKind::AlreadyExists,
                OP,
                format!(
                    "outbox entry {} already exists",
                    batch
                        .outbox
                        .iter()
                        .map(|o| o.id.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            ),
            _ => db_err(NAME, OP, e),
        })
    }
}

impl This {
    /// One outbox entry, or `NotFound`.
    async fn outbox_entry(&self, op: &'static str, id: NotificationId) -> Result<OutboxEntry> {
        let row = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"
        ))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err(NAME, op, e))?
        .ok_or_else(|| {
            err(
                NAME,
                ErrorKind::NotFound,
                op,
                format!("outbox entry {id} not found"),
            )
        })?;
        decode_outbox(&row, op)
    }

    /// Appends a failed attempt to a pending entry's history and either reschedules it
    /// (`next_attempt_at`) or marks it failed (`None`). A compare-and-set on the stored
    /// history, so a concurrent writer makes this re-read instead of losing an attempt.
    async fn record_outbox_failure(
        &self,
        op: &'static str,
        id: NotificationId,
        error: &str,
        now: Timestamp,
        next_attempt_at: Option<Timestamp>,
    ) -> Result<()> {
        for _ in 0..8 {
            let mut entry = self.outbox_entry(op, id).await?;
            if !entry.is_pending() {
                return Ok(());
            }
            let before = to_json(NAME, op, &entry.history)?;
            entry.record_failure(now, error);
            let updated = sqlx::query(
                "UPDATE outbox SET history = $1, last_error = $2, \
                 next_attempt_at = COALESCE($3, next_attempt_at), failed_at = $4 \
                 WHERE id = $5 AND history = $6 AND delivered_at IS NULL AND failed_at IS NULL",
            )
            .bind(to_json(NAME, op, &entry.history)?)
            .bind(error)
            .bind(next_attempt_at.map(ms))
            .bind(next_attempt_at.is_none().then(|| ms(now)))
            .bind(id.to_string())
            .bind(before)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err(NAME, op, e))?
            .rows_affected();
            if updated == 1 {
                return Ok(());
            }
        }
        Err(err(
            NAME,
            ErrorKind::Conflict,
            op,
            format!("outbox entry {id} kept changing; failure not recorded"),
        ))
    }

    /// The schema version this binary knows (the newest embedded migration).
    pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

    /// Applies any embedded migrations not yet applied (forward only). Refuses, with
    /// [`ErrorKind::InvalidConfig`], a database whose applied migrations are newer than this
    /// binary knows. [`Self::connect`] already calls this.
    pub async fn migrate(&self) -> Result<()> {
        run_migrations(&self.pool).await
    }

    /// The connection pool (for maintenance queries; writes should go through [`Store`]).
    pub fn pool(&self) -> &Pool<Db> {
        &self.pool
    }

    /// Stages and writes a batch inside `tx`, in the same order of checks as `MemoryStore`.
    /// `Ok(false)` means the inbound event was a duplicate.
    async fn apply(tx: &mut Tx, batch: &Batch, now: Timestamp) -> Result<bool> {
        const OP: &str = "commit";
        let dbe = |e| db_err(NAME, OP, e);
        if batch.finish_job.is_some() && batch.fence.is_none() {
            return Err(err(
                NAME,
                ErrorKind::InvalidInput,
                OP,
                "finish_job requires a fenced batch",
            ));
        }
        // (a) Fence.
        if let Some(lease) = &batch.fence {
            let held = sqlx::query(FENCE_SQL)
                .bind(lease.job_id.to_string())
                .bind(&lease.owner)
                .bind(to_i64(NAME, OP, lease.epoch)?)
                .fetch_optional(&mut **tx)
                .await
                .map_err(dbe)?;
            if held.is_none() {
                return Err(err(
                    NAME,
                    ErrorKind::Conflict,
                    OP,
                    format!(
                        "lease lost: job {} is no longer held by {} at epoch {}",
                        lease.job_id, lease.owner, lease.epoch
                    ),
                ));
            }
        }
        // (b) Inbound-event dedupe.
        if let Some((source, key)) = &batch.inbound_event {
            let inserted = sqlx::query(
                "INSERT INTO inbound_events (source, event_key, received_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(source)
            .bind(key)
            .bind(ms(now))
            .execute(&mut **tx)
            .await
            .map_err(dbe)?
            .rows_affected();
            if inserted == 0 {
                return Ok(false);
            }
        }
        // (c) Orders, in sequence.
        for write in &batch.orders {
            Self::write_order(tx, write).await?;
        }
        // (c) Payments, in sequence.
        for write in &batch.payments {
            Self::write_payment(tx, write).await?;
        }
        // (d) Instances and credentials: upserts.
        for record in &batch.instances {
            let mut data = record.clone();
            data.sealed_password = None;
            sqlx::query(
                "INSERT INTO instances (order_id, sealed_password, updated_at, data) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (order_id) DO UPDATE SET \
                 sealed_password = excluded.sealed_password, updated_at = excluded.updated_at, \
                 data = excluded.data",
            )
            .bind(record.order_id.to_string())
            .bind(record.sealed_password.clone())
            .bind(ms(record.updated_at))
            .bind(to_json(NAME, OP, &data)?)
            .execute(&mut **tx)
            .await
            .map_err(dbe)?;
        }
        for creds in &batch.credentials {
            sqlx::query(
                "INSERT INTO credentials (order_id, username, key_id, sealed_password, created_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO UPDATE SET \
                 username = excluded.username, key_id = excluded.key_id, \
                 sealed_password = excluded.sealed_password, created_at = excluded.created_at",
            )
            .bind(creds.order_id.to_string())
            .bind(&creds.username)
            .bind(&creds.key_id)
            .bind(creds.sealed_password.clone())
            .bind(ms(creds.created_at))
            .execute(&mut **tx)
            .await
            .map_err(dbe)?;
        }
        // (e) Outbox ids must be new.
        for entry in &batch.outbox {
            let inserted = sqlx::query(
                "INSERT INTO outbox (id, order_id, kind, created_at, attempts, next_attempt_at, \
                 delivered_at, last_error, failed_at, history) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            )
            .bind(entry.id.to_string())
            .bind(entry.order_id.to_string())
            .bind(to_json(NAME, OP, &entry.kind)?)
            .bind(ms(entry.created_at))
            .bind(i64::from(entry.attempts))
            .bind(ms(entry.next_attempt_at))
            .bind(entry.delivered_at.map(ms))
            .bind(entry.last_error.clone())
            .bind(entry.failed_at.map(ms))
            .bind(to_json(NAME, OP, &entry.history)?)
            .execute(&mut **tx)
            .await
            .map_err(dbe)?
            .rows_affected();
            if inserted == 0 {
                return Err(err(
                    NAME,
                    ErrorKind::AlreadyExists,
                    OP,
                    format!("outbox entry {} already exists", entry.id),
                ));
            }
        }
        // (f) Jobs: a taken unique key skips the job; a taken id is an error.
        for job in &batch.jobs {
            Self::insert_job(tx, job).await?;
        }
        // (f') Records: inserts must be new, updates must match the version, in sequence.
        for write in &batch.records {
            Self::write_record(tx, write, now).await?;
        }
        // (g) Finish the fenced job.
        if let (Some(lease), Some(outcome)) = (&batch.fence, &batch.finish_job) {
            let finish = FinishColumns::of(outcome)?;
            sqlx::query(
                "UPDATE jobs SET lease_owner = NULL, lease_until = NULL, updated_at = $1, \
                 state = $2, run_at = COALESCE($3, run_at), \
                 last_error = CASE WHEN $4 THEN $5 ELSE last_error END WHERE id = $6",
            )
            .bind(ms(now))
            .bind(job_state_name(finish.state)?)
            .bind(finish.run_at)
            .bind(finish.set_error)
            .bind(finish.error)
            .bind(lease.job_id.to_string())
            .execute(&mut **tx)
            .await
            .map_err(dbe)?;
        }
        Ok(true)
    }

    async fn write_record(tx: &mut Tx, write: &RecordWrite, now: Timestamp) -> Result<()> {
        const OP: &str = "commit";
        let written = match write.expected_version {
            None => sqlx::query(
                "INSERT INTO records (collection, record_key, version, data, updated_at) \
                 VALUES ($1, $2, 1, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(&write.collection)
            .bind(&write.key)
            .bind(&write.data)
            .bind(ms(now)),
            Some(expected) => sqlx::query(
                "UPDATE records SET version = version + 1, data = $3, updated_at = $4 \
                 WHERE collection = $1 AND record_key = $2 AND version = $5",
            )
            .bind(&write.collection)
            .bind(&write.key)
            .bind(&write.data)
            .bind(ms(now))
            .bind(to_i64(NAME, OP, expected)?),
        }
        .execute(&mut **tx)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .rows_affected();
        if written == 0 {
            let why = match write.expected_version {
                None => "already exists".to_owned(),
                Some(v) => format!("is missing or not at version {v}"),
            };
            return Err(err(
                NAME,
                ErrorKind::Conflict,
                OP,
                format!("record {}/{} {why}", write.collection, write.key),
            ));
        }
        Ok(())
    }

    async fn write_order(tx: &mut Tx, write: &OrderWrite) -> Result<()> {
        const OP: &str = "commit";
        let dbe = |e| db_err(NAME, OP, e);
        match write {
            OrderWrite::Insert(order) => {
                let inserted = sqlx::query(
                    "INSERT INTO orders (id, state_kind, version, created_at, updated_at, data) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(order.id.to_string())
                .bind(enum_name(NAME, OP, &order.state.kind())?)
                .bind(to_i64(NAME, OP, order.version)?)
                .bind(ms(order.created_at))
                .bind(ms(order.updated_at))
                .bind(to_json(NAME, OP, order)?)
                .execute(&mut **tx)
                .await
                .map_err(dbe)?
                .rows_affected();
                if inserted == 0 {
                    return Err(err(
                        NAME,
                        ErrorKind::AlreadyExists,
                        OP,
                        format!("order {} already exists", order.id),
                    ));
                }
            }
            OrderWrite::Update(order) => {
                let mut next = order.clone();
                next.version = order.version.saturating_add(1);
                let updated = sqlx::query(
                    "UPDATE orders SET state_kind = $1, version = $2, updated_at = $3, data = $4 \
                     WHERE id = $5 AND version = $6",
                )
                .bind(enum_name(NAME, OP, &next.state.kind())?)
                .bind(to_i64(NAME, OP, next.version)?)
                .bind(ms(next.updated_at))
                .bind(to_json(NAME, OP, &next)?)
                .bind(order.id.to_string())
                .bind(to_i64(NAME, OP, order.version)?)
                .execute(&mut **tx)
                .await
                .map_err(dbe)?
                .rows_affected();
                if updated == 0 {
                    let current: Option<i64> =
                        sqlx::query("SELECT version FROM orders WHERE id = $1")
                            .bind(order.id.to_string())
                            .fetch_optional(&mut **tx)
                            .await
                            .and_then(|row| row.map(|r| r.try_get::<i64, _>(0)).transpose())
                            .map_err(dbe)?;
                    return Err(order_write_refused(order, current));
                }
            }
            _ => {
                return Err(err(
                    NAME,
                    ErrorKind::InvalidInput,
                    OP,
                    "unknown order write",
                ));
            }
        }
        Ok(())
    }

    async fn write_payment(tx: &mut Tx, write: &PaymentWrite) -> Result<()> {
        const OP: &str = "commit";
        let dbe = |e| db_err(NAME, OP, e);
        let (payment, insert) = match write {
            PaymentWrite::Insert(p) => (p, true),
            PaymentWrite::Update(p) => (p, false),
            _ => {
                return Err(err(
                    NAME,
                    ErrorKind::InvalidInput,
                    OP,
                    "unknown payment write",
                ));
            }
        };
        let id = payment.id.to_string();
        let current: Option<i64> = sqlx::query("SELECT version FROM payments WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut **tx)
            .await
            .and_then(|row| row.map(|r| r.try_get::<i64, _>(0)).transpose())
            .map_err(dbe)?;
        let mut next = payment.clone();
        if insert {
            if current.is_some() {
                return Err(err(
                    NAME,
                    ErrorKind::AlreadyExists,
                    OP,
                    format!("payment {} already exists", payment.id),
                ));
            }
        } else {
            let Some(current) = current else {
                return Err(err(
                    NAME,
                    ErrorKind::NotFound,
                    OP,
                    format!("payment {} not found", payment.id),
                ));
            };
            if current != to_i64(NAME, OP, payment.version)? {
                return Err(err(
                    NAME,
                    ErrorKind::Conflict,
                    OP,
                    format!(
                        "payment {} is at version {current}, not {}",
                        payment.id, payment.version
                    ),
                ));
            }
            next.version = payment.version.saturating_add(1);
        }
        let owner: Option<String> = sqlx::query(
            "SELECT id FROM payments WHERE method = $1 AND reference = $2 AND id <> $3",
        )
        .bind(&payment.method)
        .bind(&payment.reference)
        .bind(&id)
        .fetch_optional(&mut **tx)
        .await
        .and_then(|row| row.map(|r| r.try_get::<String, _>(0)).transpose())
        .map_err(dbe)?;
        if let Some(owner) = owner {
            let kind = if insert {
                ErrorKind::AlreadyExists
            } else {
                ErrorKind::Conflict
            };
            return Err(err(
                NAME,
                kind,
                OP,
                format!(
                    "payment reference {}:{} is taken by payment {owner}",
                    payment.method, payment.reference
                ),
            ));
        }
        let data = to_json(NAME, OP, &next)?;
        let version = to_i64(NAME, OP, next.version)?;
        if insert {
            sqlx::query(
                "INSERT INTO payments (id, order_id, method, reference, version, created_at, \
                 updated_at, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&id)
            .bind(next.order_id.to_string())
            .bind(&next.method)
            .bind(&next.reference)
            .bind(version)
            .bind(ms(next.created_at))
            .bind(ms(next.updated_at))
            .bind(data)
            .execute(&mut **tx)
            .await
            .map_err(|e| {
                // A concurrent commit took the id or the reference since the checks above.
                let unique = matches!(&e, sqlx::Error::Database(d) if d.is_unique_violation());
                let mapped = dbe(e);
                if unique {
                    err(
                        NAME,
                        ErrorKind::AlreadyExists,
                        OP,
                        format!(
                            "payment {} or reference {}:{} was taken concurrently",
                            payment.id, payment.method, payment.reference
                        ),
                    )
                } else {
                    mapped
                }
            })?;
        } else {
            let updated = sqlx::query(
                "UPDATE payments SET order_id = $1, method = $2, reference = $3, version = $4, \
                 created_at = $5, updated_at = $6, data = $7 WHERE id = $8 AND version = $9",
            )
            .bind(next.order_id.to_string())
            .bind(&next.method)
            .bind(&next.reference)
            .bind(version)
            .bind(ms(next.created_at))
            .bind(ms(next.updated_at))
            .bind(data)
            .bind(&id)
            .bind(to_i64(NAME, OP, payment.version)?)
            .execute(&mut **tx)
            .await
            .map_err(dbe)?
            .rows_affected();
            if updated == 0 {
                return Err(err(
                    NAME,
                    ErrorKind::Conflict,
                    OP,
                    format!("payment {} changed concurrently", payment.id),
                ));
            }
        }
        Ok(())
    }

    async fn insert_job(tx: &mut Tx, job: &Job) -> Result<()> {
        const OP: &str = "commit";
        let dbe = |e| db_err(NAME, OP, e);
        if let Some(key) = &job.unique_key {
            let taken = sqlx::query("SELECT id FROM jobs WHERE unique_key = $1")
                .bind(key)
                .fetch_optional(&mut **tx)
                .await
                .map_err(dbe)?;
            if taken.is_some() {
                return Ok(());
            }
        }
        let lease = job.lease.as_ref();
        let inserted = sqlx::query(&format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             $11, $12, $13, $14) ON CONFLICT DO NOTHING"
        ))
        .bind(job.id.to_string())
        .bind(job.kind.as_str())
        .bind(job.order_id.to_string())
        .bind(job.unique_key.clone())
        .bind(job_state_name(job.state)?)
        .bind(ms(job.run_at))
        .bind(i64::from(job.attempt))
        .bind(lease.map(|l| l.owner.clone()))
        .bind(to_i64(NAME, OP, lease.map_or(0, |l| l.epoch))?)
        .bind(lease.map(|l| ms(l.expires_at)))
        .bind(job.last_error.clone())
        .bind(job.note.clone())
        .bind(ms(job.created_at))
        .bind(ms(job.updated_at))
        .execute(&mut **tx)
        .await
        .map_err(dbe)?
        .rows_affected();
        if inserted == 0 {
            // A concurrent commit may have taken the unique key since the check above.
            if let Some(key) = &job.unique_key {
                let taken = sqlx::query("SELECT id FROM jobs WHERE unique_key = $1")
                    .bind(key)
                    .fetch_optional(&mut **tx)
                    .await
                    .map_err(dbe)?;
                if taken.is_some_and(|r| r.try_get::<String, _>(0).ok() != Some(job.id.to_string()))
                {
                    return Ok(());
                }
            }
            return Err(err(
                NAME,
                ErrorKind::AlreadyExists,
                OP,
                format!("job {} already exists", job.id),
            ));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for This {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn commit(&self, batch: Batch, now: Timestamp) -> Result<CommitOutcome> {
        const OP: &str = "commit";
        if let Some(doc) = commit_step_doc(&batch, now)? {
            return self.commit_step_grouped(batch, doc).await;
        }
        let mut tx = begin_write(&self.pool, OP).await?;
        match Self::apply(&mut tx, &batch, now).await {
            Ok(true) => {
                tx.commit().await.map_err(|e| db_err(NAME, OP, e))?;
                Ok(CommitOutcome::Applied)
            }
            Ok(false) => {
                tx.rollback().await.map_err(|e| db_err(NAME, OP, e))?;
                Ok(CommitOutcome::Duplicate)
            }
            Err(e) => {
                // Best effort: dropping the transaction rolls back too.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    async fn get_order(&self, id: OrderId) -> Result<Option<Order>> {
        const OP: &str = "get_order";
        sqlx::query("SELECT id, data, version FROM orders WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .map(|row| decode_order(&row, OP))
            .transpose()
    }

    async fn get_order_records(&self, ids: &[OrderId]) -> Result<Vec<OrderRecords>> {
        const OP: &str = "get_order_records";
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        sqlx::query(&GET_ORDER_RECORDS_SQL)
            .bind(to_json(NAME, OP, &ids)?)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .iter()
            .map(|row| {
                let joined = |column: &str| -> Result<bool> {
                    Ok(get::<Option<String>>(row, OP, "orders", column)?.is_some())
                };
                Ok(OrderRecords::new(
                    decode_order(row, OP)?,
                    if joined("i_order_id")? {
                        Some(decode_instance_as(row, OP, "i_")?)
                    } else {
                        None
                    },
                    if joined("c_order_id")? {
                        Some(decode_credentials_as(row, OP, "c_")?)
                    } else {
                        None
                    },
                ))
            })
            .collect()
    }

    async fn list_orders(&self, query: &OrderQuery) -> Result<Vec<Order>> {
        const OP: &str = "list_orders";
        let state = query.state.map(|k| enum_name(NAME, OP, &k)).transpose()?;
        sqlx::query(
            "SELECT id, data, version FROM orders WHERE ($1 IS NULL OR state_kind = $1) \
             AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(state)
        .bind(query.after.map(|a| a.to_string()))
        .bind(page_limit(query.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .iter()
        .map(|row| decode_order(row, OP))
        .collect()
    }

    async fn get_payment(&self, id: PaymentId) -> Result<Option<Payment>> {
        const OP: &str = "get_payment";
        sqlx::query("SELECT id, data, version FROM payments WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .map(|row| decode_payment(&row, OP))
            .transpose()
    }

    async fn find_payment(&self, method: &str, reference: &str) -> Result<Option<Payment>> {
        const OP: &str = "find_payment";
        sqlx::query("SELECT id, data, version FROM payments WHERE method = $1 AND reference = $2")
            .bind(method)
            .bind(reference)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .map(|row| decode_payment(&row, OP))
            .transpose()
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        const OP: &str = "payments_for_order";
        sqlx::query(
            "SELECT id, data, version FROM payments WHERE order_id = $1 ORDER BY created_at, id",
        )
        .bind(order_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .iter()
        .map(|row| decode_payment(row, OP))
        .collect()
    }

    async fn get_instance(&self, order_id: OrderId) -> Result<Option<InstanceRecord>> {
        const OP: &str = "get_instance";
        sqlx::query("SELECT order_id, sealed_password, data FROM instances WHERE order_id = $1")
            .bind(order_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .map(|row| decode_instance(&row, OP))
            .transpose()
    }

    async fn list_instances(
        &self,
        after: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>> {
        const OP: &str = "list_instances";
        sqlx::query(
            "SELECT order_id, sealed_password, data FROM instances \
             WHERE ($1 IS NULL OR order_id > $1) ORDER BY order_id LIMIT $2",
        )
        .bind(after.map(|a| a.to_string()))
        .bind(page_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .iter()
        .map(|row| decode_instance(row, OP))
        .collect()
    }

    async fn get_credentials(&self, order_id: OrderId) -> Result<Option<SealedCredentials>> {
        const OP: &str = "get_credentials";
        sqlx::query(
            "SELECT order_id, username, key_id, sealed_password, created_at FROM credentials \
             WHERE order_id = $1",
        )
        .bind(order_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .map(|row| decode_credentials(&row, OP))
        .transpose()
    }

    async fn claim_outbox(
        &self,
        limit: u32,
        lease_for: Duration,
        now: Timestamp,
    ) -> Result<Vec<OutboxEntry>> {
        const OP: &str = "claim_outbox";
        let rows = sqlx::query(CLAIM_OUTBOX_SQL)
            .bind(ms(now.saturating_add(lease_for)))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?;
        let mut out = rows
            .iter()
            .map(|row| decode_outbox(row, OP))
            .collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|e| (e.created_at, e.id));
        Ok(out)
    }

    async fn mark_outbox_delivered(&self, id: NotificationId, now: Timestamp) -> Result<()> {
        const OP: &str = "mark_outbox_delivered";
        let updated = sqlx::query(
            "UPDATE outbox SET delivered_at = COALESCE(delivered_at, $1) WHERE id = $2",
        )
        .bind(ms(now))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .rows_affected();
        if updated == 0 {
            return Err(err(
                NAME,
                ErrorKind::NotFound,
                OP,
                format!("outbox entry {id} not found"),
            ));
        }
        Ok(())
    }

    async fn mark_outbox_delivered_many(
        &self,
        ids: &[NotificationId],
        now: Timestamp,
    ) -> Result<()> {
        const OP: &str = "mark_outbox_delivered_many";
        let distinct: std::collections::BTreeSet<String> =
            ids.iter().map(ToString::to_string).collect();
        if distinct.is_empty() {
            return Ok(());
        }
        let updated = sqlx::query(&MARK_DELIVERED_MANY_SQL)
            .bind(ms(now))
            .bind(to_json(NAME, OP, &distinct)?)
            .execute(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .rows_affected();
        if updated < distinct.len() as u64 {
            return Err(err(
                NAME,
                ErrorKind::NotFound,
                OP,
                format!(
                    "{} of {} outbox entries not found",
                    distinct.len() as u64 - updated,
                    distinct.len()
                ),
            ));
        }
        Ok(())
    }

    async fn retry_outbox(
        &self,
        id: NotificationId,
        next_attempt_at: Timestamp,
        error: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.record_outbox_failure("retry_outbox", id, error, now, Some(next_attempt_at))
            .await
    }

    async fn fail_outbox(&self, id: NotificationId, error: &str, now: Timestamp) -> Result<()> {
        self.record_outbox_failure("fail_outbox", id, error, now, None)
            .await
    }

    async fn requeue_outbox(&self, id: NotificationId, now: Timestamp) -> Result<()> {
        const OP: &str = "requeue_outbox";
        sqlx::query(
            "UPDATE outbox SET failed_at = NULL, next_attempt_at = $1 \
             WHERE id = $2 AND delivered_at IS NULL AND failed_at IS NOT NULL",
        )
        .bind(ms(now))
        .bind(id.to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?;
        // Pending and delivered entries are left alone; only an unknown id is an error.
        self.outbox_entry(OP, id).await.map(drop)
    }

    async fn failed_outbox(
        &self,
        after: Option<NotificationId>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>> {
        const OP: &str = "failed_outbox";
        let base = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE delivered_at IS NULL AND failed_at IS NOT NULL"
        );
        let rows = match after {
            Some(after) => {
                sqlx::query(&format!("{base} AND id > $1 ORDER BY id LIMIT $2"))
                    .bind(after.to_string())
                    .bind(page_limit(limit))
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                sqlx::query(&format!("{base} ORDER BY id LIMIT $1"))
                    .bind(page_limit(limit))
                    .fetch_all(&self.pool)
                    .await
            }
        }
        .map_err(|e| db_err(NAME, OP, e))?;
        rows.iter().map(|row| decode_outbox(row, OP)).collect()
    }

    async fn outbox_for_order(&self, order_id: OrderId) -> Result<Vec<OutboxEntry>> {
        const OP: &str = "outbox_for_order";
        sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE order_id = $1 ORDER BY created_at, id"
        ))
        .bind(order_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .iter()
        .map(|row| decode_outbox(row, OP))
        .collect()
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
        const OP: &str = "claim_jobs";
        let now = request.now;
        let expires_at = now.saturating_add(request.lease_for);
        let rows = sqlx::query(CLAIM_JOBS_SQL)
            .bind(&request.owner)
            .bind(ms(expires_at))
            .bind(ms(now))
            .bind(i64::from(request.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?;
        let mut jobs = rows
            .iter()
            .map(|row| decode_job(row, OP))
            .collect::<Result<Vec<_>>>()?;
        jobs.sort_by_key(|j| (j.run_at, j.id));
        jobs.into_iter()
            .map(|job| {
                let Some(info) = job.lease.clone() else {
                    return Err(corrupt(
                        NAME,
                        OP,
                        "jobs",
                        &job.id.to_string(),
                        "lease_owner",
                        "claimed job has no lease",
                    ));
                };
                Ok(ClaimedJob {
                    lease: Lease {
                        job_id: job.id,
                        owner: info.owner,
                        epoch: info.epoch,
                        expires_at: info.expires_at,
                    },
                    job,
                })
            })
            .collect()
    }

    async fn heartbeat(&self, lease: &Lease, extend_by: Duration, now: Timestamp) -> Result<Lease> {
        const OP: &str = "heartbeat";
        let expires_at = now.saturating_add(extend_by);
        let updated = sqlx::query(
            "UPDATE jobs SET lease_until = $1, updated_at = $2 WHERE id = $3 \
             AND state = 'running' AND lease_owner = $4 AND lease_epoch = $5",
        )
        .bind(ms(expires_at))
        .bind(ms(now))
        .bind(lease.job_id.to_string())
        .bind(&lease.owner)
        .bind(to_i64(NAME, OP, lease.epoch)?)
        .execute(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .rows_affected();
        if updated == 0 {
            return Err(err(
                NAME,
                ErrorKind::Conflict,
                OP,
                format!(
                    "lease lost: job {} is no longer held by {} at epoch {}",
                    lease.job_id, lease.owner, lease.epoch
                ),
            ));
        }
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        const OP: &str = "get_job";
        sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| db_err(NAME, OP, e))?
            .map(|row| decode_job(&row, OP))
            .transpose()
    }

    async fn jobs_for_order(&self, order_id: OrderId) -> Result<Vec<Job>> {
        const OP: &str = "jobs_for_order";
        sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE order_id = $1 ORDER BY created_at, id"
        ))
        .bind(order_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .iter()
        .map(|row| decode_job(row, OP))
        .collect()
    }

    async fn get_record(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        const OP: &str = "get_record";
        sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE collection = $1 AND record_key = $2"
        ))
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .map(|row| decode_record(&row, OP))
        .transpose()
    }

    async fn list_records(
        &self,
        collection: &str,
        key_prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>> {
        const OP: &str = "list_records";
        // Keys with the prefix sort at or after it, so `record_key >= prefix` bounds the index
        // scan and the substring test ends it.
        let from = match after_key {
            Some(after) if after > key_prefix => after,
            _ => key_prefix,
        };
        sqlx::query(&format!(
            "SELECT {RECORD_COLUMNS} FROM records WHERE collection = $1 AND record_key >= $2 \
             AND substr(record_key, 1, length($3)) = $3 AND ($4 IS NULL OR record_key > $4) \
             ORDER BY record_key LIMIT $5"
        ))
        .bind(collection)
        .bind(from)
        .bind(key_prefix)
        .bind(after_key)
        .bind(page_limit(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_err(NAME, OP, e))?
        .iter()
        .map(|row| decode_record(row, OP))
        .collect()
    }

    async fn reserve_index(&self, scope: &str, claimant: &str, now: Timestamp) -> Result<u64> {
        const OP: &str = "reserve_index";
        let dbe = |e| db_err(NAME, OP, e);
        if scope.is_empty() || claimant.is_empty() {
            return Err(err(
                NAME,
                ErrorKind::InvalidInput,
                OP,
                "scope and claimant must not be empty",
            ));
        }
        let mut tx = begin_write(&self.pool, OP).await?;
        sqlx::query(
            "INSERT INTO index_counters (scope, next_idx) VALUES ($1, 0) ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        // The no-op update row-locks the scope's counter until commit, so reservations of one
        // scope run one at a time across processes (SQLite's write transaction already does).
        let next: i64 = sqlx::query(
            "UPDATE index_counters SET next_idx = next_idx WHERE scope = $1 RETURNING next_idx",
        )
        .bind(scope)
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get::<i64, _>(0))
        .map_err(dbe)?;
        let existing: Option<i64> =
            sqlx::query("SELECT idx FROM index_reservations WHERE scope = $1 AND claimant = $2")
                .bind(scope)
                .bind(claimant)
                .fetch_optional(&mut *tx)
                .await
                .map_err(dbe)?
                .map(|row| row.try_get::<i64, _>(0))
                .transpose()
                .map_err(dbe)?;
        if let Some(idx) = existing {
            tx.commit().await.map_err(dbe)?;
            return to_u64(NAME, OP, "index_reservations", scope, "idx", idx);
        }
        sqlx::query(
            "INSERT INTO index_reservations (scope, claimant, idx, reserved_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(scope)
        .bind(claimant)
        .bind(next)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        sqlx::query("UPDATE index_counters SET next_idx = $2 WHERE scope = $1")
            .bind(scope)
            .bind(next + 1)
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        tx.commit().await.map_err(dbe)?;
        to_u64(NAME, OP, "index_counters", scope, "next_idx", next)
    }
}
