//! Figures for the BTC verifier: address derivation speed, and explorer requests per check
//! when many requests are polled at once (the polling budget).
//!
//! `cargo bench -p nemordp-payments --features btc --bench btc_figures`

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bitcoin::{
    Address, Network,
    bip32::{DerivationPath, Xpriv, Xpub},
    hashes::Hash,
    secp256k1::Secp256k1,
};
use serde_json::json;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use nemordp_core::{
    Asset, Money, OrderId, PaymentVerifier, Timestamp, payment::PaymentRequest,
    sim::store::MemoryStore, testkit::payment::payment_record,
};
use nemordp_payments::btc::{AddressDeriver, BtcBuilder};

const TIP: u64 = 800_000;

/// Every address has one confirmed payment of 10,000 sat in block `TIP - 2`.
#[derive(Clone)]
struct OnePaymentEach {
    requests: Arc<AtomicUsize>,
}

impl Respond for OnePaymentEach {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let path = req.url.path();
        if path == "/blocks/tip/height" {
            return ResponseTemplate::new(200).set_body_string(TIP.to_string());
        }
        if path.ends_with("/status") {
            return ResponseTemplate::new(200).set_body_json(json!({"in_best_chain": true}));
        }
        let addr = path.split('/').nth(2).unwrap_or_default();
        let Ok(a) = Address::from_str(addr) else {
            return ResponseTemplate::new(400).set_body_string("Invalid Bitcoin address");
        };
        let a = a.assume_checked();
        let txid = bitcoin::Txid::hash(addr.as_bytes());
        ResponseTemplate::new(200).set_body_json(json!([{
            "txid": txid.to_string(),
            "version": 2, "locktime": 0, "vin": [], "size": 222, "weight": 561, "fee": 1000,
            "vout": [{
                "scriptpubkey": hex::encode(a.script_pubkey().as_bytes()),
                "scriptpubkey_asm": a.script_pubkey().to_asm_string(),
                "scriptpubkey_type": "v0_p2wpkh",
                "scriptpubkey_address": addr,
                "value": 10_000
            }],
            "status": {"confirmed": true, "block_height": TIP - 2,
                       "block_hash": "00000000000000000001aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "block_time": 1_700_000_000}
        }]))
    }
}

fn tpub() -> String {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(Network::Regtest, &[7_u8; 32]).unwrap();
    let account = master
        .derive_priv(&secp, &DerivationPath::from_str("m/84'/1'/0'").unwrap())
        .unwrap();
    Xpub::from_priv(&secp, &account).to_string()
}

fn main() {
    let d = AddressDeriver::new(&tpub(), Network::Regtest).unwrap();
    let n = 10_000_u64;
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(d.address(i).unwrap());
    }
    let per = t.elapsed() / u32::try_from(n).unwrap();
    println!("derive P2WPKH address (xpub/0/i): {per:?} per address ({n} addresses)");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = MockServer::start().await;
        let fake = OnePaymentEach {
            requests: Arc::new(AtomicUsize::new(0)),
        };
        Mock::given(method("GET"))
            .respond_with(fake.clone())
            .mount(&server)
            .await;
        let verifier = Arc::new(
            BtcBuilder::new()
                .with_xpub(tpub())
                .with_network(Network::Regtest)
                .with_esplora_url(server.uri())
                .with_min_request_spacing(Duration::ZERO)
                .with_max_in_flight(16)
                .build(Arc::new(MemoryStore::new()))
                .unwrap(),
        );
        let pending = 1_000_usize;
        let mut payments = Vec::with_capacity(pending);
        for _ in 0..pending {
            let req = PaymentRequest::new(
                OrderId::new(),
                Money::from_minor(Asset::Btc, 10_000_u64),
                Timestamp::from_unix_secs(1),
            );
            let opened = verifier.open(&req).await.unwrap();
            payments.push(payment_record(verifier.as_ref(), &req, &opened));
        }
        fake.requests.store(0, Ordering::Relaxed);
        let t = Instant::now();
        let checks = payments.iter().map(|p| verifier.check(p));
        for o in futures::future::join_all(checks).await {
            assert_eq!(o.unwrap().confirmed.minor_u64(), Some(10_000));
        }
        let took = t.elapsed();
        let requests = fake.requests.load(Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        let per_check = requests as f64 / pending as f64;
        println!(
            "poll {pending} paid requests (local fake, no spacing, 16 in flight): {took:?}, \
             {requests} explorer requests ({per_check:.3} per check)"
        );
        println!(
            "  at the default 250 ms spacing that round takes >= {:?} against a public explorer",
            Duration::from_millis(250) * u32::try_from(requests).unwrap()
        );
    });
}
