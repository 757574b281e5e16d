//! Payment requests (invoices), their state machine modelled on BTCPay Server's invoice, and the
//! [`PaymentVerifier`] trait that payment backends implement.
//!
//! Status: `new → processing → settled`, `new → expired`, `processing → invalid`; exceptions
//! `paid_partial`, `paid_over`, `paid_late`, `marked`. Amounts are cumulative observations
//! (everything seen, everything confirmed) so replaying an observation is harmless.

use std::fmt;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{Error, Result},
    ids::{OrderId, PaymentId},
    money::{Asset, Money, Rate},
};

/// Main invoice status (BTCPay `InvoiceStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvoiceStatus {
    /// Open; nothing (or not enough) received yet.
    New,
    /// Enough received, waiting for confirmations.
    Processing,
    /// Enough confirmed; final.
    Settled,
    /// Expired before enough was received.
    Expired,
    /// Received but never confirmed within the monitoring window, or marked invalid; final.
    Invalid,
}

impl InvoiceStatus {
    /// Settled and Invalid are final.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Settled | Self::Invalid)
    }

    /// Snake-case name (as stored).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Processing => "processing",
            Self::Settled => "settled",
            Self::Expired => "expired",
            Self::Invalid => "invalid",
        }
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Additional status (BTCPay `InvoiceAdditionalStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvoiceException {
    /// Something arrived, but less than due.
    PaidPartial,
    /// More than due arrived.
    PaidOver,
    /// Enough arrived after expiry.
    PaidLate,
    /// An operator set the status by hand.
    Marked,
}

/// Status plus exception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InvoiceState {
    /// Main status.
    pub status: InvoiceStatus,
    /// Exception flag, if any.
    pub exception: Option<InvoiceException>,
}

impl InvoiceState {
    /// A fresh invoice.
    pub const NEW: Self = Self {
        status: InvoiceStatus::New,
        exception: None,
    };
}

/// What an invoice asks for, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceTerms {
    /// The amount due, in the asset to be paid.
    pub due: Money,
    /// Accepted shortfall in percent (0–100) for exchange withdrawal fees; default 0.
    pub tolerance_percent: Decimal,
}

impl InvoiceTerms {
    /// The least amount that counts as paid.
    pub fn minimum(&self) -> Result<Money> {
        self.due.less_percent(self.tolerance_percent)
    }
}

/// Something that happens to an invoice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InvoiceEvent {
    /// Cumulative totals observed for this invoice (idempotent: the same totals twice change
    /// nothing). `confirmed` must not exceed `seen`.
    Observed {
        /// Everything received, confirmed or not.
        seen: Money,
        /// Everything received that meets the confirmation policy.
        confirmed: Money,
    },
    /// The invoice's expiry passed.
    Expire,
    /// The monitoring window after expiry ended.
    MonitoringOver,
    /// An operator declares the invoice settled.
    MarkSettled,
    /// An operator declares the invoice invalid.
    MarkInvalid,
}

impl InvoiceState {
    /// The transition table. Returns the next state, or an `InvalidInput` error (wrong asset,
    /// `confirmed > seen`, event not allowed) with `self` unchanged.
    pub fn apply(&self, terms: &InvoiceTerms, event: &InvoiceEvent) -> Result<InvoiceState> {
        use InvoiceException as X;
        use InvoiceStatus as S;
        let illegal = || {
            Error::invalid_input(format!(
                "invoice in status {} cannot take event {event:?}",
                self.status
            ))
        };
        let state = |status, exception| InvoiceState { status, exception };
        match event {
            InvoiceEvent::Observed { seen, confirmed } => {
                if confirmed.try_cmp(seen)?.is_gt() {
                    return Err(Error::invalid_input(format!(
                        "confirmed {confirmed} exceeds seen {seen}"
                    )));
                }
                let min = terms.minimum()?;
                let enough_seen = !seen.try_cmp(&min)?.is_lt();
                let enough_confirmed = !confirmed.try_cmp(&min)?.is_lt();
                let over = seen.try_cmp(&terms.due)?.is_gt();
                let partial = (!seen.is_zero() && !enough_seen).then_some(X::PaidPartial);
                let paid_flag = if over { Some(X::PaidOver) } else { None };
                Ok(match self.status {
                    // Final states ignore further observations (confirmations keep coming).
                    S::Settled | S::Invalid => *self,
                    S::New | S::Processing if enough_confirmed => state(S::Settled, paid_flag),
                    S::New | S::Processing if enough_seen => state(S::Processing, paid_flag),
                    // Not enough (any more): a replaced/double-spent payment drops back to new.
                    S::New | S::Processing => state(S::New, partial),
                    S::Expired if enough_seen => state(S::Expired, Some(X::PaidLate)),
                    S::Expired => state(
                        S::Expired,
                        partial.or(self.exception.filter(|x| *x == X::PaidLate)),
                    ),
                })
            }
            InvoiceEvent::Expire => match self.status {
                S::New => Ok(state(S::Expired, self.exception)),
                // Paid in time, waiting for confirmations: expiry does not apply.
                S::Processing | S::Expired | S::Settled | S::Invalid => Ok(*self),
            },
            InvoiceEvent::MonitoringOver => match self.status {
                S::Processing => Ok(state(S::Invalid, self.exception)),
                S::New => Ok(state(S::Expired, self.exception)),
                S::Expired | S::Settled | S::Invalid => Ok(*self),
            },
            InvoiceEvent::MarkSettled => match self.status {
                S::New | S::Processing | S::Expired => Ok(state(S::Settled, Some(X::Marked))),
                S::Settled | S::Invalid => Err(illegal()),
            },
            InvoiceEvent::MarkInvalid => match self.status {
                S::New | S::Processing | S::Expired => Ok(state(S::Invalid, Some(X::Marked))),
                S::Settled | S::Invalid => Err(illegal()),
            },
        }
    }
}

/// A payment request as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Payment {
    /// Stable id.
    pub id: PaymentId,
    /// The order it pays for.
    pub order_id: OrderId,
    /// Name of the verifier that opened it (`"paystack"`, `"btc"`, `"sim"`, …).
    pub method: String,
    /// Reference the verifier matches on (Paystack `reference`; for chains, the address).
    pub reference: String,
    /// Where to pay: a crypto address, or `None` for card/bank checkouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_to: Option<String>,
    /// A hosted checkout page, if the method has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
    /// Amount due and tolerance.
    pub terms: InvoiceTerms,
    /// The exchange rate locked at creation when the price was converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_rate: Option<LockedRate>,
    /// Current status.
    pub state: InvoiceState,
    /// Cumulative amount seen.
    pub seen: Money,
    /// Cumulative amount confirmed.
    pub confirmed: Money,
    /// When payment must arrive by.
    pub expires_at: Timestamp,
    /// When watching for late payments stops.
    pub monitor_until: Timestamp,
    /// When opened.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Optimistic-concurrency version; the store bumps it on every update.
    pub version: u64,
}

impl Payment {
    /// Applies an event, returning the updated record (the store bumps the version on commit).
    pub fn transition(&self, event: &InvoiceEvent, now: Timestamp) -> Result<Payment> {
        let state = self.state.apply(&self.terms, event)?;
        let mut next = self.clone();
        if let InvoiceEvent::Observed { seen, confirmed } = event {
            next.seen = *seen;
            next.confirmed = *confirmed;
        }
        next.state = state;
        next.updated_at = now;
        Ok(next)
    }
}

/// A rate locked into an invoice, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedRate {
    /// The rate.
    pub rate: Rate,
    /// Which source(s) gave it.
    pub source: String,
    /// When it was quoted.
    pub quoted_at: Timestamp,
}

/// What the host asks a verifier to open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PaymentRequest {
    /// The payment id the store will use (also the Paystack reference).
    pub payment_id: PaymentId,
    /// The order paid for.
    pub order_id: OrderId,
    /// Amount due in the verifier's asset.
    pub amount: Money,
    /// Customer e-mail (Paystack requires one).
    pub email: Option<String>,
    /// When the request expires.
    pub expires_at: Timestamp,
}

impl PaymentRequest {
    /// A request for `amount` for `order_id`, expiring at `expires_at`.
    pub fn new(order_id: OrderId, amount: Money, expires_at: Timestamp) -> Self {
        Self {
            payment_id: PaymentId::new(),
            order_id,
            amount,
            email: None,
            expires_at,
        }
    }

    /// Adds the customer's e-mail.
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }
}

/// What a verifier returns when it opens a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenedPayment {
    /// The reference to match payments on.
    pub reference: String,
    /// Address to pay to, for chain payments.
    pub pay_to: Option<String>,
    /// Hosted checkout page, for card payments.
    pub checkout_url: Option<String>,
}

impl OpenedPayment {
    /// An opened payment with just a reference.
    pub fn new(reference: impl Into<String>) -> Self {
        Self {
            reference: reference.into(),
            pay_to: None,
            checkout_url: None,
        }
    }

    /// Sets the address to pay to.
    #[must_use]
    pub fn with_pay_to(mut self, address: impl Into<String>) -> Self {
        self.pay_to = Some(address.into());
        self
    }

    /// Sets the checkout URL.
    #[must_use]
    pub fn with_checkout_url(mut self, url: impl Into<String>) -> Self {
        self.checkout_url = Some(url.into());
        self
    }
}

/// Cumulative totals a verifier has observed for one reference, already checked against the
/// recipient and asset; feed it to [`InvoiceEvent::Observed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Observation {
    /// The reference observed.
    pub reference: String,
    /// Everything received.
    pub seen: Money,
    /// Everything confirmed.
    pub confirmed: Money,
}

impl Observation {
    /// Totals for `reference`.
    pub fn new(reference: impl Into<String>, seen: Money, confirmed: Money) -> Self {
        Self {
            reference: reference.into(),
            seen,
            confirmed,
        }
    }

    /// This observation as an invoice event.
    pub fn as_event(&self) -> InvoiceEvent {
        InvoiceEvent::Observed {
            seen: self.seen,
            confirmed: self.confirmed,
        }
    }
}

/// An authenticated inbound event, ready for dedupe and application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VerifiedEvent {
    /// Dedupe key unique per source, e.g. Paystack `charge.success:<data.id>`.
    pub event_key: String,
    /// What happened.
    pub kind: VerifiedEventKind,
}

