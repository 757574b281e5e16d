//! Node behaviours anvil does not show: a node without `eth_getBlockReceipts` (one receipt per
//! matching transaction instead), a failed transaction in the fallback path, and a node that
//! reports a counted log again with `removed: true`. Served by a stateful JSON-RPC fake that
//! answers in the shapes of the execution-apis spec.
#![cfg(all(feature = "eth", feature = "usdt"))]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use nemordp_core::{
    Asset, Money, OrderId, Timestamp,
    payment::{PaymentRequest, PaymentVerifier},
    sim::store::MemoryStore,
    testkit::payment as kit,
};
use nemordp_payments::evm::{ConfirmationPolicy, EvmPayments};

const XPUB: &str = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8";
const TOKEN: &str = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
const TRANSFER: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

#[derive(Default)]
struct Chain {
    blocks: Vec<Value>,
    logs: HashMap<String, Vec<Value>>,
    receipts: HashMap<String, &'static str>,
    methods: Vec<String>,
}

impl Chain {
    fn hash(n: u64) -> String {
        format!("{:#066x}", 0xb10c_0000_u64 + n)
    }

    /// Appends a block with `txs` (`(hash, to, wei, status)`) and `logs`.
    fn push(&mut self, txs: &[(u64, Address, u64, &'static str)], logs: Vec<Value>) -> String {
        let n = self.blocks.len() as u64;
        let hash = Self::hash(n);
        let transactions: Vec<Value> = txs
            .iter()
            .map(|(h, to, wei, status)| {
                let tx = format!("{h:#066x}");
                self.receipts.insert(tx.clone(), status);
                json!({"hash": tx, "to": to, "value": format!("{wei:#x}"), "type": "0x2"})
            })
            .collect();
        self.blocks.push(json!({
            "number": format!("{n:#x}"),
            "hash": hash,
            "parentHash": if n == 0 { format!("{:#066x}", 0) } else { Self::hash(n - 1) },
            "transactions": transactions,
        }));
        self.logs.insert(hash.clone(), logs);
        hash
    }
}

fn transfer(to: Address, value: u64, block_hash: &str, tx: u64, removed: bool) -> Value {
    json!({
        "address": TOKEN,
        "topics": [TRANSFER, Address::repeat_byte(7).into_word(), to.into_word()],
        "data": B256::from(U256::from(value)),
        "blockHash": block_hash,
        "transactionHash": format!("{tx:#066x}"),
        "logIndex": "0x0",
        "removed": removed,
    })
}

struct Node(Arc<Mutex<Chain>>);

impl Respond for Node {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let mut chain = self.0.lock().unwrap();
        let method = body["method"].as_str().unwrap().to_owned();
        chain.methods.push(method.clone());
        let params = &body["params"];
        let head = chain.blocks.len() as u64 - 1;
        let answer = match method.as_str() {
            "eth_chainId" => json!({"result": "0x1"}),
            "eth_blockNumber" => json!({"result": format!("{head:#x}")}),
            "eth_getBlockByNumber" => {
                let n = match params[0].as_str().unwrap() {
                    "latest" => head,
                    hex => u64::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap(),
                };
                json!({"result": chain.blocks.get(usize::try_from(n).unwrap()).cloned().unwrap_or(Value::Null)})
            }
            "eth_getLogs" => {
                let filter = &params[0];
                assert_eq!(
                    filter["address"].as_str().unwrap().to_lowercase(),
                    TOKEN.to_lowercase()
                );
                assert_eq!(filter["topics"][0][0], TRANSFER);
                let hash = filter["blockHash"].as_str().unwrap();
                json!({"result": chain.logs.get(hash).cloned().unwrap_or_default()})
            }
            "eth_getBlockReceipts" => {
                json!({"error": {"code": -32601, "message": "the method eth_getBlockReceipts does not exist/is not available"}})
            }
            "eth_getTransactionReceipt" => {
                let tx = params[0].as_str().unwrap();
                match chain.receipts.get(tx) {
                    Some(status) => json!({"result": {"transactionHash": tx, "status": status}}),
                    None => json!({"result": null}),
                }
            }
            other => panic!("unexpected method {other}"),
        };
        let mut out = answer;
        out["jsonrpc"] = json!("2.0");
        out["id"] = body["id"].clone();
        ResponseTemplate::new(200).set_body_json(out)
    }
}

#[tokio::test]
async fn receipt_fallback_failed_transactions_and_removed_logs() {
    let chain = Arc::new(Mutex::new(Chain::default()));
    chain.lock().unwrap().push(&[], vec![]);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Node(chain.clone()))
        .mount(&server)
        .await;
    let payments = EvmPayments::builder()
        .rpc_url(server.uri())
        .xpub(XPUB)
        .usdt_contract(TOKEN.parse().unwrap())
        .confirmations(ConfirmationPolicy::Depth(2))
        .min_sync_interval(Duration::ZERO)
        .build(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let (eth, usdt) = (payments.eth(), payments.usdt());
    let open = |v: &nemordp_payments::evm::EvmVerifier, asset| {
        let v = v.clone();
        async move {
            let req = PaymentRequest::new(
                OrderId::new(),
                Money::from_minor(asset, 100_u64),
                Timestamp::from_unix_secs(1_700_000_900),
            );
            let opened = v.open(&req).await.unwrap();
            kit::payment_record(&v, &req, &opened)
        }
    };
    let pe = open(&eth, Asset::Eth).await;
    let pu = open(&usdt, Asset::Usdt).await;
    let (a_eth, a_usdt): (Address, Address) =
        (pe.reference.parse().unwrap(), pu.reference.parse().unwrap());
    {
        let mut c = chain.lock().unwrap();
        let h = Chain::hash(1);
        c.push(
            &[(0xe1, a_eth, 60, "0x1"), (0xe2, a_eth, 40, "0x0")],
            vec![transfer(a_usdt, 100, &h, 0xf1, false)],
        );
    }
    let o = eth.check(&pe).await.unwrap();
    assert_eq!(
        o.seen,
        Money::from_minor(Asset::Eth, 60_u64),
        "the failed transfer is not counted"
    );
    assert!(o.confirmed.is_zero());
    let o = usdt.check(&pu).await.unwrap();
    assert_eq!(o.seen, Money::from_minor(Asset::Usdt, 100_u64));
    {
        let c = chain.lock().unwrap();
        assert_eq!(
            c.methods
                .iter()
                .filter(|m| *m == "eth_getTransactionReceipt")
                .count(),
            2,
            "one receipt per matching transaction after eth_getBlockReceipts failed: {:?}",
            c.methods
        );
    }
    // The node reports the counted log as removed in the next block's answer.
    {
        let mut c = chain.lock().unwrap();
        let h1 = Chain::hash(1);
        let h2 = Chain::hash(2);
        let mut removed = transfer(a_usdt, 100, &h1, 0xf1, true);
        removed["blockHash"] = json!(h2);
        c.push(&[], vec![removed]);
    }
    let o = usdt.check(&pu).await.unwrap();
    assert!(o.seen.is_zero(), "removed log undone: {o:?}");
    let o = eth.check(&pe).await.unwrap();
    assert_eq!(
        o.confirmed,
        Money::from_minor(Asset::Eth, 60_u64),
        "2 confirmations"
    );
}

/// Concurrent opens never share an address, and concurrent re-opens of one payment id agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_opens_get_distinct_addresses() {
    let chain = Arc::new(Mutex::new(Chain::default()));
    chain.lock().unwrap().push(&[], vec![]);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Node(chain.clone()))
        .mount(&server)
        .await;
    let payments = EvmPayments::builder()
        .rpc_url(server.uri())
        .xpub(XPUB)
        .usdt_contract(TOKEN.parse().unwrap())
        .build(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let request = || {
        PaymentRequest::new(
            OrderId::new(),
            Money::from_minor(Asset::Usdt, 100_u64),
            Timestamp::from_unix_secs(1_700_000_900),
        )
    };
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let v = payments.usdt();
        let req = request();
        tasks.push(tokio::spawn(async move {
            v.open(&req).await.unwrap().reference
        }));
    }
    let same = request();
    for _ in 0..10 {
        let v = payments.usdt();
        let req = same.clone();
        tasks.push(tokio::spawn(async move {
            v.open(&req).await.unwrap().reference
        }));
    }
    let mut refs = Vec::new();
    for t in tasks {
        refs.push(t.await.unwrap());
    }
    let repeated: std::collections::HashSet<_> = refs[40..].iter().collect();
    assert_eq!(
        repeated.len(),
        1,
        "one payment id, one address: {repeated:?}"
    );
    let distinct: std::collections::HashSet<_> = refs.iter().collect();
    assert_eq!(distinct.len(), 41, "40 requests + the repeated one");
    assert_eq!(payments.watched().await, 41);
}

