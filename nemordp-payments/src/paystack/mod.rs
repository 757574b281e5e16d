//! Paystack (`paystack` feature): card, bank and USSD checkouts in NGN, GHS, KES, ZAR or USD.
//!
//! Build one with [`PaystackBuilder`] (`PAYSTACK_SECRET_KEY`, optional `PAYSTACK_API_URL`,
//! `PAYSTACK_CURRENCY`, `PAYSTACK_CALLBACK_URL`). What it does, and the Paystack facts it
//! relies on:
//!
//! - Open: `POST /transaction/initialize` with the amount in subunits, the currency, the
//!   customer's e-mail, **our payment id as the reference** (so a second initialize is
//!   refused as "Duplicate Transaction Reference" → `AlreadyExists`), the callback URL, and
//!   metadata holding the order id, payment id and expected amount and currency. The
//!   `authorization_url` becomes the checkout URL. Initialize is retried only when Paystack
//!   provably did not process it; a lost answer is `Ambiguous`.
//! - Check: `GET /transaction/verify/{reference}`. HTTP 200 is not "paid": money counts as
//!   confirmed only when `status` is `success` **and** the amount, the currency and the
//!   reference are exactly the expected ones. A success for another amount is observed as
//!   seen-but-unconfirmed (it never settles), another currency as nothing; both are filed
//!   once as [`PaymentMismatch`]es for review: a record in the Provisioner's store (or the
//!   one given to `with_review_store`), [`Paystack::mismatches`], a `warn` log and the
//!   `nemordp_paystack_mismatches_total` counter. [`Paystack::verify_payment`] gives the same
//!   verdict as a typed error.
//! - Webhooks: optional source-IP allow-list, then `x-paystack-signature` (HMAC-SHA512 of the
//!   raw body keyed with the secret key) compared in constant time **before** the body is
//!   parsed; events become typed [`PaystackEvent`]s; unknown events are accepted and ignored.
//!   `charge.success`, `refund.processed`, `charge.dispute.create` and
//!   `charge.dispute.resolve` move money, so each is confirmed with a verify call before it
//!   becomes an observation, a reversal (a full refund, a dispute opened or lost) or a
//!   reinstatement (a dispute declined with nothing refunded while verify still says
//!   `success`); a partial refund is filed for review instead of reversing. The dedupe key is
//!   `<event>:<object id>`.
//! - Errors: `{status: false, message, code}` bodies (and HTTP 200 with `status: false`) map
//!   onto core error kinds; 429/5xx/timeouts are retried for idempotent calls only.

mod builder;
mod client;
pub mod model;
pub mod subscription;
pub mod webhook;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
};

use async_trait::async_trait;
use secrecy::ExposeSecret;
use serde_json::json;

use nemordp_core::{
    Asset, Currency, Error, ErrorKind, Money, PaymentId, Result,
    payment::{
        Observation, OpenedPayment, Payment, PaymentRequest, PaymentVerifier, VerifiedEvent,
        VerifiedEventKind, VerifierContext, WebhookRequest,
    },
};

pub use builder::{DEFAULT_BASE_URL, PaystackBuilder, SUPPORTED_CURRENCIES};
use client::{Client, Retry};
pub use model::{Authorization, CustomerRef, Transaction};
pub use subscription::{
    PaystackSubscriptions, SubscriptionOutcome, SubscriptionRecord, SubscriptionState,
};
pub use webhook::{PAYSTACK_SOURCE_IPS, PaystackEvent, SIGNATURE_HEADER};

/// Backend name in errors, metrics and registries.
pub const NAME: &str = "paystack";

/// Metadata keys written at initialize and read back from verify.
pub mod metadata_keys {
    /// The order id.
    pub const ORDER_ID: &str = "order_id";
    /// Our payment id (also the reference).
    pub const PAYMENT_ID: &str = "nemordp_payment_id";
    /// The expected amount in subunits.
    pub const AMOUNT: &str = "nemordp_amount";
    /// The expected currency code.
    pub const CURRENCY: &str = "nemordp_currency";
}

