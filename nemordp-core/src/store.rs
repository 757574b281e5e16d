//! The [`Store`] trait: durable state for orders, payments, instances, sealed credentials, the
//! notification outbox, inbound-event dedupe and the leased job table.
//!
//! All writes go through [`Store::commit`], which applies a [`Batch`] atomically (one SQL
//! transaction, or one critical section in memory): the state change, the job it enqueues and
//! the outbox row it produces land together or not at all (`reliability.md` §2, §5). Every
//! update is a compare-and-set on a version, and a batch may be fenced by a job [`Lease`] so a
//! worker whose lease was taken over cannot write.
//!
//! Time is always passed in (`now`) so stores follow an injected [`Clock`](crate::clock::Clock).

use std::{fmt, net::IpAddr, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{ErrorKind, Result},
    ids::{InstanceId, JobId, NotificationId, OrderId, PaymentId},
    notify::NotificationKind,
    order::{Order, OrderStateKind},
    payment::Payment,
};

/// The machine record of an order: what we asked a provider for and what it gave us.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceRecord {
    /// The order that owns the machine (one record per order).
    pub order_id: OrderId,
    /// Provider name.
    pub provider: String,
    /// Deterministic label `nemordp-<order id>`.
    pub label: String,
    /// Region asked for.
    pub region: String,
    /// Size asked for.
    pub size: String,
    /// Image asked for.
    pub image: String,
    /// Provider id once known.
    pub instance_id: Option<InstanceId>,
    /// Public address once known.
    pub address: Option<IpAddr>,
    /// Create attempts sent so far (a create is only re-sent after a grace period of misses).
    pub create_attempts: u32,
    /// The machine's admin password, sealed (field `"admin_password"`); never plaintext. Either
    /// ours, stored before the create is sent, or the provider's (Vultr `default_password`),
    /// stored in the same write as the instance id.
    pub sealed_password: Option<Vec<u8>>,
    /// Where the provisioner is inside its current step, so a rescued job resumes.
    #[serde(default)]
    pub progress: AttemptProgress,
    /// When the intent was recorded.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the machine was removed, if it was.
    pub removed_at: Option<Timestamp>,
}

impl InstanceRecord {
    /// A freshly recorded intent.
    #[allow(clippy::too_many_arguments)]
    pub fn intent(
        order_id: OrderId,
        provider: impl Into<String>,
        region: impl Into<String>,
        size: impl Into<String>,
        image: impl Into<String>,
        now: Timestamp,
    ) -> Self {
        Self {
            order_id,
            provider: provider.into(),
            label: order_id.instance_label(),
            region: region.into(),
            size: size.into(),
            image: image.into(),
            instance_id: None,
            address: None,
            create_attempts: 0,
            sealed_password: None,
            progress: AttemptProgress::default(),
            created_at: now,
            updated_at: now,
            removed_at: None,
        }
    }
}

/// Progress inside a provisioning step, persisted with the instance record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AttemptProgress {
    /// When the current create's outcome became unknown (grace period for lookups).
    pub unknown_since: Option<Timestamp>,
    /// Consecutive label lookups that found nothing since then.
    pub lookup_misses: u32,
    /// When the boot wait began.
    pub boot_started_at: Option<Timestamp>,
    /// When the provider was last asked about the machine.
    pub provider_checked_at: Option<Timestamp>,
    /// Provider polls while waiting for the machine.
    pub provider_polls: u32,
    /// RDP probes sent.
    pub probes: u32,
    /// Consecutive transient failures (drives the backoff).
    pub failures: u32,
    /// When the provider first reported the machine running.
    pub running_since: Option<Timestamp>,
}

/// An order with its instance record and sealed credentials, as
/// [`Store::get_order_records`] reads them together.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrderRecords {
    /// The order.
    pub order: Order,
    /// Its instance record, once provisioning recorded one.
    pub instance: Option<InstanceRecord>,
    /// Its sealed credentials, once the machine was delivered.
    pub credentials: Option<SealedCredentials>,
}

impl OrderRecords {
    /// The three records of one order.
    pub fn new(
        order: Order,
        instance: Option<InstanceRecord>,
        credentials: Option<SealedCredentials>,
    ) -> Self {
        Self {
            order,
            instance,
            credentials,
        }
    }
}

/// Login credentials of a delivered machine, with the password sealed (AEAD ciphertext).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SealedCredentials {
    /// The order.
    pub order_id: OrderId,
    /// Login name.
    pub username: String,
    /// Id of the key that sealed the password, for rotation.
    pub key_id: String,
    /// Sealed password blob; opaque to the store.
    pub sealed_password: Vec<u8>,
    /// When sealed.
    pub created_at: Timestamp,
}

