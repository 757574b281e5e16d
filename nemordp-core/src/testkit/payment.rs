//! Conformance suite for payment backends: any [`PaymentVerifier`] must pass it.
//!
//! A kit cannot move money on its own, so the backend's author supplies a
//! [`PaymentKitDriver`] that makes money arrive (a testnet faucet, a sandbox API, or a
//! simulator) and produces correctly signed webhooks. Then:
//!
//! ```
//! # use nemordp_core::{sim::payments::SimPayments, testkit::payment, Asset};
//! # use secrecy::SecretString;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let sim = SimPayments::new(Asset::Btc, SecretString::from("whsec_kit"));
//! payment::run_all(&sim, &sim).await;
//! # });
//! ```
//!
//! Every check is its own `pub async fn` and panics with a message naming the rule it found
//! broken (`payment kit: rule "<rule>" broken: …`). Every check opens fresh requests, so the
//! checks can run in any order against the same verifier.

use std::{fmt, time::Duration};

use async_trait::async_trait;
use rust_decimal::Decimal;

use crate::{
    clock::Timestamp,
    error::{ErrorKind, Result},
    ids::OrderId,
    money::{Asset, Currency, Money},
    payment::{
        InvoiceState, InvoiceStatus, InvoiceTerms, Observation, OpenedPayment, Payment,
        PaymentRequest, PaymentVerifier, VerifiedEvent, VerifiedEventKind, WebhookRequest,
    },
    sim::payments::SimPayments,
};

/// Makes things happen on the payment network that the kit cannot do through the
/// [`PaymentVerifier`] trait itself.
#[async_trait]
pub trait PaymentKitDriver: Send + Sync {
    /// Makes `amount` arrive (confirmed or not) for the opened payment.
    async fn pay(&self, payment: &Payment, amount: Money, confirmed: bool) -> Result<()>;

    /// A correctly signed webhook reporting the current totals of `payment`.
    async fn signed_webhook(&self, payment: &Payment) -> Result<(http::HeaderMap, Vec<u8>)>;
}

#[async_trait]
impl PaymentKitDriver for SimPayments {
    async fn pay(&self, payment: &Payment, amount: Money, confirmed: bool) -> Result<()> {
        if confirmed {
            self.pay_confirmed(&payment.reference, amount)
        } else {
            SimPayments::pay(self, &payment.reference, amount)
        }
    }

    async fn signed_webhook(&self, payment: &Payment) -> Result<(http::HeaderMap, Vec<u8>)> {
        SimPayments::signed_webhook(self, &payment.reference)
    }
}

/// The amount, in minor units of the verifier's asset, that the kit's requests ask for.
pub const KIT_DUE_UNITS: u64 = 1_000_000;

/// Names the broken rule and what was seen.
fn broken(rule: &str, detail: impl fmt::Display) -> ! {
    panic!("payment kit: rule \"{rule}\" broken: {detail}")
}

/// Unwraps a result the kit needs, naming the rule when it is an error.
fn need<T>(rule: &str, what: &str, r: Result<T>) -> T {
    r.unwrap_or_else(|e| broken(rule, format_args!("{what} failed: {e}")))
}

/// A request for `units` minor units of the verifier's asset.
fn kit_request(verifier: &dyn PaymentVerifier, units: u64) -> PaymentRequest {
    PaymentRequest::new(
        OrderId::new(),
        Money::from_minor(verifier.asset(), units),
        Timestamp::from_unix_secs(1_700_000_000).saturating_add(Duration::from_secs(900)),
    )
    .with_email("kit@example.invalid")
}

