//! A simulated payment backend whose requests are "paid" by calling it: for demos, examples and
//! tests that need a [`PaymentVerifier`] without keys, money or network.
//!
//! [`SimPayments`] behaves like a real backend from the outside: it opens requests idempotently,
//! reports cumulative totals through [`PaymentVerifier::check`], and authenticates webhooks
//! signed with HMAC-SHA256 over the raw body (header [`SIGNATURE_HEADER`], lowercase hex), so a
//! host can exercise its whole payment path, including forged and replayed deliveries.
//!
//! ```
//! # use nemordp_core::{sim::payments::SimPayments, payment::PaymentRequest, *};
//! # use secrecy::SecretString;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let sim = SimPayments::new(Asset::Usdt, SecretString::from("whsec_demo"));
//! let due = Money::parse_major(Asset::Usdt, "12.50")?;
//! let req = PaymentRequest::new(OrderId::new(), due, Timestamp::from_unix_secs(1_800_000_000));
//! let opened = sim.open(&req).await?;
//! sim.pay_in_full(&opened.reference)?;
//! let (headers, body) = sim.signed_webhook(&opened.reference)?;
//! let events = sim
//!     .parse_webhook(nemordp_core::payment::WebhookRequest { headers: &headers, body: &body })
//!     .await?;
//! assert_eq!(events.len(), 1);
//! # Ok::<(), Error>(()) }).unwrap();
//! ```

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::{
    error::{Error, ErrorKind, Result},
    ids::PaymentId,
    money::{Asset, Money},
    payment::{
        Observation, OpenedPayment, Payment, PaymentRequest, PaymentVerifier, VerifiedEvent,
        VerifiedEventKind, WebhookRequest,
    },
};

/// The header that carries the webhook signature: lowercase hex HMAC-SHA256 of the raw body.
pub const SIGNATURE_HEADER: &str = "x-sim-signature";

const NAME: &str = "sim";

type HmacSha256 = Hmac<Sha256>;

/// A simulated [`PaymentVerifier`] for one asset.
///
/// Cloning shares state: pay through one clone, observe through another. `Debug` never shows
/// the webhook secret.
#[derive(Clone)]
pub struct SimPayments {
    inner: Arc<Inner>,
}

struct Inner {
    asset: Asset,
    secret: SecretString,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By reference.
    invoices: HashMap<String, SimInvoice>,
    fail_check: VecDeque<ErrorKind>,
    fail_open: VecDeque<ErrorKind>,
}

struct SimInvoice {
    payment_id: PaymentId,
    due: Money,
    seen: Money,
    confirmed: Money,
    reversed: Option<String>,
    /// Set by `reinstate`: the reversal was withdrawn (a dispute the merchant won).
    reinstated: Option<String>,
}