impl VerifiedEvent {
    /// An event with its dedupe key (backends outside this crate build events with this).
    pub fn new(event_key: impl Into<String>, kind: VerifiedEventKind) -> Self {
        Self {
            event_key: event_key.into(),
            kind,
        }
    }
}

/// The meaning of a verified inbound event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum VerifiedEventKind {
    /// New totals for a reference.
    Observed(Observation),
    /// A settled payment was reversed, refunded or disputed: suspend the machine.
    Reversed {
        /// The reference.
        reference: String,
        /// Provider's reason text.
        reason: String,
    },
    /// An earlier [`VerifiedEventKind::Reversed`] of `reference` was withdrawn with the money
    /// staying with the merchant (e.g. a dispute resolved in the merchant's favour): the
    /// Provisioner reinstates the order, but only when that reversal is what suspended it or
    /// put it into needs-attention (see `docs/paystack-and-fraud.md`).
    Reinstated {
        /// The reference.
        reference: String,
        /// Provider's reason text.
        reason: String,
    },
    /// Authenticated but of no interest (other event types).
    Ignored {
        /// The provider's event type.
        event_type: String,
    },
}

/// What the Provisioner hands each registered verifier when it is built (see
/// [`PaymentVerifier::attach`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifierContext {
    /// The Provisioner's store, for durable side records (e.g. a review queue).
    pub store: std::sync::Arc<dyn crate::store::Store>,
    /// The Provisioner's clock, for the time stamps of those records.
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl VerifierContext {
    /// A context with `store` and `clock` (hosts wiring a verifier without a Provisioner).
    pub fn new(
        store: std::sync::Arc<dyn crate::store::Store>,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    ) -> Self {
        Self { store, clock }
    }
}

