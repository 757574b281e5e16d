//! Fraud rules the host configures, evaluated when an order is placed and when a payment
//! arrives. Each evaluation returns a [`FraudDecision`]: allow, review or reject, with the
//! reasons of every rule that fired (the strictest verdict wins).
//!
//! Rules:
//! - **velocity**: at most `max` events per customer, e-mail, IP address or card fingerprint
//!   (Paystack `authorization.signature`) within a window ([`VelocityLimit`]);
//! - **amount or currency mismatch** between what the order expects and what was paid;
//! - **reference reuse**: a payment reference already bound to another order;
//! - **disposable-looking e-mail** domains (a configurable list, subdomains included);
//! - **unpaid open orders**: more than N orders of one customer waiting for payment.
//!
//! The rule evaluation itself ([`FraudRules::evaluate`]) is pure: facts and counts in, a
//! decision out, never a panic. [`FraudEngine`] adds the history (a [`FraudHistory`], with
//! [`MemoryFraudHistory`] in the box) that velocity and reference reuse need. Plugged into
//! the [`Provisioner`](crate::provisioner::Provisioner) with
//! `ProvisionerBuilder::fraud`, a review or reject is stored on the order
//! ([`Order::fraud`](crate::order::Order::fraud)) and emitted as a progress event, and a
//! rejected order is never provisioned.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{Error, Result},
    ids::OrderId,
    money::Money,
    store::StoreExt as _,
};

/// The outcome of an evaluation; ordered from mildest to strictest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Go ahead, but a human should look.
    Review,
    /// Stop: never provision.
    Reject,
}

/// When an evaluation ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FraudStage {
    /// The order was placed.
    OrderPlaced,
    /// A payment for it arrived.
    PaymentArrived,
}

/// What a velocity limit counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VelocityKey {
    /// The host's customer id.
    Customer,
    /// The customer's e-mail (case-insensitive).
    Email,
    /// The customer's or payer's IP address.
    Ip,
    /// The card fingerprint (Paystack `authorization.signature`).
    Card,
}

/// Which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FraudRule {
    /// Too many events for one key in the window.
    Velocity(VelocityKey),
    /// The amount paid is not the amount due.
    AmountMismatch,
    /// The payment is in another currency or asset.
    CurrencyMismatch,
    /// The payment reference belongs to another order.
    ReferenceReuse,
    /// The e-mail's domain is on the disposable list.
    DisposableEmail,
    /// Too many unpaid orders open for the customer.
    UnpaidOrders,
}

/// One fired rule with its verdict and an explanation for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudReason {
    /// The rule.
    pub rule: FraudRule,
    /// What this rule asks for.
    pub verdict: Verdict,
    /// Human-readable detail (no secrets: card fingerprints are not card numbers).
    pub message: String,
}

/// The result of one evaluation, as stored on the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudDecision {
    /// The strictest verdict of the fired rules; `Allow` when none fired.
    pub verdict: Verdict,
    /// Every rule that fired.
    pub reasons: Vec<FraudReason>,
    /// When it ran.
    pub stage: FraudStage,
    /// At what time.
    pub at: Timestamp,
}

impl FraudDecision {
    /// An allow with no reasons.
    pub fn allow(stage: FraudStage, at: Timestamp) -> Self {
        Self {
            verdict: Verdict::Allow,
            reasons: Vec::new(),
            stage,
            at,
        }
    }

    fn from_reasons(reasons: Vec<FraudReason>, stage: FraudStage, at: Timestamp) -> Self {
        let verdict = reasons
            .iter()
            .map(|r| r.verdict)
            .max()
            .unwrap_or(Verdict::Allow);
        Self {
            verdict,
            reasons,
            stage,
            at,
        }
    }

    /// The reasons as one line.
    pub fn summary(&self) -> String {
        let parts: Vec<&str> = self.reasons.iter().map(|r| r.message.as_str()).collect();
        if parts.is_empty() {
            "no rule fired".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

impl fmt::Display for FraudDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} at {:?}: {}",
            self.verdict,
            self.stage,
            self.summary()
        )
    }
}

/// "At most `max` events of `stage` per `key` within `window`"; the event being judged counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VelocityLimit {
    /// What to count by.
    pub key: VelocityKey,
    /// Which events count.
    pub stage: FraudStage,
    /// Most events allowed in the window.
    pub max: u32,
    /// The sliding window.
    pub window: Duration,
    /// What exceeding it asks for.
    pub verdict: Verdict,
}

/// The host's rule set. [`FraudRules::default`] turns on only the money rules (mismatch and
/// reference reuse → reject); add the others with the builder methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudRules {
    /// Velocity limits.
    pub velocity: Vec<VelocityLimit>,
    /// Verdict for an amount or currency mismatch (the amount rule can only be made stricter
    /// than `Review`: a mismatched payment is never simply allowed).
    pub mismatch: Verdict,
    /// Verdict for a reference bound to another order.
    pub reference_reuse: Verdict,
    /// Disposable e-mail domains (lower-case; subdomains match too).
    pub disposable_domains: Vec<String>,
    /// Verdict for a disposable e-mail.
    pub disposable: Verdict,
    /// Most unpaid orders one customer may have open, counting the new one.
    pub max_unpaid_orders: Option<u32>,
    /// Verdict when there are more.
    pub unpaid: Verdict,
}

impl Default for FraudRules {
    fn default() -> Self {
        Self {
            velocity: Vec::new(),
            mismatch: Verdict::Reject,
            reference_reuse: Verdict::Reject,
            disposable_domains: Vec::new(),
            disposable: Verdict::Review,
            max_unpaid_orders: None,
            unpaid: Verdict::Reject,
        }
    }
}

