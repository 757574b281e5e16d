//! Job execution: the provisioning steps and the lifecycle operations.
//!
//! Every step follows the same rule: persist the intent, do the side effect, persist the
//! result, each write fenced by the job's lease. A worker that loses its lease stops before
//! its next side effect; a worker that dies leaves the lease to lapse and another worker
//! resumes from the last persisted step.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use rand::Rng as _;
use tracing::Instrument as _;

use crate::{
    bootstrap::{BootstrapSpec, ubuntu_cloud_config, windows_powershell},
    clock::Timestamp,
    cloud::{CloudProvider, Instance, InstanceSpec, InstanceStatus},
    error::{Error, ErrorKind, Result},
    ids::OrderId,
    notify::NotificationKind,
    order::{AttentionCode, AttentionReason, Order, OrderEvent, OrderState, ProvisionStep},
    password::new_password,
    plan::{OsKind, Plan},
    store::{
        Batch, ClaimRequest, ClaimedJob, InstanceRecord, JobKind, JobOutcome, Lease, OutboxEntry,
        SealedCredentials,
    },
};

use super::{Provisioner, Stage};

/// Why an execution stopped without finishing its job.
#[derive(Debug)]
pub(crate) enum Halt {
    /// The crash hook fired: behave like a killed process (write nothing more).
    Crashed,
    /// Our lease was taken over: stop before any further side effect.
    LeaseLost,
    /// A record changed under us while our lease still holds: re-read and try again.
    Stale,
    /// The store failed; the lease will lapse and the job be retried.
    Store(Error),
}

impl From<Error> for Halt {
    fn from(e: Error) -> Self {
        if e.kind() == ErrorKind::Conflict {
            Self::LeaseLost
        } else {
            Self::Store(e)
        }
    }
}

type StepResult<T> = std::result::Result<T, Halt>;

/// What a label lookup found.
enum Found {
    /// Exactly one machine: ours, to adopt.
    One(Instance),
    /// None (which proves nothing on its own: listings lag creation).
    Nothing,
    /// The lookup ended the step (escalated, or rescheduled after a provider failure).
    Handled(Next),
}

/// What the provisioning loop does next.
enum Next {
    /// State moved on; keep going now.
    Continue,
    /// Come back later (the job is rescheduled and its lease released).
    Wait,
    /// Finished (active, needs attention, or nothing to do).
    Finished,
}

/// A claimed job while it runs: its lease (renewed by the heartbeat) and what this run last
/// wrote for its order. Only the lease holder writes an order's instance record, and every
/// order write is a compare-and-set, so a stale copy can only cost a `Conflict` and a re-read;
/// it saves the two reads each step would otherwise start with.
pub(crate) struct RunningJob {
    lease: tokio::sync::Mutex<Lease>,
    written: std::sync::Mutex<Option<Written>>,
}

/// The order and instance record as the last commit of this run left them.
struct Written {
    order: Order,
    instance: InstanceRecord,
}

impl Written {
    /// What committing `batch` leaves for `order_id`: known only when the batch updates the
    /// order and puts its instance record and the job goes on (no `finish`).
    fn of(order_id: OrderId, batch: &Batch) -> Option<Self> {
        if batch.finish_job.is_some() || batch.orders.len() != 1 {
            return None;
        }
        let crate::store::OrderWrite::Update(order) = &batch.orders[0] else {
            return None;
        };
        let instance = batch.instances.iter().rfind(|r| r.order_id == order_id)?;
        let mut order = order.clone();
        if order.id != order_id {
            return None;
        }
        // The store bumps the version of every order it updates.
        order.version = order.version.saturating_add(1);
        Some(Self {
            order,
            instance: instance.clone(),
        })
    }
}

impl RunningJob {
    fn new(lease: Lease) -> Self {
        Self {
            lease: tokio::sync::Mutex::new(lease),
            written: std::sync::Mutex::new(None),
        }
    }

    async fn lease(&self) -> Lease {
        self.lease.lock().await.clone()
    }

    fn remember(&self, written: Option<Written>) {
        *self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = written;
    }

    /// Takes what the last commit wrote (at most once: a failed step must read afresh).
    fn take_written(&self) -> Option<Written> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

const CREDENTIALS_FIELD: &str = "password";
const ADMIN_PASSWORD_FIELD: &str = "admin_password";

impl Provisioner {
    /// Claims one batch of due jobs and runs them concurrently to their next wait. Returns how
    /// many jobs ran.
    pub async fn run_jobs_once(&self) -> Result<usize> {
        let cfg = &self.inner.config;
        let claimed = self
            .inner
            .store
            .claim_jobs(&ClaimRequest {
                owner: cfg.worker_id.clone(),
                limit: cfg.claim_batch,
                lease_for: cfg.lease_for,
                now: self.now(),
            })
            .await?;
        let n = claimed.len();
        let mut running = tokio::task::JoinSet::new();
        for job in claimed {
            let p = self.clone();
            let span = tracing::info_span!("job", order_id = %job.job.order_id, kind = job.job.kind.as_str(), attempt = job.job.attempt, step = tracing::field::Empty);
            running.spawn(async move { p.execute(job).await }.instrument(span));
        }
        while let Some(done) = running.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        Ok(n)
    }