/// How many opened payments are remembered for idempotent re-opens in this process.
const OPENED_CACHE_CAP: usize = 10_000;

/// Store collection of mismatches kept for review: the Provisioner's store once the verifier
/// is registered with it, or the one given to `PaystackBuilder::with_review_store`.
pub const MISMATCH_COLLECTION: &str = "paystack.mismatch";

/// How many mismatches are kept in memory for review.
const MISMATCH_LOG_CAP: usize = 1000;

/// How many filed mismatch keys are remembered to skip re-filing (forgetting one only costs
/// one more store write, answered `Conflict`).
const FILED_CAP: usize = 10_000;

/// The in-memory side of the review queue: the newest mismatches, and the keys already filed.
#[derive(Default)]
struct ReviewLog {
    recent: VecDeque<PaymentMismatch>,
    filed: HashSet<String>,
}

/// What did not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MismatchKind {
    /// A success for another amount than expected.
    Amount,
    /// A success in another currency.
    Currency,
    /// The transaction carries another reference than the one asked about.
    Reference,
    /// A success with no expectation to compare with (no nemordp metadata).
    Unexpected,
    /// A refund of less than the transaction's amount: the payment stands (no suspension),
    /// an operator decides.
    PartialRefund,
}

impl MismatchKind {
    /// Snake-case name (as stored).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Amount => "amount",
            Self::Currency => "currency",
            Self::Reference => "reference",
            Self::Unexpected => "unexpected",
            Self::PartialRefund => "partial_refund",
        }
    }
}

/// A successful Paystack transaction that did not match what the order expects. Also the
/// source of the `Rejected` error [`Paystack::verify_payment`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentMismatch {
    /// The reference asked about.
    pub reference: String,
    /// What did not match.
    pub kind: MismatchKind,
    /// What was expected (`"<subunits> <CUR>"` or the reference).
    pub expected: String,
    /// What Paystack reported.
    pub received: String,
    /// Paystack's transaction id.
    pub transaction_id: Option<u64>,
    /// Paystack's refund id, for partial refunds (several may follow one charge).
    pub refund_id: Option<u64>,
}

impl PaymentMismatch {
    /// The review record key: `<reference>:<transaction id>:<kind>[:<refund id>]`, the same
    /// for every sighting of the same mismatch.
    pub fn review_key(&self) -> String {
        let base = format!(
            "{}:{}:{}",
            self.reference,
            self.transaction_id.unwrap_or(0),
            self.kind.as_str()
        );
        match self.refund_id {
            Some(id) => format!("{base}:{id}"),
            None => base,
        }
    }
}

impl fmt::Display for PaymentMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "paystack transaction for {} does not match ({:?}): expected {}, received {}",
            self.reference, self.kind, self.expected, self.received
        )
    }
}

impl std::error::Error for PaymentMismatch {}

/// A charge that verified: status success and everything matching.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifiedCharge {
    /// The amount paid (equal to the amount due).
    pub amount: Money,
    /// The transaction as `verify` returned it (card fingerprint, payer IP, customer, …).
    pub transaction: Transaction,
}

/// What one verify result means for one expectation.
struct Assessment {
    observation: Observation,
    mismatch: Option<PaymentMismatch>,
}

/// The Paystack payment verifier. Cheap to share behind an `Arc`.
pub struct Paystack {
    client: Client,
    asset: Asset,
    currency: Currency,
    callback_url: Option<String>,
    channels: Vec<String>,
    source_ips: Option<(Vec<IpAddr>, String)>,
    opened: Mutex<HashMap<PaymentId, (Money, OpenedPayment)>>,
    review: Mutex<ReviewLog>,
    fraud: Option<nemordp_core::fraud::FraudEngine>,
    /// Set by `with_review_store`, else by the Provisioner (`attach`); first one wins.
    review_store: OnceLock<Arc<dyn nemordp_core::Store>>,
    clock: OnceLock<Arc<dyn nemordp_core::Clock>>,
}