/// A few well-known throwaway-mail domains, as a starting list.
pub const COMMON_DISPOSABLE_DOMAINS: &[&str] = &[
    "mailinator.com",
    "guerrillamail.com",
    "10minutemail.com",
    "temp-mail.org",
    "yopmail.com",
    "trashmail.com",
    "sharklasers.com",
    "getnada.com",
    "dispostable.com",
    "maildrop.cc",
];

impl FraudRules {
    /// Adds a velocity limit.
    #[must_use]
    pub fn with_velocity(
        mut self,
        key: VelocityKey,
        stage: FraudStage,
        max: u32,
        window: Duration,
        verdict: Verdict,
    ) -> Self {
        self.velocity.push(VelocityLimit {
            key,
            stage,
            max,
            window,
            verdict,
        });
        self
    }

    /// Sets the disposable-domain list and its verdict.
    #[must_use]
    pub fn with_disposable_domains(
        mut self,
        domains: impl IntoIterator<Item = impl Into<String>>,
        verdict: Verdict,
    ) -> Self {
        self.disposable_domains = domains
            .into_iter()
            .map(|d| d.into().trim().trim_start_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty())
            .collect();
        self.disposable = verdict;
        self
    }

    /// Limits unpaid open orders per customer.
    #[must_use]
    pub fn with_max_unpaid_orders(mut self, max: u32, verdict: Verdict) -> Self {
        self.max_unpaid_orders = Some(max);
        self.unpaid = verdict;
        self
    }

    /// Sets the mismatch verdict; `Allow` is raised to `Review`.
    #[must_use]
    pub fn with_mismatch(mut self, verdict: Verdict) -> Self {
        self.mismatch = verdict.max(Verdict::Review);
        self
    }

    /// Sets the reference-reuse verdict.
    #[must_use]
    pub fn with_reference_reuse(mut self, verdict: Verdict) -> Self {
        self.reference_reuse = verdict;
        self
    }

    /// Whether `email`'s domain (or a parent domain) is on the disposable list.
    pub fn is_disposable(&self, email: &str) -> bool {
        let Some((_, domain)) = email.trim().rsplit_once('@') else {
            return false;
        };
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.disposable_domains.iter().any(|d| {
            domain == *d
                || domain
                    .strip_suffix(d.as_str())
                    .is_some_and(|rest| rest.ends_with('.'))
        })
    }

    /// The velocity keys (and values) `facts` has for `stage`.
    pub fn velocity_subjects(facts: &FraudFacts) -> Vec<(VelocityKey, String)> {
        let mut out = vec![(VelocityKey::Customer, facts.customer_id.clone())];
        if let Some(e) = &facts.email {
            out.push((VelocityKey::Email, e.trim().to_ascii_lowercase()));
        }
        if let Some(ip) = facts.ip {
            out.push((VelocityKey::Ip, ip.to_string()));
        }
        if let Some(card) = facts
            .payment
            .as_ref()
            .and_then(|p| p.card_fingerprint.as_ref())
            .filter(|c| !c.is_empty())
        {
            out.push((VelocityKey::Card, card.clone()));
        }
        out
    }

    /// Evaluates the rules. `counts` holds, per velocity limit (same order as
    /// [`FraudRules::velocity`]), how many earlier events of that key fall in its window;
    /// missing counts are taken as 0.
    pub fn evaluate(&self, facts: &FraudFacts, counts: &[u32]) -> FraudDecision {
        let mut reasons = Vec::new();
        let mut fire = |rule, verdict: Verdict, message: String| {
            if verdict > Verdict::Allow {
                reasons.push(FraudReason {
                    rule,
                    verdict,
                    message,
                });
            }
        };
        let subjects = Self::velocity_subjects(facts);
        for (i, limit) in self.velocity.iter().enumerate() {
            if limit.stage != facts.stage() {
                continue;
            }
            if !subjects.iter().any(|(k, _)| *k == limit.key) {
                continue;
            }
            let earlier = counts.get(i).copied().unwrap_or(0);
            let total = earlier.saturating_add(1);
            if total > limit.max {
                fire(
                    FraudRule::Velocity(limit.key),
                    limit.verdict,
                    format!(
                        "{} events by {:?} within {}s (limit {})",
                        total,
                        limit.key,
                        limit.window.as_secs(),
                        limit.max
                    ),
                );
            }
        }
        if let Some(email) = &facts.email
            && self.is_disposable(email)
        {
            fire(
                FraudRule::DisposableEmail,
                self.disposable,
                "the e-mail domain is on the disposable list".to_owned(),
            );
        }
        if let (Some(max), FraudStage::OrderPlaced) = (self.max_unpaid_orders, facts.stage())
            && facts.unpaid_open_orders > max
        {
            fire(
                FraudRule::UnpaidOrders,
                self.unpaid,
                format!(
                    "{} unpaid orders open for the customer (limit {max})",
                    facts.unpaid_open_orders
                ),
            );
        }
        if let Some(p) = &facts.payment {
            if p.expected.asset() != p.paid.asset() {
                fire(
                    FraudRule::CurrencyMismatch,
                    self.mismatch.max(Verdict::Review),
                    format!(
                        "paid in {}, the order is priced in {}",
                        p.paid.asset(),
                        p.expected.asset()
                    ),
                );
            } else if p.expected != p.paid {
                fire(
                    FraudRule::AmountMismatch,
                    self.mismatch.max(Verdict::Review),
                    format!("paid {}, the order expects {}", p.paid, p.expected),
                );
            }
            if let Some(owner) = p.reference_owner
                && owner != facts.order_id
            {
                fire(
                    FraudRule::ReferenceReuse,
                    self.reference_reuse,
                    format!(
                        "payment reference {:?} already belongs to order {owner}",
                        p.reference
                    ),
                );
            }
        }
        FraudDecision::from_reasons(reasons, facts.stage(), facts.at)
    }

