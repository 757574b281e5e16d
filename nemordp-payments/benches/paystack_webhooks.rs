//! Paystack webhook throughput: HMAC-SHA512 signature check (constant time) plus parsing into a
//! typed event, for a 1 KiB `charge.success` body. Goal: ≥ 100,000 events/s per core.
//!
//! `cargo bench -p nemordp-payments --features paystack --bench paystack_webhooks`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nemordp_payments::paystack::webhook::{PaystackEvent, parse_event, sign, verify_signature};
use serde_json::json;

const KEY: &[u8] = b"sk_live_0123456789abcdef0123456789abcdef";

/// A realistic `charge.success` body padded to exactly 1024 bytes.
fn body_1kib() -> Vec<u8> {
    let mut pad = String::new();
    loop {
        let v = json!({
            "event": "charge.success",
            "data": {
                "id": 4_099_260_516_u64, "domain": "live", "status": "success",
                "reference": "0193c1f2-7a4b-7c3e-9d21-5f0e8a6b4c2d", "amount": 4_500_000,
                "message": null, "gateway_response": "Successful",
                "paid_at": "2026-11-26T01:00:00.000Z", "created_at": "2026-11-26T00:59:00.000Z",
                "channel": "card", "currency": "NGN", "ip_address": "198.51.100.7",
                "metadata": {"order_id": "0193c1f2-7a4b-7c3e-9d21-000000000001",
                             "nemordp_payment_id": "0193c1f2-7a4b-7c3e-9d21-5f0e8a6b4c2d",
                             "nemordp_amount": 4_500_000, "nemordp_currency": "NGN", "pad": pad},
                "fees": 10_000,
                "authorization": {"authorization_code": "AUTH_8dfhjjdt", "bin": "408408",
                    "last4": "4081", "exp_month": "12", "exp_year": "2030", "channel": "card",
                    "card_type": "visa", "bank": "TEST BANK", "country_code": "NG",
                    "brand": "visa", "reusable": true, "signature": "SIG_uSYN4fv1adlAuoij8QXh"},
                "customer": {"id": 84_312, "email": "ada@example.com",
                    "customer_code": "CUS_hdhye17yj8qd2tx", "risk_action": "default"},
                "requested_amount": 4_500_000
            }
        });
        let bytes = serde_json::to_vec(&v).unwrap();
        match bytes.len() {
            1024 => return bytes,
            n if n < 1024 => pad.push_str(&"x".repeat(1024 - n)),
            n => panic!("base body is already {n} bytes"),
        }
    }
}

fn bench(c: &mut Criterion) {
    let body = body_1kib();
    let signature = sign(KEY, &body);
    let mut g = c.benchmark_group("paystack_webhook_1kib");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_signature", |b| {
        b.iter(|| {
            verify_signature(KEY, black_box(&body), black_box(signature.as_bytes())).unwrap();
        });
    });
    g.bench_function("parse_event", |b| {
        b.iter(|| parse_event(black_box(&body)).unwrap());
    });
    g.bench_function("verify_and_parse", |b| {
        b.iter(|| {
            verify_signature(KEY, black_box(&body), black_box(signature.as_bytes())).unwrap();
            let e = parse_event(black_box(&body)).unwrap();
            assert!(matches!(e.payload, PaystackEvent::ChargeSuccess(_)));
            e
        });
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