impl fmt::Debug for Paystack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paystack")
            .field("asset", &self.asset)
            .field("secret_key", &"[REDACTED]")
            .field("callback_url", &self.callback_url)
            .field("source_ips", &self.source_ips)
            .finish_non_exhaustive()
    }
}

/// A Paystack reference may only hold `-`, `.`, `=` and ASCII alphanumerics.
fn valid_reference(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= 100
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'='))
}

/// Statuses after which the transaction may still succeed.
fn still_pending(status: &str) -> bool {
    !matches!(status, "success" | "failed" | "abandoned" | "reversed")
}

impl Paystack {
    pub(crate) fn from_parts(
        client: Client,
        asset: Asset,
        callback_url: Option<String>,
        channels: Vec<String>,
        source_ips: Option<(Vec<IpAddr>, String)>,
        fraud: Option<nemordp_core::fraud::FraudEngine>,
    ) -> Self {
        let currency = asset.fiat().unwrap_or(Currency::Ngn);
        Self {
            client,
            asset,
            currency,
            callback_url,
            channels,
            source_ips,
            opened: Mutex::new(HashMap::new()),
            review: Mutex::new(ReviewLog::default()),
            fraud,
            review_store: OnceLock::new(),
            clock: OnceLock::new(),
        }
    }

    /// [`PaystackBuilder::from_env`]`.build()`.
    pub fn from_env() -> Result<Self> {
        PaystackBuilder::from_env().build()
    }

    /// `GET /transaction/verify/{reference}`: the transaction as Paystack has it. An unknown
    /// (or impossible) reference is `NotFound`.
    pub async fn verify(&self, reference: &str) -> Result<Transaction> {
        if !valid_reference(reference) {
            return Err(
                Error::not_found(format!("{reference:?} cannot be a paystack reference"))
                    .with_backend(NAME)
                    .with_operation("verify"),
            );
        }
        let tx: Transaction = self
            .client
            .get("verify", &format!("/transaction/verify/{reference}"), &[])
            .await?;
        // Card fingerprint, payer IP and e-mail feed the fraud rules at payment arrival.
        if let Some(engine) = &self.fraud
            && tx.reference == reference
            && tx.status == "success"
        {
            engine.note_signals(
                reference,
                nemordp_core::fraud::PaymentSignals::new(
                    tx.authorization.as_ref().and_then(|a| a.signature.clone()),
                    tx.ip_address.as_deref().and_then(|ip| ip.parse().ok()),
                    tx.customer.as_ref().and_then(|c| c.email.clone()),
                ),
            );
        }
        Ok(tx)
    }

    /// Verifies `payment` and returns the charge only when Paystack says `success` and the
    /// amount, currency and reference all match. A mismatch is recorded for review and
    /// returned as `Rejected` with a [`PaymentMismatch`] source; any other status is
    /// `Rejected` naming it.
    pub async fn verify_payment(&self, payment: &Payment) -> Result<VerifiedCharge> {
        let tx = self.verify(&payment.reference).await?;
        let a = self.assess(&tx, &payment.reference, Some(payment.terms.due))?;
        let rejected = |m: String| {
            Error::new(ErrorKind::Rejected, m)
                .with_backend(NAME)
                .with_operation("verify_payment")
        };
        if let Some(m) = a.mismatch {
            self.record(m.clone()).await?;
            return Err(rejected(m.to_string()).with_source(m));
        }
        if a.observation.confirmed.is_zero() {
            return Err(rejected(format!(
                "transaction is {:?}, not success",
                tx.status
            )));
        }
        Ok(VerifiedCharge {
            amount: a.observation.confirmed,
            transaction: tx,
        })
    }