impl SealedCredentials {
    /// Sealed credentials.
    pub fn new(
        order_id: OrderId,
        username: impl Into<String>,
        key_id: impl Into<String>,
        sealed_password: Vec<u8>,
        created_at: Timestamp,
    ) -> Self {
        Self {
            order_id,
            username: username.into(),
            key_id: key_id.into(),
            sealed_password,
            created_at,
        }
    }
}

impl fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedCredentials")
            .field("order_id", &self.order_id)
            .field("username", &self.username)
            .field("key_id", &self.key_id)
            .field(
                "sealed_password",
                &format_args!("<{} sealed bytes>", self.sealed_password.len()),
            )
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A notification waiting in (or delivered from) the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxEntry {
    /// Notification id (receivers dedupe on it).
    pub id: NotificationId,
    /// The order.
    pub order_id: OrderId,
    /// What to tell (secret-free).
    pub kind: NotificationKind,
    /// When queued.
    pub created_at: Timestamp,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not before this time (also used as a claim lease).
    pub next_attempt_at: Timestamp,
    /// When delivered; `None` while pending.
    pub delivered_at: Option<Timestamp>,
    /// Last delivery error, if any (secret-free).
    pub last_error: Option<String>,
    /// When the relay gave up on the entry; a failed entry is never claimed again but stays
    /// listed (with its history) until an operator requeues it.
    #[serde(default)]
    pub failed_at: Option<Timestamp>,
    /// Failed delivery attempts, oldest first (at most [`OutboxEntry::HISTORY_LIMIT`], the
    /// oldest dropped first).
    #[serde(default)]
    pub history: Vec<OutboxAttempt>,
}

/// One failed delivery attempt of an outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OutboxAttempt {
    /// The attempt number (the entry's `attempts` when it failed).
    pub attempt: u32,
    /// When the failure was recorded.
    pub at: Timestamp,
    /// What went wrong (secret-free).
    pub error: String,
}

impl OutboxAttempt {
    /// A failed attempt.
    pub fn new(attempt: u32, at: Timestamp, error: impl Into<String>) -> Self {
        Self {
            attempt,
            at,
            error: error.into(),
        }
    }
}

impl OutboxEntry {
    /// How many failed attempts an entry's history keeps.
    pub const HISTORY_LIMIT: usize = 64;

    /// True while the relay may still deliver it (neither delivered nor given up on).
    pub fn is_pending(&self) -> bool {
        self.delivered_at.is_none() && self.failed_at.is_none()
    }

    /// Appends a failed attempt to the history (bounded), as every store does on
    /// [`Store::retry_outbox`] and [`Store::fail_outbox`].
    pub fn record_failure(&mut self, at: Timestamp, error: &str) {
        if self.history.len() >= Self::HISTORY_LIMIT {
            let excess = self.history.len() + 1 - Self::HISTORY_LIMIT;
            self.history.drain(..excess);
        }
        self.history
            .push(OutboxAttempt::new(self.attempts, at, error.to_owned()));
        self.last_error = Some(error.to_owned());
    }

