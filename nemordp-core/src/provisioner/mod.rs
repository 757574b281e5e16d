//! The [`Provisioner`]: takes a paid order to a running, reachable machine with credentials in
//! the customer's hands — or to a loud needs-attention state with a reason.
//!
//! It follows the durable protocol of `reliability.md`: every step is idempotent and persisted
//! before and after its side effect; work is a job in the [`Store`] claimed with a lease and
//! heartbeats, so several processes can share one store and a killed process's work is picked
//! up after its lease expires; a create is never blindly retried (an ambiguous outcome is
//! resolved by looking the order's label up over a grace period); waits are bounded by
//! deadlines, not attempt counts.
//!
//! ```
//! # use std::sync::Arc;
//! use nemordp_core::{
//!     order::Customer, plan::{OsKind, Plan, PlanCatalog}, provisioner::Provisioner, seal::Sealer,
//!     sim::{cloud::SimCloud, notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
//!     Asset, Currency, Money,
//! };
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> nemordp_core::Result<()> {
//! let cloud = SimCloud::builder().seed(7).build();
//! let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), "whsec_demo".to_owned().into());
//! let plan = Plan::new("win", "sim", OsKind::WindowsServer, "sim-1", "small",
//!     Money::parse_major(Currency::Ngn, "45000")?);
//! let provisioner = Provisioner::builder()
//!     .store(Arc::new(MemoryStore::new()))
//!     .provider(Arc::new(cloud.clone()))
//!     .probe(Arc::new(cloud.rdp_probe()))
//!     .payment(Arc::new(payments.clone()))
//!     .notifier(Arc::new(RecordingNotifier::new()))
//!     .catalog(PlanCatalog::from_plans([plan])?)
//!     .sealer(Sealer::ephemeral())
//!     .build()?;
//! let order = provisioner.place_order(&"win".into(), Customer::new("c-1")).await?;
//! let payment = provisioner.open_payment(order.id, "sim").await?;
//! payments.pay_in_full(&payment.reference)?;
//! provisioner.refresh_payment(payment.id).await?;
//! let order = provisioner.run_until_settled(order.id).await?;
//! assert_eq!(order.state, nemordp_core::order::OrderState::Active);
//! # Ok(()) }
//! ```

mod events;
mod gc;
mod limiter;
mod outbox;
mod payments;
mod steps;

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

pub use events::{ProgressEvent, ProgressStream, Stage};
pub use gc::{Orphan, OrphanPolicy};
pub use limiter::RateLimiter;
pub use payments::{REVERSAL_COLLECTION, ReversalRecord, ReversalStatus, WebhookOutcome};
use tokio::sync::{Notify, broadcast};

use crate::{
    clock::{Clock, Timestamp, TokioClock},
    cloud::CloudProvider,
    error::{Error, ErrorKind, Result},
    ids::{OrderId, PlanId},
    notify::{ConnectionDetails, Notifier},
    order::{Customer, Order, OrderEvent, OrderState},
    payment::PaymentVerifier,
    plan::{OsKind, Plan, PlanCatalog},
    rates::RateSource,
    rdp::{RdpFile, RdpProbe, TcpRdpProbe},
    seal::Sealer,
    store::{Batch, InstanceRecord, Job, JobKind, SealedCredentials, Store, StoreExt},
};

/// Tunables. Defaults follow `reliability.md`; every duration is on the injected clock.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProvisionerConfig {
    /// This process's worker name (unique per process; used as the lease owner).
    pub worker_id: String,
    /// Lease length of a claimed job; heartbeats renew it at a third of this.
    pub lease_for: Duration,
    /// Jobs claimed per round.
    pub claim_batch: u32,
    /// How long an idle worker sleeps before looking for due jobs again.
    pub idle_poll: Duration,
    /// RDP probe interval once the machine has an address.
    pub probe_interval: Duration,
    /// RDP port probed and written to `.rdp` files.
    pub rdp_port: u16,
    /// First provider poll after a create; polls back off from here.
    pub provider_poll_initial: Duration,
    /// Longest gap between provider polls while booting.
    pub provider_poll_max: Duration,
    /// Interval of label lookups while a create's outcome is unknown.
    pub lookup_interval: Duration,
    /// How long lookups must keep finding nothing before a create may be sent again.
    pub create_grace: Duration,
    /// Minimum consecutive misses (as well as `create_grace`) before a re-create.
    pub create_grace_misses: u32,
    /// First retry delay after a transient failure.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long a paid order may wait out provider outages before needing attention.
    pub order_deadline: Duration,
    /// How long a payment request stays open.
    pub payment_expiry: Duration,
    /// How long after expiry late payments are still watched.
    pub payment_monitoring: Duration,
    /// Shortfall accepted on a payment, in percent of the amount due (BTCPay's "payment
    /// tolerance"), for crypto payers whose wallet or exchange takes a fee from the amount.
    /// `0` (the default) means exact; must be below 100. Verifiers that demand the exact amount
    /// (Paystack) never confirm a shortfall, whatever this says.
    pub payment_tolerance_percent: crate::Decimal,
    /// Outbox entries claimed per round.
    pub outbox_batch: u32,
    /// Orders whose notifications the relay delivers at the same time (each order's own
    /// notifications still go out in order).
    pub outbox_concurrency: usize,
    /// How long a notification keeps being retried (counted from when it was queued) before
    /// the relay marks it failed. A `Rejected` delivery fails at once.
    pub outbox_deadline: Duration,
    /// Age before an unowned labelled instance counts as an orphan.
    pub orphan_grace: Duration,
    /// Capacity of the progress channel (slow subscribers skip old events beyond it).
    pub event_capacity: usize,
}