/// The [`Payment`] record a store would hold for `req` opened as `opened` by `verifier`: state
/// new, nothing seen, due `req.amount` with no tolerance, fixed timestamps.
pub fn payment_record(
    verifier: &dyn PaymentVerifier,
    req: &PaymentRequest,
    opened: &OpenedPayment,
) -> Payment {
    let created = Timestamp::from_unix_secs(1_700_000_000);
    let zero = Money::zero(req.amount.asset());
    Payment {
        id: req.payment_id,
        order_id: req.order_id,
        method: verifier.name().to_owned(),
        reference: opened.reference.clone(),
        pay_to: opened.pay_to.clone(),
        checkout_url: opened.checkout_url.clone(),
        terms: InvoiceTerms {
            due: req.amount,
            tolerance_percent: Decimal::ZERO,
        },
        locked_rate: None,
        state: InvoiceState::NEW,
        seen: zero,
        confirmed: zero,
        expires_at: req.expires_at,
        monitor_until: req
            .expires_at
            .saturating_add(Duration::from_secs(24 * 3600)),
        created_at: created,
        updated_at: created,
        version: 0,
    }
}

/// Opens a fresh kit request for `units` and returns its record.
async fn open_fresh(verifier: &dyn PaymentVerifier, rule: &str, units: u64) -> Payment {
    let req = kit_request(verifier, units);
    let opened = need(rule, "open", verifier.open(&req).await);
    if opened.reference.is_empty() {
        broken(rule, "open returned an empty reference");
    }
    payment_record(verifier, &req, &opened)
}

/// Checks that an observation is for `payment`, in the verifier's asset, with confirmed ≤ seen.
fn check_shape(rule: &str, verifier: &dyn PaymentVerifier, payment: &Payment, o: &Observation) {
    if o.reference != payment.reference {
        broken(
            rule,
            format_args!(
                "observation is for reference {:?}, asked about {:?}",
                o.reference, payment.reference
            ),
        );
    }
    for (what, m) in [("seen", &o.seen), ("confirmed", &o.confirmed)] {
        if m.asset() != verifier.asset() {
            broken(
                rule,
                format_args!(
                    "{what} {m} is not in the verifier's asset {}",
                    verifier.asset()
                ),
            );
        }
    }
    if o.confirmed
        .try_cmp(&o.seen)
        .is_ok_and(std::cmp::Ordering::is_gt)
    {
        broken(
            rule,
            format_args!("confirmed {} exceeds seen {}", o.confirmed, o.seen),
        );
    }
}

/// The invoice state after applying `o` to a new invoice for `payment`.
fn state_after(rule: &str, payment: &Payment, o: &Observation) -> InvoiceState {
    need(
        rule,
        "applying the observation to a new invoice",
        InvoiceState::NEW.apply(&payment.terms, &o.as_event()),
    )
}

/// Runs every check of the payment kit.
pub async fn run_all(verifier: &dyn PaymentVerifier, driver: &dyn PaymentKitDriver) {
    open_returns_a_reference(verifier).await;
    open_is_idempotent(verifier).await;
    open_rejects_another_asset(verifier).await;
    fresh_request_observes_nothing(verifier).await;
    unknown_reference_is_not_found(verifier).await;
    partial_payment_does_not_settle(verifier, driver).await;
    full_confirmed_payment_settles(verifier, driver).await;
    webhook_matches_check(verifier, driver).await;
    webhook_replay_gives_same_keys(verifier, driver).await;
    tampered_webhook_is_unauthenticated(verifier, driver).await;
    unsigned_webhook_is_unauthenticated(verifier, driver).await;
    wrong_signature_is_unauthenticated(verifier, driver).await;
    empty_webhook_is_unauthenticated(verifier).await;
}

/// Rule: `open` returns a non-empty reference.
pub async fn open_returns_a_reference(verifier: &dyn PaymentVerifier) {
    open_fresh(verifier, "open returns a reference", KIT_DUE_UNITS).await;
}

/// Rule: opening the same payment id twice yields the same reference (or `AlreadyExists`).
pub async fn open_is_idempotent(verifier: &dyn PaymentVerifier) {
    const RULE: &str = "open is idempotent on payment_id";
    let req = kit_request(verifier, KIT_DUE_UNITS);
    let first = need(RULE, "first open", verifier.open(&req).await);
    match verifier.open(&req).await {
        Ok(second) if second.reference == first.reference && second.pay_to == first.pay_to => {}
        Ok(second) => broken(
            RULE,
            format_args!(
                "second open gave reference {:?} / pay_to {:?}, first gave {:?} / {:?}",
                second.reference, second.pay_to, first.reference, first.pay_to
            ),
        ),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => broken(
            RULE,
            format_args!("second open failed with {e} instead of AlreadyExists"),
        ),
    }
}