    /// A new, due entry.
    pub fn new(order_id: OrderId, kind: NotificationKind, now: Timestamp) -> Self {
        Self {
            id: NotificationId::new(),
            order_id,
            kind,
            created_at: now,
            attempts: 0,
            next_attempt_at: now,
            delivered_at: None,
            last_error: None,
            failed_at: None,
            history: Vec::new(),
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobKind {
    /// Take a paid order to active.
    Provision,
    /// Reboot the machine.
    Restart,
    /// Power off.
    Stop,
    /// Power on.
    Start,
    /// Suspend (power off and mark suspended).
    Suspend,
    /// Resume a suspended machine.
    Unsuspend,
    /// Remove the machine (idempotent).
    Terminate,
}

impl JobKind {
    /// Snake-case name (as stored).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::Restart => "restart",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Suspend => "suspend",
            Self::Unsuspend => "unsuspend",
            Self::Terminate => "terminate",
        }
    }
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for `run_at`.
    Queued,
    /// Claimed under a lease.
    Running,
    /// Finished successfully.
    Done,
    /// Given up on (the order is in needs-attention).
    Failed,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Job {
    /// Stable id.
    pub id: JobId,
    /// What to do.
    pub kind: JobKind,
    /// For which order.
    pub order_id: OrderId,
    /// Optional uniqueness key: enqueueing a second job with the same key is a no-op.
    pub unique_key: Option<String>,
    /// State.
    pub state: JobState,
    /// Due time.
    pub run_at: Timestamp,
    /// Claims so far.
    pub attempt: u32,
    /// The current lease, while running.
    pub lease: Option<LeaseInfo>,
    /// Last error (secret-free).
    pub last_error: Option<String>,
    /// A short secret-free note for the job (e.g. the reason for a suspension).
    #[serde(default)]
    pub note: Option<String>,
    /// When enqueued.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
}

impl Job {
    /// A queued job due at `run_at`.
    pub fn new(kind: JobKind, order_id: OrderId, run_at: Timestamp) -> Self {
        Self {
            id: JobId::new(),
            kind,
            order_id,
            unique_key: None,
            state: JobState::Queued,
            run_at,
            attempt: 0,
            lease: None,
            last_error: None,
            note: None,
            created_at: run_at,
            updated_at: run_at,
        }
    }

    /// Sets the uniqueness key.
    #[must_use]
    pub fn with_unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Sets the note.
    #[must_use]
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// The standard uniqueness key for a job of `kind` on `order_id`: one provisioning job
    /// per order, ever.
    pub fn provision(order_id: OrderId, run_at: Timestamp) -> Self {
        Self::new(JobKind::Provision, order_id, run_at)
            .with_unique_key(format!("provision:{order_id}"))
    }
}

/// Lease details stored on a running job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Worker that holds it.
    pub owner: String,
    /// Bumped on every claim; fences stale holders.
    pub epoch: u64,
    /// When it lapses unless extended.
    pub expires_at: Timestamp,
}

/// Proof that a worker holds a job: pass it to every write the job makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// Worker that holds it.
    pub owner: String,
    /// Claim epoch.
    pub epoch: u64,
    /// Expiry as granted (heartbeats move it).
    pub expires_at: Timestamp,
}

/// A job together with the lease that claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    /// The job as claimed (state `Running`).
    pub job: Job,
    /// The lease to fence writes with.
    pub lease: Lease,
}

/// Parameters of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// The worker's name (unique per process).
    pub owner: String,
    /// At most this many jobs.
    pub limit: u32,
    /// The lease length.
    pub lease_for: Duration,
    /// Now.
    pub now: Timestamp,
}

/// How a leased job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JobOutcome {
    /// Done.
    Done,
    /// Run again at `run_at` (a wait, or a retry after a transient error).
    Retry {
        /// When.
        run_at: Timestamp,
        /// Why, if it failed (secret-free).
        error: Option<String>,
    },
    /// Given up (the order was escalated in the same batch).
    Failed {
        /// Why (secret-free).
        error: String,
    },
}

/// An order write inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderWrite {
    /// Insert a new order (its id must be free).
    Insert(Order),
    /// Replace the order whose stored version equals `order.version`; the stored version
    /// becomes `order.version + 1`.
    Update(Order),
}

/// A payment write inside a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PaymentWrite {
    /// Insert a new payment (its id and its `(method, reference)` must be free).
    Insert(Payment),
    /// Compare-and-set on `payment.version`, like [`OrderWrite::Update`].
    Update(Payment),
}

/// A host- or backend-defined record: a small JSON document in a named collection, versioned
/// for compare-and-set. Payment backends keep their own state here (subscriptions, watcher
/// cursors, fraud history) so it commits atomically with the order change it belongs to.
///
/// Secrets must be sealed ([`crate::seal`]) before they go into `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Collection name, e.g. `"paystack.subscription"`.
    pub collection: String,
    /// Key, unique within the collection.
    pub key: String,
    /// 1 after insert, +1 per update.
    pub version: u64,
    /// JSON text.
    pub data: String,
    /// Last write.
    pub updated_at: Timestamp,
}

impl Record {
    /// Decodes `data`; a malformed document is `Unexpected` and names the record.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.data).map_err(|e| {
            crate::Error::new(
                ErrorKind::Unexpected,
                format!(
                    "record {}/{} does not decode: {e}",
                    self.collection, self.key
                ),
            )
        })
    }
}

/// One record write inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordWrite {
    /// Collection name.
    pub collection: String,
    /// Key.
    pub key: String,
    /// JSON text.
    pub data: String,
    /// `None`: insert (the batch fails with `Conflict` if the key exists). `Some(v)`: update
    /// (the batch fails with `Conflict` unless the stored version is `v`).
    pub expected_version: Option<u64>,
}

