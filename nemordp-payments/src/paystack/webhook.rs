//! Webhook authentication and parsing, usable on their own (the benchmark and hosts that want
//! to answer 200 fast and queue the work call these directly).
//!
//! Paystack signs the raw request body with HMAC-SHA512 keyed by the secret API key and sends
//! the hex digest in `x-paystack-signature`. The body has no timestamp and no event id, so the
//! dedupe key is built from the event name and the object's own id (or reference/code).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256, Sha512};

use nemordp_core::{Error, ErrorKind, Result};

use super::model::{Dispute, Invoice, Refund, Subscription, Transaction};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-paystack-signature";

/// The addresses Paystack documents as webhook sources (test and live). An allow-list is
/// defence in depth only: proxies and list changes make it unreliable on its own.
pub const PAYSTACK_SOURCE_IPS: [IpAddr; 3] = [
    IpAddr::V4(std::net::Ipv4Addr::new(52, 31, 139, 75)),
    IpAddr::V4(std::net::Ipv4Addr::new(52, 49, 173, 169)),
    IpAddr::V4(std::net::Ipv4Addr::new(52, 214, 14, 220)),
];

type HmacSha512 = Hmac<Sha512>;

/// Checks `signature_hex` against HMAC-SHA512(`secret`, `body`) in constant time.
///
/// Any failure (missing, not hex, wrong length, wrong value) is `Unauthenticated` with no
/// hint of which byte differed.
pub fn verify_signature(secret: &[u8], body: &[u8], signature_hex: &[u8]) -> Result<()> {
    let unauthenticated = |why: &str| {
        Error::new(
            ErrorKind::Unauthenticated,
            format!("webhook signature {why}"),
        )
        .with_backend(super::NAME)
        .with_operation("parse_webhook")
    };
    let trimmed = signature_hex.trim_ascii();
    if trimmed.len() != 128 {
        return Err(unauthenticated("has the wrong length"));
    }
    let mut sig = [0u8; 64];
    hex::decode_to_slice(trimmed, &mut sig).map_err(|_| unauthenticated("is not hex"))?;
    let mut mac =
        HmacSha512::new_from_slice(secret).map_err(|_| unauthenticated("key unusable"))?;
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| unauthenticated("does not match"))
}

/// The hex HMAC-SHA512 signature Paystack would send for `body` (for fakes, tests and
/// forwarding proxies).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha512::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Refund progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefundStage {
    /// `refund.pending`.
    Pending,
    /// `refund.processing`.
    Processing,
    /// `refund.processed`: money went back to the customer.
    Processed,
    /// `refund.failed`.
    Failed,
}

/// Dispute progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisputeStage {
    /// `charge.dispute.create`.
    Created,
    /// `charge.dispute.remind`.
    Reminded,
    /// `charge.dispute.resolve`.
    Resolved,
}

/// Subscription lifecycle events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionStage {
    /// `subscription.create`.
    Created,
    /// `subscription.not_renew`: cancelled, runs to period end.
    NotRenewing,
    /// `subscription.disable`: ended.
    Disabled,
    /// `subscription.expiring_cards`.
    ExpiringCards,
}

/// Invoice (renewal) events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvoiceStage {
    /// `invoice.create`: a renewal is coming.
    Created,
    /// `invoice.update`: the renewal's outcome.
    Updated,
    /// `invoice.payment_failed`: the renewal charge failed (Paystack does not retry).
    PaymentFailed,
}

/// A typed Paystack event.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PaystackEvent {
    /// `charge.success`.
    ChargeSuccess(Box<Transaction>),
    /// `charge.dispute.*`.
    Dispute(DisputeStage, Box<Dispute>),
    /// `refund.*`.
    Refund(RefundStage, Refund),
    /// `invoice.*`.
    Invoice(InvoiceStage, Box<Invoice>),
    /// `subscription.*`.
    Subscription(SubscriptionStage, Box<Subscription>),
    /// Any other event: accepted and ignored.
    Other,
}

/// A parsed delivery.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ParsedEvent {
    /// The event name, e.g. `charge.success`.
    pub event: String,
    /// Stable dedupe key: `<event>:<object id>` (the same delivery always gives the same key).
    pub dedupe_key: String,
    /// The typed payload.
    pub payload: PaystackEvent,
}