/// Rule: a request in an asset other than [`PaymentVerifier::asset`] is `InvalidInput`.
pub async fn open_rejects_another_asset(verifier: &dyn PaymentVerifier) {
    const RULE: &str = "open rejects an amount in another asset";
    let others = [
        Asset::Btc,
        Asset::Eth,
        Asset::Usdt,
        Asset::Fiat(Currency::Ngn),
        Asset::Fiat(Currency::Usd),
    ];
    for other in others
        .into_iter()
        .filter(|a| *a != verifier.asset())
        .take(2)
    {
        let mut req = kit_request(verifier, KIT_DUE_UNITS);
        req.amount = Money::from_minor(other, KIT_DUE_UNITS);
        match verifier.open(&req).await {
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            Err(e) => broken(
                RULE,
                format_args!("{other} request failed with {e} instead of InvalidInput"),
            ),
            Ok(o) => broken(
                RULE,
                format_args!(
                    "a {} verifier opened a {other} request as {:?}",
                    verifier.asset(),
                    o.reference
                ),
            ),
        }
    }
}

/// Rule: a fresh request observes zero seen and zero confirmed in the verifier's asset, every
/// time it is checked.
pub async fn fresh_request_observes_nothing(verifier: &dyn PaymentVerifier) {
    const RULE: &str = "a fresh request observes nothing";
    let payment = open_fresh(verifier, RULE, KIT_DUE_UNITS).await;
    for _ in 0..2 {
        let o = need(RULE, "check", verifier.check(&payment).await);
        check_shape(RULE, verifier, &payment, &o);
        if !o.seen.is_zero() || !o.confirmed.is_zero() {
            broken(
                RULE,
                format_args!(
                    "seen {} / confirmed {} before any payment",
                    o.seen, o.confirmed
                ),
            );
        }
    }
}

/// Rule: checking a reference the verifier never opened is `NotFound`.
pub async fn unknown_reference_is_not_found(verifier: &dyn PaymentVerifier) {
    const RULE: &str = "check of an unknown reference is NotFound";
    let req = kit_request(verifier, KIT_DUE_UNITS);
    let unknown = OpenedPayment::new(format!("nemordp-kit-unknown-{}", req.payment_id));
    let payment = payment_record(verifier, &req, &unknown);
    match verifier.check(&payment).await {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => broken(RULE, format_args!("failed with {e} instead of NotFound")),
        Ok(o) => broken(RULE, format_args!("observed {o:?}")),
    }
}

/// Rule: a partial payment is observed as exactly what arrived, and does not settle.
pub async fn partial_payment_does_not_settle(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
) {
    const RULE: &str = "a partial payment is observed and does not settle";
    let payment = open_fresh(verifier, RULE, KIT_DUE_UNITS).await;
    let part = Money::from_minor(verifier.asset(), KIT_DUE_UNITS / 4);
    need(RULE, "driver pay", driver.pay(&payment, part, true).await);
    let o = need(RULE, "check", verifier.check(&payment).await);
    check_shape(RULE, verifier, &payment, &o);
    if o.seen != part {
        broken(RULE, format_args!("paid {part}, observed seen {}", o.seen));
    }
    let state = state_after(RULE, &payment, &o);
    if state.status == InvoiceStatus::Settled {
        broken(
            RULE,
            format_args!("{part} of {} settled the invoice", payment.terms.due),
        );
    }
}