impl Default for ProvisionerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            lease_for: Duration::from_secs(90),
            claim_batch: 256,
            idle_poll: Duration::from_millis(250),
            probe_interval: Duration::from_secs(3),
            rdp_port: 3389,
            provider_poll_initial: Duration::from_secs(30),
            provider_poll_max: Duration::from_secs(300),
            lookup_interval: Duration::from_secs(30),
            create_grace: Duration::from_secs(10 * 60),
            create_grace_misses: 3,
            retry_initial: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            order_deadline: Duration::from_secs(6 * 60 * 60),
            payment_expiry: Duration::from_secs(15 * 60),
            payment_monitoring: Duration::from_secs(24 * 60 * 60),
            payment_tolerance_percent: crate::Decimal::ZERO,
            outbox_batch: 128,
            outbox_concurrency: 8,
            outbox_deadline: Duration::from_secs(72 * 60 * 60),
            orphan_grace: Duration::from_secs(15 * 60),
            event_capacity: 4096,
        }
    }
}

/// Where a fault-injection hook is being asked whether to "crash".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CrashSite {
    /// The order being worked on.
    pub order_id: OrderId,
    /// The boundary, e.g. `"before_commit:intent"` or `"after_create"`.
    pub point: &'static str,
}

/// A fault-injection hook: returning `true` makes the worker stop dead at that boundary, as
/// if the process had been killed (nothing more is written; the lease lapses).
pub type CrashHook = Arc<dyn Fn(&CrashSite) -> bool + Send + Sync>;

/// Builds a [`Provisioner`] from `Arc<dyn …>` backends.
#[derive(Default)]
pub struct ProvisionerBuilder {
    store: Option<Arc<dyn Store>>,
    providers: BTreeMap<&'static str, Arc<dyn CloudProvider>>,
    verifiers: BTreeMap<&'static str, Arc<dyn PaymentVerifier>>,
    rates: Option<Arc<dyn RateSource>>,
    notifier: Option<Arc<dyn Notifier>>,
    probe: Option<Arc<dyn RdpProbe>>,
    catalog: Option<PlanCatalog>,
    sealer: Option<Sealer>,
    clock: Option<Arc<dyn Clock>>,
    config: ProvisionerConfig,
    rate_limits: BTreeMap<String, u32>,
    crash_hook: Option<CrashHook>,
    fraud: Option<crate::fraud::FraudEngine>,
}