/// The JSON body of a simulated webhook.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    reference: String,
    seen: String,
    confirmed: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl SimPayments {
    /// A simulated backend accepting `asset`, signing and verifying webhooks with
    /// `webhook_secret` (use a non-empty secret: anyone who knows it can forge deliveries).
    pub fn new(asset: Asset, webhook_secret: SecretString) -> Self {
        Self {
            inner: Arc::new(Inner {
                asset,
                secret: webhook_secret,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn check_asset(&self, amount: &Money, what: &str) -> Result<()> {
        if amount.asset() == self.inner.asset {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "{what} is in {}, this verifier accepts {}",
                amount.asset(),
                self.inner.asset
            )))
        }
    }

    fn with_invoice<T>(
        &self,
        reference: &str,
        operation: &'static str,
        f: impl FnOnce(&mut SimInvoice) -> Result<T>,
    ) -> Result<T> {
        let mut state = self.state();
        let invoice = state.invoices.get_mut(reference).ok_or_else(|| {
            Error::not_found(format!("no payment request with reference {reference:?}"))
        });
        invoice
            .and_then(f)
            .map_err(|e| e.with_backend(NAME).with_operation(operation))
    }

    /// Records `amount` arriving for `reference`, unconfirmed.
    ///
    /// Wrong asset or a zero amount → `InvalidInput`; unknown reference → `NotFound`.
    pub fn pay(&self, reference: &str, amount: Money) -> Result<()> {
        self.receive(reference, amount, false, "pay")
    }

    /// Records `amount` arriving for `reference`, already confirmed.
    ///
    /// Wrong asset or a zero amount → `InvalidInput`; unknown reference → `NotFound`.
    pub fn pay_confirmed(&self, reference: &str, amount: Money) -> Result<()> {
        self.receive(reference, amount, true, "pay_confirmed")
    }

    fn receive(
        &self,
        reference: &str,
        amount: Money,
        confirmed: bool,
        operation: &'static str,
    ) -> Result<()> {
        self.check_asset(&amount, "the payment")
            .map_err(|e| e.with_backend(NAME).with_operation(operation))?;
        if amount.is_zero() {
            return Err(Error::invalid_input("a payment of zero")
                .with_backend(NAME)
                .with_operation(operation));
        }
        self.with_invoice(reference, operation, |inv| {
            let seen = inv.seen.checked_add(&amount)?;
            let total_confirmed = if confirmed {
                inv.confirmed.checked_add(&amount)?
            } else {
                inv.confirmed
            };
            inv.seen = seen;
            inv.confirmed = total_confirmed;
            Ok(())
        })
    }

    /// Confirms everything seen so far for `reference`. Unknown reference → `NotFound`.
    pub fn confirm_all(&self, reference: &str) -> Result<()> {
        self.with_invoice(reference, "confirm_all", |inv| {
            inv.confirmed = inv.seen;
            Ok(())
        })
    }

    /// Pays whatever is still missing to reach the amount due (the whole due amount on a fresh
    /// request, nothing if enough was already seen), then confirms everything.
    /// Unknown reference → `NotFound`.
    pub fn pay_in_full(&self, reference: &str) -> Result<()> {
        self.with_invoice(reference, "pay_in_full", |inv| {
            let missing = inv.due.saturating_sub(&inv.seen)?;
            inv.seen = inv.seen.checked_add(&missing)?;
            inv.confirmed = inv.seen;
            Ok(())
        })
    }

    /// Marks the payment for `reference` as reversed (refunded or disputed) with `reason`: the
    /// next [`SimPayments::signed_webhook`] reports a `reversed` event. The totals reported by
    /// [`PaymentVerifier::check`] are unchanged. Unknown reference → `NotFound`.
    pub fn reverse(&self, reference: &str, reason: impl Into<String>) -> Result<()> {
        let reason = reason.into();
        self.with_invoice(reference, "reverse", |inv| {
            inv.reversed = Some(reason);
            Ok(())
        })
    }

    /// Withdraws the reversal of `reference` (a dispute resolved in the merchant's favour)
    /// with `reason`: the next [`SimPayments::signed_webhook`] reports a `reinstated` event.
    /// Unknown reference → `NotFound`.
    pub fn reinstate(&self, reference: &str, reason: impl Into<String>) -> Result<()> {
        let reason = reason.into();
        self.with_invoice(reference, "reinstate", |inv| {
            inv.reversed = None;
            inv.reinstated = Some(reason);
            Ok(())
        })
    }

    /// The amount due for `reference`, as opened. Unknown reference → `NotFound`.
    pub fn due(&self, reference: &str) -> Result<Money> {
        self.with_invoice(reference, "due", |inv| Ok(inv.due))
    }

    /// How many payment requests have been opened.
    pub fn open_count(&self) -> usize {
        self.state().invoices.len()
    }

    /// Makes the next call to [`PaymentVerifier::check`] fail with `kind` (queued: call several
    /// times to script several failures). For testing retry paths.
    pub fn fail_next_check(&self, kind: ErrorKind) {
        self.state().fail_check.push_back(kind);
    }

    /// Makes the next call to [`PaymentVerifier::open`] fail with `kind` (queued), without
    /// opening anything.
    pub fn fail_next_open(&self, kind: ErrorKind) {
        self.state().fail_open.push_back(kind);
    }

    /// A correctly signed webhook delivery reporting the current totals of `reference` (type
    /// `observed`), or its reversal (type `reversed`) once [`SimPayments::reverse`] was called.
    /// Each call is a new delivery with a fresh event id. Unknown reference → `NotFound`.
    pub fn signed_webhook(&self, reference: &str) -> Result<(http::HeaderMap, Vec<u8>)> {
        let event = self.with_invoice(reference, "signed_webhook", |inv| {
            Ok(WireEvent {
                id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
                kind: if inv.reversed.is_some() {
                    "reversed"
                } else if inv.reinstated.is_some() {
                    "reinstated"
                } else {
                    "observed"
                }
                .to_owned(),
                reference: reference.to_owned(),
                seen: inv.seen.to_string(),
                confirmed: inv.confirmed.to_string(),
                reason: inv.reversed.clone().or_else(|| inv.reinstated.clone()),
            })
        })?;
        let body = serde_json::to_vec(&event).map_err(|e| {
            Error::new(ErrorKind::Unexpected, "cannot encode webhook body")
                .with_source(e)
                .with_backend(NAME)
                .with_operation("signed_webhook")
        })?;
        let signature = hex::encode(self.mac()?.chain_update(&body).finalize().into_bytes());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            SIGNATURE_HEADER,
            http::HeaderValue::from_str(&signature).map_err(|e| {
                Error::new(ErrorKind::Unexpected, "signature is not a header value")
                    .with_source(e)
                    .with_backend(NAME)
            })?,
        );
        Ok((headers, body))
    }

    fn mac(&self) -> Result<HmacSha256> {
        HmacSha256::new_from_slice(self.inner.secret.expose_secret().as_bytes()).map_err(|_| {
            Error::invalid_config("webhook secret is not a valid HMAC key").with_backend(NAME)
        })
    }

    /// Verifies the signature header over the raw body in constant time.
    fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<()> {
        let unauthenticated = |why: &str| {
            Error::new(ErrorKind::Unauthenticated, format!("webhook {why}"))
                .with_backend(NAME)
                .with_operation("parse_webhook")
        };
        let header = request
            .headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| unauthenticated("has no signature"))?;
        let signature = header
            .to_str()
            .ok()
            .and_then(|s| hex::decode(s).ok())
            .ok_or_else(|| unauthenticated("signature is not hex"))?;
        self.mac()?
            .chain_update(request.body)
            .verify_slice(&signature)
            .map_err(|_| unauthenticated("signature does not match"))
    }

    fn parse_money(&self, text: &str, field: &str) -> Result<Money> {
        let money: Money = text
            .parse()
            .map_err(|e: Error| Error::invalid_input(format!("{field}: {}", e.message())))?;
        self.check_asset(&money, field)?;
        Ok(money)
    }

    fn decode(&self, body: &[u8]) -> Result<VerifiedEvent> {
        let wire: WireEvent = serde_json::from_slice(body).map_err(|e| {
            Error::invalid_input("webhook body is not a valid sim event").with_source(e)
        })?;
        if wire.id.is_empty() {
            return Err(Error::invalid_input("webhook event has an empty id"));
        }
        if wire.reference.is_empty() {
            return Err(Error::invalid_input("webhook event has an empty reference"));
        }
        let seen = self.parse_money(&wire.seen, "seen")?;
        let confirmed = self.parse_money(&wire.confirmed, "confirmed")?;
        if confirmed.try_cmp(&seen)?.is_gt() {
            return Err(Error::invalid_input(format!(
                "webhook reports confirmed {confirmed} above seen {seen}"
            )));
        }
        let kind = match wire.kind.as_str() {
            "observed" => {
                VerifiedEventKind::Observed(Observation::new(wire.reference, seen, confirmed))
            }
            "reversed" => VerifiedEventKind::Reversed {
                reference: wire.reference,
                reason: wire.reason.unwrap_or_default(),
            },
            "reinstated" => VerifiedEventKind::Reinstated {
                reference: wire.reference,
                reason: wire.reason.unwrap_or_default(),
            },
            other => {
                return Err(Error::invalid_input(format!(
                    "unknown webhook event type {other:?}"
                )));
            }
        };
        Ok(VerifiedEvent {
            event_key: format!("{}:{}", wire.kind, wire.id),
            kind,
        })
    }
}