/// A request is watched until its expiry plus the monitoring window, then dropped (and not
/// loaded again by a restarted process); `check` still answers for it.
#[tokio::test]
async fn requests_stop_being_watched_after_the_monitoring_window() {
    let chain = Arc::new(Mutex::new(Chain::default()));
    chain.lock().unwrap().push(&[], vec![]);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Node(chain.clone()))
        .mount(&server)
        .await;
    let clock = nemordp_core::ManualClock::new(Timestamp::from_unix_secs(1_700_000_000));
    let store = Arc::new(MemoryStore::new());
    let build = || {
        EvmPayments::builder()
            .rpc_url(server.uri())
            .xpub(XPUB)
            .usdt_contract(TOKEN.parse().unwrap())
            .monitoring(Duration::from_secs(3600))
            .min_sync_interval(Duration::ZERO)
            .clock(Arc::new(clock.clone()))
            .build(store.clone())
    };
    let payments = build().await.unwrap();
    let usdt = payments.usdt();
    // Expires 15 min after "now": watched until 1 h 15 min after now.
    let req = PaymentRequest::new(
        OrderId::new(),
        Money::from_minor(Asset::Usdt, 100_u64),
        Timestamp::from_unix_secs(1_700_000_900),
    );
    let opened = usdt.open(&req).await.unwrap();
    let record = kit::payment_record(&usdt, &req, &opened);
    clock.advance(Duration::from_secs(4_400));
    payments.sync().await.unwrap();
    assert_eq!(payments.watched().await, 1, "inside the window");
    assert_eq!(build().await.unwrap().watched().await, 1);
    clock.advance(Duration::from_secs(200));
    payments.sync().await.unwrap();
    assert_eq!(payments.watched().await, 0, "window over");
    assert_eq!(build().await.unwrap().watched().await, 0, "not reloaded");
    // Asked explicitly, the request is still answered (watched again until the next sync).
    assert!(usdt.check(&record).await.unwrap().seen.is_zero());
}