impl RecordWrite {
    fn encode<T: Serialize>(collection: &str, key: &str, value: &T) -> Result<String> {
        if collection.is_empty() || key.is_empty() {
            return Err(crate::Error::invalid_input(
                "record collection and key must not be empty",
            ));
        }
        serde_json::to_string(value).map_err(|e| {
            crate::Error::invalid_input(format!("record {collection}/{key} does not encode: {e}"))
        })
    }

    /// An insert of `value` under `(collection, key)`.
    pub fn insert<T: Serialize>(collection: &str, key: &str, value: &T) -> Result<Self> {
        Ok(Self {
            data: Self::encode(collection, key, value)?,
            collection: collection.to_owned(),
            key: key.to_owned(),
            expected_version: None,
        })
    }

    /// An update of `(collection, key)` from `expected_version` to `expected_version + 1`.
    pub fn update<T: Serialize>(
        collection: &str,
        key: &str,
        value: &T,
        expected_version: u64,
    ) -> Result<Self> {
        Ok(Self {
            data: Self::encode(collection, key, value)?,
            collection: collection.to_owned(),
            key: key.to_owned(),
            expected_version: Some(expected_version),
        })
    }
}

/// A set of writes applied atomically by [`Store::commit`].
///
/// Order of checks: fence, inbound-event dedupe, then all compare-and-sets; any failure leaves
/// the store untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Batch {
    /// Only apply if this lease still holds its job (same owner and epoch, job running).
    pub fence: Option<Lease>,
    /// Only apply if `(source, key)` was never recorded; records it.
    pub inbound_event: Option<(String, String)>,
    /// Order writes.
    pub orders: Vec<OrderWrite>,
    /// Payment writes.
    pub payments: Vec<PaymentWrite>,
    /// Instance records to insert or replace (keyed by order id).
    pub instances: Vec<InstanceRecord>,
    /// Sealed credentials to insert or replace (keyed by order id).
    pub credentials: Vec<SealedCredentials>,
    /// Outbox entries to insert.
    pub outbox: Vec<OutboxEntry>,
    /// Jobs to enqueue; one whose `unique_key` exists already is skipped.
    pub jobs: Vec<Job>,
    /// Finishes the fenced job (requires `fence`).
    pub finish_job: Option<JobOutcome>,
    /// Record inserts and compare-and-set updates.
    pub records: Vec<RecordWrite>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fences the batch with `lease`.
    #[must_use]
    pub fn fenced(mut self, lease: &Lease) -> Self {
        self.fence = Some(lease.clone());
        self
    }

    /// Makes the batch conditional on `(source, key)` being new.
    #[must_use]
    pub fn dedupe(mut self, source: impl Into<String>, key: impl Into<String>) -> Self {
        self.inbound_event = Some((source.into(), key.into()));
        self
    }

    /// Inserts an order.
    #[must_use]
    pub fn insert_order(mut self, order: Order) -> Self {
        self.orders.push(OrderWrite::Insert(order));
        self
    }

    /// Updates an order (compare-and-set on its version).
    #[must_use]
    pub fn update_order(mut self, order: Order) -> Self {
        self.orders.push(OrderWrite::Update(order));
        self
    }

    /// Inserts a payment.
    #[must_use]
    pub fn insert_payment(mut self, payment: Payment) -> Self {
        self.payments.push(PaymentWrite::Insert(payment));
        self
    }

    /// Updates a payment (compare-and-set on its version).
    #[must_use]
    pub fn update_payment(mut self, payment: Payment) -> Self {
        self.payments.push(PaymentWrite::Update(payment));
        self
    }

    /// Inserts or replaces an instance record.
    #[must_use]
    pub fn put_instance(mut self, record: InstanceRecord) -> Self {
        self.instances.push(record);
        self
    }

    /// Inserts or replaces sealed credentials.
    #[must_use]
    pub fn put_credentials(mut self, credentials: SealedCredentials) -> Self {
        self.credentials.push(credentials);
        self
    }

    /// Queues a notification.
    #[must_use]
    pub fn notify(mut self, entry: OutboxEntry) -> Self {
        self.outbox.push(entry);
        self
    }

    /// Enqueues a job.
    #[must_use]
    pub fn enqueue(mut self, job: Job) -> Self {
        self.jobs.push(job);
        self
    }

    /// Finishes the fenced job.
    #[must_use]
    pub fn finish(mut self, outcome: JobOutcome) -> Self {
        self.finish_job = Some(outcome);
        self
    }

    /// Inserts or updates a record (see [`RecordWrite`]).
    #[must_use]
    pub fn put_record(mut self, write: RecordWrite) -> Self {
        self.records.push(write);
        self
    }

    /// True when the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.inbound_event.is_none()
            && self.orders.is_empty()
            && self.payments.is_empty()
            && self.instances.is_empty()
            && self.credentials.is_empty()
            && self.outbox.is_empty()
            && self.jobs.is_empty()
            && self.finish_job.is_none()
            && self.records.is_empty()
    }
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommitOutcome {
    /// Everything was written.
    Applied,
    /// The batch's inbound event was seen before; nothing was written.
    Duplicate,
}