/// One pass over the body: the event name and the raw `data` text, parsed again only into the
/// event's own type (no intermediate `Value` tree).
#[derive(Deserialize)]
struct Envelope<'a> {
    event: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// The identity fields of any object, for the dedupe key.
#[derive(Deserialize)]
struct Ids<'a> {
    #[serde(default)]
    id: Option<IdValue>,
    #[serde(default, borrow)]
    reference: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    invoice_code: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    subscription_code: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    transaction_reference: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdValue {
    Number(serde_json::Number),
    Text(String),
    Other(serde::de::IgnoredAny),
}

/// Parses an authenticated body. Malformed JSON, a missing `event` or a known event whose
/// `data` does not have the documented shape is `InvalidInput`; unknown events are `Other`.
pub fn parse_event(body: &[u8]) -> Result<ParsedEvent> {
    let invalid = |m: String| {
        Error::invalid_input(m)
            .with_backend(super::NAME)
            .with_operation("parse_webhook")
    };
    let env: Envelope<'_> = serde_json::from_slice(body)
        .map_err(|e| invalid(format!("webhook body is not a paystack event: {e}")))?;
    if env.event.is_empty() || env.event.len() > 100 {
        return Err(invalid("webhook event name is empty or too long".into()));
    }
    let data = env.data.map_or("null", RawValue::get);
    let is_object = data.starts_with('{');
    let id = object_id(data).unwrap_or_else(|| {
        // No id anywhere: the body's hash is stable across redeliveries.
        hex::encode(&Sha256::digest(body)[..16])
    });
    let dedupe_key = format!("{}:{id}", env.event);
    if !is_object && is_known(&env.event) {
        return Err(invalid(format!("{} without a data object", env.event)));
    }
    let e = env.event.as_str();
    let payload = match e {
        "charge.success" => {
            let tx: Transaction = typed(e, data)?;
            if tx.reference.is_empty() {
                return Err(invalid("charge.success without a reference".into()));
            }
            PaystackEvent::ChargeSuccess(Box::new(tx))
        }
        "charge.dispute.create" => PaystackEvent::Dispute(DisputeStage::Created, typed(e, data)?),
        "charge.dispute.remind" => PaystackEvent::Dispute(DisputeStage::Reminded, typed(e, data)?),
        "charge.dispute.resolve" => PaystackEvent::Dispute(DisputeStage::Resolved, typed(e, data)?),
        "refund.pending" => PaystackEvent::Refund(RefundStage::Pending, typed(e, data)?),
        "refund.processing" => PaystackEvent::Refund(RefundStage::Processing, typed(e, data)?),
        "refund.processed" => PaystackEvent::Refund(RefundStage::Processed, typed(e, data)?),
        "refund.failed" => PaystackEvent::Refund(RefundStage::Failed, typed(e, data)?),
        "invoice.create" => PaystackEvent::Invoice(InvoiceStage::Created, typed(e, data)?),
        "invoice.update" => PaystackEvent::Invoice(InvoiceStage::Updated, typed(e, data)?),
        "invoice.payment_failed" => {
            PaystackEvent::Invoice(InvoiceStage::PaymentFailed, typed(e, data)?)
        }
        "subscription.create" => {
            PaystackEvent::Subscription(SubscriptionStage::Created, typed(e, data)?)
        }
        "subscription.not_renew" => {
            PaystackEvent::Subscription(SubscriptionStage::NotRenewing, typed(e, data)?)
        }
        "subscription.disable" => {
            PaystackEvent::Subscription(SubscriptionStage::Disabled, typed(e, data)?)
        }
        "subscription.expiring_cards" => PaystackEvent::Subscription(
            SubscriptionStage::ExpiringCards,
            Box::new(Subscription {
                subscription_code: None,
                email_token: None,
                status: None,
                next_payment_date: None,
                amount: None,
            }),
        ),
        _ => PaystackEvent::Other,
    };
    Ok(ParsedEvent {
        event: env.event,
        dedupe_key,
        payload,
    })
}

fn typed<T: serde::de::DeserializeOwned>(event: &str, data: &str) -> Result<T> {
    serde_json::from_str(data).map_err(|e| {
        Error::invalid_input(format!("{event} data has an unexpected shape: {e}"))
            .with_backend(super::NAME)
            .with_operation("parse_webhook")
    })
}