impl fmt::Debug for ProvisionerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProvisionerBuilder")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .field("verifiers", &self.verifiers.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProvisionerBuilder {
    /// The durable store (required).
    #[must_use]
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Registers a cloud under its [`CloudProvider::name`] (plans refer to it by that name).
    #[must_use]
    pub fn provider(mut self, provider: Arc<dyn CloudProvider>) -> Self {
        self.providers.insert(provider.name(), provider);
        self
    }

    /// Registers a payment method under its [`PaymentVerifier::name`].
    #[must_use]
    pub fn payment(mut self, verifier: Arc<dyn PaymentVerifier>) -> Self {
        self.verifiers.insert(verifier.name(), verifier);
        self
    }

    /// The rate source used to price orders in crypto (required for crypto methods).
    #[must_use]
    pub fn rates(mut self, rates: Arc<dyn RateSource>) -> Self {
        self.rates = Some(rates);
        self
    }

    /// Where customer notifications go (required).
    #[must_use]
    pub fn notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// The RDP readiness probe (default: [`TcpRdpProbe`]).
    #[must_use]
    pub fn probe(mut self, probe: Arc<dyn RdpProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// The plans on sale (required).
    #[must_use]
    pub fn catalog(mut self, catalog: PlanCatalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// The keyring sealing credentials at rest (required; see [`Sealer::from_env`]).
    #[must_use]
    pub fn sealer(mut self, sealer: Sealer) -> Self {
        self.sealer = Some(sealer);
        self
    }

    /// The clock (default: [`TokioClock::new`], wall time at start plus Tokio's monotonic
    /// time, so paused-clock tests and production share one code path).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Tunables.
    #[must_use]
    pub fn config(mut self, config: ProvisionerConfig) -> Self {
        self.config = config;
        self
    }

    /// Overrides a provider's request rate (default: its
    /// [`Capabilities::requests_per_second`](crate::cloud::Capabilities)). 0 disables limiting.
    #[must_use]
    pub fn provider_rate_limit(mut self, provider: impl Into<String>, per_second: u32) -> Self {
        self.rate_limits.insert(provider.into(), per_second);
        self
    }

    /// Fraud rules evaluated when an order is placed and when its payment arrives; a
    /// rejected order is never provisioned (see [`crate::fraud`]).
    #[must_use]
    pub fn fraud(mut self, engine: crate::fraud::FraudEngine) -> Self {
        self.fraud = Some(engine);
        self
    }

    /// Installs a fault-injection hook (tests of crash safety).
    #[must_use]
    pub fn crash_hook(mut self, hook: CrashHook) -> Self {
        self.crash_hook = Some(hook);
        self
    }

    /// Checks the composition and builds the provisioner.
    pub fn build(self) -> Result<Provisioner> {
        let missing = |what: &str| Error::invalid_config(format!("provisioner needs {what}"));
        let store = self.store.ok_or_else(|| missing("a store"))?;
        let notifier = self.notifier.ok_or_else(|| missing("a notifier"))?;
        let catalog = self.catalog.ok_or_else(|| missing("a plan catalog"))?;
        let sealer = self
            .sealer
            .ok_or_else(|| missing("a sealer (credentials key)"))?;
        let tolerance = self.config.payment_tolerance_percent;
        if tolerance.is_sign_negative() || tolerance >= crate::Decimal::ONE_HUNDRED {
            return Err(Error::invalid_config(format!(
                "payment_tolerance_percent must be at least 0 and below 100, not {tolerance}"
            )));
        }
        for plan in catalog.iter() {
            if !self.providers.contains_key(plan.provider.as_str()) {
                return Err(Error::invalid_config(format!(
                    "plan {:?} uses provider {:?}, which is not registered",
                    plan.id.as_str(),
                    plan.provider
                )));
            }
        }
        let limiters = self
            .providers
            .iter()
            .map(|(name, p)| {
                let rps = self
                    .rate_limits
                    .get(*name)
                    .copied()
                    .unwrap_or_else(|| p.capabilities().requests_per_second);
                (*name, RateLimiter::new(rps, 1))
            })
            .collect();
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(TokioClock::new()));
        // Verifiers keep their durable side records (review queues) in this store.
        let context = crate::payment::VerifierContext::new(store.clone(), clock.clone());
        for verifier in self.verifiers.values() {
            verifier.attach(&context);
        }
        let (events, _) = broadcast::channel(self.config.event_capacity.max(1));
        Ok(Provisioner {
            inner: Arc::new(Inner {
                store,
                providers: self.providers,
                limiters,
                verifiers: self.verifiers,
                rates: self.rates,
                notifier,
                probe: self.probe.unwrap_or_else(|| Arc::new(TcpRdpProbe::new())),
                catalog,
                sealer,
                clock,
                config: self.config,
                events,
                outbox_wake: Notify::new(),
                crash_hook: self.crash_hook,
                fraud: self.fraud,
                images: std::sync::Mutex::new(BTreeMap::new()),
            }),
        })
    }
}