impl fmt::Debug for SimPayments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let open = self.state().invoices.len();
        f.debug_struct("SimPayments")
            .field("asset", &self.inner.asset)
            .field("webhook_secret", &"[REDACTED]")
            .field("open_requests", &open)
            .finish()
    }
}

#[async_trait]
impl PaymentVerifier for SimPayments {
    fn name(&self) -> &'static str {
        NAME
    }

    fn asset(&self) -> Asset {
        self.inner.asset
    }

    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        let fail = |e: Error| e.with_backend(NAME).with_operation("open");
        let mut state = self.state();
        if let Some(kind) = state.fail_open.pop_front() {
            return Err(fail(Error::new(kind, "scripted failure")));
        }
        self.check_asset(&req.amount, "the amount").map_err(fail)?;
        if req.amount.is_zero() {
            return Err(fail(Error::invalid_input("the amount due is zero")));
        }
        let reference = req.payment_id.to_string();
        let opened = OpenedPayment::new(reference.clone())
            .with_pay_to(format!("sim1q{}", req.payment_id.as_uuid().simple()));
        match state.invoices.get(&reference) {
            Some(existing) if existing.due == req.amount => Ok(opened),
            Some(existing) => Err(fail(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "payment {} is already open for {}, not {}",
                    existing.payment_id, existing.due, req.amount
                ),
            ))),
            None => {
                let zero = Money::zero(self.inner.asset);
                state.invoices.insert(
                    reference,
                    SimInvoice {
                        payment_id: req.payment_id,
                        due: req.amount,
                        seen: zero,
                        confirmed: zero,
                        reversed: None,
                        reinstated: None,
                    },
                );
                Ok(opened)
            }
        }
    }

    async fn check(&self, payment: &Payment) -> Result<Observation> {
        let fail = |e: Error| e.with_backend(NAME).with_operation("check");
        let mut state = self.state();
        if let Some(kind) = state.fail_check.pop_front() {
            return Err(fail(Error::new(kind, "scripted failure")));
        }
        let invoice = state.invoices.get(&payment.reference).ok_or_else(|| {
            fail(Error::not_found(format!(
                "no payment request with reference {:?}",
                payment.reference
            )))
        })?;
        Ok(Observation::new(
            payment.reference.clone(),
            invoice.seen,
            invoice.confirmed,
        ))
    }

    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.authenticate(&request)?;
        let event = self
            .decode(request.body)
            .map_err(|e| e.with_backend(NAME).with_operation("parse_webhook"))?;
        Ok(vec![event])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        clock::Timestamp,
        ids::OrderId,
        money::Currency,
        payment::{InvoiceState, InvoiceStatus, InvoiceTerms},
    };
    use rust_decimal::Decimal;

    const SECRET: &str = "whsec_unit_test_secret_5f2c";

    fn sim() -> SimPayments {
        SimPayments::new(Asset::Btc, SecretString::from(SECRET))
    }

    fn sat(n: u64) -> Money {
        Money::from_minor(Asset::Btc, n)
    }

    fn request(amount: Money) -> PaymentRequest {
        PaymentRequest::new(
            OrderId::new(),
            amount,
            Timestamp::from_unix_secs(2_000_000_000),
        )
    }

    fn record(req: &PaymentRequest, opened: &OpenedPayment) -> Payment {
        let t = Timestamp::from_unix_secs(1_700_000_000);
        Payment {
            id: req.payment_id,
            order_id: req.order_id,
            method: NAME.to_owned(),
            reference: opened.reference.clone(),
            pay_to: opened.pay_to.clone(),
            checkout_url: None,
            terms: InvoiceTerms {
                due: req.amount,
                tolerance_percent: Decimal::ZERO,
            },
            locked_rate: None,
            state: InvoiceState::NEW,
            seen: Money::zero(req.amount.asset()),
            confirmed: Money::zero(req.amount.asset()),
            expires_at: req.expires_at,
            monitor_until: req.expires_at,
            created_at: t,
            updated_at: t,
            version: 0,
        }
    }

    async fn parse(
        sim: &SimPayments,
        headers: &http::HeaderMap,
        body: &[u8],
    ) -> Result<Vec<VerifiedEvent>> {
        sim.parse_webhook(WebhookRequest { headers, body }).await
    }

    fn sign(body: &[u8]) -> http::HeaderMap {
        let mut mac = HmacSha256::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body);
        let mut h = http::HeaderMap::new();
        h.insert(
            SIGNATURE_HEADER,
            hex::encode(mac.finalize().into_bytes()).parse().unwrap(),
        );
        h
    }

    #[test]
    fn debug_hides_the_secret() {
        let s = sim();
        let text = format!("{s:?}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("unit_test"), "{text}");
        assert!(text.contains("REDACTED"));
    }

    #[tokio::test]
    async fn open_is_idempotent_and_deterministic() {
        let s = sim();
        let req = request(sat(10_000));
        let a = s.open(&req).await.unwrap();
        let b = s.clone().open(&req).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.reference, req.payment_id.to_string());
        assert_eq!(
            a.pay_to.as_deref(),
            Some(format!("sim1q{}", req.payment_id.as_uuid().simple()).as_str())
        );
        assert_eq!(s.open_count(), 1);
        let mut other = req.clone();
        other.amount = sat(10_001);
        assert_eq!(
            s.open(&other).await.unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        let ngn = request(Money::from_minor(Currency::Ngn, 100_u64));
        assert_eq!(
            s.open(&ngn).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            s.open(&request(sat(0))).await.unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }

    #[tokio::test]
    async fn payments_accumulate_and_confirm() {
        let s = sim();
        let req = request(sat(10_000));
        let opened = s.open(&req).await.unwrap();
        let p = record(&req, &opened);
        let r = opened.reference.as_str();
        s.pay(r, sat(4_000)).unwrap();
        s.pay_confirmed(r, sat(1_000)).unwrap();
        let o = s.check(&p).await.unwrap();
        assert_eq!((o.seen, o.confirmed), (sat(5_000), sat(1_000)));
        s.confirm_all(r).unwrap();
        assert_eq!(s.check(&p).await.unwrap().confirmed, sat(5_000));
        s.pay_in_full(r).unwrap();
        let o = s.check(&p).await.unwrap();
        assert_eq!((o.seen, o.confirmed), (sat(10_000), sat(10_000)));
        assert_eq!(
            p.transition(&o.as_event(), Timestamp::EPOCH)
                .unwrap()
                .state
                .status,
            InvoiceStatus::Settled
        );
        assert_eq!(
            s.pay(r, Money::from_minor(Asset::Eth, 1_u64))
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            s.pay("nope", sat(1)).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            s.confirm_all("nope").unwrap_err().kind(),
            ErrorKind::NotFound
        );
        let mut unknown = p.clone();
        unknown.reference = "nope".into();
        assert_eq!(
            s.check(&unknown).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn scripted_failures_come_in_order_then_stop() {
        let s = sim();
        s.fail_next_open(ErrorKind::Unavailable);
        let req = request(sat(1));
        assert_eq!(
            s.open(&req).await.unwrap_err().kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(s.open_count(), 0);
        let p = record(&req, &s.open(&req).await.unwrap());
        s.fail_next_check(ErrorKind::RateLimited);
        s.fail_next_check(ErrorKind::Unavailable);
        let e = s.check(&p).await.unwrap_err();
        assert_eq!((e.kind(), e.backend()), (ErrorKind::RateLimited, "sim"));
        assert_eq!(
            s.check(&p).await.unwrap_err().kind(),
            ErrorKind::Unavailable
        );
        assert!(s.check(&p).await.is_ok());
    }

    #[tokio::test]
    async fn webhooks_round_trip_and_dedupe() {
        let s = sim();
        let req = request(sat(10_000));
        let r = s.open(&req).await.unwrap().reference;
        s.pay(&r, sat(2_500)).unwrap();
        let (h, body) = s.signed_webhook(&r).unwrap();
        let once = parse(&s, &h, &body).await.unwrap();
        let twice = parse(&s, &h, &body).await.unwrap();
        assert_eq!(once, twice);
        assert!(once[0].event_key.starts_with("observed:evt_"));
        assert_eq!(
            once[0].kind,
            VerifiedEventKind::Observed(Observation::new(r.clone(), sat(2_500), sat(0)))
        );
        let (_, body2) = s.signed_webhook(&r).unwrap();
        assert_ne!(
            parse(&s, &sign(&body2), &body2).await.unwrap()[0].event_key,
            once[0].event_key,
            "each delivery is a new event"
        );
        s.reverse(&r, "chargeback").unwrap();
        let (h, body) = s.signed_webhook(&r).unwrap();
        let ev = parse(&s, &h, &body).await.unwrap();
        assert!(ev[0].event_key.starts_with("reversed:"));
        assert_eq!(
            ev[0].kind,
            VerifiedEventKind::Reversed {
                reference: r.clone(),
                reason: "chargeback".into()
            }
        );
        assert_eq!(
            s.signed_webhook("nope").unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[tokio::test]
    async fn bad_signatures_are_unauthenticated_whatever_the_body() {
        let s = sim();
        let body = br#"{"id":"1","type":"observed","reference":"r","seen":"1.00000000 BTC","confirmed":"1.00000000 BTC"}"#;
        let garbage = b"not json at all";
        for b in [&body[..], &garbage[..], b""] {
            let mut h = http::HeaderMap::new();
            assert_eq!(
                parse(&s, &h, b).await.unwrap_err().kind(),
                ErrorKind::Unauthenticated
            );
            for bad in ["zz", "", "00", "DEADBEEF"] {
                h.insert(SIGNATURE_HEADER, bad.parse().unwrap());
                assert_eq!(
                    parse(&s, &h, b).await.unwrap_err().kind(),
                    ErrorKind::Unauthenticated
                );
            }
            // Signed with another secret.
            let other = SimPayments::new(Asset::Btc, SecretString::from("other"));
            let mut mac = other.mac().unwrap();
            mac.update(b);
            h.insert(
                SIGNATURE_HEADER,
                hex::encode(mac.finalize().into_bytes()).parse().unwrap(),
            );
            assert_eq!(
                parse(&s, &h, b).await.unwrap_err().kind(),
                ErrorKind::Unauthenticated
            );
        }
        // The same body correctly signed is accepted.
        assert_eq!(parse(&s, &sign(body), body).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn authenticated_but_malformed_is_invalid_input() {
        let s = sim();
        let cases: [&[u8]; 9] = [
            b"not json",
            b"{}",
            br#"{"id":"1","type":"refunded","reference":"r","seen":"1 BTC","confirmed":"1 BTC"}"#,
            br#"{"id":"1","type":"observed","reference":"r","seen":"1.00 NGN","confirmed":"1.00 NGN"}"#,
            br#"{"id":"1","type":"observed","reference":"r","seen":"1 BTC","confirmed":"1.00 NGN"}"#,
            br#"{"id":"1","type":"observed","reference":"r","seen":"1e3 BTC","confirmed":"1 BTC"}"#,
            br#"{"id":"1","type":"observed","reference":"r","seen":"1 BTC","confirmed":"2 BTC"}"#,
            br#"{"id":"","type":"observed","reference":"r","seen":"1 BTC","confirmed":"1 BTC"}"#,
            br#"{"id":"1","type":"observed","reference":"r","seen":1,"confirmed":1}"#,
        ];
        for body in cases {
            let e = parse(&s, &sign(body), body).await.unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