    /// The longest velocity window (how much history is worth keeping).
    pub fn longest_window(&self) -> Duration {
        self.velocity
            .iter()
            .map(|v| v.window)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// What an evaluation knows about the order (and, at payment arrival, the payment).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FraudFacts {
    /// The order.
    pub order_id: OrderId,
    /// The host's customer id.
    pub customer_id: String,
    /// The customer's or payer's e-mail.
    pub email: Option<String>,
    /// The customer's or payer's IP address.
    pub ip: Option<IpAddr>,
    /// Unpaid orders the customer has open, this one included (order placement).
    pub unpaid_open_orders: u32,
    /// The payment, when one arrived.
    pub payment: Option<PaymentFacts>,
    /// When.
    pub at: Timestamp,
}

impl FraudFacts {
    /// Facts for a newly placed order.
    pub fn order_placed(order_id: OrderId, customer_id: impl Into<String>, at: Timestamp) -> Self {
        Self {
            order_id,
            customer_id: customer_id.into(),
            email: None,
            ip: None,
            unpaid_open_orders: 0,
            payment: None,
            at,
        }
    }

    /// Facts for a payment that arrived for an order.
    pub fn payment_arrived(
        order_id: OrderId,
        customer_id: impl Into<String>,
        payment: PaymentFacts,
        at: Timestamp,
    ) -> Self {
        Self {
            payment: Some(payment),
            ..Self::order_placed(order_id, customer_id, at)
        }
    }

    /// Sets the e-mail.
    #[must_use]
    pub fn with_email(mut self, email: Option<String>) -> Self {
        self.email = email;
        self
    }

    /// Sets the IP address.
    #[must_use]
    pub fn with_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.ip = ip;
        self
    }

    /// Sets the number of unpaid open orders (this one included).
    #[must_use]
    pub fn with_unpaid_open_orders(mut self, n: u32) -> Self {
        self.unpaid_open_orders = n;
        self
    }

    /// Which stage these facts describe.
    pub fn stage(&self) -> FraudStage {
        if self.payment.is_some() {
            FraudStage::PaymentArrived
        } else {
            FraudStage::OrderPlaced
        }
    }
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentFacts {
    /// The payment reference.
    pub reference: String,
    /// What the order expects.
    pub expected: Money,
    /// What was paid (confirmed).
    pub paid: Money,
    /// The order the reference was first seen with, if another.
    pub reference_owner: Option<OrderId>,
    /// Card fingerprint (Paystack `authorization.signature`).
    pub card_fingerprint: Option<String>,
}

impl PaymentFacts {
    /// A payment of `paid` against `expected` under `reference`.
    pub fn new(reference: impl Into<String>, expected: Money, paid: Money) -> Self {
        Self {
            reference: reference.into(),
            expected,
            paid,
            reference_owner: None,
            card_fingerprint: None,
        }
    }

    /// Sets the card fingerprint.
    #[must_use]
    pub fn with_card_fingerprint(mut self, fingerprint: Option<String>) -> Self {
        self.card_fingerprint = fingerprint;
        self
    }
}

/// Payer details a verifier learnt while verifying (card fingerprint, payer IP and e-mail),
/// handed to the engine with [`FraudEngine::note_signals`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentSignals {
    /// Card fingerprint.
    pub card_fingerprint: Option<String>,
    /// Payer IP address.
    pub ip: Option<IpAddr>,
    /// Payer e-mail.
    pub email: Option<String>,
}

impl PaymentSignals {
    /// Signals with a card fingerprint, IP and e-mail, each optional.
    pub fn new(
        card_fingerprint: Option<String>,
        ip: Option<IpAddr>,
        email: Option<String>,
    ) -> Self {
        Self {
            card_fingerprint,
            ip,
            email,
        }
    }
}

/// Where the engine keeps what velocity and reference reuse need.
#[async_trait]
pub trait FraudHistory: fmt::Debug + Send + Sync + 'static {
    /// Events of `stage` for `(key, value)` at or after `since`, not counting `exclude`'s.
    async fn count_since(
        &self,
        key: VelocityKey,
        value: &str,
        stage: FraudStage,
        since: Timestamp,
        exclude: OrderId,
    ) -> Result<u32>;

    /// Records an event (idempotent per order, key, value and stage).
    async fn record(
        &self,
        key: VelocityKey,
        value: &str,
        stage: FraudStage,
        order: OrderId,
        at: Timestamp,
    ) -> Result<()>;

    /// Binds `reference` to `order` unless already bound; returns the order it is bound to.
    async fn bind_reference(&self, reference: &str, order: OrderId) -> Result<OrderId>;
}

/// In-memory [`FraudHistory`] (one process; events older than `retention` are dropped).
#[derive(Debug)]
pub struct MemoryFraudHistory {
    retention: Duration,
    state: Mutex<MemoryHistoryState>,
}

type EventLog = Vec<(Timestamp, OrderId, FraudStage)>;

#[derive(Debug, Default)]
struct MemoryHistoryState {
    events: HashMap<(VelocityKey, String), EventLog>,
    references: HashMap<String, OrderId>,
}