/// An inbound webhook as the host's HTTP server received it: raw body bytes (never re-serialised
/// JSON) and headers.
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    /// Request headers.
    pub headers: &'a http::HeaderMap,
    /// Raw body bytes, exactly as received.
    pub body: &'a [u8],
}

/// A payment backend: opens payment requests, checks them, and authenticates webhooks.
///
/// Business outcomes are data: an underpayment is an [`Observation`] below the amount due, not
/// an error. `Err` always means infrastructure trouble or an unauthenticated request.
#[async_trait]
#[auto_impl::auto_impl(&, Arc, Box)]
pub trait PaymentVerifier: fmt::Debug + Send + Sync + 'static {
    /// Backend name used in records, errors and metrics (`"paystack"`, `"btc"`, …).
    fn name(&self) -> &'static str;

    /// The asset this verifier accepts.
    fn asset(&self) -> Asset;

    /// Opens a payment request.
    ///
    /// # Behavior
    /// - Idempotent on `req.payment_id`: opening the same id twice returns the same reference
    ///   (and address) or an `AlreadyExists` error, never a second live request.
    /// - `req.amount` must be in [`PaymentVerifier::asset`]; otherwise `InvalidInput`.
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment>;

    /// Reports cumulative totals for an open request.
    ///
    /// # Behavior
    /// - Counts only money that matches the reference, the recipient and the asset.
    /// - Unknown reference → `NotFound`. Safe to call any number of times.
    async fn check(&self, payment: &Payment) -> Result<Observation>;

    /// Authenticates and parses a webhook.
    ///
    /// # Behavior
    /// - A missing or wrong signature → `Unauthenticated`, whatever the body says.
    /// - A malformed but authenticated body → `InvalidInput`.
    /// - Each returned event carries a dedupe key; the same delivery twice yields the same keys.
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>>;

    /// Called once by the Provisioner's builder with its store and clock, so a backend can
    /// keep durable side records (Paystack files mismatched payments for review there) on the
    /// same store and clock as everything else. The default does nothing.
    fn attach(&self, context: &VerifierContext) {
        let _ = context;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;
    use proptest::prelude::*;

    fn usdt(units: u64) -> Money {
        Money::from_minor(Asset::Usdt, units)
    }

    fn terms() -> InvoiceTerms {
        InvoiceTerms {
            due: usdt(1_000_000),
            tolerance_percent: Decimal::ZERO,
        }
    }

    fn obs(seen: u64, confirmed: u64) -> InvoiceEvent {
        InvoiceEvent::Observed {
            seen: usdt(seen),
            confirmed: usdt(confirmed),
        }
    }

    #[test]
    fn btcpay_flow() {
        let t = terms();
        let s = InvoiceState::NEW.apply(&t, &obs(400_000, 0)).unwrap();
        assert_eq!(
            s,
            InvoiceState {
                status: InvoiceStatus::New,
                exception: Some(InvoiceException::PaidPartial)
            }
        );
        let s = s.apply(&t, &obs(1_200_000, 0)).unwrap();
        assert_eq!(
            s,
            InvoiceState {
                status: InvoiceStatus::Processing,
                exception: Some(InvoiceException::PaidOver)
            }
        );
        let s = s.apply(&t, &InvoiceEvent::Expire).unwrap();
        assert_eq!(s.status, InvoiceStatus::Processing, "paid in time");
        let s = s.apply(&t, &obs(1_200_000, 1_200_000)).unwrap();
        assert_eq!(s.status, InvoiceStatus::Settled);
        assert!(s.apply(&t, &InvoiceEvent::MarkInvalid).is_err());
        assert_eq!(s.apply(&t, &obs(0, 0)).unwrap(), s, "settled is final");
    }

    #[test]
    fn late_and_replaced_payments() {
        let t = terms();
        let expired = InvoiceState::NEW.apply(&t, &InvoiceEvent::Expire).unwrap();
        let late = expired.apply(&t, &obs(1_000_000, 1_000_000)).unwrap();
        assert_eq!(
            late,
            InvoiceState {
                status: InvoiceStatus::Expired,
                exception: Some(InvoiceException::PaidLate)
            }
        );
        let processing = InvoiceState::NEW.apply(&t, &obs(1_000_000, 0)).unwrap();
        assert_eq!(
            processing.apply(&t, &obs(0, 0)).unwrap(),
            InvoiceState::NEW,
            "RBF-replaced"
        );
        assert_eq!(
            processing
                .apply(&t, &InvoiceEvent::MonitoringOver)
                .unwrap()
                .status,
            InvoiceStatus::Invalid
        );
    }

    #[test]
    fn rejects_wrong_asset_and_impossible_totals() {
        let t = terms();
        let wrong = InvoiceEvent::Observed {
            seen: Money::from_minor(Currency::Usd, 100_000_000_u64),
            confirmed: Money::from_minor(Currency::Usd, 100_000_000_u64),
        };
        assert!(InvoiceState::NEW.apply(&t, &wrong).is_err());
        assert!(InvoiceState::NEW.apply(&t, &obs(1, 2)).is_err());
    }

    #[test]
    fn tolerance_accepts_small_shortfall() {
        let t = InvoiceTerms {
            tolerance_percent: Decimal::ONE,
            ..terms()
        };
        assert_eq!(
            InvoiceState::NEW
                .apply(&t, &obs(990_000, 990_000))
                .unwrap()
                .status,
            InvoiceStatus::Settled
        );
        assert_eq!(
            InvoiceState::NEW
                .apply(&t, &obs(989_999, 989_999))
                .unwrap()
                .status,
            InvoiceStatus::New
        );
    }

    fn arb_event() -> impl Strategy<Value = InvoiceEvent> {
        prop_oneof![
            (0u64..3_000_000, 0u64..3_000_000).prop_map(|(a, b)| obs(a.max(b), a.min(b))),
            (0u64..3_000_000, 0u64..3_000_000).prop_map(|(a, b)| obs(a, b)),
            Just(InvoiceEvent::Expire),
            Just(InvoiceEvent::MonitoringOver),
            Just(InvoiceEvent::MarkSettled),
            Just(InvoiceEvent::MarkInvalid),
            Just(InvoiceEvent::Observed {
                seen: Money::from_minor(Asset::Btc, 5u64),
                confirmed: Money::from_minor(Asset::Btc, 5u64)
            }),
        ]
    }

    proptest! {
        /// Final stays final, errors change nothing, settlement needs enough confirmed money
        /// (or an operator), and underpaid invoices are never settled.
        #[test]
        fn random_invoice_histories_stay_legal(events in proptest::collection::vec(arb_event(), 0..40)) {
            let t = terms();
            let mut s = InvoiceState::NEW;
            for e in &events {
                if let Ok(next) = s.apply(&t, e) {
                    {
                        if s.status.is_final() {
                            prop_assert_eq!(next.status, s.status);
                        }
                        if next.status == InvoiceStatus::Settled && s.status != InvoiceStatus::Settled {
                            match e {
                                InvoiceEvent::MarkSettled => prop_assert_eq!(next.exception, Some(InvoiceException::Marked)),
                                InvoiceEvent::Observed { confirmed, .. } => {
                                    prop_assert!(!confirmed.try_cmp(&t.due).unwrap().is_lt());
                                }
                                other => prop_assert!(false, "settled by {:?}", other),
                            }
                        }
                        if next.exception == Some(InvoiceException::PaidPartial) {
                            prop_assert!(matches!(next.status, InvoiceStatus::New | InvoiceStatus::Expired));
                        }
                        s = next;
                    }
                }
            }
        }
    }
}
