//! The payment conformance kit passes on `SimPayments` and catches deliberately broken
//! verifiers.
#![cfg(feature = "testkit")]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nemordp_core::{
    Asset, Currency, Error, ErrorKind, Money, Result,
    payment::{
        Observation, OpenedPayment, Payment, PaymentRequest, PaymentVerifier, VerifiedEvent,
        VerifiedEventKind, WebhookRequest,
    },
    sim::payments::SimPayments,
    testkit::payment::{self as kit, PaymentKitDriver},
};
use secrecy::SecretString;

fn sim(asset: Asset) -> SimPayments {
    SimPayments::new(asset, SecretString::from("whsec_conformance_7d1e"))
}

#[tokio::test]
async fn sim_passes_for_btc() {
    let s = sim(Asset::Btc);
    kit::run_all(&s, &s).await;
}

#[tokio::test]
async fn sim_passes_for_eth() {
    let s = sim(Asset::Eth);
    kit::run_all(&s, &s).await;
}

#[tokio::test]
async fn sim_passes_for_usdt() {
    let s = sim(Asset::Usdt);
    kit::run_all(&s, &s).await;
}

#[tokio::test]
async fn sim_passes_for_fiat_ngn() {
    let s = sim(Asset::Fiat(Currency::Ngn));
    kit::run_all(&s, &s).await;
}

#[tokio::test]
async fn sim_passes_for_zero_decimal_fiat() {
    let s = sim(Asset::Fiat(Currency::Jpy));
    kit::run_all(&s, &s).await;
}

#[tokio::test]
async fn sim_passes_through_arc_dyn() {
    let s = sim(Asset::Usdt);
    let v: Arc<dyn PaymentVerifier> = Arc::new(s.clone());
    kit::run_all(&v, &s).await;
    // And the suite as a whole can be run as `&dyn` on the Arc's contents.
    kit::run_all(v.as_ref(), &s).await;
}

// ---- Deliberately broken verifiers ------------------------------------------------------------

/// Accepts any webhook without checking the signature: parses the JSON itself.
#[derive(Debug)]
struct UncheckedWebhooks(SimPayments);

#[async_trait]
impl PaymentVerifier for UncheckedWebhooks {
    fn name(&self) -> &'static str {
        "unchecked"
    }
    fn asset(&self) -> Asset {
        self.0.asset()
    }
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        self.0.open(req).await
    }
    async fn check(&self, payment: &Payment) -> Result<Observation> {
        self.0.check(payment).await
    }
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        let bad = || Error::invalid_input("bad body");
        let v: serde_json::Value = serde_json::from_slice(request.body).map_err(|_| bad())?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).ok_or_else(bad);
        let seen: Money = field("seen")?.parse()?;
        let confirmed: Money = field("confirmed")?.parse()?;
        let event: VerifiedEvent = serde_json::from_value(serde_json::json!({
            "event_key": format!("observed:{}", field("id")?),
            "kind": {
                "kind": "observed",
                "reference": field("reference")?,
                "seen": seen,
                "confirmed": confirmed,
            }
        }))
        .map_err(|_| bad())?;
        Ok(vec![event])
    }
}

/// Opens requests in any asset, re-labelling the amount as its own.
#[derive(Debug)]
struct AssetBlind(SimPayments);

#[async_trait]
impl PaymentVerifier for AssetBlind {
    fn name(&self) -> &'static str {
        "asset-blind"
    }
    fn asset(&self) -> Asset {
        self.0.asset()
    }
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        let mut relabelled = req.clone();
        relabelled.amount = Money::from_minor_u256(self.0.asset(), req.amount.minor_units());
        self.0.open(&relabelled).await
    }
    async fn check(&self, payment: &Payment) -> Result<Observation> {
        self.0.check(payment).await
    }
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.0.parse_webhook(request).await
    }
}

/// Counts money paid to every reference it opened as paid to the one asked about (the
/// "whole balance of a shared address" mistake).
#[derive(Debug)]
struct CrossTalk {
    sim: SimPayments,
    references: Mutex<Vec<String>>,
}

#[async_trait]
impl PaymentVerifier for CrossTalk {
    fn name(&self) -> &'static str {
        "cross-talk"
    }
    fn asset(&self) -> Asset {
        self.sim.asset()
    }
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        let opened = self.sim.open(req).await?;
        self.references
            .lock()
            .unwrap()
            .push(opened.reference.clone());
        Ok(opened)
    }
    async fn check(&self, payment: &Payment) -> Result<Observation> {
        let own = self.sim.check(payment).await?;
        let others: Vec<String> = self.references.lock().unwrap().clone();
        let (mut seen, mut confirmed) = (own.seen, own.confirmed);
        for r in others.into_iter().filter(|r| *r != payment.reference) {
            let mut other = payment.clone();
            other.reference = r;
            let o = self.sim.check(&other).await?;
            seen = seen.checked_add(&o.seen)?;
            confirmed = confirmed.checked_add(&o.confirmed)?;
        }
        Ok(Observation::new(payment.reference.clone(), seen, confirmed))
    }
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.sim.parse_webhook(request).await
    }
}

/// Opens a new request every time it is asked, even for the same payment id.
#[derive(Debug)]
struct Forgetful(SimPayments);

#[async_trait]
impl PaymentVerifier for Forgetful {
    fn name(&self) -> &'static str {
        "forgetful"
    }
    fn asset(&self) -> Asset {
        self.0.asset()
    }
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        let mut fresh = req.clone();
        fresh.payment_id = nemordp_core::PaymentId::new();
        self.0.open(&fresh).await
    }
    async fn check(&self, payment: &Payment) -> Result<Observation> {
        self.0.check(payment).await
    }
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.0.parse_webhook(request).await
    }
}