impl MemoryFraudHistory {
    /// Keeps events for `retention` (at least as long as the longest velocity window).
    pub fn new(retention: Duration) -> Self {
        Self {
            retention,
            state: Mutex::new(MemoryHistoryState::default()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, MemoryHistoryState>> {
        self.state
            .lock()
            .map_err(|_| Error::new(crate::ErrorKind::Unexpected, "fraud history lock poisoned"))
    }
}

#[async_trait]
impl FraudHistory for MemoryFraudHistory {
    async fn count_since(
        &self,
        key: VelocityKey,
        value: &str,
        stage: FraudStage,
        since: Timestamp,
        exclude: OrderId,
    ) -> Result<u32> {
        let history = self.lock()?;
        let n = history
            .events
            .get(&(key, value.to_owned()))
            .map_or(0, |log| {
                log.iter()
                    .filter(|(at, o, s)| *at >= since && *o != exclude && *s == stage)
                    .count()
            });
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
    }

    async fn record(
        &self,
        key: VelocityKey,
        value: &str,
        stage: FraudStage,
        order: OrderId,
        at: Timestamp,
    ) -> Result<()> {
        let mut history = self.lock()?;
        let log = history.events.entry((key, value.to_owned())).or_default();
        let horizon = at.saturating_sub(self.retention);
        log.retain(|(t, _, _)| *t >= horizon);
        if !log.iter().any(|(_, o, s)| *o == order && *s == stage) {
            log.push((at, order, stage));
        }
        Ok(())
    }

    async fn bind_reference(&self, reference: &str, order: OrderId) -> Result<OrderId> {
        let mut state = self.lock()?;
        Ok(*state
            .references
            .entry(reference.to_owned())
            .or_insert(order))
    }
}

/// [`FraudHistory`] kept in the [`Store`](crate::store::Store)'s records, so every process
/// sharing a database sees the same velocity counts and reference bindings.
///
/// Values (e-mails, IPs, card fingerprints) are stored only as SHA-256 digests in record keys:
/// the history can count them without holding them.
#[derive(Debug, Clone)]
pub struct StoreFraudHistory {
    store: Arc<dyn crate::store::Store>,
    clock: Arc<dyn crate::clock::Clock>,
}

/// Collection of velocity events: key `<kind>:<stage>:<sha256(value)>:<order id>`.
const EVENT_COLLECTION: &str = "fraud.event";
/// Collection of payment-reference bindings: key = the reference, data = the order id.
const REFERENCE_COLLECTION: &str = "fraud.reference";

#[derive(Debug, Serialize, Deserialize)]
struct StoredEvent {
    order: OrderId,
    at: Timestamp,
}

impl StoreFraudHistory {
    /// History in `store`, stamping reference bindings with the wall clock (see
    /// [`StoreFraudHistory::with_clock`]).
    pub fn new(store: Arc<dyn crate::store::Store>) -> Self {
        Self {
            store,
            clock: Arc::new(crate::clock::SystemClock),
        }
    }

    /// Stamps reference bindings with `clock` (give it the Provisioner's clock, so records
    /// written under a paused or manual clock carry that clock's time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn prefix(key: VelocityKey, value: &str, stage: FraudStage) -> String {
        use sha2::Digest as _;
        let kind = match key {
            VelocityKey::Customer => "customer",
            VelocityKey::Email => "email",
            VelocityKey::Ip => "ip",
            VelocityKey::Card => "card",
        };
        let stage = match stage {
            FraudStage::OrderPlaced => "order_placed",
            FraudStage::PaymentArrived => "payment_arrived",
        };
        let digest = hex::encode(sha2::Sha256::digest(value.as_bytes()));
        format!("{kind}:{stage}:{digest}:")
    }
}

#[async_trait]
impl FraudHistory for StoreFraudHistory {
    async fn count_since(
        &self,
        key: VelocityKey,
        value: &str,
        stage: FraudStage,
        since: Timestamp,
        exclude: OrderId,
    ) -> Result<u32> {
        let prefix = Self::prefix(key, value, stage);
        let mut count = 0u32;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .list_records(EVENT_COLLECTION, &prefix, after.as_deref(), 500)
                .await?;
            for record in &page {
                let event: StoredEvent = record.decode()?;
                if event.at >= since && event.order != exclude {
                    count = count.saturating_add(1);
                }
            }
            match page.last() {
                Some(last) if page.len() == 500 => after = Some(last.key.clone()),
                _ => return Ok(count),
            }
        }
    }

    async fn record(
        &self,
        key: VelocityKey,
        value: &str,
        stage: FraudStage,
        order: OrderId,
        at: Timestamp,
    ) -> Result<()> {
        let record_key = format!("{}{order}", Self::prefix(key, value, stage));
        let write = crate::store::RecordWrite::insert(
            EVENT_COLLECTION,
            &record_key,
            &StoredEvent { order, at },
        )?;
        match self
            .store
            .commit(crate::store::Batch::new().put_record(write), at)
            .await
        {
            // Already recorded for this order: idempotent.
            Err(e) if e.kind() == crate::ErrorKind::Conflict => Ok(()),
            other => other.map(drop),
        }
    }

    async fn bind_reference(&self, reference: &str, order: OrderId) -> Result<OrderId> {
        let write = crate::store::RecordWrite::insert(REFERENCE_COLLECTION, reference, &order)?;
        let now = self.clock.now();
        match self
            .store
            .commit(crate::store::Batch::new().put_record(write), now)
            .await
        {
            Ok(_) => Ok(order),
            Err(e) if e.kind() == crate::ErrorKind::Conflict => self
                .store
                .get_record(REFERENCE_COLLECTION, reference)
                .await?
                .ok_or_else(|| {
                    Error::new(
                        crate::ErrorKind::Unexpected,
                        format!("payment reference {reference} is bound but its record vanished"),
                    )
                })?
                .decode(),
            Err(e) => Err(e),
        }
    }
}

/// Rules plus history: what the Provisioner (or a host) calls.
#[derive(Debug, Clone)]
pub struct FraudEngine {
    rules: Arc<FraudRules>,
    history: Arc<dyn FraudHistory>,
    signals: Arc<Mutex<BTreeMap<String, PaymentSignals>>>,
}

/// How many payer-signal entries are kept waiting for their payment's evaluation.
const SIGNALS_CAP: usize = 10_000;

impl FraudEngine {
    /// An engine with `rules` and an in-memory history.
    pub fn new(rules: FraudRules) -> Self {
        let retention = rules.longest_window().max(Duration::from_secs(24 * 3600));
        Self::with_history(rules, Arc::new(MemoryFraudHistory::new(retention)))
    }