    /// Runs one claimed job with a heartbeat beside it.
    async fn execute(&self, claimed: ClaimedJob) {
        let ClaimedJob { job, lease } = claimed;
        let running = RunningJob::new(lease);
        let work = async {
            match job.kind {
                JobKind::Provision => self.provision(job.order_id, &running, job.created_at).await,
                kind => {
                    self.lifecycle(kind, job.order_id, job.note.as_deref(), &running)
                        .await
                }
            }
        };
        let heartbeat = async {
            let every = self.inner.config.lease_for / 3;
            loop {
                tokio::time::sleep(every).await;
                let mut held = running.lease.lock().await;
                match self
                    .inner
                    .store
                    .heartbeat(&held, self.inner.config.lease_for, self.now())
                    .await
                {
                    Ok(renewed) => *held = renewed,
                    Err(e) if e.kind() == ErrorKind::Conflict => return,
                    Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                }
            }
        };
        let outcome = tokio::select! {
            r = work => r,
            () = heartbeat => Err(Halt::LeaseLost),
        };
        match outcome {
            Ok(()) => {}
            Err(Halt::Crashed) => tracing::warn!("crash injected; leaving the lease to lapse"),
            Err(Halt::LeaseLost) => tracing::info!("lease lost; another worker owns the job now"),
            Err(Halt::Stale) => {
                // The records kept changing under us; hand the job back to run again at once.
                let fence = running.lease().await;
                let retry = JobOutcome::Retry {
                    run_at: self.now(),
                    error: Some("records changed while the job ran".into()),
                };
                if let Err(e) = self
                    .inner
                    .store
                    .commit(Batch::new().fenced(&fence).finish(retry), self.now())
                    .await
                {
                    tracing::warn!(error = %e, "could not hand the job back; its lease will lapse");
                }
            }
            Err(Halt::Store(e)) => {
                tracing::warn!(error = %e, "store failed; the job will be retried after its lease lapses");
            }
        }
    }

    /// Commits `batch` fenced by the job, with crash points before and after.
    async fn commit_step(
        &self,
        order_id: OrderId,
        job: &RunningJob,
        batch: Batch,
        what: &'static str,
    ) -> StepResult<()> {
        if self.crash(order_id, what) {
            return Err(Halt::Crashed);
        }
        let fence = job.lease().await;
        // What this commit leaves in the store, kept so the next step need not read it back.
        let batch_written = Written::of(order_id, &batch);
        match self
            .inner
            .store
            .commit(batch.fenced(&fence), self.now())
            .await
        {
            Ok(_) => job.remember(batch_written),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                // Whatever an earlier write of this step left is stale now: read afresh.
                job.remember(None);
                // Lost lease, or a compare-and-set that lost to another writer? A heartbeat
                // tells them apart.
                let mut held = job.lease.lock().await;
                return match self
                    .inner
                    .store
                    .heartbeat(&held, self.inner.config.lease_for, self.now())
                    .await
                {
                    Ok(renewed) => {
                        *held = renewed;
                        Err(Halt::Stale)
                    }
                    Err(_) => Err(Halt::LeaseLost),
                };
            }
            Err(e) => {
                job.remember(None);
                return Err(Halt::Store(e));
            }
        }
        if self.crash(order_id, "after_commit") {
            return Err(Halt::Crashed);
        }
        Ok(())
    }