/// Rule: paying the full amount, confirmed, is observed as such and settles the invoice.
pub async fn full_confirmed_payment_settles(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
) {
    const RULE: &str = "a full confirmed payment settles";
    let payment = open_fresh(verifier, RULE, KIT_DUE_UNITS).await;
    let due = payment.terms.due;
    need(RULE, "driver pay", driver.pay(&payment, due, true).await);
    let o = need(RULE, "check", verifier.check(&payment).await);
    check_shape(RULE, verifier, &payment, &o);
    if o.seen != due || o.confirmed != due {
        broken(
            RULE,
            format_args!(
                "paid {due} confirmed, observed seen {} / confirmed {}",
                o.seen, o.confirmed
            ),
        );
    }
    let state = state_after(RULE, &payment, &o);
    if state.status != InvoiceStatus::Settled {
        broken(
            RULE,
            format_args!("the invoice is {} after full payment", state.status),
        );
    }
}

/// Opens a request, pays a part of it confirmed, and returns the record and the signed webhook.
async fn paid_with_webhook(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
    rule: &str,
) -> (Payment, http::HeaderMap, Vec<u8>) {
    let payment = open_fresh(verifier, rule, KIT_DUE_UNITS).await;
    let part = Money::from_minor(verifier.asset(), KIT_DUE_UNITS / 2);
    need(rule, "driver pay", driver.pay(&payment, part, true).await);
    let (headers, body) = need(
        rule,
        "driver signed_webhook",
        driver.signed_webhook(&payment).await,
    );
    (payment, headers, body)
}

async fn parse(
    verifier: &dyn PaymentVerifier,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Result<Vec<VerifiedEvent>> {
    verifier
        .parse_webhook(WebhookRequest { headers, body })
        .await
}

fn expect_unauthenticated(rule: &str, what: &str, r: Result<Vec<VerifiedEvent>>) {
    match r {
        Err(e) if e.kind() == ErrorKind::Unauthenticated => {}
        Err(e) => broken(
            rule,
            format_args!("{what}: failed with {e} instead of Unauthenticated"),
        ),
        Ok(events) => broken(rule, format_args!("{what}: accepted as {events:?}")),
    }
}

/// Rule: a correctly signed webhook parses, and the totals it reports for the payment match
/// [`PaymentVerifier::check`].
pub async fn webhook_matches_check(verifier: &dyn PaymentVerifier, driver: &dyn PaymentKitDriver) {
    const RULE: &str = "a signed webhook parses and matches check";
    let (payment, headers, body) = paid_with_webhook(verifier, driver, RULE).await;
    let events = need(
        RULE,
        "parse_webhook",
        parse(verifier, &headers, &body).await,
    );
    let checked = need(RULE, "check", verifier.check(&payment).await);
    if events.iter().any(|e| e.event_key.is_empty()) {
        broken(RULE, format_args!("an event has an empty key: {events:?}"));
    }
    let observed: Vec<&Observation> = events
        .iter()
        .filter_map(|e| match &e.kind {
            VerifiedEventKind::Observed(o) if o.reference == payment.reference => Some(o),
            _ => None,
        })
        .collect();
    if observed.is_empty() {
        broken(
            RULE,
            format_args!(
                "no Observed event for reference {:?} in {events:?}",
                payment.reference
            ),
        );
    }
    for o in observed {
        check_shape(RULE, verifier, &payment, o);
        if o.seen != checked.seen || o.confirmed != checked.confirmed {
            broken(
                RULE,
                format_args!(
                    "webhook says seen {} / confirmed {}, check says {} / {}",
                    o.seen, o.confirmed, checked.seen, checked.confirmed
                ),
            );
        }
    }
}

/// Rule: the same delivery parsed twice yields the same event keys.
pub async fn webhook_replay_gives_same_keys(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
) {
    const RULE: &str = "a replayed delivery gives the same event keys";
    let (_, headers, body) = paid_with_webhook(verifier, driver, RULE).await;
    let keys = |events: Vec<VerifiedEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.event_key).collect()
    };
    let first = keys(need(
        RULE,
        "first parse",
        parse(verifier, &headers, &body).await,
    ));
    let second = keys(need(
        RULE,
        "second parse",
        parse(verifier, &headers, &body).await,
    ));
    if first != second {
        broken(
            RULE,
            format_args!("first parse gave {first:?}, second {second:?}"),
        );
    }
}

