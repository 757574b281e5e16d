//! Simulated store backend: [`MemoryStore`], the whole [`Store`] contract in process memory.
//!
//! Every operation takes one mutex over all state and never awaits while holding it, so a
//! [`Batch`] is applied atomically: it is first checked and staged against the current state,
//! and only written once every check has passed.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    clock::Timestamp,
    error::{Error, ErrorKind, Result},
    ids::{JobId, NotificationId, OrderId, PaymentId},
    order::Order,
    payment::Payment,
    store::{
        Batch, ClaimRequest, ClaimedJob, CommitOutcome, InstanceRecord, Job, JobOutcome, JobState,
        Lease, LeaseInfo, OrderQuery, OrderWrite, OutboxEntry, PaymentWrite, Record,
        SealedCredentials, Store,
    },
};

/// The backend name reported by [`MemoryStore`] and its errors.
const NAME: &str = "memory";

/// Page size used when a caller asks for `limit == 0`.
const DEFAULT_LIMIT: usize = 100;

/// A job row: the job plus its claim epoch, which survives the lease being cleared (like the
/// `lease_epoch` column of the SQL stores).
#[derive(Debug, Clone)]
struct JobRow {
    job: Job,
    epoch: u64,
}

/// Everything the store holds.
#[derive(Debug, Default)]
struct State {
    orders: BTreeMap<OrderId, Order>,
    payments: HashMap<PaymentId, Payment>,
    /// `(method, reference)` → payment id.
    payment_refs: HashMap<(String, String), PaymentId>,
    instances: BTreeMap<OrderId, InstanceRecord>,
    credentials: HashMap<OrderId, SealedCredentials>,
    outbox: HashMap<NotificationId, OutboxEntry>,
    jobs: HashMap<JobId, JobRow>,
    /// `unique_key` → job id, for every job that ever had one (any state).
    job_keys: HashMap<String, JobId>,
    inbound: HashSet<(String, String)>,
    /// `(collection, key)` → record.
    records: BTreeMap<(String, String), Record>,
    /// `scope` → claimant → index; the next index of a scope is its map's length.
    reservations: HashMap<String, HashMap<String, u64>>,
}

/// An in-memory [`Store`]: atomic batches, compare-and-set versions, leased jobs with epoch
/// fencing, an outbox and inbound-event dedupe, all behind one mutex.
///
/// Cloning is cheap and the clones share the same state, like two connections to one database.
///
/// ```
/// use nemordp_core::{sim::store::MemoryStore, Store};
///
/// let store = MemoryStore::new();
/// assert_eq!(store.name(), "memory");
/// ```
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied batch (batches are staged
        // first and written without fallible steps), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("MemoryStore")
            .field("orders", &st.orders.len())
            .field("payments", &st.payments.len())
            .field("instances", &st.instances.len())
            .field("credentials", &st.credentials.len())
            .field("outbox", &st.outbox.len())
            .field("jobs", &st.jobs.len())
            .field("inbound_events", &st.inbound.len())
            .field("records", &st.records.len())
            .finish()
    }
}

fn err(kind: ErrorKind, operation: &'static str, message: impl Into<String>) -> Error {
    Error::new(kind, message)
        .with_backend(NAME)
        .with_operation(operation)
}