    /// The mismatches this process saw (each once, newest last, at most 1000). The durable
    /// review queue is the store's [`MISMATCH_COLLECTION`] (see [`Paystack::review_is_durable`]).
    pub fn mismatches(&self) -> Vec<PaymentMismatch> {
        self.review
            .lock()
            .map(|m| m.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether mismatches are filed in a store (given with `with_review_store`, or the
    /// Provisioner's once this verifier is registered with one). When false they are only
    /// logged, counted and kept in memory: a host running the verifier on its own should give
    /// it a store.
    pub fn review_is_durable(&self) -> bool {
        self.review_store.get().is_some()
    }

    fn now(&self) -> nemordp_core::Timestamp {
        match self.clock.get() {
            Some(clock) => clock.now(),
            None => nemordp_core::Clock::now(&nemordp_core::SystemClock),
        }
    }

    /// Whether `ip` may deliver webhooks (always true without an allow-list).
    pub fn source_ip_allowed(&self, ip: IpAddr) -> bool {
        self.source_ips
            .as_ref()
            .is_none_or(|(ips, _)| ips.contains(&ip))
    }

    /// Files `m` for review once: durably in the review store when there is one (an entry
    /// already on file, from another process or before a restart, is not written twice), in
    /// the in-memory log, a `warn` log and the `nemordp_paystack_mismatches_total` counter.
    /// Every `check` re-verifies, so the same mismatch is seen again and again: only the first
    /// sighting in a process does anything.
    async fn record(&self, m: PaymentMismatch) -> Result<()> {
        let key = m.review_key();
        if self.review.lock().is_ok_and(|r| r.filed.contains(&key)) {
            return Ok(());
        }
        if let Some(store) = self.review_store.get() {
            let write = nemordp_core::RecordWrite::insert(
                MISMATCH_COLLECTION,
                &key,
                &serde_json::json!({
                    "reference": m.reference,
                    "kind": m.kind.as_str(),
                    "expected": m.expected,
                    "received": m.received,
                    "transaction_id": m.transaction_id,
                    "refund_id": m.refund_id,
                }),
            )?;
            match store
                .commit(
                    nemordp_core::store::Batch::new().put_record(write),
                    self.now(),
                )
                .await
            {
                // Already on file (another process, or before a restart).
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                other => {
                    other?;
                }
            }
        }
        let first = self.review.lock().is_ok_and(|mut r| {
            if r.filed.len() >= FILED_CAP {
                r.filed.clear();
            }
            if !r.filed.insert(key) {
                return false;
            }
            if r.recent.len() >= MISMATCH_LOG_CAP {
                r.recent.pop_front();
            }
            r.recent.push_back(m.clone());
            true
        });
        if first {
            tracing::warn!(
                backend = NAME,
                reference = %m.reference,
                kind = ?m.kind,
                expected = %m.expected,
                received = %m.received,
                durable = self.review_is_durable(),
                "paystack payment does not match the order; recorded for review"
            );
            metrics::counter!("nemordp_paystack_mismatches_total").increment(1);
        }
        Ok(())
    }

    /// Judges a verify result against what `reference` should have paid.
    fn assess(
        &self,
        tx: &Transaction,
        reference: &str,
        expected: Option<Money>,
    ) -> Result<Assessment> {
        let zero = Money::zero(self.asset);
        if let Some(e) = expected
            && e.asset() != self.asset
        {
            return Err(Error::invalid_input(format!(
                "payment is due in {}, this verifier takes {}",
                e.asset(),
                self.asset
            ))
            .with_backend(NAME));
        }
        let nothing = |mismatch| Assessment {
            observation: Observation::new(reference, zero, zero),
            mismatch,
        };
        let mismatch = |kind, expected: String, received: String| PaymentMismatch {
            reference: reference.to_owned(),
            kind,
            expected,
            received,
            transaction_id: tx.id,
            refund_id: None,
        };
        if tx.reference != reference {
            return Ok(nothing(Some(mismatch(
                MismatchKind::Reference,
                reference.to_owned(),
                tx.reference.clone(),
            ))));
        }
        // Only a success is money; a reversed success is money returned.
        if tx.status != "success" {
            return Ok(nothing(None));
        }
        let currency_ok = tx
            .currency
            .parse::<Currency>()
            .is_ok_and(|c| c == self.currency);
        let expected_text = |m: Option<Money>| match m.and_then(|m| m.minor_u64()) {
            Some(u) => format!("{u} {}", self.currency),
            None => "nothing".to_owned(),
        };
        let received = format!(
            "{} {}",
            tx.amount.map_or_else(|| "?".to_owned(), |a| a.to_string()),
            tx.currency
        );
        if !currency_ok {
            return Ok(nothing(Some(mismatch(
                MismatchKind::Currency,
                expected_text(expected),
                received,
            ))));
        }
        let Some(units) = tx.amount else {
            return Ok(nothing(Some(mismatch(
                MismatchKind::Amount,
                expected_text(expected),
                received,
            ))));
        };
        let paid = Money::from_minor(self.asset, units);
        let kind = match expected {
            Some(e) if e == paid => None,
            Some(_) => Some(MismatchKind::Amount),
            None => Some(MismatchKind::Unexpected),
        };
        Ok(match kind {
            None => Assessment {
                observation: Observation::new(reference, paid, paid),
                mismatch: None,
            },
            // Seen, never confirmed: the invoice cannot settle on it.
            Some(kind) => Assessment {
                observation: Observation::new(reference, paid, zero),
                mismatch: Some(mismatch(kind, expected_text(expected), received)),
            },
        })
    }

    /// The amount this transaction should have paid, from the metadata we wrote at initialize.
    fn expected_from_metadata(&self, tx: &Transaction) -> Option<Money> {
        let currency_ok = tx
            .metadata_str(metadata_keys::CURRENCY)
            .is_some_and(|c| c == self.currency.code());
        let ours = tx.metadata_str(metadata_keys::PAYMENT_ID) == Some(tx.reference.as_str());
        let units = tx.metadata_u64(metadata_keys::AMOUNT)?;
        (currency_ok && ours).then(|| Money::from_minor(self.asset, units))
    }

    fn check_source(&self, headers: &http::HeaderMap) -> Result<()> {
        let Some((ips, header)) = &self.source_ips else {
            return Ok(());
        };
        let denied = |m: String| {
            Error::new(ErrorKind::PermissionDenied, m)
                .with_backend(NAME)
                .with_operation("parse_webhook")
        };
        // The last hop is what the host's own proxy saw.
        let ip = headers
            .get(header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| {
                denied(format!(
                    "webhook without a readable {header} source address"
                ))
            })?;
        if ips.contains(&ip) {
            Ok(())
        } else {
            Err(denied(format!(
                "webhook from {ip}, which is not on the allow-list"
            )))
        }
    }

    /// What a processed refund of `tx` means: a reversal when it returns the whole amount
    /// (or Paystack already marks the transaction `reversed`, or the amount or currency is
    /// unreadable: money may be gone), `None` for a partial refund, which is filed for review
    /// instead of suspending the machine.
    async fn assess_refund(
        &self,
        tx: Transaction,
        refund: &model::Refund,
    ) -> Result<Option<VerifiedEventKind>> {
        let same_currency = refund
            .currency
            .as_deref()
            .is_none_or(|c| c.trim().eq_ignore_ascii_case(tx.currency.trim()));
        match (refund.amount, tx.amount) {
            (Some(refunded), Some(charged))
                if tx.status != "reversed" && same_currency && refunded < charged =>
            {
                tracing::warn!(
                    backend = NAME,
                    reference = %tx.reference,
                    refunded,
                    charged,
                    "partial paystack refund: the payment stands; recorded for review"
                );
                self.record(PaymentMismatch {
                    reference: tx.reference.clone(),
                    kind: MismatchKind::PartialRefund,
                    expected: format!("{charged} {}", tx.currency),
                    received: format!("{refunded} {} refunded", tx.currency),
                    transaction_id: tx.id,
                    refund_id: refund.id,
                })
                .await?;
                Ok(None)
            }
            _ => Ok(Some(VerifiedEventKind::Reversed {
                reference: tx.reference,
                reason: "refund processed".to_owned(),
            })),
        }
    }

    /// Verifies the transaction behind a reversal-type event; the verify proves the event is
    /// about a real transaction of ours, not just a correctly signed body.
    async fn confirm_exists(
        &self,
        reference: Option<&str>,
        event: &str,
    ) -> Result<Option<Transaction>> {
        let Some(reference) = reference.filter(|r| !r.is_empty()) else {
            return Err(
                Error::invalid_input(format!("{event} names no transaction reference"))
                    .with_backend(NAME)
                    .with_operation("parse_webhook"),
            );
        };
        match self.verify(reference).await {
            Ok(tx) if tx.reference == reference => Ok(Some(tx)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl PaymentVerifier for Paystack {
    fn name(&self) -> &'static str {
        NAME
    }

    fn asset(&self) -> Asset {
        self.asset
    }

    /// Files mismatches in the Provisioner's store, stamped with its clock, unless
    /// `with_review_store` / `with_clock` chose others.
    fn attach(&self, context: &VerifierContext) {
        let _ = self.review_store.set(context.store.clone());
        let _ = self.clock.set(context.clock.clone());
    }

    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        let fail = |e: Error| e.with_backend(NAME).with_operation("open");
        if req.amount.asset() != self.asset {
            return Err(fail(Error::invalid_input(format!(
                "amount {} is not in {}",
                req.amount, self.asset
            ))));
        }
        let units = req.amount.minor_u64().filter(|u| *u > 0).ok_or_else(|| {
            fail(Error::invalid_input(format!(
                "amount {} is zero or too large",
                req.amount
            )))
        })?;
        let email = req
            .email
            .as_deref()
            .map(str::trim)
            .filter(|e| {
                e.len() <= 254
                    && e.split_once('@')
                        .is_some_and(|(u, d)| !u.is_empty() && d.contains('.'))
            })
            .ok_or_else(|| {
                fail(Error::invalid_input(
                    "paystack needs the customer's e-mail address",
                ))
            })?;
        if let Some((due, opened)) = self
            .opened
            .lock()
            .ok()
            .and_then(|m| m.get(&req.payment_id).cloned())
        {
            return if due == req.amount {
                Ok(opened)
            } else {
                Err(fail(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("payment {} is already open for {due}", req.payment_id),
                )))
            };
        }
        let reference = req.payment_id.to_string();
        let body = model::InitializeRequest {
            email,
            amount: units,
            currency: self.currency.code(),
            reference: &reference,
            callback_url: self.callback_url.as_deref(),
            channels: (!self.channels.is_empty()).then_some(self.channels.as_slice()),
            metadata: json!({
                metadata_keys::ORDER_ID: req.order_id.to_string(),
                metadata_keys::PAYMENT_ID: reference,
                metadata_keys::AMOUNT: units,
                metadata_keys::CURRENCY: self.currency.code(),
            }),
        };
        let init: model::Initialized = self
            .client
            .post(
                "initialize",
                "/transaction/initialize",
                &body,
                Retry::IfNotProcessed,
            )
            .await?;
        if !init.reference.is_empty() && init.reference != reference {
            return Err(fail(Error::new(
                ErrorKind::Unexpected,
                format!("initialize answered for reference {:?}", init.reference),
            )));
        }
        if !init.authorization_url.starts_with("https://")
            && !init.authorization_url.starts_with("http://")
        {
            return Err(fail(Error::new(
                ErrorKind::Unexpected,
                "initialize returned no usable authorization url",
            )));
        }
        let opened = OpenedPayment::new(reference).with_checkout_url(init.authorization_url);
        if let Ok(mut m) = self.opened.lock() {
            // Bounded: forgetting only turns a repeated open into Paystack's AlreadyExists.
            if m.len() >= OPENED_CACHE_CAP {
                m.clear();
            }
            m.insert(req.payment_id, (req.amount, opened.clone()));
        }
        Ok(opened)
    }

    async fn check(&self, payment: &Payment) -> Result<Observation> {
        let tx = self.verify(&payment.reference).await?;
        let a = self.assess(&tx, &payment.reference, Some(payment.terms.due))?;
        if let Some(m) = a.mismatch {
            self.record(m).await?;
        }
        Ok(a.observation)
    }

    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.check_source(request.headers)?;
        let signature = request.headers.get(SIGNATURE_HEADER).ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthenticated,
                "webhook without x-paystack-signature",
            )
            .with_backend(NAME)
            .with_operation("parse_webhook")
        })?;
        webhook::verify_signature(
            self.client.key().expose_secret().as_bytes(),
            request.body,
            signature.as_bytes(),
        )?;
        let parsed = webhook::parse_event(request.body)?;
        let ignored = || VerifiedEventKind::Ignored {
            event_type: parsed.event.clone(),
        };
        let kind = match &parsed.payload {
            PaystackEvent::ChargeSuccess(claimed) => {
                let tx = match self.verify(&claimed.reference).await {
                    Ok(tx) => tx,
                    Err(e) if e.kind() == ErrorKind::NotFound => {
                        tracing::warn!(
                            backend = NAME,
                            "signed charge.success for a reference paystack does not know"
                        );
                        return Ok(vec![VerifiedEvent::new(parsed.dedupe_key, ignored())]);
                    }
                    Err(e) => return Err(e),
                };
                if still_pending(&tx.status) {
                    // Make Paystack redeliver rather than record "nothing" under this key.
                    return Err(Error::unavailable(format!(
                        "charge.success but verify still says {:?}; try again",
                        tx.status
                    ))
                    .with_backend(NAME)
                    .with_operation("parse_webhook"));
                }
                let expected = self.expected_from_metadata(&tx);
                let a = self.assess(&tx, &claimed.reference, expected)?;
                if let Some(m) = a.mismatch {
                    self.record(m).await?;
                }
                VerifiedEventKind::Observed(a.observation)
            }
            PaystackEvent::Refund(webhook::RefundStage::Processed, refund) => {
                match self
                    .confirm_exists(refund.transaction_reference.as_deref(), &parsed.event)
                    .await?
                {
                    Some(tx) => self
                        .assess_refund(tx, refund)
                        .await?
                        .unwrap_or_else(ignored),
                    None => ignored(),
                }
            }
            PaystackEvent::Dispute(webhook::DisputeStage::Created, dispute) => {
                let reference = dispute.transaction.as_ref().map(|t| t.reference.as_str());
                match self.confirm_exists(reference, &parsed.event).await? {
                    Some(tx) => VerifiedEventKind::Reversed {
                        reference: tx.reference,
                        reason: format!(
                            "dispute opened ({})",
                            dispute.status.as_deref().unwrap_or("no status")
                        ),
                    },
                    None => ignored(),
                }
            }
            PaystackEvent::Dispute(webhook::DisputeStage::Resolved, dispute) => {
                let reference = dispute.transaction.as_ref().map(|t| t.reference.as_str());
                let resolution = dispute
                    .resolution
                    .as_deref()
                    .map(str::trim)
                    .filter(|r| !r.is_empty());
                match (
                    resolution,
                    self.confirm_exists(reference, &parsed.event).await?,
                ) {
                    (_, None) => ignored(),
                    (None, Some(tx)) => {
                        // Nothing to act on: the reversal stays open for an operator (or a
                        // later delivery that says how it ended).
                        tracing::warn!(
                            backend = NAME,
                            reference = %tx.reference,
                            "charge.dispute.resolve without a resolution; left as it is"
                        );
                        ignored()
                    }
                    // Won, and verify agrees the money is still ours.
                    (Some(r), Some(tx)) if dispute.merchant_won() && tx.status == "success" => {
                        VerifiedEventKind::Reinstated {
                            reference: tx.reference,
                            reason: format!("dispute resolved ({r}): the payment stands"),
                        }
                    }
                    (Some(r), Some(tx)) if dispute.merchant_won() => VerifiedEventKind::Reversed {
                        reason: format!(
                            "dispute resolved ({r}) but paystack reports the transaction {:?}",
                            tx.status
                        ),
                        reference: tx.reference,
                    },
                    (Some(r), Some(tx)) => VerifiedEventKind::Reversed {
                        reference: tx.reference,
                        reason: format!("dispute lost ({r}): the customer is refunded"),
                    },
                }
            }
            _ => ignored(),
        };
        Ok(vec![VerifiedEvent::new(parsed.dedupe_key, kind)])
    }
}