/// Rule: a body changed in one byte is `Unauthenticated`.
pub async fn tampered_webhook_is_unauthenticated(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
) {
    const RULE: &str = "a tampered webhook body is Unauthenticated";
    let (_, headers, body) = paid_with_webhook(verifier, driver, RULE).await;
    if body.is_empty() {
        broken(RULE, "the driver's signed webhook has an empty body");
    }
    let mut positions = vec![0, body.len() / 2, body.len() - 1];
    // Also a digit, if any: turns one amount into another while keeping the JSON valid.
    if let Some(i) = body.iter().rposition(u8::is_ascii_digit) {
        positions.push(i);
    }
    for i in positions {
        let mut tampered = body.clone();
        tampered[i] = match tampered[i] {
            b'0'..=b'8' => tampered[i] + 1,
            b'9' => b'0',
            other => other ^ 0x01,
        };
        expect_unauthenticated(
            RULE,
            &format!("byte {i} changed"),
            parse(verifier, &headers, &tampered).await,
        );
    }
}

/// Rule: a webhook without its signature header is `Unauthenticated`.
///
/// Removes every header whose name mentions `sig` (one at a time), then all headers.
pub async fn unsigned_webhook_is_unauthenticated(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
) {
    const RULE: &str = "a webhook without signature is Unauthenticated";
    let (_, headers, body) = paid_with_webhook(verifier, driver, RULE).await;
    for name in headers.keys().filter(|n| n.as_str().contains("sig")) {
        let mut stripped = headers.clone();
        stripped.remove(name);
        expect_unauthenticated(
            RULE,
            &format!("header {name} removed"),
            parse(verifier, &stripped, &body).await,
        );
    }
    expect_unauthenticated(
        RULE,
        "all headers removed",
        parse(verifier, &http::HeaderMap::new(), &body).await,
    );
}

/// Changes the alphanumeric character at or after the middle of `value` into another of the
/// same class (digit, lower- or upper-case letter), so hex stays hex and base64 stays base64.
fn flip_middle(value: &[u8]) -> Option<Vec<u8>> {
    let i = (value.len() / 2..value.len()).find(|&i| value[i].is_ascii_alphanumeric())?;
    let mut out = value.to_vec();
    out[i] = match value[i] {
        b'0' => b'1',
        b'1'..=b'9' => b'0',
        b'a' => b'b',
        b'b'..=b'z' => b'a',
        b'A' => b'B',
        _ => b'A',
    };
    Some(out)
}

/// Rule: a signature made with a different secret is `Unauthenticated`.
///
/// Changes one character in the middle of each header whose name mentions `sig`.
pub async fn wrong_signature_is_unauthenticated(
    verifier: &dyn PaymentVerifier,
    driver: &dyn PaymentKitDriver,
) {
    const RULE: &str = "a wrong signature is Unauthenticated";
    let (_, headers, body) = paid_with_webhook(verifier, driver, RULE).await;
    let mut flipped_any = false;
    for (name, value) in headers.iter().filter(|(n, _)| n.as_str().contains("sig")) {
        let Some(flipped) = flip_middle(value.as_bytes()) else {
            continue;
        };
        let Ok(flipped) = http::HeaderValue::from_bytes(&flipped) else {
            continue;
        };
        flipped_any = true;
        let mut forged = headers.clone();
        forged.insert(name, flipped);
        expect_unauthenticated(
            RULE,
            &format!("header {name} changed"),
            parse(verifier, &forged, &body).await,
        );
    }
    if !flipped_any {
        broken(
            RULE,
            format_args!(
                "the driver's webhook has no signature header (a name containing \"sig\") to \
                 alter: {:?}",
                headers.keys().collect::<Vec<_>>()
            ),
        );
    }
}

/// Rule: an empty body with no headers is `Unauthenticated`.
pub async fn empty_webhook_is_unauthenticated(verifier: &dyn PaymentVerifier) {
    const RULE: &str = "an empty unsigned webhook is Unauthenticated";
    expect_unauthenticated(
        RULE,
        "empty request",
        parse(verifier, &http::HeaderMap::new(), b"").await,
    );
}