/// `check` syncs at most once per `min_sync_interval` (by the injected clock); `sync` always.
#[tokio::test]
async fn checks_between_blocks_cost_no_calls() {
    let chain = Arc::new(Mutex::new(Chain::default()));
    chain.lock().unwrap().push(&[], vec![]);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Node(chain.clone()))
        .mount(&server)
        .await;
    let clock = nemordp_core::ManualClock::new(Timestamp::from_unix_secs(1_700_000_000));
    let payments = EvmPayments::builder()
        .rpc_url(server.uri())
        .xpub(XPUB)
        .usdt_contract(TOKEN.parse().unwrap())
        .clock(Arc::new(clock.clone()))
        .build(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let eth = payments.eth();
    let req = PaymentRequest::new(
        OrderId::new(),
        Money::from_minor(Asset::Eth, 100_u64),
        Timestamp::from_unix_secs(1_700_000_900),
    );
    let opened = eth.open(&req).await.unwrap();
    let record = kit::payment_record(&eth, &req, &opened);
    eth.check(&record).await.unwrap();
    let calls = payments.rpc_calls();
    clock.advance(Duration::from_secs(11));
    eth.check(&record).await.unwrap();
    assert_eq!(payments.rpc_calls(), calls, "within 12 s: no call");
    clock.advance(Duration::from_secs(1));
    eth.check(&record).await.unwrap();
    assert_eq!(
        payments.rpc_calls(),
        calls + 1,
        "one head fetch, nothing new to scan"
    );
    payments.sync().await.unwrap();
    assert_eq!(payments.rpc_calls(), calls + 2);
}