fn is_known(event: &str) -> bool {
    [
        "charge.",
        "refund.",
        "invoice.",
        "subscription.create",
        "subscription.not_renew",
        "subscription.disable",
    ]
    .iter()
    .any(|p| event.starts_with(p))
}

/// The object's own identity: `id`, else `reference`, else an invoice or subscription code.
fn object_id(data: &str) -> Option<String> {
    let ids: Ids<'_> = serde_json::from_str(data).ok()?;
    let text = |s: Option<std::borrow::Cow<'_, str>>| {
        s.filter(|s| !s.is_empty() && s.len() <= 200)
            .map(std::borrow::Cow::into_owned)
    };
    match ids.id {
        Some(IdValue::Number(n)) => return Some(n.to_string()),
        Some(IdValue::Text(s)) if !s.is_empty() && s.len() <= 200 => return Some(s),
        _ => {}
    }
    text(ids.reference)
        .or_else(|| text(ids.invoice_code))
        .or_else(|| text(ids.subscription_code))
        .or_else(|| text(ids.transaction_reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"sk_test_unit";

    #[test]
    fn signatures() {
        let body = br#"{"event":"charge.success","data":{"id":1,"reference":"r"}}"#;
        let sig = sign(KEY, body);
        assert!(verify_signature(KEY, body, sig.as_bytes()).is_ok());
        assert!(
            verify_signature(KEY, body, sig.to_uppercase().as_bytes()).is_ok(),
            "hex case"
        );
        let bad = |b: &[u8], s: &[u8]| verify_signature(KEY, b, s).unwrap_err().kind();
        assert_eq!(bad(body, b""), ErrorKind::Unauthenticated);
        assert_eq!(
            bad(body, &sig.as_bytes()[..127]),
            ErrorKind::Unauthenticated
        );
        assert_eq!(bad(b"{}", sig.as_bytes()), ErrorKind::Unauthenticated);
        assert_eq!(
            bad(body, "zz".repeat(64).as_bytes()),
            ErrorKind::Unauthenticated
        );
        let other = sign(b"sk_test_other", body);
        assert_eq!(bad(body, other.as_bytes()), ErrorKind::Unauthenticated);
    }

    #[test]
    fn events_parse_into_types_with_stable_keys() {
        let e = parse_event(br#"{"event":"charge.success","data":{"id":42,"reference":"abc","amount":500,"currency":"NGN","status":"success","metadata":"{\"order_id\":\"o\"}"}}"#).unwrap();
        assert_eq!(e.dedupe_key, "charge.success:42");
        let PaystackEvent::ChargeSuccess(tx) = e.payload else {
            panic!("{e:?}")
        };
        assert_eq!(
            (tx.amount, tx.metadata_str("order_id")),
            (Some(500), Some("o"))
        );
        let e = parse_event(br#"{"event":"refund.processed","data":{"transaction_reference":"abc","status":"processed"}}"#).unwrap();
        assert_eq!(e.dedupe_key, "refund.processed:abc");
        assert!(matches!(
            e.payload,
            PaystackEvent::Refund(RefundStage::Processed, _)
        ));
        let e = parse_event(br#"{"event":"transfer.success","data":{"x":1}}"#).unwrap();
        assert!(matches!(e.payload, PaystackEvent::Other));
        assert_eq!(
            e.dedupe_key,
            parse_event(br#"{"event":"transfer.success","data":{"x":1}}"#)
                .unwrap()
                .dedupe_key
        );
        let e = parse_event(br#"{"event":"subscription.disable","data":{"subscription_code":"SUB_1","email_token":"tok","status":"complete"}}"#).unwrap();
        assert_eq!(e.dedupe_key, "subscription.disable:SUB_1");
        assert!(!format!("{e:?}").contains("tok\""), "email token is secret");
    }

    #[test]
    fn malformed_bodies_are_invalid_input() {
        for body in [
            &b"not json"[..],
            b"{}",
            br#"{"event":""}"#,
            br#"{"event":"charge.success","data":{"id":1,"reference":"r","amount":-5}}"#,
            br#"{"event":"charge.success","data":{"id":1,"reference":"r","amount":1.5}}"#,
            br#"{"event":"charge.success","data":{"id":1}}"#,
            br#"{"event":"charge.success","data":"x"}"#,
            br#"{"event":"charge.success","data":{"id":1,"reference":"r","amount":"100"}}"#,
        ] {
            let e = parse_event(body).unwrap_err();
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