/// Filters for [`Store::list_orders`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderQuery {
    /// Only orders in this state.
    pub state: Option<OrderStateKind>,
    /// Only orders with ids greater than this (keyset paging; ids are time-ordered).
    pub after: Option<OrderId>,
    /// At most this many (0 means the store's default of 100).
    pub limit: u32,
}

/// Durable state shared by every Provisioner process.
///
/// # Behavior (checked by the conformance kit)
/// - `commit` is atomic; a failed compare-and-set, a lost fence, a duplicate id or a
///   duplicate `(method, reference)` returns `Conflict` (or `AlreadyExists` for inserts) and
///   writes nothing. A seen inbound event returns `Ok(CommitOutcome::Duplicate)` and writes
///   nothing.
/// - Reads of unknown ids return `Ok(None)`, not errors.
/// - `claim_jobs` hands each due job to exactly one claimer: queued jobs with `run_at <= now`,
///   and running jobs whose lease expired (a dead worker's). Each claim bumps the epoch.
/// - `heartbeat` extends a lease only while owner and epoch match and the job runs; otherwise
///   `Conflict` (the caller must stop before any further side effect).
#[async_trait]
#[auto_impl::auto_impl(&, Arc, Box)]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Backend name (`"memory"`, `"sqlite"`, `"postgres"`).
    fn name(&self) -> &'static str;

    /// Applies `batch` atomically at time `now`.
    async fn commit(&self, batch: Batch, now: Timestamp) -> Result<CommitOutcome>;

    /// One order.
    async fn get_order(&self, id: OrderId) -> Result<Option<Order>>;

    /// The orders among `ids` that exist, each with its instance record and credentials, in
    /// no particular order. The default reads them one by one; SQL stores answer in one query.
    async fn get_order_records(&self, ids: &[OrderId]) -> Result<Vec<OrderRecords>> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(order) = self.get_order(*id).await? {
                found.push(OrderRecords {
                    order,
                    instance: self.get_instance(*id).await?,
                    credentials: self.get_credentials(*id).await?,
                });
            }
        }
        Ok(found)
    }

    /// Orders in id order, filtered.
    async fn list_orders(&self, query: &OrderQuery) -> Result<Vec<Order>>;

    /// One payment.
    async fn get_payment(&self, id: PaymentId) -> Result<Option<Payment>>;

    /// The payment a verifier's reference belongs to.
    async fn find_payment(&self, method: &str, reference: &str) -> Result<Option<Payment>>;

    /// All payments of an order, oldest first.
    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>>;

    /// The instance record of an order.
    async fn get_instance(&self, order_id: OrderId) -> Result<Option<InstanceRecord>>;

    /// Instance records in order-id order after `after` (keyset paging), at most `limit`.
    async fn list_instances(
        &self,
        after: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>>;

    /// The sealed credentials of an order.
    async fn get_credentials(&self, order_id: OrderId) -> Result<Option<SealedCredentials>>;

    /// Claims up to `limit` due, pending outbox entries: each gets `attempts + 1` and
    /// `next_attempt_at = now + lease_for`, so other relays skip it until then.
    async fn claim_outbox(
        &self,
        limit: u32,
        lease_for: Duration,
        now: Timestamp,
    ) -> Result<Vec<OutboxEntry>>;

    /// Marks an entry delivered (idempotent).
    async fn mark_outbox_delivered(&self, id: NotificationId, now: Timestamp) -> Result<()>;

    /// Marks several entries delivered (idempotent). Every known id is marked even when
    /// another is unknown, which then makes the call `NotFound`. The default marks them one
    /// by one; SQL stores mark them in one statement.
    async fn mark_outbox_delivered_many(
        &self,
        ids: &[NotificationId],
        now: Timestamp,
    ) -> Result<()> {
        let mut first_error = None;
        for id in ids {
            if let Err(e) = self.mark_outbox_delivered(*id, now).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Records a failed attempt of a pending entry in its history and `last_error`, and
    /// schedules the next attempt. No-op on a delivered or failed entry.
    async fn retry_outbox(
        &self,
        id: NotificationId,
        next_attempt_at: Timestamp,
        error: &str,
        now: Timestamp,
    ) -> Result<()>;

    /// Gives up on a pending entry: records the attempt in its history and `last_error` and
    /// sets `failed_at`, so it is never claimed again but stays visible. No-op on a delivered
    /// or already failed entry.
    async fn fail_outbox(&self, id: NotificationId, error: &str, now: Timestamp) -> Result<()>;

    /// Makes a failed entry pending again, due at `now` (an operator fixed the cause). Its
    /// history and attempt count are kept. No-op on a pending or delivered entry.
    async fn requeue_outbox(&self, id: NotificationId, now: Timestamp) -> Result<()>;

    /// Failed entries in id order after `after` (keyset paging), at most `limit` (0 means 100).
    async fn failed_outbox(
        &self,
        after: Option<NotificationId>,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>>;

    /// All outbox entries of an order, oldest first.
    async fn outbox_for_order(&self, order_id: OrderId) -> Result<Vec<OutboxEntry>>;

    /// Claims due jobs (see the trait docs).
    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>>;

    /// Extends `lease` to `now + extend_by`, returning the new lease; `Conflict` if lost.
    async fn heartbeat(&self, lease: &Lease, extend_by: Duration, now: Timestamp) -> Result<Lease>;

    /// One job.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;

    /// All jobs of an order, oldest first.
    async fn jobs_for_order(&self, order_id: OrderId) -> Result<Vec<Job>>;

    /// One record.
    async fn get_record(&self, collection: &str, key: &str) -> Result<Option<Record>>;

    /// Records of `collection` whose key starts with `key_prefix` and sorts after `after_key`,
    /// in key order, at most `limit` (0 means 100).
    async fn list_records(
        &self,
        collection: &str,
        key_prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>>;

    /// Reserves the next index of `scope` (e.g. an address-derivation branch) for `claimant`,
    /// atomically: the same claimant always gets its index back; distinct claimants get
    /// distinct indexes 0, 1, 2, … with no gaps, even across processes.
    async fn reserve_index(&self, scope: &str, claimant: &str, now: Timestamp) -> Result<u64>;
}

/// Conveniences on every [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Inserts one order.
    async fn insert_order(&self, order: Order, now: Timestamp) -> Result<()> {
        self.commit(Batch::new().insert_order(order), now)
            .await
            .map(drop)
    }

    /// Updates one order by compare-and-set and returns it with the new version.
    async fn update_order(&self, order: Order, now: Timestamp) -> Result<Order> {
        let mut next = order.clone();
        self.commit(Batch::new().update_order(order), now).await?;
        next.version += 1;
        Ok(next)
    }

    /// Enqueues one job.
    async fn enqueue(&self, job: Job, now: Timestamp) -> Result<()> {
        self.commit(Batch::new().enqueue(job), now).await.map(drop)
    }

    /// Finishes a leased job.
    async fn finish_job(&self, lease: &Lease, outcome: JobOutcome, now: Timestamp) -> Result<()> {
        self.commit(Batch::new().fenced(lease).finish(outcome), now)
            .await
            .map(drop)
    }

    /// Records an inbound event key; `true` if it was new.
    async fn record_inbound_event(&self, source: &str, key: &str, now: Timestamp) -> Result<bool> {
        let outcome = self.commit(Batch::new().dedupe(source, key), now).await?;
        Ok(outcome == CommitOutcome::Applied)
    }

    /// Walks every page of [`Store::list_orders`] for `state`.
    async fn all_orders_in(&self, state: Option<OrderStateKind>) -> Result<Vec<Order>> {
        let mut out: Vec<Order> = Vec::new();
        loop {
            let page = self
                .list_orders(&OrderQuery {
                    state,
                    after: out.last().map(|o| o.id),
                    limit: 500,
                })
                .await?;
            if page.is_empty() {
                return Ok(out);
            }
            out.extend(page);
        }
    }

    /// The order, or a `NotFound` error.
    async fn require_order(&self, id: OrderId) -> Result<Order> {
        self.get_order(id).await?.ok_or_else(|| {
            crate::Error::new(ErrorKind::NotFound, format!("order {id} not found"))
                .with_backend(self.name())
        })
    }
}

impl<S: Store + ?Sized> StoreExt for S {}
