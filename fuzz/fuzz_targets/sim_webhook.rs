//! Simulated payment webhooks: arbitrary body and signature header into
//! `SimPayments::parse_webhook`. Never panics; unless some signature header value is the
//! hex HMAC-SHA256 of the body under the secret (computed here independently), the result is
//! an `Unauthenticated` error, whatever the body. With a valid signature the result is never
//! `Unauthenticated`, a refusal is `InvalidInput`, and an accepted event matches the body:
//! key `<type>:<id>`, the reference, and totals in the verifier's asset with
//! confirmed <= seen.
//!
//! Input: `control 0xFF secret 0xFF header 0xFF body`; the body is every remaining byte.
//! `control`: byte 0 (mod 8) picks how the signature header is made (see [`Signature`]: raw
//! header bytes, missing, the valid signature, or the valid one altered), byte 1 the alteration
//! parameter, byte 2 bit 0 the verifier's asset (ETH, else USDT).
#![no_main]

use futures::executor::block_on;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use nemordp_core::{
    payment::{VerifiedEventKind, WebhookRequest},
    sim::payments::{SimPayments, SIGNATURE_HEADER},
    Asset, ErrorKind, Money, PaymentVerifier,
};
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug)]
enum Signature {
    /// The header bytes from the input.
    Raw,
    /// No signature header.
    Missing,
    /// The correct lowercase hex signature.
    Valid,
    /// The correct signature in uppercase hex.
    ValidUpper,
    /// The correct signature cut to this many hex digits.
    Truncated(u8),
    /// The correct signature with one hex digit changed.
    Flipped(u8),
    /// The correct signature with the raw header bytes appended.
    Extended,
    /// The raw header first, then the correct signature as a second value.
    RawThenValid,
}

#[derive(Debug)]
struct Control {
    signature: Signature,
    eth: bool,
}

impl Control {
    fn parse(b: &[u8]) -> Self {
        let byte = |i: usize| b.get(i).copied().unwrap_or(0);
        let signature = match byte(0) % 8 {
            0 => Signature::Raw,
            1 => Signature::Missing,
            2 => Signature::Valid,
            3 => Signature::ValidUpper,
            4 => Signature::Truncated(byte(1)),
            5 => Signature::Flipped(byte(1)),
            6 => Signature::Extended,
            _ => Signature::RawThenValid,
        };
        Self {
            signature,
            eth: byte(2) & 1 == 1,
        }
    }
}

fn mac(secret: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == 0xff);
    let control = parts.next().unwrap_or(&[]);
    let (Some(secret), Some(raw), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let Ok(secret) = std::str::from_utf8(secret) else {
        return;
    };
    let control = Control::parse(control);
    let asset = if control.eth { Asset::Eth } else { Asset::Usdt };
    let sim = SimPayments::new(asset, SecretString::from(secret));

    let expected = mac(secret.as_bytes(), body);
    let good = hex::encode(&expected);
    let mut values: Vec<Vec<u8>> = Vec::new();
    match control.signature {
        Signature::Raw => values.push(raw.to_vec()),
        Signature::Missing => {}
        Signature::Valid => values.push(good.clone().into_bytes()),
        Signature::ValidUpper => values.push(good.to_uppercase().into_bytes()),
        Signature::Truncated(n) => {
            values.push(good.as_bytes()[..usize::from(n) % good.len()].to_vec());
        }
        Signature::Flipped(i) => {
            let mut v = good.clone().into_bytes();
            let i = usize::from(i) % v.len();
            v[i] = if v[i] == b'0' { b'1' } else { b'0' };
            values.push(v);
        }
        Signature::Extended => {
            let mut v = good.clone().into_bytes();
            v.extend_from_slice(raw);
            values.push(v);
        }
        Signature::RawThenValid => {
            values.push(raw.to_vec());
            values.push(good.clone().into_bytes());
        }
    }
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    for v in &values {
        // Bytes that cannot be a header value cannot arrive in a request.
        let Ok(v) = http::HeaderValue::from_bytes(v) else {
            return;
        };
        headers.append(SIGNATURE_HEADER, v);
    }

    let valid = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| hex::decode(s).ok())
            .is_some_and(|sig| sig == expected)
    };
    let any_valid = values.iter().any(|v| valid(v));
    let first_valid = values.first().is_some_and(|v| valid(v));

    let result = block_on(sim.parse_webhook(WebhookRequest {
        headers: &headers,
        body,
    }));

    if !any_valid {
        match &result {
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::Unauthenticated,
                "unsigned webhook refused as {:?}, not Unauthenticated: {e}",
                e.kind()
            ),
            Ok(events) => panic!("forged webhook accepted: {events:?}"),
        }
        return;
    }
    if first_valid {
        if let Err(e) = &result {
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidInput,
                "signed webhook refused as {:?}: {e}",
                e.kind()
            );
        }
    }
    let Ok(events) = result else {
        return;
    };
    assert_eq!(events.len(), 1);
    let event = &events[0];
    // serde_json does not check UTF-8 inside the strings of fields it ignores, so an accepted
    // body may hold invalid UTF-8 there (harmless: the body is authenticated and such fields
    // are never read). Read it lossily to compare the fields that matter.
    let json: Value =
        serde_json::from_str(&String::from_utf8_lossy(body)).expect("accepted body is not JSON");
    let field = |k: &str| json[k].as_str().unwrap_or_else(|| panic!("no string {k}"));
    let (id, kind, reference) = (field("id"), field("type"), field("reference"));
    assert!(!id.is_empty() && !reference.is_empty());
    assert_eq!(event.event_key, format!("{kind}:{id}"));
    let seen: Money = field("seen").parse().expect("seen");
    let confirmed: Money = field("confirmed").parse().expect("confirmed");
    assert_eq!(seen.asset(), asset);
    assert_eq!(confirmed.asset(), asset);
    assert!(!confirmed.try_cmp(&seen).unwrap().is_gt());
    match &event.kind {
        VerifiedEventKind::Observed(o) => {
            assert_eq!(kind, "observed");
            assert_eq!(o.reference, reference);
            assert_eq!(o.seen, seen);
            assert_eq!(o.confirmed, confirmed);
        }
        VerifiedEventKind::Reversed {
            reference: r,
            reason,
        } => {
            assert_eq!(kind, "reversed");
            assert_eq!(r, reference);
            assert_eq!(reason.as_str(), json["reason"].as_str().unwrap_or(""));
        }
        other => panic!("unexpected event {other:?}"),
    }
});