/// Resolved images keyed by provider, OS and plan hint.
pub(crate) type ImageCache =
    std::sync::Mutex<BTreeMap<(&'static str, OsKind, Option<String>), crate::cloud::ImageRef>>;

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) providers: BTreeMap<&'static str, Arc<dyn CloudProvider>>,
    pub(crate) limiters: BTreeMap<&'static str, RateLimiter>,
    pub(crate) verifiers: BTreeMap<&'static str, Arc<dyn PaymentVerifier>>,
    pub(crate) rates: Option<Arc<dyn RateSource>>,
    pub(crate) notifier: Arc<dyn Notifier>,
    pub(crate) probe: Arc<dyn RdpProbe>,
    pub(crate) catalog: PlanCatalog,
    pub(crate) sealer: Sealer,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: ProvisionerConfig,
    pub(crate) events: broadcast::Sender<ProgressEvent>,
    pub(crate) outbox_wake: Notify,
    pub(crate) crash_hook: Option<CrashHook>,
    pub(crate) fraud: Option<crate::fraud::FraudEngine>,
    /// Resolved images per (provider, OS, hint): catalogues change rarely, API calls cost.
    pub(crate) images: ImageCache,
}

/// The orchestrator. Cheap to clone (an `Arc` inside); all clones share workers' state.
#[derive(Clone)]
pub struct Provisioner {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Provisioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provisioner")
            .field("worker_id", &self.inner.config.worker_id)
            .field("store", &self.inner.store.name())
            .field(
                "providers",
                &self.inner.providers.keys().collect::<Vec<_>>(),
            )
            .field(
                "verifiers",
                &self.inner.verifiers.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The lifecycle operations a host can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LifecycleOp {
    /// Reboot.
    Restart,
    /// Power off (billing continues).
    Stop,
    /// Power on.
    Start,
    /// Power off and mark suspended (non-payment, dispute).
    Suspend,
    /// Power on and mark active again.
    Unsuspend,
    /// Remove the machine and end the order (idempotent).
    Terminate,
}

impl LifecycleOp {
    fn job_kind(self) -> JobKind {
        match self {
            Self::Restart => JobKind::Restart,
            Self::Stop => JobKind::Stop,
            Self::Start => JobKind::Start,
            Self::Suspend => JobKind::Suspend,
            Self::Unsuspend => JobKind::Unsuspend,
            Self::Terminate => JobKind::Terminate,
        }
    }
}

impl Provisioner {
    /// Starts building.
    pub fn builder() -> ProvisionerBuilder {
        ProvisionerBuilder::default()
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The plan catalog.
    pub fn catalog(&self) -> &PlanCatalog {
        &self.inner.catalog
    }

    /// The clock in use.
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// Live progress events of every order.
    pub fn subscribe(&self) -> ProgressStream {
        ProgressStream::new(self.inner.events.subscribe())
    }

    pub(crate) fn plan(&self, id: &PlanId) -> Result<&Plan> {
        self.inner.catalog.get(id).ok_or_else(|| {
            Error::not_found(format!("plan {:?} is not in the catalog", id.as_str()))
        })
    }

    /// Places an order for `plan_id` at the plan's current price.
    pub async fn place_order(&self, plan_id: &PlanId, customer: Customer) -> Result<Order> {
        let plan = self.plan(plan_id)?;
        let mut order = Order::new(plan.id.clone(), customer, plan.price, self.now());
        let decision = self.fraud_on_order_placed(&mut order).await?;
        self.inner
            .store
            .insert_order(order.clone(), self.now())
            .await?;
        match decision {
            Some(d) if d.verdict == crate::fraud::Verdict::Reject => Err(Error::new(
                crate::ErrorKind::Rejected,
                format!(
                    "order {} rejected by fraud rules: {}",
                    order.id,
                    d.summary()
                ),
            )),
            _ => Ok(order),
        }
    }

    /// The order with `id`.
    pub async fn order(&self, id: OrderId) -> Result<Order> {
        self.inner.store.require_order(id).await
    }

    /// Asks for a lifecycle operation; it runs as a durable job (retried until it succeeds).
    ///
    /// `note` is a secret-free reason shown to the customer for suspensions.
    pub async fn request(
        &self,
        order_id: OrderId,
        op: LifecycleOp,
        note: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let order = self.inner.store.require_order(order_id).await?;
        let mut batch = Batch::new();
        let mut job = Job::new(op.job_kind(), order_id, now);
        if let Some(n) = note {
            job = job.with_note(n);
        }
        if op == LifecycleOp::Terminate {
            if order.state.is_terminal() {
                return Ok(());
            }
            batch = batch.update_order(order.transition(&OrderEvent::Terminate, now)?);
            job = job.with_unique_key(format!("terminate:{order_id}"));
        } else if !matches!(order.state, OrderState::Active | OrderState::Suspended) {
            return Err(Error::invalid_input(format!(
                "order {order_id} is {}; {op:?} needs an active or suspended machine",
                order.state.kind()
            )));
        }
        self.inner
            .store
            .commit(batch.enqueue(job), now)
            .await
            .map(drop)
    }

    /// An operator retries provisioning of an order in needs-attention.
    pub async fn retry_provisioning(&self, order_id: OrderId) -> Result<()> {
        let now = self.now();
        let order = self.inner.store.require_order(order_id).await?;
        crate::fraud::refuse_if_rejected(&order)?;
        let next = order.transition(&OrderEvent::RetryProvisioning, now)?;
        let job = Job::new(JobKind::Provision, order_id, now)
            .with_unique_key(format!("provision:{order_id}:{}", now.as_unix_millis()));
        self.inner
            .store
            .commit(Batch::new().update_order(next).enqueue(job), now)
            .await
            .map(drop)
    }

    /// Unseals the credentials of a delivered machine for the host's panel.
    pub async fn connection_details(&self, order_id: OrderId) -> Result<ConnectionDetails> {
        let store = &self.inner.store;
        let creds = store.get_credentials(order_id).await?;
        let record = store.get_instance(order_id).await?;
        self.connection_details_from(order_id, creds, record)
    }

    /// [`Provisioner::connection_details`] from records already read.
    pub(crate) fn connection_details_from(
        &self,
        order_id: OrderId,
        creds: Option<SealedCredentials>,
        record: Option<InstanceRecord>,
    ) -> Result<ConnectionDetails> {
        let creds = creds
            .ok_or_else(|| Error::not_found(format!("order {order_id} has no credentials yet")))?;
        let record =
            record.ok_or_else(|| Error::not_found(format!("order {order_id} has no instance")))?;
        let address = record
            .address
            .ok_or_else(|| Error::not_found(format!("order {order_id} has no address yet")))?;
        let password = self
            .inner
            .sealer
            .open(order_id, "password", &creds.sealed_password)?;
        let rdp = RdpFile::new(address.to_string(), &creds.username)?
            .with_port(self.inner.config.rdp_port)?;
        Ok(ConnectionDetails::new(
            address.to_string(),
            self.inner.config.rdp_port,
            creds.username,
            password,
            rdp.render(),
        ))
    }

    /// Runs job and outbox rounds until the order is active, needs attention, is terminated or
    /// expired. For demos and tests; services use [`Provisioner::start`].
    pub async fn run_until_settled(&self, order_id: OrderId) -> Result<Order> {
        loop {
            let ran = self.run_jobs_once().await?;
            self.relay_outbox_once().await?;
            let order = self.order(order_id).await?;
            if matches!(
                order.state,
                OrderState::Active
                    | OrderState::NeedsAttention { .. }
                    | OrderState::Terminated
                    | OrderState::Expired
            ) {
                return Ok(order);
            }
            if ran == 0 {
                tokio::time::sleep(self.inner.config.idle_poll).await;
            }
        }
    }

    /// Spawns the worker loops (jobs, outbox, payment expiry) on the current Tokio runtime.
    pub fn start(&self) -> WorkerHandle {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let jobs = {
            let p = self.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                while !*stop.borrow() {
                    let ran = match p.run_jobs_once().await {
                        Ok(n) => n,
                        Err(e) => {
                            tracing::warn!(error = %e, "job round failed");
                            0
                        }
                    };
                    if ran == 0 {
                        tokio::select! {
                            () = tokio::time::sleep(p.inner.config.idle_poll) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            })
        };
        let outbox = {
            let p = self.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                while !*stop.borrow() {
                    let sent = p.relay_outbox_once().await.unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "outbox round failed");
                        0
                    });
                    if sent == 0 {
                        tokio::select! {
                            () = p.inner.outbox_wake.notified() => {}
                            () = tokio::time::sleep(p.inner.config.idle_poll * 4) => {}
                            _ = stop.changed() => {}
                        }
                    }
                }
            })
        };
        let expiry = {
            let p = self.clone();
            let mut stop = stop_rx;
            tokio::spawn(async move {
                while !*stop.borrow() {
                    if let Err(e) = p.expire_payments().await {
                        tracing::warn!(error = %e, "payment expiry round failed");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(30)) => {}
                        _ = stop.changed() => {}
                    }
                }
            })
        };
        WorkerHandle {
            stop: stop_tx,
            tasks: vec![jobs, outbox, expiry],
        }
    }

    pub(crate) fn crash(&self, order_id: OrderId, point: &'static str) -> bool {
        self.inner
            .crash_hook
            .as_ref()
            .is_some_and(|h| h(&CrashSite { order_id, point }))
    }

    pub(crate) fn emit(
        &self,
        order_id: OrderId,
        stage: Stage,
        percent: u8,
        message: impl Into<String>,
    ) {
        // No subscribers is fine.
        let _ = self.inner.events.send(ProgressEvent {
            order_id,
            stage,
            percent,
            message: message.into(),
            at: self.now(),
        });
    }

    pub(crate) fn provider(&self, name: &str) -> Result<&Arc<dyn CloudProvider>> {
        self.inner.providers.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("provider {name:?} is not registered"),
            )
        })
    }
}

/// Running worker loops; stop them with [`WorkerHandle::shutdown`] (dropping the handle aborts
/// them, which is what a crash looks like).
#[derive(Debug)]
pub struct WorkerHandle {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Asks the loops to stop after their current round and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