    /// An engine with `rules` and the given history.
    pub fn with_history(rules: FraudRules, history: Arc<dyn FraudHistory>) -> Self {
        Self {
            rules: Arc::new(rules),
            history,
            signals: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// The rules.
    pub fn rules(&self) -> &FraudRules {
        &self.rules
    }

    /// Remembers payer details a verifier saw for `reference`, for the payment-arrival
    /// evaluation (card velocity needs the fingerprint).
    pub fn note_signals(&self, reference: &str, signals: PaymentSignals) {
        if let Ok(mut map) = self.signals.lock() {
            if map.len() >= SIGNALS_CAP {
                map.pop_first();
            }
            map.insert(reference.to_owned(), signals);
        }
    }

    /// The payer details noted for `reference`, if any.
    pub fn signals(&self, reference: &str) -> Option<PaymentSignals> {
        self.signals.lock().ok()?.get(reference).cloned()
    }

    /// Evaluates `facts` against the rules and the history, then records the event (for
    /// later velocity counts) unless it was rejected. A payment's reference is bound to its
    /// order on first sight.
    pub async fn evaluate(&self, mut facts: FraudFacts) -> Result<FraudDecision> {
        let stage = facts.stage();
        if let Some(p) = facts.payment.as_mut() {
            if let Some(s) = self.signals(&p.reference) {
                if p.card_fingerprint.is_none() {
                    p.card_fingerprint = s.card_fingerprint;
                }
                if facts.ip.is_none() {
                    facts.ip = s.ip;
                }
                if facts.email.is_none() {
                    facts.email = s.email;
                }
            }
            let owner = self
                .history
                .bind_reference(&p.reference, facts.order_id)
                .await?;
            p.reference_owner = Some(owner);
        }
        let subjects = FraudRules::velocity_subjects(&facts);
        let mut counts = Vec::with_capacity(self.rules.velocity.len());
        for limit in &self.rules.velocity {
            let n = match subjects.iter().find(|(k, _)| *k == limit.key) {
                Some((k, v)) if limit.stage == stage => {
                    self.history
                        .count_since(
                            *k,
                            v,
                            stage,
                            facts.at.saturating_sub(limit.window),
                            facts.order_id,
                        )
                        .await?
                }
                _ => 0,
            };
            counts.push(n);
        }
        let decision = self.rules.evaluate(&facts, &counts);
        if decision.verdict != Verdict::Reject {
            for (k, v) in &subjects {
                self.history
                    .record(*k, v, stage, facts.order_id, facts.at)
                    .await?;
            }
        }
        Ok(decision)
    }
}

/// `Rejected` when a fraud rule rejected `order` (it must never be paid for or provisioned).
pub(crate) fn refuse_if_rejected(order: &crate::order::Order) -> Result<()> {
    match order
        .fraud
        .iter()
        .rev()
        .find(|d| d.verdict == Verdict::Reject)
    {
        Some(d) => Err(Error::new(
            crate::ErrorKind::Rejected,
            format!(
                "order {} was rejected by fraud rules: {}",
                order.id,
                d.summary()
            ),
        )),
        None => Ok(()),
    }
}

// The Provisioner's two evaluation points, kept here so the pipeline only gains call sites.
impl crate::provisioner::Provisioner {
    /// Evaluates a new order; a non-allow decision is stored on it (and emitted).
    pub(crate) async fn fraud_on_order_placed(
        &self,
        order: &mut crate::order::Order,
    ) -> Result<Option<FraudDecision>> {
        let Some(engine) = &self.inner.fraud else {
            return Ok(None);
        };
        let mut unpaid = 1_u32;
        if engine.rules().max_unpaid_orders.is_some() {
            for kind in [
                crate::order::OrderStateKind::Created,
                crate::order::OrderStateKind::AwaitingPayment,
            ] {
                let n = self
                    .inner
                    .store
                    .all_orders_in(Some(kind))
                    .await?
                    .iter()
                    .filter(|o| o.customer.id == order.customer.id && o.id != order.id)
                    .count();
                unpaid = unpaid.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
            }
        }
        let facts = FraudFacts::order_placed(order.id, order.customer.id.clone(), order.created_at)
            .with_email(order.customer.email.clone())
            .with_ip(order.customer.ip)
            .with_unpaid_open_orders(unpaid);
        let decision = engine.evaluate(facts).await?;
        if decision.verdict == Verdict::Allow {
            return Ok(None);
        }
        tracing::warn!(order_id = %order.id, verdict = ?decision.verdict, reasons = %decision.summary(), "fraud rules fired at order placement");
        order.fraud.push(decision.clone());
        self.emit(
            order.id,
            crate::provisioner::Stage::Fraud,
            0,
            decision.to_string(),
        );
        Ok(Some(decision))
    }

    /// Evaluates a settling payment against the order it pays for. A non-allow decision is
    /// stored on `order_next`; a reject also escalates it to needs-attention (the money is in,
    /// a human refunds it) so that no provisioning job is ever queued.
    pub(crate) async fn fraud_on_payment_arrived(
        &self,
        order_next: &mut crate::order::Order,
        payment: &crate::payment::Payment,
    ) -> Result<Option<FraudDecision>> {
        let Some(engine) = &self.inner.fraud else {
            return Ok(None);
        };
        let facts = FraudFacts::payment_arrived(
            order_next.id,
            order_next.customer.id.clone(),
            PaymentFacts::new(
                payment.reference.clone(),
                payment.terms.due,
                payment.confirmed,
            ),
            payment.updated_at,
        )
        .with_email(order_next.customer.email.clone())
        .with_ip(order_next.customer.ip);
        let decision = engine.evaluate(facts).await?;
        if decision.verdict == Verdict::Allow {
            return Ok(None);
        }
        tracing::warn!(order_id = %order_next.id, verdict = ?decision.verdict, reasons = %decision.summary(), "fraud rules fired at payment arrival");
        order_next.fraud.push(decision.clone());
        if decision.verdict == Verdict::Reject && !order_next.state.is_terminal() {
            *order_next = order_next.transition(
                &crate::order::OrderEvent::Escalate {
                    reason: crate::order::AttentionReason::new(
                        crate::order::AttentionCode::Other,
                        format!("payment rejected by fraud rules: {}", decision.summary()),
                    ),
                },
                payment.updated_at,
            )?;
        }
        Ok(Some(decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::{Asset, Currency};
    use proptest::prelude::*;

    fn ngn(kobo: u64) -> Money {
        Money::from_minor(Currency::Ngn, kobo)
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(1_700_000_000 + secs)
    }

    fn placed(order: OrderId, customer: &str, at: Timestamp) -> FraudFacts {
        FraudFacts::order_placed(order, customer, at)
    }

    #[test]
    fn nothing_fires_by_default() {
        let d = FraudRules::default().evaluate(&placed(OrderId::new(), "c", t(0)), &[]);
        assert_eq!(d.verdict, Verdict::Allow);
        assert!(d.reasons.is_empty());
        assert_eq!(d.summary(), "no rule fired");
    }

    #[test]
    fn amount_and_currency_mismatch_reject() {
        let rules = FraudRules::default();
        let o = OrderId::new();
        let pay = |paid| {
            FraudFacts::payment_arrived(o, "c", PaymentFacts::new("r", ngn(100), paid), t(0))
        };
        assert_eq!(rules.evaluate(&pay(ngn(100)), &[]).verdict, Verdict::Allow);
        let d = rules.evaluate(&pay(ngn(99)), &[]);
        assert_eq!(
            (d.verdict, d.reasons[0].rule),
            (Verdict::Reject, FraudRule::AmountMismatch)
        );
        assert_eq!(rules.evaluate(&pay(ngn(101)), &[]).verdict, Verdict::Reject);
        let d = rules.evaluate(&pay(Money::from_minor(Currency::Usd, 100_u64)), &[]);
        assert_eq!(
            (d.verdict, d.reasons[0].rule),
            (Verdict::Reject, FraudRule::CurrencyMismatch)
        );
        // Even a host that sets "allow" gets at least a review.
        let lax = FraudRules::default().with_mismatch(Verdict::Allow);
        assert_eq!(lax.evaluate(&pay(ngn(1)), &[]).verdict, Verdict::Review);
    }

    #[test]
    fn reference_reuse_rejects() {
        let rules = FraudRules::default();
        let (a, b) = (OrderId::new(), OrderId::new());
        let mut p = PaymentFacts::new("ref-1", ngn(5), ngn(5));
        p.reference_owner = Some(a);
        assert_eq!(
            rules
                .evaluate(&FraudFacts::payment_arrived(a, "c", p.clone(), t(0)), &[])
                .verdict,
            Verdict::Allow
        );
        let d = rules.evaluate(&FraudFacts::payment_arrived(b, "c", p, t(0)), &[]);
        assert_eq!(
            (d.verdict, d.reasons[0].rule),
            (Verdict::Reject, FraudRule::ReferenceReuse)
        );
    }

    #[test]
    fn disposable_emails_match_domain_and_subdomains_only() {
        let rules = FraudRules::default()
            .with_disposable_domains(["Mailinator.com", ".yopmail.com"], Verdict::Review);
        assert!(rules.is_disposable("x@mailinator.com"));
        assert!(rules.is_disposable("x@EU.MAILINATOR.COM"));
        assert!(rules.is_disposable("x@yopmail.com."));
        assert!(!rules.is_disposable("x@notmailinator.com"));
        assert!(!rules.is_disposable("mailinator.com"));
        assert!(!rules.is_disposable("x@example.com"));
        let d = rules.evaluate(
            &placed(OrderId::new(), "c", t(0)).with_email(Some("a@mailinator.com".into())),
            &[],
        );
        assert_eq!(
            (d.verdict, d.reasons[0].rule),
            (Verdict::Review, FraudRule::DisposableEmail)
        );
    }

    #[test]
    fn unpaid_orders_limit() {
        let rules = FraudRules::default().with_max_unpaid_orders(3, Verdict::Reject);
        let f = |n| placed(OrderId::new(), "c", t(0)).with_unpaid_open_orders(n);
        assert_eq!(rules.evaluate(&f(3), &[]).verdict, Verdict::Allow);
        let d = rules.evaluate(&f(4), &[]);
        assert_eq!(
            (d.verdict, d.reasons[0].rule),
            (Verdict::Reject, FraudRule::UnpaidOrders)
        );
    }

    #[test]
    fn strictest_verdict_wins_and_all_reasons_are_kept() {
        let rules = FraudRules::default()
            .with_disposable_domains(["yopmail.com"], Verdict::Review)
            .with_max_unpaid_orders(1, Verdict::Reject);
        let f = placed(OrderId::new(), "c", t(0))
            .with_email(Some("a@yopmail.com".into()))
            .with_unpaid_open_orders(2);
        let d = rules.evaluate(&f, &[]);
        assert_eq!(d.verdict, Verdict::Reject);
        assert_eq!(d.reasons.len(), 2);
        assert!(d.to_string().contains("disposable"));
    }

    #[tokio::test]
    async fn velocity_per_customer_email_ip_and_card() {
        velocity_rules_with(FraudEngine::new).await;
    }

    #[tokio::test]
    async fn velocity_per_customer_email_ip_and_card_in_the_store() {
        velocity_rules_with(|rules| {
            FraudEngine::with_history(
                rules,
                Arc::new(StoreFraudHistory::new(Arc::new(
                    crate::sim::store::MemoryStore::new(),
                ))),
            )
        })
        .await;
    }

    #[tokio::test]
    async fn store_history_is_shared_idempotent_and_keeps_no_raw_values() {
        let store = crate::sim::store::MemoryStore::new();
        let (a, b) = (
            StoreFraudHistory::new(Arc::new(store.clone())),
            StoreFraudHistory::new(Arc::new(store.clone())),
        );
        let (o1, o2, o3) = (OrderId::new(), OrderId::new(), OrderId::new());
        let email = "buyer@example.com";
        a.record(VelocityKey::Email, email, FraudStage::OrderPlaced, o1, t(0))
            .await
            .unwrap();
        // The same event twice counts once; another process sees it.
        b.record(VelocityKey::Email, email, FraudStage::OrderPlaced, o1, t(1))
            .await
            .unwrap();
        b.record(
            VelocityKey::Email,
            email,
            FraudStage::OrderPlaced,
            o2,
            t(50),
        )
        .await
        .unwrap();
        let count = |since, exclude| {
            a.count_since(
                VelocityKey::Email,
                email,
                FraudStage::OrderPlaced,
                since,
                exclude,
            )
        };
        assert_eq!(count(t(0), o3).await.unwrap(), 2);
        assert_eq!(
            count(t(0), o2).await.unwrap(),
            1,
            "the asking order is excluded"
        );
        assert_eq!(count(t(10), o3).await.unwrap(), 1, "older events fall out");
        assert_eq!(
            a.count_since(VelocityKey::Ip, email, FraudStage::OrderPlaced, t(0), o3)
                .await
                .unwrap(),
            0,
            "keys are separate"
        );
        assert_eq!(a.bind_reference("ref-9", o1).await.unwrap(), o1);
        assert_eq!(b.bind_reference("ref-9", o2).await.unwrap(), o1);
        // Bindings carry the injected clock's time, not the wall clock's.
        let clock = Arc::new(crate::clock::ManualClock::new(t(7)));
        let c = StoreFraudHistory::new(Arc::new(store.clone())).with_clock(clock);
        assert_eq!(c.bind_reference("ref-10", o3).await.unwrap(), o3);
        let bound = crate::store::Store::get_record(&store, REFERENCE_COLLECTION, "ref-10")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bound.updated_at, t(7));
        let stored = crate::store::Store::list_records(&store, EVENT_COLLECTION, "", None, 0)
            .await
            .unwrap();
        assert_eq!(stored.len(), 2);
        assert!(
            stored
                .iter()
                .all(|r| !r.key.contains(email) && !r.data.contains(email)),
            "values are kept only as digests"
        );
    }

    async fn velocity_rules_with(engine_for: fn(FraudRules) -> FraudEngine) {
        let hour = Duration::from_secs(3600);
        let rules = FraudRules::default()
            .with_velocity(
                VelocityKey::Customer,
                FraudStage::OrderPlaced,
                2,
                hour,
                Verdict::Review,
            )
            .with_velocity(
                VelocityKey::Email,
                FraudStage::OrderPlaced,
                3,
                hour,
                Verdict::Reject,
            )
            .with_velocity(
                VelocityKey::Ip,
                FraudStage::OrderPlaced,
                3,
                hour,
                Verdict::Reject,
            )
            .with_velocity(
                VelocityKey::Card,
                FraudStage::PaymentArrived,
                2,
                hour,
                Verdict::Reject,
            );
        let engine = engine_for(rules);
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let order = |customer: &str, email: &str, at| {
            placed(OrderId::new(), customer, at)
                .with_email(Some(email.into()))
                .with_ip(Some(ip))
        };
        // Customer velocity: the third order in an hour asks for review.
        assert_eq!(
            engine
                .evaluate(order("c1", "a@x.co", t(0)))
                .await
                .unwrap()
                .verdict,
            Verdict::Allow
        );
        assert_eq!(
            engine
                .evaluate(order("c1", "A@X.co", t(10)))
                .await
                .unwrap()
                .verdict,
            Verdict::Allow
        );
        let d = engine.evaluate(order("c1", "a@x.co", t(20))).await.unwrap();
        assert_eq!(
            (d.verdict, d.reasons[0].rule),
            (Verdict::Review, FraudRule::Velocity(VelocityKey::Customer))
        );
        // E-mail (case-insensitive) and IP: the fourth from the same address is rejected.
        let d = engine.evaluate(order("c2", "a@x.co", t(30))).await.unwrap();
        assert_eq!(d.verdict, Verdict::Reject);
        assert!(
            d.reasons
                .iter()
                .any(|r| r.rule == FraudRule::Velocity(VelocityKey::Ip))
        );
        assert!(
            d.reasons
                .iter()
                .any(|r| r.rule == FraudRule::Velocity(VelocityKey::Email))
        );
        // Outside the window, counts start over.
        assert_eq!(
            engine
                .evaluate(order("c1", "z@x.co", t(7200)))
                .await
                .unwrap()
                .verdict,
            Verdict::Allow
        );
        // Card velocity at payment arrival, fed by a verifier's signals.
        for (i, expect) in [
            (0, Verdict::Allow),
            (1, Verdict::Allow),
            (2, Verdict::Reject),
        ] {
            let reference = format!("ref-{i}");
            engine.note_signals(
                &reference,
                PaymentSignals::new(Some("SIG_card".into()), None, None),
            );
            let p = PaymentFacts::new(reference, ngn(5), ngn(5));
            let d = engine
                .evaluate(FraudFacts::payment_arrived(
                    OrderId::new(),
                    format!("k{i}"),
                    p,
                    t(100 + i),
                ))
                .await
                .unwrap();
            assert_eq!(d.verdict, expect, "payment {i}: {d}");
        }
    }

    #[tokio::test]
    async fn the_same_order_evaluated_twice_counts_once_and_references_bind_once() {
        let rules = FraudRules::default().with_velocity(
            VelocityKey::Customer,
            FraudStage::OrderPlaced,
            1,
            Duration::from_secs(60),
            Verdict::Reject,
        );
        let engine = FraudEngine::new(rules);
        let once = OrderId::new();
        for _ in 0..3 {
            assert_eq!(
                engine
                    .evaluate(placed(once, "c", t(0)))
                    .await
                    .unwrap()
                    .verdict,
                Verdict::Allow
            );
        }
        let (a, b) = (OrderId::new(), OrderId::new());
        let p = || PaymentFacts::new("shared-ref", ngn(5), ngn(5));
        assert_eq!(
            engine
                .evaluate(FraudFacts::payment_arrived(a, "x", p(), t(0)))
                .await
                .unwrap()
                .verdict,
            Verdict::Allow
        );
        assert_eq!(
            engine
                .evaluate(FraudFacts::payment_arrived(a, "x", p(), t(1)))
                .await
                .unwrap()
                .verdict,
            Verdict::Allow
        );
        let d = engine
            .evaluate(FraudFacts::payment_arrived(b, "y", p(), t(2)))
            .await
            .unwrap();
        assert_eq!(d.reasons[0].rule, FraudRule::ReferenceReuse);
    }

    fn arb_money() -> impl Strategy<Value = Money> {
        prop_oneof![
            (0u64..2_000).prop_map(|u| Money::from_minor(Currency::Ngn, u)),
            (0u64..2_000).prop_map(|u| Money::from_minor(Currency::Usd, u)),
            any::<u64>().prop_map(|u| Money::from_minor(Asset::Btc, u)),
            any::<u128>().prop_map(|u| Money::from_minor(Asset::Eth, u)),
        ]
    }

    fn arb_verdict() -> impl Strategy<Value = Verdict> {
        prop_oneof![
            Just(Verdict::Allow),
            Just(Verdict::Review),
            Just(Verdict::Reject)
        ]
    }

    fn arb_rules() -> impl Strategy<Value = FraudRules> {
        (
            proptest::collection::vec(
                (
                    0u8..4,
                    any::<bool>(),
                    any::<u32>(),
                    any::<u64>(),
                    arb_verdict(),
                ),
                0..6,
            ),
            arb_verdict(),
            arb_verdict(),
            proptest::collection::vec("[a-z.]{0,12}", 0..4),
            arb_verdict(),
            proptest::option::of(any::<u32>()),
            arb_verdict(),
        )
            .prop_map(
                |(vel, mismatch, reuse, domains, disposable, max_unpaid, unpaid)| FraudRules {
                    velocity: vel
                        .into_iter()
                        .map(|(k, paid, max, secs, verdict)| VelocityLimit {
                            key: [
                                VelocityKey::Customer,
                                VelocityKey::Email,
                                VelocityKey::Ip,
                                VelocityKey::Card,
                            ][usize::from(k)],
                            stage: if paid {
                                FraudStage::PaymentArrived
                            } else {
                                FraudStage::OrderPlaced
                            },
                            max,
                            window: Duration::from_secs(secs),
                            verdict,
                        })
                        .collect(),
                    mismatch,
                    reference_reuse: reuse,
                    disposable_domains: domains,
                    disposable,
                    max_unpaid_orders: max_unpaid,
                    unpaid,
                },
            )
    }

    proptest! {
        /// Whatever the rules, facts and counts, evaluation never panics, the verdict is the
        /// strictest reason's, and a payment whose amount or asset differs from the expected
        /// one is never allowed.
        #[test]
        fn never_panics_and_never_allows_a_mismatch(
            rules in arb_rules(),
            expected in arb_money(),
            paid in arb_money(),
            with_payment in any::<bool>(),
            email in proptest::option::of("\\PC{0,30}"),
            unpaid in any::<u32>(),
            counts in proptest::collection::vec(any::<u32>(), 0..8),
            card in proptest::option::of("\\PC{0,20}"),
            same_owner in any::<bool>(),
        ) {
            let order = OrderId::new();
            let mut facts = FraudFacts::order_placed(order, "c", t(0))
                .with_email(email)
                .with_unpaid_open_orders(unpaid);
            if with_payment {
                let mut p = PaymentFacts::new("r", expected, paid).with_card_fingerprint(card);
                p.reference_owner = Some(if same_owner { order } else { OrderId::new() });
                facts.payment = Some(p);
            }
            let d = rules.evaluate(&facts, &counts);
            prop_assert_eq!(d.verdict, d.reasons.iter().map(|r| r.verdict).max().unwrap_or(Verdict::Allow));
            prop_assert!(d.reasons.iter().all(|r| r.verdict > Verdict::Allow));
            if with_payment && expected != paid {
                prop_assert!(d.verdict >= Verdict::Review, "mismatch allowed: {:?}", d);
            }
            if with_payment && !same_owner && rules.reference_reuse == Verdict::Reject {
                prop_assert_eq!(d.verdict, Verdict::Reject);
            }
        }
    }
}