/// Verifies webhooks but gives every parse a new dedupe key, so replays would be applied twice.
#[derive(Debug)]
struct UnstableKeys(SimPayments);

#[async_trait]
impl PaymentVerifier for UnstableKeys {
    fn name(&self) -> &'static str {
        "unstable-keys"
    }
    fn asset(&self) -> Asset {
        self.0.asset()
    }
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        self.0.open(req).await
    }
    async fn check(&self, payment: &Payment) -> Result<Observation> {
        self.0.check(payment).await
    }
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        let mut events = self.0.parse_webhook(request).await?;
        for e in &mut events {
            e.event_key = format!("{}:{}", e.event_key, uuid::Uuid::new_v4());
        }
        Ok(events)
    }
}

/// Misreports `NotFound` for references it does not know as an empty observation.
#[derive(Debug)]
struct ZeroForUnknown(SimPayments);

#[async_trait]
impl PaymentVerifier for ZeroForUnknown {
    fn name(&self) -> &'static str {
        "zero-for-unknown"
    }
    fn asset(&self) -> Asset {
        self.0.asset()
    }
    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        self.0.open(req).await
    }
    async fn check(&self, payment: &Payment) -> Result<Observation> {
        match self.0.check(payment).await {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let zero = Money::zero(self.0.asset());
                Ok(Observation::new(payment.reference.clone(), zero, zero))
            }
            other => other,
        }
    }
    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.0.parse_webhook(request).await
    }
}

#[tokio::test]
async fn unchecked_webhooks_still_parse_honest_deliveries() {
    // The broken verifier is otherwise plausible: honest deliveries round-trip, so only the
    // authentication checks can catch it.
    let s = sim(Asset::Btc);
    let v = UncheckedWebhooks(s.clone());
    kit::webhook_matches_check(&v, &s).await;
    kit::webhook_replay_gives_same_keys(&v, &s).await;
    let events = v
        .parse_webhook(WebhookRequest {
            headers: &http::HeaderMap::new(),
            body: br#"{"id":"x","reference":"r","seen":"1 BTC","confirmed":"1 BTC"}"#,
        })
        .await
        .unwrap();
    assert!(matches!(events[0].kind, VerifiedEventKind::Observed(_)));
}

#[tokio::test]
#[should_panic(expected = "rule \"a tampered webhook body is Unauthenticated\" broken")]
async fn kit_catches_unchecked_webhooks_on_tampering() {
    let s = sim(Asset::Btc);
    kit::tampered_webhook_is_unauthenticated(&UncheckedWebhooks(s.clone()), &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"a webhook without signature is Unauthenticated\" broken")]
async fn kit_catches_unchecked_webhooks_without_signature() {
    let s = sim(Asset::Usdt);
    kit::unsigned_webhook_is_unauthenticated(&UncheckedWebhooks(s.clone()), &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"a wrong signature is Unauthenticated\" broken")]
async fn kit_catches_unchecked_webhooks_with_wrong_signature() {
    let s = sim(Asset::Eth);
    kit::wrong_signature_is_unauthenticated(&UncheckedWebhooks(s.clone()), &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"a tampered webhook body is Unauthenticated\" broken")]
async fn run_all_catches_unchecked_webhooks() {
    let s = sim(Asset::Btc);
    kit::run_all(&UncheckedWebhooks(s.clone()), &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"open rejects an amount in another asset\" broken")]
async fn run_all_catches_an_asset_blind_verifier() {
    let s = sim(Asset::Usdt);
    kit::run_all(&AssetBlind(s.clone()), &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"a full confirmed payment settles\" broken")]
async fn run_all_catches_cross_talk_between_references() {
    let s = sim(Asset::Btc);
    let v = CrossTalk {
        sim: s.clone(),
        references: Mutex::new(Vec::new()),
    };
    kit::run_all(&v, &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"open is idempotent on payment_id\" broken")]
async fn kit_catches_non_idempotent_open() {
    let s = sim(Asset::Eth);
    kit::open_is_idempotent(&Forgetful(s)).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"a replayed delivery gives the same event keys\" broken")]
async fn kit_catches_unstable_dedupe_keys() {
    let s = sim(Asset::Btc);
    kit::webhook_replay_gives_same_keys(&UnstableKeys(s.clone()), &s).await;
}

#[tokio::test]
#[should_panic(expected = "rule \"check of an unknown reference is NotFound\" broken")]
async fn kit_catches_zero_for_unknown_references() {
    let s = sim(Asset::Fiat(Currency::Ngn));
    kit::run_all(&ZeroForUnknown(s.clone()), &s).await;
}

/// The kit's driver is usable on its own, e.g. by a host's end-to-end test.
#[tokio::test]
async fn driver_pays_through_the_trait() {
    let s = sim(Asset::Usdt);
    let req = PaymentRequest::new(
        nemordp_core::OrderId::new(),
        Money::parse_major(Asset::Usdt, "10").unwrap(),
        nemordp_core::Timestamp::from_unix_secs(1_800_000_000),
    );
    let opened = s.open(&req).await.unwrap();
    let payment = kit::payment_record(&s, &req, &opened);
    let driver: &dyn PaymentKitDriver = &s;
    driver
        .pay(
            &payment,
            Money::parse_major(Asset::Usdt, "4").unwrap(),
            false,
        )
        .await
        .unwrap();
    let o = s.check(&payment).await.unwrap();
    assert_eq!(o.seen.to_string(), "4.000000 USDT");
    assert!(o.confirmed.is_zero());
}