    /// Calls a provider through the shared rate limiter, counting calls and 429s.
    async fn call<T, F>(
        &self,
        provider: &Arc<dyn CloudProvider>,
        op: &'static str,
        f: F,
    ) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        if let Some(limiter) = self.inner.limiters.get(provider.name()) {
            limiter.acquire().await;
        }
        metrics::counter!("nemordp_provider_api_calls_total", "provider" => provider.name(), "op" => op).increment(1);
        let result = f.await;
        if let Err(e) = &result
            && e.kind() == ErrorKind::RateLimited
        {
            metrics::counter!("nemordp_provider_rate_limited_total", "provider" => provider.name())
                .increment(1);
            if let Some(limiter) = self.inner.limiters.get(provider.name()) {
                limiter.back_off(e.retry_after().unwrap_or(Duration::from_secs(1)));
            }
        }
        result
    }

    fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let cfg = &self.inner.config;
        let exp = cfg
            .retry_initial
            .saturating_mul(1u32 << failures.min(16))
            .min(cfg.retry_max);
        // Full jitter over the upper half keeps a herd of orders from retrying in step.
        let half = exp / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis().try_into().unwrap_or(u64::MAX));
        (half + Duration::from_millis(jitter)).max(retry_after.unwrap_or_default())
    }

    async fn reschedule(
        &self,
        order_id: OrderId,
        job: &RunningJob,
        batch: Batch,
        at: Timestamp,
        error: Option<String>,
    ) -> StepResult<()> {
        self.commit_step(
            order_id,
            job,
            batch.finish(JobOutcome::Retry { run_at: at, error }),
            "before_commit:reschedule",
        )
        .await
    }

    async fn escalate(
        &self,
        order: &Order,
        job: &RunningJob,
        reason: AttentionReason,
    ) -> StepResult<()> {
        let now = self.now();
        let next = order.transition(
            &OrderEvent::Escalate {
                reason: reason.clone(),
            },
            now,
        )?;
        tracing::error!(order_id = %order.id, code = ?reason.code, message = %reason.message, "order needs attention");
        let batch = Batch::new()
            .update_order(next)
            .notify(OutboxEntry::new(
                order.id,
                NotificationKind::Failed {
                    reason: reason.clone(),
                },
                now,
            ))
            .finish(JobOutcome::Failed {
                error: reason.message.clone(),
            });
        self.commit_step(order.id, job, batch, "before_commit:escalate")
            .await?;
        metrics::counter!("nemordp_needs_attention_total", "code" => format!("{:?}", reason.code))
            .increment(1);
        metrics::counter!("nemordp_provisions_total", "outcome" => "needs_attention").increment(1);
        self.emit(order.id, Stage::NeedsAttention, 0, reason.message);
        self.inner.outbox_wake.notify_one();
        Ok(())
    }

    /// A transient provider failure: retry with backoff unless the order's deadline passed.
    async fn transient(
        &self,
        order: &Order,
        record: &InstanceRecord,
        job: &RunningJob,
        err: &Error,
    ) -> StepResult<()> {
        let now = self.now();
        if now.duration_since(record.created_at) >= self.inner.config.order_deadline {
            let reason = AttentionReason::new(
                AttentionCode::ProviderOutage,
                format!("provider kept failing past the order deadline: {err}"),
            );
            return self.escalate(order, job, reason).await;
        }
        let mut next = record.clone();
        next.progress.failures += 1;
        let wait = self.backoff(next.progress.failures, err.retry_after());
        metrics::counter!("nemordp_provision_retries_total", "provider" => record.provider.clone())
            .increment(1);
        tracing::warn!(error = %err, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), "transient provider failure; retrying");
        self.reschedule(
            order.id,
            job,
            Batch::new().put_instance(next),
            now.saturating_add(wait),
            Some(err.to_string()),
        )
        .await
    }

    fn step(&self, order: &Order, event: &OrderEvent) -> Result<Order> {
        order.transition(event, self.now())
    }

    /// Drives a paid order through its steps until it has to wait or is done. A write that
    /// lost a compare-and-set while the lease still holds (the host changed the order, say)
    /// re-reads and carries on.
    async fn provision(
        &self,
        order_id: OrderId,
        job: &RunningJob,
        paid_at: Timestamp,
    ) -> StepResult<()> {
        let mut stale = 0;
        loop {
            match self.provision_step(order_id, job, paid_at).await {
                Ok(Next::Continue) => {}
                Ok(Next::Wait | Next::Finished) => return Ok(()),
                Err(Halt::Stale) if stale < 8 => stale += 1,
                Err(Halt::Stale) => return Err(Halt::LeaseLost),
                Err(other) => return Err(other),
            }
        }
    }

    /// One step of [`Provisioner::provision`].
    async fn provision_step(
        &self,
        order_id: OrderId,
        job: &RunningJob,
        paid_at: Timestamp,
    ) -> StepResult<Next> {
        let store = self.inner.store.clone();
        // What the last step wrote, or else the order and its instance record in one read.
        let (order, instance) = match job.take_written() {
            Some(w) => (Some(w.order), Some(w.instance)),
            None => match store.get_order_records(&[order_id]).await?.pop() {
                Some(r) => (Some(r.order), r.instance),
                None => (None, None),
            },
        };
        {
            let Some(mut order) = order else {
                // A job for an order that does not exist: nothing can ever make it run.
                tracing::error!("provisioning job for a missing order");
                let failed = JobOutcome::Failed {
                    error: format!("order {order_id} not found"),
                };
                self.commit_step(
                    order_id,
                    job,
                    Batch::new().finish(failed),
                    "before_commit:failed",
                )
                .await?;
                return Ok(Next::Finished);
            };
            // The job span carries the step the order is in; every event below inherits it.
            let step_name = match &order.state {
                OrderState::Provisioning { step } => step.as_str(),
                other => other.kind().as_str(),
            };
            tracing::Span::current().record("step", step_name);
            let next = match order.state.clone() {
                OrderState::Paid => self.record_intent(&mut order, instance, job).await?,
                OrderState::Provisioning { step } => {
                    let Ok(plan) = self.plan(&order.plan_id).cloned() else {
                        let reason = AttentionReason::new(
                            AttentionCode::Other,
                            format!("plan {} is no longer in the catalog", order.plan_id),
                        );
                        self.escalate(&order, job, reason).await?;
                        return Ok(Next::Finished);
                    };
                    let Some(record) = instance else {
                        // Intent is written with the step, so this is a corrupt history.
                        let reason = AttentionReason::new(
                            AttentionCode::Other,
                            "provisioning without an instance record",
                        );
                        self.escalate(&order, job, reason).await?;
                        return Ok(Next::Finished);
                    };
                    match step {
                        ProvisionStep::IntentRecorded => {
                            self.lookup_or_create(&mut order, &plan, record, job, None)
                                .await?
                        }
                        ProvisionStep::CreateUnknown => {
                            self.resolve_unknown(&mut order, record, job).await?
                        }
                        // Since the create's result and the boot start are one write, only
                        // records written by earlier versions stop here.
                        ProvisionStep::Created => {
                            let mut rec = record;
                            rec.progress.boot_started_at = Some(self.now());
                            rec.progress.failures = 0;
                            let next = self.step(
                                &order,
                                &OrderEvent::StepReached {
                                    step: ProvisionStep::Booting,
                                },
                            )?;
                            self.commit_step(
                                order_id,
                                job,
                                Batch::new().update_order(next).put_instance(rec),
                                "before_commit:booting",
                            )
                            .await?;
                            self.emit(
                                order_id,
                                Stage::Booting,
                                40,
                                format!("{} is installing", plan.os),
                            );
                            Next::Continue
                        }
                        ProvisionStep::Booting => {
                            self.wait_for_boot(&mut order, &plan, record, job, paid_at)
                                .await?
                        }
                        // As with `Created`: ready and active are one write now.
                        ProvisionStep::Ready => {
                            self.activate(&order, job, paid_at).await?;
                            Next::Finished
                        }
                    }
                }
                // Terminated, expired, active, suspended, needs attention, unpaid: nothing to do.
                _ => {
                    self.commit_step(
                        order_id,
                        job,
                        Batch::new().finish(JobOutcome::Done),
                        "before_commit:done",
                    )
                    .await?;
                    Next::Finished
                }
            };
            Ok(next)
        }
    }

    async fn record_intent(
        &self,
        order: &mut Order,
        existing: Option<InstanceRecord>,
        job: &RunningJob,
    ) -> StepResult<Next> {
        let now = self.now();
        let plan = self.plan(&order.plan_id).map_err(Halt::Store)?.clone();
        let started = OutboxEntry::new(order.id, NotificationKind::ProvisioningStarted, now);
        let intent = self.step(
            order,
            &OrderEvent::StepReached {
                step: ProvisionStep::IntentRecorded,
            },
        )?;
        let Some(record) = existing else {
            // No record, so no create was ever sent for this order and no machine can carry
            // its label: the intent is written with the create's own pre-write, and no lookup
            // is needed.
            let record = InstanceRecord::intent(
                order.id,
                plan.provider.clone(),
                plan.region.clone(),
                plan.size.clone(),
                plan.image.clone().unwrap_or_default(),
                now,
            );
            self.emit(order.id, Stage::Preparing, 10, "provisioning started");
            let mut intent = intent;
            return self
                .lookup_or_create(&mut intent, &plan, record, job, Some(started))
                .await;
        };
        // An operator retry keeps the machine we may already have.
        let batch = Batch::new()
            .update_order(intent)
            .put_instance(record)
            .notify(started);
        self.commit_step(order.id, job, batch, "before_commit:intent")
            .await?;
        self.emit(order.id, Stage::Preparing, 10, "provisioning started");
        self.inner.outbox_wake.notify_one();
        Ok(Next::Continue)
    }

    /// Adopts a machine carrying the order's label if there is one; otherwise creates one.
    /// `started` is set for a fresh intent (nothing to look up): that notice and the intent
    /// itself are written with the pre-create write.
    async fn lookup_or_create(
        &self,
        order: &mut Order,
        plan: &Plan,
        record: InstanceRecord,
        job: &RunningJob,
        started: Option<OutboxEntry>,
    ) -> StepResult<Next> {
        let provider = self.provider(&plan.provider).map_err(Halt::Store)?.clone();
        if record.instance_id.is_some() {
            return self.adopted(order, record, None, job).await;
        }
        if started.is_none() {
            match self.find_own(order, &provider, &record, job).await? {
                Found::One(instance) => {
                    return self.adopted(order, record, Some(instance), job).await;
                }
                Found::Handled(next) => return Ok(next),
                Found::Nothing => {}
            }
        }
        let image = match self.resolve_image(&provider, plan).await {
            Ok(i) => i,
            Err(e) if e.is_retryable() => {
                self.transient(order, &record, job, &e).await?;
                return Ok(Next::Wait);
            }
            Err(e) => return self.rejected(order, job, &e).await,
        };
        let caps = provider.capabilities();
        let username = plan.os.default_username();
        // Our own password, sealed and stored *before* the create, so a crash right after the
        // create still knows it. It reaches the machine through the bootstrap script or the
        // provider's own password parameter.
        let mut rec = record;
        let ours_delivered = caps.user_data || caps.password_from_us;
        let password = if ours_delivered {
            let pw = match rec.sealed_password.as_ref() {
                Some(blob) => self
                    .inner
                    .sealer
                    .open(order.id, ADMIN_PASSWORD_FIELD, blob)?,
                None => new_password(username)?,
            };
            rec.sealed_password = Some(self.inner.sealer.seal(
                order.id,
                ADMIN_PASSWORD_FIELD,
                &pw,
            )?);
            Some(pw)
        } else {
            None
        };
        let now = self.now();
        rec.create_attempts += 1;
        rec.image.clone_from(&image.id);
        rec.progress.unknown_since = Some(now);
        rec.progress.lookup_misses = 0;
        rec.progress.failures = 0;
        rec.updated_at = now;
        let unknown = self.step(
            order,
            &OrderEvent::StepReached {
                step: ProvisionStep::CreateUnknown,
            },
        )?;
        // Persisted before the side effect: from here a crash resolves by label lookups.
        let mut batch = Batch::new()
            .update_order(unknown.clone())
            .put_instance(rec.clone());
        let wake_outbox = started.is_some();
        if let Some(entry) = started {
            batch = batch.notify(entry);
        }
        self.commit_step(order.id, job, batch, "before_commit:create_unknown")
            .await?;
        if wake_outbox {
            self.inner.outbox_wake.notify_one();
        }
        let mut order_now = unknown;
        order_now.version += 1;

        let mut spec = InstanceSpec::new(
            rec.label.clone(),
            plan.region.clone(),
            plan.size.clone(),
            image,
        )
        .with_hostname(format!(
            "rdp-{}",
            &order.id.as_uuid().simple().to_string()[..12]
        ))
        .with_tag(format!("nemordp-order:{}", order.id))
        .with_billing_months(plan.period.months());
        if caps.user_data {
            let mut boot = BootstrapSpec::new(spec.hostname.clone(), username)
                .with_packages(plan.packages.clone());
            if let Some(pw) = &password {
                boot = boot.with_password(pw.clone());
            }
            if let Some(ip) = order.customer.ip {
                boot = boot.with_rdp_source(ip);
            }
            let script = match plan.os {
                OsKind::WindowsServer => windows_powershell(&boot)?,
                // SHA-512 crypt of the password costs milliseconds of CPU: keep it off the
                // async workers.
                _ => tokio::task::spawn_blocking(move || ubuntu_cloud_config(&boot))
                    .await
                    .map_err(|e| {
                        Halt::Store(Error::new(
                            ErrorKind::Unexpected,
                            format!("bootstrap task failed: {e}"),
                        ))
                    })??,
            };
            spec = spec.with_user_data(script);
        }
        if caps.password_from_us
            && let Some(pw) = &password
        {
            spec = spec.with_admin_password(pw.clone());
        }
        if let Some(ip) = order.customer.ip {
            spec = spec.with_rdp_source(ip);
        }
        if self.crash(order.id, "before_create") {
            return Err(Halt::Crashed);
        }
        self.emit(order.id, Stage::Creating, 20, "creating the machine");
        // Never retried here: an unknown outcome is resolved by label lookups.
        let result = self
            .call(
                &provider,
                "create_instance",
                provider.create_instance(&spec),
            )
            .await;
        if self.crash(order.id, "after_create") {
            return Err(Halt::Crashed);
        }
        match result {
            Ok(instance) => self.adopted(&mut order_now, rec, Some(instance), job).await,
            Err(e) if e.kind() == ErrorKind::RateLimited => {
                // 429: provably not processed, so the create may be sent again.
                rec.create_attempts = rec.create_attempts.saturating_sub(1);
                rec.progress.unknown_since = None;
                let back = self.step(
                    &order_now,
                    &OrderEvent::StepReached {
                        step: ProvisionStep::IntentRecorded,
                    },
                )?;
                let at = self.now().saturating_add(self.backoff(0, e.retry_after()));
                self.reschedule(
                    order.id,
                    job,
                    Batch::new().update_order(back).put_instance(rec),
                    at,
                    Some(e.to_string()),
                )
                .await?;
                Ok(Next::Wait)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Ambiguous | ErrorKind::Unavailable | ErrorKind::Unexpected
                ) =>
            {
                tracing::warn!(error = %e, "create outcome unknown; resolving by label");
                self.emit(
                    order.id,
                    Stage::Reconciling,
                    25,
                    "create outcome unknown; looking the machine up",
                );
                let at = self.now().saturating_add(self.inner.config.lookup_interval);
                self.reschedule(order.id, job, Batch::new(), at, Some(e.to_string()))
                    .await?;
                Ok(Next::Wait)
            }
            Err(e) => self.rejected(&order_now, job, &e).await,
        }
    }

    /// Resolves the plan's image once per provider, OS and hint.
    async fn resolve_image(
        &self,
        provider: &Arc<dyn CloudProvider>,
        plan: &Plan,
    ) -> Result<crate::cloud::ImageRef> {
        let key = (provider.name(), plan.os, plan.image.clone());
        if let Some(hit) = self
            .inner
            .images
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Ok(hit.clone());
        }
        let image = self
            .call(
                provider,
                "resolve_image",
                provider.resolve_image(plan.os, plan.image.as_deref()),
            )
            .await?;
        self.inner
            .images
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, image.clone());
        Ok(image)
    }

    async fn rejected(&self, order: &Order, job: &RunningJob, e: &Error) -> StepResult<Next> {
        let code = match e.kind() {
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
                AttentionCode::ProviderAccount
            }
            _ => AttentionCode::ProviderRejected,
        };
        self.escalate(order, job, AttentionReason::new(code, e.to_string()))
            .await?;
        Ok(Next::Finished)
    }

    /// Stores a found or created machine (id, address, and the provider's password where ours
    /// is not used) in one write, and moves to `created`.
    async fn adopted(
        &self,
        order: &mut Order,
        mut rec: InstanceRecord,
        instance: Option<Instance>,
        job: &RunningJob,
    ) -> StepResult<Next> {
        let now = self.now();
        if let Some(inst) = instance {
            if rec.sealed_password.is_none()
                && let Some(pw) = &inst.admin_password
            {
                rec.sealed_password =
                    Some(self.inner.sealer.seal(order.id, ADMIN_PASSWORD_FIELD, pw)?);
            }
            rec.instance_id = Some(inst.id);
            rec.address = inst.address.filter(|a| !a.is_unspecified());
        }
        rec.progress.unknown_since = None;
        rec.progress.lookup_misses = 0;
        rec.progress.failures = 0;
        rec.progress.boot_started_at = Some(now);
        rec.updated_at = now;
        // Created and booting in one write: nothing happens between them.
        let created = self.step(
            order,
            &OrderEvent::StepReached {
                step: ProvisionStep::Created,
            },
        )?;
        let booting = self.step(
            &created,
            &OrderEvent::StepReached {
                step: ProvisionStep::Booting,
            },
        )?;
        self.commit_step(
            order.id,
            job,
            Batch::new().update_order(booting).put_instance(rec),
            "before_commit:created",
        )
        .await?;
        self.emit(order.id, Stage::Created, 30, "machine created");
        let installing = match self.plan(&order.plan_id) {
            Ok(plan) => format!("{} is installing", plan.os),
            Err(_) => "the machine is installing".to_owned(),
        };
        self.emit(order.id, Stage::Booting, 40, installing);
        Ok(Next::Continue)
    }

    /// A create whose outcome is unknown: look the label up; only repeated misses over the
    /// grace period allow another create.
    async fn resolve_unknown(
        &self,
        order: &mut Order,
        mut rec: InstanceRecord,
        job: &RunningJob,
    ) -> StepResult<Next> {
        let provider = self.provider(&rec.provider).map_err(Halt::Store)?.clone();
        if rec.instance_id.is_some() {
            return self.adopted(order, rec, None, job).await;
        }
        match self.find_own(order, &provider, &rec, job).await? {
            Found::One(instance) => self.adopted(order, rec, Some(instance), job).await,
            Found::Handled(next) => Ok(next),
            Found::Nothing => {
                let now = self.now();
                rec.progress.lookup_misses += 1;
                let since = *rec.progress.unknown_since.get_or_insert(now);
                let cfg = &self.inner.config;
                if rec.progress.lookup_misses >= cfg.create_grace_misses
                    && now.duration_since(since) >= cfg.create_grace
                {
                    tracing::info!(
                        misses = rec.progress.lookup_misses,
                        "create never landed; it may be sent again"
                    );
                    rec.progress.unknown_since = None;
                    rec.progress.lookup_misses = 0;
                    let back = self.step(
                        order,
                        &OrderEvent::StepReached {
                            step: ProvisionStep::IntentRecorded,
                        },
                    )?;
                    self.commit_step(
                        order.id,
                        job,
                        Batch::new().update_order(back).put_instance(rec),
                        "before_commit:recreate",
                    )
                    .await?;
                    Ok(Next::Continue)
                } else {
                    let at = now.saturating_add(cfg.lookup_interval);
                    self.reschedule(order.id, job, Batch::new().put_instance(rec), at, None)
                        .await?;
                    Ok(Next::Wait)
                }
            }
        }
    }

    /// Looks the order's label up. Several machines with one label escalate; provider
    /// failures back off or escalate; either way the step is over (`Found::Handled`).
    async fn find_own(
        &self,
        order: &Order,
        provider: &Arc<dyn CloudProvider>,
        rec: &InstanceRecord,
        job: &RunningJob,
    ) -> StepResult<Found> {
        match self
            .call(
                provider,
                "find_by_label",
                provider.find_by_label(&rec.label),
            )
            .await
        {
            Ok(mut found) if found.len() == 1 => Ok(found.pop().map_or(Found::Nothing, Found::One)),
            Ok(found) if found.is_empty() => Ok(Found::Nothing),
            Ok(found) => {
                let reason = AttentionReason::new(
                    AttentionCode::DuplicateInstances,
                    format!("{} machines carry label {}", found.len(), rec.label),
                );
                self.escalate(order, job, reason).await?;
                Ok(Found::Handled(Next::Finished))
            }
            Err(e) if e.is_retryable() => {
                self.transient(order, rec, job, &e).await?;
                Ok(Found::Handled(Next::Wait))
            }
            Err(e) => self.rejected(order, job, &e).await.map(Found::Handled),
        }
    }

    /// Waits for the machine: provider polls back off (a Windows boot takes 30+ minutes) and
    /// mostly serve to learn the address and catch failures; once an address is known, RDP is
    /// probed every few seconds (no provider calls), and the first answer is confirmed with
    /// one provider read.
    async fn wait_for_boot(
        &self,
        order: &mut Order,
        plan: &Plan,
        mut rec: InstanceRecord,
        job: &RunningJob,
        paid_at: Timestamp,
    ) -> StepResult<Next> {
        let provider = self.provider(&rec.provider).map_err(Halt::Store)?.clone();
        let cfg = &self.inner.config;
        let now = self.now();
        let started = *rec.progress.boot_started_at.get_or_insert(now);
        let deadline = started.saturating_add(plan.boot_deadline());
        let Some(id) = rec.instance_id.clone() else {
            let reason =
                AttentionReason::new(AttentionCode::Other, "booting without an instance id");
            self.escalate(order, job, reason).await?;
            return Ok(Next::Finished);
        };
        let first_poll = cfg.provider_poll_initial.min(plan.boot_deadline() / 4);
        let poll_gap = cfg
            .provider_poll_initial
            .saturating_mul(1u32 << rec.progress.provider_polls.min(8))
            .min(cfg.provider_poll_max);
        let poll_due = match rec.progress.provider_checked_at {
            None => now.duration_since(started) >= first_poll,
            Some(t) => now.duration_since(t) >= poll_gap,
        };
        if poll_due
            && let Some(next) = self
                .poll_booting(order, &provider, &id, &mut rec, job)
                .await?
        {
            return Ok(next);
        }
        if let Some(addr) = rec.address {
            rec.progress.probes += 1;
            let outcome = self
                .inner
                .probe
                .probe(SocketAddr::new(addr, cfg.rdp_port))
                .await;
            if outcome.is_ready() {
                if rec.progress.running_since.is_none()
                    && let Some(next) = self
                        .poll_booting(order, &provider, &id, &mut rec, job)
                        .await?
                {
                    return Ok(next);
                }
                if rec.progress.running_since.is_some() {
                    return self.deliver(order, plan, rec, job, paid_at).await;
                }
            }
        }
        if now >= deadline {
            let reason = AttentionReason::new(
                AttentionCode::BootDeadline,
                format!(
                    "not reachable over RDP {} minutes after create ({} provider polls, {} probes)",
                    plan.boot_deadline().as_secs() / 60,
                    rec.progress.provider_polls,
                    rec.progress.probes
                ),
            );
            self.escalate(order, job, reason).await?;
            return Ok(Next::Finished);
        }
        let next_poll = match rec.progress.provider_checked_at {
            None => started.saturating_add(first_poll),
            Some(t) => t.saturating_add(poll_gap),
        };
        let at = if rec.address.is_some() {
            now.saturating_add(cfg.probe_interval)
                .min(next_poll.max(now))
        } else {
            next_poll
        };
        let at = at
            .max(now.saturating_add(Duration::from_millis(1)))
            .min(deadline.max(now));
        self.reschedule(order.id, job, Batch::new().put_instance(rec), at, None)
            .await?;
        Ok(Next::Wait)
    }

    /// One provider read while booting: records address and running time, escalates failed,
    /// held or vanished machines, and backs off on transient errors. `Some(next)` means the
    /// step is over for now.
    async fn poll_booting(
        &self,
        order: &Order,
        provider: &Arc<dyn CloudProvider>,
        id: &crate::ids::InstanceId,
        rec: &mut InstanceRecord,
        job: &RunningJob,
    ) -> StepResult<Option<Next>> {
        let now = self.now();
        let inst = match self
            .call(provider, "get_instance", provider.get_instance(id))
            .await
        {
            Ok(inst) => inst,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let reason = AttentionReason::new(
                    AttentionCode::InstanceLost,
                    format!("machine {id} disappeared while booting"),
                );
                self.escalate(order, job, reason).await?;
                return Ok(Some(Next::Finished));
            }
            Err(e) if e.is_retryable() => {
                self.transient(order, rec, job, &e).await?;
                return Ok(Some(Next::Wait));
            }
            Err(e) => return self.rejected(order, job, &e).await.map(Some),
        };
        rec.progress.provider_checked_at = Some(now);
        rec.progress.provider_polls += 1;
        rec.progress.failures = 0;
        if let Some(a) = inst.address.filter(|a| !a.is_unspecified()) {
            if rec.address.is_none() {
                self.emit(
                    order.id,
                    Stage::WaitingForRdp,
                    60,
                    "address assigned; waiting for RDP",
                );
            }
            rec.address = Some(a);
        }
        let reason = match inst.status {
            InstanceStatus::Running => {
                rec.progress.running_since.get_or_insert(now);
                return Ok(None);
            }
            InstanceStatus::Failed(msg) => AttentionReason::new(
                AttentionCode::ProviderRejected,
                format!("provider failed the machine: {msg}"),
            ),
            InstanceStatus::AccountHold(msg) => AttentionReason::new(
                AttentionCode::ProviderAccount,
                format!("provider account needs action: {msg}"),
            ),
            InstanceStatus::Terminated => AttentionReason::new(
                AttentionCode::InstanceLost,
                "the machine was removed while booting",
            ),
            _ => return Ok(None),
        };
        self.escalate(order, job, reason).await?;
        Ok(Some(Next::Finished))
    }

    /// RDP answers: seal the customer's credentials, queue the ready notification, mark the
    /// order ready and then active, and finish the job, in one write.
    async fn deliver(
        &self,
        order: &mut Order,
        plan: &Plan,
        rec: InstanceRecord,
        job: &RunningJob,
        paid_at: Timestamp,
    ) -> StepResult<Next> {
        let now = self.now();
        let Some(blob) = rec.sealed_password.as_ref() else {
            let reason = AttentionReason::new(
                AttentionCode::Other,
                "the machine's password was never received (provider returned none and ours was not used)",
            );
            self.escalate(order, job, reason).await?;
            return Ok(Next::Finished);
        };
        let password = self
            .inner
            .sealer
            .open(order.id, ADMIN_PASSWORD_FIELD, blob)?;
        let sealed = self
            .inner
            .sealer
            .seal(order.id, CREDENTIALS_FIELD, &password)?;
        let creds = SealedCredentials::new(
            order.id,
            plan.os.default_username(),
            self.inner.sealer.current_key_id(),
            sealed,
            now,
        );
        let ready = self.step(
            order,
            &OrderEvent::StepReached {
                step: ProvisionStep::Ready,
            },
        )?;
        let active = ready.transition(&OrderEvent::Activated, now)?;
        let batch = Batch::new()
            .update_order(active)
            .put_instance(rec)
            .put_credentials(creds)
            .notify(OutboxEntry::new(order.id, NotificationKind::Ready, now))
            .finish(JobOutcome::Done);
        self.commit_step(order.id, job, batch, "before_commit:ready")
            .await?;
        self.inner.outbox_wake.notify_one();
        self.emit(
            order.id,
            Stage::Ready,
            90,
            "RDP is answering; credentials sealed",
        );
        self.activated(order.id, now, paid_at);
        Ok(Next::Finished)
    }

    /// Activates an order stored as ready (written by earlier versions, which activated in a
    /// write of its own).
    async fn activate(
        &self,
        order: &Order,
        job: &RunningJob,
        paid_at: Timestamp,
    ) -> StepResult<()> {
        let now = self.now();
        let next = order.transition(&OrderEvent::Activated, now)?;
        self.commit_step(
            order.id,
            job,
            Batch::new().update_order(next).finish(JobOutcome::Done),
            "before_commit:active",
        )
        .await?;
        self.activated(order.id, now, paid_at);
        Ok(())
    }

    fn activated(&self, order_id: OrderId, now: Timestamp, paid_at: Timestamp) {
        metrics::counter!("nemordp_provisions_total", "outcome" => "active").increment(1);
        #[allow(clippy::cast_precision_loss)] // seconds for a histogram, not money
        metrics::histogram!("nemordp_paid_to_active_seconds")
            .record(now.duration_since(paid_at).as_millis() as f64 / 1000.0);
        self.emit(order_id, Stage::Active, 100, "delivered");
    }

    /// Restart, stop, start, suspend, unsuspend, terminate: converge on the asked state,
    /// retrying transient failures; a missing machine counts as terminated.
    async fn lifecycle(
        &self,
        kind: JobKind,
        order_id: OrderId,
        note: Option<&str>,
        job: &RunningJob,
    ) -> StepResult<()> {
        let store = self.inner.store.clone();
        let now = self.now();
        let Some(order) = store.get_order(order_id).await? else {
            return self
                .commit_step(
                    order_id,
                    job,
                    Batch::new().finish(JobOutcome::Failed {
                        error: "order not found".into(),
                    }),
                    "before_commit:done",
                )
                .await;
        };
        let record = store.get_instance(order_id).await?;
        let provider = match record.as_ref().map(|r| self.provider(&r.provider)) {
            Some(Ok(p)) => Some(p.clone()),
            Some(Err(e)) => return Err(Halt::Store(e)),
            None => None,
        };
        let retry = |e: &Error, failures: u32| {
            (
                self.now()
                    .saturating_add(self.backoff(failures, e.retry_after())),
                e.to_string(),
            )
        };
        let failures = store
            .get_job(job.lease().await.job_id)
            .await?
            .map_or(0, |j| j.attempt);
        let (Some(provider), Some(rec)) = (provider, record) else {
            // No machine was ever recorded: only the state change matters.
            let mut batch = Batch::new().finish(JobOutcome::Done);
            if kind == JobKind::Terminate {
                batch = batch.notify(OutboxEntry::new(
                    order_id,
                    NotificationKind::Terminated,
                    now,
                ));
            }
            return self
                .commit_step(order_id, job, batch, "before_commit:done")
                .await;
        };
        let id = rec.instance_id.clone();
        let result: Result<Batch> = async {
            match kind {
                JobKind::Terminate => {
                    if let Some(id) = &id {
                        self.call(&provider, "delete_instance", provider.delete_instance(id))
                            .await?;
                    }
                    // A create may have landed without us hearing: remove anything with the label.
                    for inst in self
                        .call(
                            &provider,
                            "find_by_label",
                            provider.find_by_label(&rec.label),
                        )
                        .await?
                    {
                        self.call(
                            &provider,
                            "delete_instance",
                            provider.delete_instance(&inst.id),
                        )
                        .await?;
                    }
                    let mut r = rec.clone();
                    r.removed_at = Some(now);
                    Ok(Batch::new().put_instance(r).notify(OutboxEntry::new(
                        order_id,
                        NotificationKind::Terminated,
                        now,
                    )))
                }
                JobKind::Restart
                | JobKind::Stop
                | JobKind::Start
                | JobKind::Suspend
                | JobKind::Unsuspend => {
                    let Some(id) = &id else {
                        return Err(Error::invalid_input("no machine to operate on"));
                    };
                    match kind {
                        JobKind::Restart => {
                            self.call(&provider, "reboot", provider.reboot(id)).await?;
                        }
                        JobKind::Stop | JobKind::Suspend => {
                            self.call(&provider, "stop", provider.stop(id)).await?;
                        }
                        _ => self.call(&provider, "start", provider.start(id)).await?,
                    }
                    let mut batch = Batch::new();
                    if kind == JobKind::Suspend && order.state == OrderState::Active {
                        batch = batch
                            .update_order(order.transition(&OrderEvent::Suspend, now)?)
                            .notify(OutboxEntry::new(
                                order_id,
                                NotificationKind::Suspended {
                                    reason: note.unwrap_or("suspended by the host").to_owned(),
                                },
                                now,
                            ));
                    }
                    if kind == JobKind::Unsuspend && order.state == OrderState::Suspended {
                        batch = batch.update_order(order.transition(&OrderEvent::Unsuspend, now)?);
                    }
                    Ok(batch)
                }
                JobKind::Provision => Ok(Batch::new()),
            }
        }
        .await;
        match result {
            Ok(batch) => {
                self.commit_step(
                    order_id,
                    job,
                    batch.finish(JobOutcome::Done),
                    "before_commit:lifecycle",
                )
                .await?;
                self.emit(
                    order_id,
                    Stage::Lifecycle,
                    100,
                    format!("{} done", kind.as_str()),
                );
                self.inner.outbox_wake.notify_one();
                Ok(())
            }
            Err(e) if e.is_retryable() || e.kind() == ErrorKind::Ambiguous => {
                let (at, msg) = retry(&e, failures);
                self.reschedule(order_id, job, Batch::new(), at, Some(msg))
                    .await
            }
            Err(e) => {
                self.commit_step(
                    order_id,
                    job,
                    Batch::new().finish(JobOutcome::Failed {
                        error: e.to_string(),
                    }),
                    "before_commit:failed",
                )
                .await
            }
        }
    }
}