fn page_limit(limit: u32) -> usize {
    if limit == 0 {
        DEFAULT_LIMIT
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

fn lease_matches(row: &JobRow, lease: &Lease) -> bool {
    row.job.state == JobState::Running
        && row
            .job
            .lease
            .as_ref()
            .is_some_and(|l| l.owner == lease.owner && l.epoch == lease.epoch)
}

/// The writes of one batch, checked against the state and each other but not yet applied.
#[derive(Default)]
struct Staged {
    orders: Vec<Order>,
    payments: Vec<Payment>,
    jobs: Vec<Job>,
    finish: Option<(JobId, JobOutcome)>,
    records: Vec<Record>,
}

impl State {
    /// Runs every check of `batch` in contract order and stages its writes; writes nothing.
    fn stage(&self, batch: &Batch) -> Result<Option<Staged>> {
        const OP: &str = "commit";
        if batch.finish_job.is_some() && batch.fence.is_none() {
            return Err(err(
                ErrorKind::InvalidInput,
                OP,
                "finish_job requires a fenced batch",
            ));
        }
        // (a) Fence.
        if let Some(lease) = &batch.fence {
            let held = self
                .jobs
                .get(&lease.job_id)
                .is_some_and(|row| lease_matches(row, lease));
            if !held {
                return Err(err(
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
        if let Some(key) = &batch.inbound_event
            && self.inbound.contains(key)
        {
            return Ok(None);
        }
        let mut staged = Staged {
            orders: self.stage_orders(batch)?,
            payments: self.stage_payments(batch)?,
            records: self.stage_records(batch)?,
            ..Staged::default()
        };
        // (d) Instances and credentials are plain upserts: nothing to check.
        // (e) Outbox ids must be new.
        let mut outbox_ids = HashSet::new();
        for entry in &batch.outbox {
            if self.outbox.contains_key(&entry.id) || !outbox_ids.insert(entry.id) {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    OP,
                    format!("outbox entry {} already exists", entry.id),
                ));
            }
        }
        // (f) Jobs: a taken unique key skips the job; a taken id is an error.
        let mut keys = HashSet::new();
        let mut job_ids = HashSet::new();
        for job in &batch.jobs {
            if let Some(key) = &job.unique_key {
                if self.job_keys.contains_key(key) || keys.contains(key) {
                    continue;
                }
                keys.insert(key.clone());
            }
            if self.jobs.contains_key(&job.id) || !job_ids.insert(job.id) {
                return Err(err(
                    ErrorKind::AlreadyExists,
                    OP,
                    format!("job {} already exists", job.id),
                ));
            }
            staged.jobs.push(job.clone());
        }
        // (g) Finish the fenced job.
        if let (Some(lease), Some(outcome)) = (&batch.fence, &batch.finish_job) {
            staged.finish = Some((lease.job_id, outcome.clone()));
        }
        Ok(Some(staged))
    }

    /// (c) Order writes, in sequence: later writes see earlier ones.
    fn stage_orders(&self, batch: &Batch) -> Result<Vec<Order>> {
        const OP: &str = "commit";
        let mut orders: HashMap<OrderId, Order> = HashMap::new();
        for write in &batch.orders {
            match write {
                OrderWrite::Insert(order) => {
                    if orders.contains_key(&order.id) || self.orders.contains_key(&order.id) {
                        return Err(err(
                            ErrorKind::AlreadyExists,
                            OP,
                            format!("order {} already exists", order.id),
                        ));
                    }
                    orders.insert(order.id, order.clone());
                }
                OrderWrite::Update(order) => {
                    let current = orders
                        .get(&order.id)
                        .or_else(|| self.orders.get(&order.id))
                        .ok_or_else(|| {
                            err(
                                ErrorKind::NotFound,
                                OP,
                                format!("order {} not found", order.id),
                            )
                        })?;
                    if current.version != order.version {
                        return Err(err(
                            ErrorKind::Conflict,
                            OP,
                            format!(
                                "order {} is at version {}, not {}",
                                order.id, current.version, order.version
                            ),
                        ));
                    }
                    let mut next = order.clone();
                    next.version = order.version.saturating_add(1);
                    orders.insert(order.id, next);
                }
            }
        }
        Ok(orders.into_values().collect())
    }

    /// (c) Payment writes, like orders, plus the `(method, reference)` uniqueness.
    fn stage_payments(&self, batch: &Batch) -> Result<Vec<Payment>> {
        const OP: &str = "commit";
        let mut payments: HashMap<PaymentId, Payment> = HashMap::new();
        for write in &batch.payments {
            let (payment, insert) = match write {
                PaymentWrite::Insert(p) => (p, true),
                PaymentWrite::Update(p) => (p, false),
            };
            let current = payments
                .get(&payment.id)
                .or_else(|| self.payments.get(&payment.id));
            let mut next = payment.clone();
            if insert {
                if current.is_some() {
                    return Err(err(
                        ErrorKind::AlreadyExists,
                        OP,
                        format!("payment {} already exists", payment.id),
                    ));
                }
            } else {
                let current = current.ok_or_else(|| {
                    err(
                        ErrorKind::NotFound,
                        OP,
                        format!("payment {} not found", payment.id),
                    )
                })?;
                if current.version != payment.version {
                    return Err(err(
                        ErrorKind::Conflict,
                        OP,
                        format!(
                            "payment {} is at version {}, not {}",
                            payment.id, current.version, payment.version
                        ),
                    ));
                }
                next.version = payment.version.saturating_add(1);
            }
            if let Some(owner) =
                self.reference_owner(&payments, &payment.method, &payment.reference)
                && owner != payment.id
            {
                let kind = if insert {
                    ErrorKind::AlreadyExists
                } else {
                    ErrorKind::Conflict
                };
                return Err(err(
                    kind,
                    OP,
                    format!(
                        "payment reference {}:{} is taken by payment {owner}",
                        payment.method, payment.reference
                    ),
                ));
            }
            payments.insert(payment.id, next);
        }
        Ok(payments.into_values().collect())
    }

    /// The payment that owns `(method, reference)` once the staged writes are applied.
    fn reference_owner(
        &self,
        staged: &HashMap<PaymentId, Payment>,
        method: &str,
        reference: &str,
    ) -> Option<PaymentId> {
        let has = |p: &Payment| p.method == method && p.reference == reference;
        if let Some(p) = staged.values().find(|p| has(p)) {
            return Some(p.id);
        }
        let id = *self
            .payment_refs
            .get(&(method.to_owned(), reference.to_owned()))?;
        // The stored owner may have moved to another reference earlier in this batch.
        match staged.get(&id) {
            Some(p) if !has(p) => None,
            _ => Some(id),
        }
    }

    /// Checks record inserts (new keys) and updates (matching versions), in batch order.
    fn stage_records(&self, batch: &Batch) -> Result<Vec<Record>> {
        const OP: &str = "commit";
        let mut staged: BTreeMap<(String, String), Record> = BTreeMap::new();
        for write in &batch.records {
            let key = (write.collection.clone(), write.key.clone());
            let current = staged.get(&key).or_else(|| self.records.get(&key));
            let version = match (write.expected_version, current) {
                (None, None) => 1,
                (Some(expected), Some(cur)) if cur.version == expected => expected + 1,
                (None, Some(_)) => {
                    return Err(err(
                        ErrorKind::Conflict,
                        OP,
                        format!("record {}/{} already exists", write.collection, write.key),
                    ));
                }
                (Some(expected), cur) => {
                    return Err(err(
                        ErrorKind::Conflict,
                        OP,
                        format!(
                            "record {}/{} is at version {}, not {expected}",
                            write.collection,
                            write.key,
                            cur.map_or_else(|| "none".to_owned(), |c| c.version.to_string()),
                        ),
                    ));
                }
            };
            staged.insert(
                key,
                Record {
                    collection: write.collection.clone(),
                    key: write.key.clone(),
                    version,
                    data: write.data.clone(),
                    updated_at: Timestamp::from_unix_millis(0),
                },
            );
        }
        Ok(staged.into_values().collect())
    }

    /// Writes a batch that [`State::stage`] accepted. Infallible.
    fn apply(&mut self, batch: Batch, staged: Staged, now: Timestamp) {
        if let Some(key) = batch.inbound_event {
            self.inbound.insert(key);
        }
        for order in staged.orders {
            self.orders.insert(order.id, order);
        }
        for payment in staged.payments {
            if let Some(old) = self.payments.get(&payment.id) {
                let old_key = (old.method.clone(), old.reference.clone());
                // Only drop the index entry if it is still ours: another payment of this batch
                // may have taken over the reference this one moved away from.
                if self.payment_refs.get(&old_key) == Some(&payment.id) {
                    self.payment_refs.remove(&old_key);
                }
            }
            self.payment_refs.insert(
                (payment.method.clone(), payment.reference.clone()),
                payment.id,
            );
            self.payments.insert(payment.id, payment);
        }
        for record in batch.instances {
            self.instances.insert(record.order_id, record);
        }
        for creds in batch.credentials {
            self.credentials.insert(creds.order_id, creds);
        }
        for entry in batch.outbox {
            self.outbox.insert(entry.id, entry);
        }
        for mut record in staged.records {
            record.updated_at = now;
            self.records
                .insert((record.collection.clone(), record.key.clone()), record);
        }
        for job in staged.jobs {
            if let Some(key) = &job.unique_key {
                self.job_keys.insert(key.clone(), job.id);
            }
            let epoch = job.lease.as_ref().map_or(0, |l| l.epoch);
            self.jobs.insert(job.id, JobRow { job, epoch });
        }
        if let Some((id, outcome)) = staged.finish
            && let Some(row) = self.jobs.get_mut(&id)
        {
            let job = &mut row.job;
            job.lease = None;
            job.updated_at = now;
            match outcome {
                JobOutcome::Done => job.state = JobState::Done,
                JobOutcome::Retry { run_at, error } => {
                    job.state = JobState::Queued;
                    job.run_at = run_at;
                    job.last_error = error;
                }
                JobOutcome::Failed { error } => {
                    job.state = JobState::Failed;
                    job.last_error = Some(error);
                }
            }
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn commit(&self, batch: Batch, now: Timestamp) -> Result<CommitOutcome> {
        let mut st = self.lock();
        match st.stage(&batch)? {
            None => Ok(CommitOutcome::Duplicate),
            Some(staged) => {
                st.apply(batch, staged, now);
                Ok(CommitOutcome::Applied)
            }
        }
    }

    async fn get_order(&self, id: OrderId) -> Result<Option<Order>> {
        Ok(self.lock().orders.get(&id).cloned())
    }

    async fn list_orders(&self, query: &OrderQuery) -> Result<Vec<Order>> {
        let st = self.lock();
        let range = match query.after {
            Some(after) => st
                .orders
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => st.orders.range(..),
        };
        Ok(range
            .map(|(_, o)| o)
            .filter(|o| query.state.is_none_or(|k| o.state.kind() == k))
            .take(page_limit(query.limit))
            .cloned()
            .collect())
    }

    async fn get_payment(&self, id: PaymentId) -> Result<Option<Payment>> {
        Ok(self.lock().payments.get(&id).cloned())
    }

    async fn find_payment(&self, method: &str, reference: &str) -> Result<Option<Payment>> {
        let st = self.lock();
        Ok(st
            .payment_refs
            .get(&(method.to_owned(), reference.to_owned()))
            .and_then(|id| st.payments.get(id))
            .cloned())
    }

    async fn payments_for_order(&self, order_id: OrderId) -> Result<Vec<Payment>> {
        let st = self.lock();
        let mut out: Vec<Payment> = st
            .payments
            .values()
            .filter(|p| p.order_id == order_id)
            .cloned()
            .collect();
        out.sort_by_key(|p| (p.created_at, p.id));
        Ok(out)
    }

    async fn get_instance(&self, order_id: OrderId) -> Result<Option<InstanceRecord>> {
        Ok(self.lock().instances.get(&order_id).cloned())
    }

    async fn list_instances(
        &self,
        after: Option<OrderId>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>> {
        let st = self.lock();
        let range = match after {
            Some(after) => st
                .instances
                .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => st.instances.range(..),
        };
        Ok(range
            .map(|(_, r)| r.clone())
            .take(page_limit(limit))
            .collect())
    }

    async fn get_credentials(&self, order_id: OrderId) -> Result<Option<SealedCredentials>> {
        Ok(self.lock().credentials.get(&order_id).cloned())
    }

    async fn claim_outbox(
        &self,
        limit: u32,
        lease_for: Duration,
        now: Timestamp,
    ) -> Result<Vec<OutboxEntry>> {
        let mut st = self.lock();
        let mut due: Vec<(Timestamp, NotificationId)> = st
            .outbox
            .values()
            .filter(|e| e.delivered_at.is_none() && e.next_attempt_at <= now)
            .map(|e| (e.created_at, e.id))
            .collect();
        due.sort_unstable();
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut out = Vec::with_capacity(due.len());
        for (_, id) in due {
            if let Some(entry) = st.outbox.get_mut(&id) {
                entry.attempts = entry.attempts.saturating_add(1);
                entry.next_attempt_at = now.saturating_add(lease_for);
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    async fn mark_outbox_delivered(&self, id: NotificationId, now: Timestamp) -> Result<()> {
        let mut st = self.lock();
        let entry = st.outbox.get_mut(&id).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "mark_outbox_delivered",
                format!("outbox entry {id} not found"),
            )
        })?;
        if entry.delivered_at.is_none() {
            entry.delivered_at = Some(now);
        }
        Ok(())
    }

    async fn retry_outbox(
        &self,
        id: NotificationId,
        next_attempt_at: Timestamp,
        error: &str,
    ) -> Result<()> {
        let mut st = self.lock();
        let entry = st.outbox.get_mut(&id).ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                "retry_outbox",
                format!("outbox entry {id} not found"),
            )
        })?;
        if entry.delivered_at.is_none() {
            entry.next_attempt_at = next_attempt_at;
            entry.last_error = Some(error.to_owned());
        }
        Ok(())
    }

    async fn outbox_for_order(&self, order_id: OrderId) -> Result<Vec<OutboxEntry>> {
        let st = self.lock();
        let mut out: Vec<OutboxEntry> = st
            .outbox
            .values()
            .filter(|e| e.order_id == order_id)
            .cloned()
            .collect();
        out.sort_by_key(|e| (e.created_at, e.id));
        Ok(out)
    }

    async fn claim_jobs(&self, request: &ClaimRequest) -> Result<Vec<ClaimedJob>> {
        let now = request.now;
        let mut st = self.lock();
        let mut due: Vec<(Timestamp, JobId)> = st
            .jobs
            .values()
            .filter(|row| match row.job.state {
                JobState::Queued => row.job.run_at <= now,
                // A dead worker's job: its lease lapsed without being extended.
                JobState::Running => row.job.lease.as_ref().is_none_or(|l| l.expires_at <= now),
                JobState::Done | JobState::Failed => false,
            })
            .map(|row| (row.job.run_at, row.job.id))
            .collect();
        // Only the `limit` earliest are needed: select them, then sort just those.
        let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
        if due.len() > limit {
            if limit == 0 {
                due.clear();
            } else {
                due.select_nth_unstable(limit - 1);
                due.truncate(limit);
            }
        }
        due.sort_unstable();
        let expires_at = now.saturating_add(request.lease_for);
        let mut out = Vec::with_capacity(due.len());
        for (_, id) in due {
            let Some(row) = st.jobs.get_mut(&id) else {
                continue;
            };
            row.epoch = row.epoch.saturating_add(1);
            let job = &mut row.job;
            job.state = JobState::Running;
            job.attempt = job.attempt.saturating_add(1);
            job.updated_at = now;
            job.lease = Some(LeaseInfo {
                owner: request.owner.clone(),
                epoch: row.epoch,
                expires_at,
            });
            out.push(ClaimedJob {
                job: job.clone(),
                lease: Lease {
                    job_id: id,
                    owner: request.owner.clone(),
                    epoch: row.epoch,
                    expires_at,
                },
            });
        }
        Ok(out)
    }

    async fn heartbeat(&self, lease: &Lease, extend_by: Duration, now: Timestamp) -> Result<Lease> {
        let mut st = self.lock();
        let row = st
            .jobs
            .get_mut(&lease.job_id)
            .filter(|row| lease_matches(row, lease))
            .ok_or_else(|| {
                err(
                    ErrorKind::Conflict,
                    "heartbeat",
                    format!(
                        "lease lost: job {} is no longer held by {} at epoch {}",
                        lease.job_id, lease.owner, lease.epoch
                    ),
                )
            })?;
        let expires_at = now.saturating_add(extend_by);
        if let Some(info) = row.job.lease.as_mut() {
            info.expires_at = expires_at;
        }
        row.job.updated_at = now;
        Ok(Lease {
            expires_at,
            ..lease.clone()
        })
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        Ok(self.lock().jobs.get(&id).map(|row| row.job.clone()))
    }

    async fn jobs_for_order(&self, order_id: OrderId) -> Result<Vec<Job>> {
        let st = self.lock();
        let mut out: Vec<Job> = st
            .jobs
            .values()
            .filter(|row| row.job.order_id == order_id)
            .map(|row| row.job.clone())
            .collect();
        out.sort_by_key(|j| (j.created_at, j.id));
        Ok(out)
    }

    async fn get_record(&self, collection: &str, key: &str) -> Result<Option<Record>> {
        let st = self.lock();
        Ok(st
            .records
            .get(&(collection.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn list_records(
        &self,
        collection: &str,
        key_prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Record>> {
        let st = self.lock();
        // Keys with the prefix are contiguous and sort at or after the prefix itself.
        let from = match after_key {
            Some(after) if after > key_prefix => after,
            _ => key_prefix,
        };
        Ok(st
            .records
            .range((collection.to_owned(), from.to_owned())..)
            .take_while(|((c, k), _)| c == collection && k.starts_with(key_prefix))
            .filter(|((_, k), _)| after_key.is_none_or(|after| k.as_str() > after))
            .take(page_limit(limit))
            .map(|(_, r)| r.clone())
            .collect())
    }

    async fn reserve_index(&self, scope: &str, claimant: &str, _now: Timestamp) -> Result<u64> {
        if scope.is_empty() || claimant.is_empty() {
            return Err(err(
                ErrorKind::InvalidInput,
                "reserve_index",
                "scope and claimant must not be empty",
            ));
        }
        let mut st = self.lock();
        let claims = st.reservations.entry(scope.to_owned()).or_default();
        let next = claims.len() as u64;
        Ok(*claims.entry(claimant.to_owned()).or_insert(next))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::{
        money::{Asset, Money},
        payment::{InvoiceState, InvoiceTerms},
    };

    fn payment(reference: &str, now: Timestamp) -> Payment {
        Payment {
            id: PaymentId::new(),
            order_id: OrderId::new(),
            method: "sim".to_owned(),
            reference: reference.to_owned(),
            pay_to: None,
            checkout_url: None,
            terms: InvoiceTerms {
                due: Money::from_minor(Asset::Usdt, 1_u64),
                tolerance_percent: Decimal::ZERO,
            },
            locked_rate: None,
            state: InvoiceState::NEW,
            seen: Money::zero(Asset::Usdt),
            confirmed: Money::zero(Asset::Usdt),
            expires_at: now,
            monitor_until: now,
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    #[tokio::test]
    async fn a_reference_freed_in_a_batch_can_be_taken_in_the_same_batch() {
        let store = MemoryStore::new();
        let t = Timestamp::from_unix_secs(1);
        let a = payment("x", t);
        store
            .commit(Batch::new().insert_payment(a.clone()), t)
            .await
            .unwrap();
        let mut moved = a.clone();
        "y".clone_into(&mut moved.reference);
        let b = payment("x", t);
        store
            .commit(
                Batch::new()
                    .insert_payment(b.clone())
                    .update_payment(moved.clone()),
                t,
            )
            .await
            .unwrap_err();
        store
            .commit(
                Batch::new().update_payment(moved).insert_payment(b.clone()),
                t,
            )
            .await
            .unwrap();
        let find = |r: &'static str| {
            let store = store.clone();
            async move { store.find_payment("sim", r).await.unwrap().map(|p| p.id) }
        };
        assert_eq!(find("x").await, Some(b.id));
        assert_eq!(find("y").await, Some(a.id));
        // Taking a reference another payment holds is a conflict for updates.
        let mut steal = store.get_payment(b.id).await.unwrap().unwrap();
        "y".clone_into(&mut steal.reference);
        let err = store
            .commit(Batch::new().update_payment(steal), t)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }
}
