//! The BTC verifier against a stateful fake Esplora (wiremock) that serves real transactions
//! and block headers built with the `bitcoin` crate, in Esplora's JSON shapes
//! (`../shared/specs/esplora/API.md`, "Transaction format").
#![cfg(feature = "btc")]

use std::{
    collections::HashSet,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bitcoin::{
    Address, Amount, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Transaction,
    TxIn, TxOut, Txid, Witness,
    absolute::LockTime,
    bip32::{DerivationPath, Xpriv, Xpub},
    block::{Header, Version},
    hashes::Hash,
    secp256k1::Secp256k1,
    transaction,
};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::method};

use nemordp_core::{
    Asset, ErrorKind, Money, OrderId, PaymentVerifier, Result, Store, Timestamp,
    payment::{
        InvoiceException, InvoiceState, InvoiceStatus, Payment, PaymentRequest, WebhookRequest,
    },
    sim::store::MemoryStore,
    testkit::payment::{self as kit, PaymentKitDriver},
};
use nemordp_payments::btc::{BtcBuilder, BtcVerifier, SIGNATURE_HEADER, sign_nudge};

const SECRET: &str = "whsec_btc_test";

/// The merchant's BIP84 account key on regtest (`m/84'/1'/0'`) from a fixed seed.
fn merchant_tpub() -> String {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(Network::Regtest, &[7_u8; 32]).unwrap();
    let account = master
        .derive_priv(&secp, &DerivationPath::from_str("m/84'/1'/0'").unwrap())
        .unwrap();
    Xpub::from_priv(&secp, &account).to_string()
}

/// An unrelated regtest address (change outputs, other people's payments).
fn stranger(n: u8) -> Address {
    let secp = Secp256k1::new();
    let key = Xpriv::new_master(Network::Regtest, &[n; 32]).unwrap();
    let pk = bitcoin::CompressedPublicKey(Xpub::from_priv(&secp, &key).public_key);
    Address::p2wpkh(&pk, Network::Regtest)
}

struct Block {
    hash: BlockHash,
    time: u32,
    txs: Vec<Transaction>,
}

#[derive(Default)]
struct Chain {
    blocks: Vec<Block>,
    /// Blocks reorged out: `/block/:hash/status` says not in the best chain.
    orphaned: Vec<Block>,
    mempool: Vec<Transaction>,
    /// Transactions the (lagging) address index still lists as confirmed in an orphaned block.
    stale_index: Vec<(Transaction, u64, BlockHash)>,
    funding_counter: u32,
    /// Next `n` requests get 429 with this `Retry-After`.
    throttle: Option<(u32, Option<String>)>,
    /// Next requests answer 200 with an HTML page.
    html: u32,
    requests: Vec<(Instant, String)>,
}

/// A stateful fake Esplora.
#[derive(Clone)]
struct FakeEsplora {
    chain: Arc<Mutex<Chain>>,
}

impl FakeEsplora {
    fn new() -> Self {
        let fake = Self {
            chain: Arc::new(Mutex::new(Chain::default())),
        };
        fake.mine(); // genesis-like first block at height 0
        fake
    }

    /// Broadcasts a real transaction paying `sats` to `to` (plus change elsewhere); RBF-signalling.
    fn pay(&self, to: &Address, sats: u64) -> Txid {
        self.pay_outputs(&[(to.clone(), sats)])
    }

    fn pay_outputs(&self, outs: &[(Address, u64)]) -> Txid {
        let mut c = self.chain.lock().unwrap();
        c.funding_counter += 1;
        let funding = Txid::hash(&c.funding_counter.to_le_bytes());
        let mut output: Vec<TxOut> = outs
            .iter()
            .map(|(a, v)| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: a.script_pubkey(),
            })
            .collect();
        output.push(TxOut {
            value: Amount::from_sat(12_345),
            script_pubkey: stranger(99).script_pubkey(),
        });
        let tx = Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(funding, 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: Witness::from_slice(&[vec![0x30_u8; 71], vec![0x02_u8; 33]]),
            }],
            output,
        };
        let txid = tx.compute_txid();
        c.mempool.push(tx);
        txid
    }

    /// Mines a block holding the whole mempool.
    fn mine(&self) -> BlockHash {
        let mut c = self.chain.lock().unwrap();
        let txs = std::mem::take(&mut c.mempool);
        Self::push_block(&mut c, txs)
    }

    fn mine_n(&self, n: usize) {
        for _ in 0..n {
            self.mine();
        }
    }

    fn push_block(c: &mut Chain, txs: Vec<Transaction>) -> BlockHash {
        let prev = c.blocks.last().map_or(BlockHash::all_zeros(), |b| b.hash);
        let time = 1_700_000_000 + u32::try_from(c.blocks.len() + c.orphaned.len()).unwrap() * 600;
        let mut block = bitcoin::Block {
            header: Header {
                version: Version::TWO,
                prev_blockhash: prev,
                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                time,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: u32::try_from(c.orphaned.len()).unwrap(),
            },
            txdata: txs,
        };
        if let Some(root) = block.compute_merkle_root() {
            block.header.merkle_root = root;
        }
        let hash = block.block_hash();
        c.blocks.push(Block {
            hash,
            time,
            txs: block.txdata,
        });
        hash
    }

    /// Reorgs out the last `depth` blocks. Their transactions return to the mempool when
    /// `back_to_mempool`, else they are gone (double-spent by the winning chain). The new
    /// chain is one block longer.
    fn reorg(&self, depth: usize, back_to_mempool: bool) {
        let mut c = self.chain.lock().unwrap();
        for _ in 0..depth {
            let b = c.blocks.pop().unwrap();
            if back_to_mempool {
                let txs = b.txs.clone();
                c.mempool.extend(txs);
            }
            c.orphaned.push(b);
        }
        for _ in 0..=depth {
            Self::push_block(&mut c, Vec::new());
        }
    }

    /// Like `reorg(1, false)`, but the address index lags: it still lists the tx as confirmed
    /// in the orphaned block.
    fn reorg_with_stale_index(&self) {
        let mut c = self.chain.lock().unwrap();
        let b = c.blocks.pop().unwrap();
        let height = c.blocks.len() as u64;
        for tx in &b.txs {
            c.stale_index.push((tx.clone(), height, b.hash));
        }
        c.orphaned.push(b);
        for _ in 0..2 {
            Self::push_block(&mut c, Vec::new());
        }
    }

    /// Replaces (RBF) a mempool transaction by one paying someone else.
    fn replace(&self, txid: Txid) {
        let mut c = self.chain.lock().unwrap();
        let before = c.mempool.len();
        c.mempool.retain(|t| t.compute_txid() != txid);
        assert_eq!(c.mempool.len() + 1, before, "tx {txid} not in the mempool");
    }

    fn throttle(&self, n: u32, retry_after: Option<&str>) {
        self.chain.lock().unwrap().throttle = Some((n, retry_after.map(str::to_owned)));
    }

    fn requests(&self) -> Vec<(Instant, String)> {
        self.chain.lock().unwrap().requests.clone()
    }

    fn output_json(out: &TxOut) -> Value {
        let addr = Address::from_script(&out.script_pubkey, Network::Regtest)
            .map(|a| a.to_string())
            .ok();
        let mut v = json!({
            "scriptpubkey": hex::encode(out.script_pubkey.as_bytes()),
            "scriptpubkey_asm": out.script_pubkey.to_asm_string(),
            "scriptpubkey_type": if out.script_pubkey.is_p2wpkh() { "v0_p2wpkh" } else { "unknown" },
            "value": out.value.to_sat(),
        });
        if let Some(a) = addr {
            v["scriptpubkey_address"] = json!(a);
        }
        v
    }

    fn tx_json(tx: &Transaction, status: &Value) -> Value {
        let out_sum: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        let prevout_value = out_sum + 1_000;
        json!({
            "txid": tx.compute_txid().to_string(),
            "version": tx.version.0,
            "locktime": tx.lock_time.to_consensus_u32(),
            "vin": tx.input.iter().map(|i| json!({
                "txid": i.previous_output.txid.to_string(),
                "vout": i.previous_output.vout,
                "prevout": Self::output_json(&TxOut {
                    value: Amount::from_sat(prevout_value),
                    script_pubkey: stranger(98).script_pubkey(),
                }),
                "scriptsig": "",
                "scriptsig_asm": "",
                "witness": i.witness.iter().map(hex::encode).collect::<Vec<_>>(),
                "is_coinbase": false,
                "sequence": i.sequence.0,
            })).collect::<Vec<_>>(),
            "vout": tx.output.iter().map(Self::output_json).collect::<Vec<_>>(),
            "size": tx.total_size(),
            "weight": tx.weight().to_wu(),
            "fee": 1_000,
            "status": status,
        })
    }

    fn pays(tx: &Transaction, script: &ScriptBuf) -> bool {
        tx.output.iter().any(|o| &o.script_pubkey == script)
    }

    /// `(tx json, txid)` for an address: mempool newest first, then confirmed newest first.
    fn history(c: &Chain, address: &Address) -> (Vec<Value>, Vec<(Value, String)>) {
        let script = address.script_pubkey();
        let unconfirmed = json!({"confirmed": false});
        let mempool = c
            .mempool
            .iter()
            .rev()
            .filter(|t| Self::pays(t, &script))
            .map(|t| Self::tx_json(t, &unconfirmed))
            .collect();
        let mut confirmed: Vec<(u64, Value, String)> = Vec::new();
        for (h, b) in c.blocks.iter().enumerate() {
            for t in b.txs.iter().filter(|t| Self::pays(t, &script)) {
                let status = json!({"confirmed": true, "block_height": h, "block_hash": b.hash.to_string(), "block_time": b.time});
                confirmed.push((
                    h as u64,
                    Self::tx_json(t, &status),
                    t.compute_txid().to_string(),
                ));
            }
        }
        for (t, h, hash) in c
            .stale_index
            .iter()
            .filter(|(t, ..)| Self::pays(t, &script))
        {
            let status = json!({"confirmed": true, "block_height": h, "block_hash": hash.to_string(), "block_time": 1_700_000_000});
            confirmed.push((*h, Self::tx_json(t, &status), t.compute_txid().to_string()));
        }
        confirmed.sort_by_key(|(h, ..)| std::cmp::Reverse(*h));
        (
            mempool,
            confirmed.into_iter().map(|(_, v, id)| (v, id)).collect(),
        )
    }
}

fn text(status: u16, body: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.as_bytes().to_vec(), "text/plain")
}

fn json_resp(v: &Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(serde_json::to_vec(v).unwrap(), "application/json")
}

impl Respond for FakeEsplora {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut c = self.chain.lock().unwrap();
        let path = req.url.path().to_owned();
        c.requests.push((Instant::now(), path.clone()));
        if let Some((n, retry_after)) = c.throttle.take() {
            if n > 1 {
                c.throttle = Some((n - 1, retry_after.clone()));
            }
            let mut r = text(429, "Too Many Requests");
            if let Some(ra) = retry_after {
                r = r.insert_header("Retry-After", ra.as_str());
            }
            return r;
        }
        if c.html > 0 {
            c.html -= 1;
            return ResponseTemplate::new(200).set_body_raw(
                b"<html><body>Please wait</body></html>".to_vec(),
                "text/html",
            );
        }
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match parts.as_slice() {
            ["blocks", "tip", "height"] => text(200, &(c.blocks.len() - 1).to_string()),
            ["blocks", "tip", "hash"] => text(200, &c.blocks.last().unwrap().hash.to_string()),
            ["block", hash, "status"] => {
                if let Some(i) = c.blocks.iter().position(|b| b.hash.to_string() == *hash) {
                    let next = c.blocks.get(i + 1).map(|b| b.hash.to_string());
                    json_resp(&json!({"in_best_chain": true, "height": i, "next_best": next}))
                } else if c.orphaned.iter().any(|b| b.hash.to_string() == *hash) {
                    json_resp(&json!({"in_best_chain": false}))
                } else {
                    text(404, "Block not found")
                }
            }
            ["address", addr, "txs", rest @ ..] => {
                let Ok(address) =
                    Address::from_str(addr).and_then(|a| a.require_network(Network::Regtest))
                else {
                    return text(400, "Invalid Bitcoin address");
                };
                let (mempool, confirmed) = Self::history(&c, &address);
                match rest {
                    [] => {
                        let mut out: Vec<Value> = mempool.into_iter().take(50).collect();
                        out.extend(confirmed.into_iter().take(25).map(|(v, _)| v));
                        json_resp(&Value::Array(out))
                    }
                    ["mempool"] => json_resp(&Value::Array(mempool.into_iter().take(50).collect())),
                    ["chain"] => json_resp(&Value::Array(
                        confirmed.into_iter().take(25).map(|(v, _)| v).collect(),
                    )),
                    ["chain", last] => {
                        let start = confirmed
                            .iter()
                            .position(|(_, id)| id == last)
                            .map_or(confirmed.len(), |p| p + 1);
                        json_resp(&Value::Array(
                            confirmed
                                .into_iter()
                                .skip(start)
                                .take(25)
                                .map(|(v, _)| v)
                                .collect(),
                        ))
                    }
                    _ => text(404, "not found"),
                }
            }
            _ => text(404, "not found"),
        }
    }
}

struct Harness {
    server: MockServer,
    fake: FakeEsplora,
    verifier: Arc<BtcVerifier>,
    store: Arc<MemoryStore>,
}

async fn harness_with(confirmations: u64, f: impl FnOnce(BtcBuilder) -> BtcBuilder) -> Harness {
    let server = MockServer::start().await;
    let fake = FakeEsplora::new();
    Mock::given(method("GET"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    let store = Arc::new(MemoryStore::new());
    let builder = BtcBuilder::new()
        .with_xpub(merchant_tpub())
        .with_network(Network::Regtest)
        .with_esplora_url(server.uri())
        .with_confirmations(confirmations)
        .with_webhook_secret(SECRET)
        .with_min_request_spacing(Duration::ZERO)
        .with_tip_cache(Duration::ZERO)
        .with_retries(3, Duration::from_millis(10), Duration::from_secs(5));
    let verifier = f(builder).build(store.clone()).unwrap();
    Harness {
        server,
        fake,
        verifier: Arc::new(verifier),
        store,
    }
}

async fn harness(confirmations: u64) -> Harness {
    harness_with(confirmations, |b| b).await
}

fn sats(n: u64) -> Money {
    Money::from_minor(Asset::Btc, n)
}

/// Opens a request for `due` sats and returns its record (as the kit would store it).
async fn open(h: &Harness, due: u64) -> (Payment, Address) {
    let req = PaymentRequest::new(
        OrderId::new(),
        sats(due),
        Timestamp::from_unix_secs(1_700_000_900),
    );
    let opened = h.verifier.open(&req).await.unwrap();
    let payment = kit::payment_record(h.verifier.as_ref(), &req, &opened);
    let address = Address::from_str(opened.pay_to.as_deref().unwrap())
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap();
    assert_eq!(opened.reference, address.to_string());
    (payment, address)
}

/// Checks and applies the observation to `payment`'s state.
async fn step(h: &Harness, payment: &mut Payment) -> (u64, u64) {
    let o = h.verifier.check(payment).await.unwrap();
    *payment = payment
        .transition(&o.as_event(), payment.updated_at)
        .unwrap();
    (
        o.seen.minor_u64().unwrap(),
        o.confirmed.minor_u64().unwrap(),
    )
}

fn state(status: InvoiceStatus, exception: Option<InvoiceException>) -> InvoiceState {
    InvoiceState { status, exception }
}

#[tokio::test]
async fn mempool_then_confirmed_at_the_configured_depth() {
    let h = harness(2).await;
    let (mut p, addr) = open(&h, 150_000).await;
    assert_eq!(step(&h, &mut p).await, (0, 0));
    h.fake.pay(&addr, 150_000);
    assert_eq!(step(&h, &mut p).await, (150_000, 0));
    assert_eq!(p.state, state(InvoiceStatus::Processing, None));
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (150_000, 0), "1 of 2 confirmations");
    assert_eq!(p.state.status, InvoiceStatus::Processing);
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (150_000, 150_000));
    assert_eq!(p.state, state(InvoiceStatus::Settled, None));
    let receipts = h.verifier.receipts(&p.reference).await.unwrap();
    assert_eq!(receipts.len(), 1);
    assert_eq!(receipts[0].confirmations, 2);
    assert_eq!(receipts[0].vouts, vec![0]);
}

#[tokio::test]
async fn reorged_out_payment_moves_the_request_back() {
    let h = harness(2).await;
    let (mut p, addr) = open(&h, 80_000).await;
    h.fake.pay(&addr, 80_000);
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (80_000, 0));
    assert_eq!(p.state.status, InvoiceStatus::Processing);
    // The winning chain double-spent it: gone from chain and mempool.
    h.fake.reorg(1, false);
    assert_eq!(step(&h, &mut p).await, (0, 0));
    assert_eq!(p.state, InvoiceState::NEW);
}

#[tokio::test]
async fn reorg_back_to_mempool_uncounts_confirmations() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 80_000).await;
    h.fake.pay(&addr, 80_000);
    h.fake.mine();
    let o = h.verifier.check(&p).await.unwrap();
    assert_eq!(o.confirmed, sats(80_000));
    h.fake.reorg(1, true);
    let o = h.verifier.check(&p).await.unwrap();
    assert_eq!((o.seen, o.confirmed), (sats(80_000), sats(0)));
}

#[tokio::test]
async fn a_lagging_index_cannot_confirm_an_orphaned_block() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 80_000).await;
    h.fake.pay(&addr, 80_000);
    h.fake.mine();
    h.fake.reorg_with_stale_index();
    let o = h.verifier.check(&p).await.unwrap();
    assert_eq!(
        (o.seen, o.confirmed),
        (sats(80_000), sats(0)),
        "its block is not in the best chain"
    );
    assert!(
        h.fake
            .requests()
            .iter()
            .any(|(_, path)| path.starts_with("/block/") && path.ends_with("/status"))
    );
}

#[tokio::test]
async fn rbf_replaced_payment_is_no_longer_counted() {
    let h = harness(1).await;
    let (mut p, addr) = open(&h, 50_000).await;
    let txid = h.fake.pay(&addr, 50_000);
    step(&h, &mut p).await;
    assert_eq!(p.state.status, InvoiceStatus::Processing);
    h.fake.replace(txid);
    assert_eq!(step(&h, &mut p).await, (0, 0));
    assert_eq!(p.state, InvoiceState::NEW);
}

#[tokio::test]
async fn underpayment_is_partial_with_exact_amounts() {
    let h = harness(1).await;
    let (mut p, addr) = open(&h, 100_000).await;
    h.fake.pay(&addr, 99_999);
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (99_999, 99_999));
    assert_eq!(
        p.state,
        state(InvoiceStatus::New, Some(InvoiceException::PaidPartial))
    );
    assert_eq!(p.terms.due.checked_sub(&p.seen).unwrap(), sats(1));
}

#[tokio::test]
async fn overpayment_settles_as_paid_over() {
    let h = harness(1).await;
    let (mut p, addr) = open(&h, 100_000).await;
    h.fake.pay(&addr, 150_001);
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (150_001, 150_001));
    assert_eq!(
        p.state,
        state(InvoiceStatus::Settled, Some(InvoiceException::PaidOver))
    );
}

#[tokio::test]
async fn two_payments_sum_to_the_amount() {
    let h = harness(1).await;
    let (mut p, addr) = open(&h, 100_000).await;
    h.fake.pay(&addr, 40_000);
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (40_000, 40_000));
    assert_eq!(p.state.exception, Some(InvoiceException::PaidPartial));
    h.fake.pay(&addr, 60_000);
    assert_eq!(step(&h, &mut p).await, (100_000, 40_000));
    assert_eq!(p.state, state(InvoiceStatus::Processing, None));
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (100_000, 100_000));
    assert_eq!(p.state, state(InvoiceStatus::Settled, None));
    assert_eq!(h.verifier.receipts(&p.reference).await.unwrap().len(), 2);
}

#[tokio::test]
async fn payment_after_expiry_is_paid_late() {
    let h = harness(1).await;
    let (mut p, addr) = open(&h, 70_000).await;
    p = p
        .transition(&nemordp_core::payment::InvoiceEvent::Expire, p.updated_at)
        .unwrap();
    assert_eq!(p.state.status, InvoiceStatus::Expired);
    h.fake.pay(&addr, 70_000);
    h.fake.mine();
    assert_eq!(step(&h, &mut p).await, (70_000, 70_000));
    assert_eq!(
        p.state,
        state(InvoiceStatus::Expired, Some(InvoiceException::PaidLate))
    );
}

#[tokio::test]
async fn only_outputs_to_our_address_count() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 100_000).await;
    let (other, _) = open(&h, 100_000).await;
    // One tx paying us 30k, a stranger 500k, and the other request 70k.
    let other_addr = Address::from_str(&other.reference)
        .unwrap()
        .assume_checked();
    h.fake.pay_outputs(&[
        (addr.clone(), 30_000),
        (stranger(5), 500_000),
        (other_addr, 70_000),
    ]);
    h.fake.pay(&stranger(6), 1_000_000);
    h.fake.mine();
    let o = h.verifier.check(&p).await.unwrap();
    assert_eq!((o.seen, o.confirmed), (sats(30_000), sats(30_000)));
    let o = h.verifier.check(&other).await.unwrap();
    assert_eq!(o.seen, sats(70_000));
}

#[tokio::test]
async fn many_payments_page_through_confirmed_history() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 1_000_000).await;
    for i in 0..60 {
        h.fake.pay(&addr, 1_000 + i);
        if i % 2 == 0 {
            h.fake.mine();
        }
    }
    h.fake.mine();
    let o = h.verifier.check(&p).await.unwrap();
    let expected: u64 = (0..60).map(|i| 1_000 + i).sum();
    assert_eq!((o.seen, o.confirmed), (sats(expected), sats(expected)));
    assert!(
        h.fake
            .requests()
            .iter()
            .filter(|(_, path)| path.contains("/txs/chain/"))
            .count()
            >= 2
    );
}

#[tokio::test]
async fn throttled_with_retry_after_waits_then_succeeds() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 10_000).await;
    h.fake.pay(&addr, 10_000);
    h.fake.throttle(2, Some("1"));
    let started = Instant::now();
    let o = h.verifier.check(&p).await.unwrap();
    assert_eq!(o.seen, sats(10_000));
    let reqs = h.fake.requests();
    let listing: Vec<&Instant> = reqs
        .iter()
        .filter(|(_, path)| path.ends_with("/txs"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(listing.len(), 3, "two throttled attempts and one success");
    // Retry-After: 1 s honoured between attempts (the default backoff here is 10 ms).
    assert!(listing[1].duration_since(*listing[0]) >= Duration::from_millis(990));
    assert!(listing[2].duration_since(*listing[1]) >= Duration::from_millis(990));
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn throttling_beyond_the_budget_is_an_error_never_zero() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 10_000).await;
    h.fake.pay(&addr, 10_000);
    h.fake.throttle(10, None);
    let e = h.verifier.check(&p).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_retryable());
    assert_eq!(
        h.fake.requests().len(),
        4,
        "1 attempt + 3 retries, then stop"
    );
    h.fake.chain.lock().unwrap().throttle = None;
    h.fake.chain.lock().unwrap().html = 1;
    let e = h.verifier.check(&p).await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Unexpected,
        "an HTML page is not a tx list"
    );
}

#[tokio::test]
async fn a_failing_explorer_falls_back_to_the_next() {
    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_raw(b"<html>502 Bad Gateway</html>".to_vec(), "text/html"),
        )
        .mount(&down)
        .await;
    let h = harness(1).await;
    // The primary is down; the fake Esplora is the fallback.
    let v = BtcBuilder::new()
        .with_xpub(merchant_tpub())
        .with_network(Network::Regtest)
        .with_esplora_url(down.uri())
        .with_fallback_esplora_url(h.server.uri())
        .with_retries(1, Duration::from_millis(5), Duration::from_millis(50))
        .with_min_request_spacing(Duration::ZERO)
        .with_tip_cache(Duration::ZERO)
        .build(h.store.clone())
        .unwrap();
    let req = PaymentRequest::new(OrderId::new(), sats(5_000), Timestamp::from_unix_secs(1));
    let opened = v.open(&req).await.unwrap();
    let p = kit::payment_record(&v, &req, &opened);
    let addr = Address::from_str(&p.reference).unwrap().assume_checked();
    h.fake.pay(&addr, 5_000);
    h.fake.mine();
    let o = v.check(&p).await.unwrap();
    assert_eq!((o.seen, o.confirmed), (sats(5_000), sats(5_000)));
    assert_eq!(
        down.received_requests().await.unwrap().len(),
        2,
        "1 try + 1 retry"
    );
    // With every explorer down the error is the primary's, never zero.
    let only_down = BtcBuilder::new()
        .with_xpub(merchant_tpub())
        .with_network(Network::Regtest)
        .with_esplora_url(down.uri())
        .with_retries(0, Duration::from_millis(5), Duration::from_millis(50))
        .build(h.store.clone())
        .unwrap();
    assert_eq!(
        only_down.check(&p).await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
}

#[tokio::test]
async fn limiter_spaces_requests_of_concurrent_checks() {
    let spacing = Duration::from_millis(20);
    let h = harness_with(1, |b| {
        b.with_min_request_spacing(spacing).with_max_in_flight(8)
    })
    .await;
    let mut payments = Vec::new();
    for _ in 0..10 {
        payments.push(open(&h, 10_000).await.0);
    }
    let checks = payments.iter().map(|p| h.verifier.check(p));
    let started = Instant::now();
    for r in futures::future::join_all(checks).await {
        r.unwrap();
    }
    // Ten concurrent checks, one request each: the limiter starts them one spacing apart.
    assert_eq!(h.fake.requests().len(), 10);
    assert!(
        started.elapsed() >= spacing * 9,
        "10 requests in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn concurrent_opens_never_share_an_address() {
    let h = harness(1).await;
    let reqs: Vec<PaymentRequest> = (0..40)
        .map(|_| PaymentRequest::new(OrderId::new(), sats(1_000), Timestamp::from_unix_secs(1)))
        .collect();
    let opens = reqs.iter().map(|r| {
        let v = h.verifier.clone();
        let r = r.clone();
        tokio::spawn(async move { v.open(&r).await })
    });
    let again = reqs.iter().take(10).map(|r| {
        let v = h.verifier.clone();
        let r = r.clone();
        tokio::spawn(async move { v.open(&r).await })
    });
    let first: Vec<String> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().pay_to.unwrap())
        .collect();
    let second: Vec<String> = futures::future::join_all(again)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap().pay_to.unwrap())
        .collect();
    let distinct: HashSet<&String> = first.iter().collect();
    assert_eq!(distinct.len(), 40, "every request has its own address");
    assert_eq!(second, first[..10], "re-opening gives the same address");
    // Addresses are the merchant key's receive chain 0/0 … 0/39.
    let d = h.verifier.deriver();
    let expected: HashSet<String> = (0..40).map(|i| d.address(i).unwrap().to_string()).collect();
    assert_eq!(
        distinct.into_iter().cloned().collect::<HashSet<_>>(),
        expected
    );
    let rec = h
        .store
        .get_record("btc.address", &first[0])
        .await
        .unwrap()
        .unwrap();
    assert!(rec.data.contains("\"index\""));
}

#[tokio::test]
async fn gap_bookkeeping_tracks_the_highest_paid_index() {
    let h = harness(1).await;
    assert_eq!(h.verifier.highest_paid_index().await.unwrap(), None);
    let mut opened = Vec::new();
    for _ in 0..5 {
        opened.push(open(&h, 1_000).await);
    }
    h.fake.pay(&opened[3].1, 1_000);
    h.verifier.check(&opened[3].0).await.unwrap();
    h.fake.pay(&opened[1].1, 1_000);
    h.verifier.check(&opened[1].0).await.unwrap();
    assert_eq!(h.verifier.highest_paid_index().await.unwrap(), Some(3));
}

#[tokio::test]
async fn check_rejects_foreign_references_and_records() {
    let h = harness(1).await;
    let (p, _) = open(&h, 1_000).await;
    let mut other = p.clone();
    other.reference = stranger(3).to_string();
    assert_eq!(
        h.verifier.check(&other).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let mut wrong_id = p.clone();
    wrong_id.id = nemordp_core::PaymentId::new();
    assert_eq!(
        h.verifier.check(&wrong_id).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn nudge_webhook_rereads_the_chain() {
    let h = harness(1).await;
    let (p, addr) = open(&h, 5_000).await;
    h.fake.pay(&addr, 5_000);
    let body = serde_json::to_vec(&json!({"address": addr.to_string(), "seen": "999999"})).unwrap();
    let mut headers = http::HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, sign_nudge(SECRET, &body).parse().unwrap());
    let events = h
        .verifier
        .parse_webhook(WebhookRequest {
            headers: &headers,
            body: &body,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    match &events[0].kind {
        nemordp_core::payment::VerifiedEventKind::Observed(o) => {
            assert_eq!(o.reference, p.reference);
            assert_eq!(
                (o.seen, o.confirmed),
                (sats(5_000), sats(0)),
                "amounts come from the chain"
            );
        }
        other => panic!("{other:?}"),
    }
    let bad = h
        .verifier
        .parse_webhook(WebhookRequest {
            headers: &headers,
            body: b"{\"address\": \"x\"}",
        })
        .await
        .unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_sharing_a_sqlite_store_never_share_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("btc.db").display());
    let h = harness(1).await;
    // Two verifiers over two connection pools to one database file stand for two processes.
    let mut verifiers = Vec::new();
    for _ in 0..2 {
        let store = nemordp_store::SqliteStore::connect(&url).await.unwrap();
        let v = BtcBuilder::new()
            .with_xpub(merchant_tpub())
            .with_network(Network::Regtest)
            .with_esplora_url(h.server.uri())
            .build(Arc::new(store))
            .unwrap();
        verifiers.push(Arc::new(v));
    }
    let reqs: Vec<PaymentRequest> = (0..30)
        .map(|_| PaymentRequest::new(OrderId::new(), sats(1_000), Timestamp::from_unix_secs(1)))
        .collect();
    // Every request opened once by each "process", concurrently.
    let opens = reqs.iter().enumerate().flat_map(|(i, r)| {
        [i % 2, (i + 1) % 2].map(|which| {
            let v = verifiers[which].clone();
            let r = r.clone();
            tokio::spawn(async move { (r.payment_id, v.open(&r).await.unwrap().pay_to.unwrap()) })
        })
    });
    let results: Vec<(nemordp_core::PaymentId, String)> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut by_payment = std::collections::HashMap::new();
    for (id, addr) in &results {
        let prev = by_payment.insert(*id, addr.clone());
        assert!(
            prev.is_none_or(|p| &p == addr),
            "one payment, two addresses"
        );
    }
    let distinct: HashSet<&String> = by_payment.values().collect();
    assert_eq!(distinct.len(), 30, "30 payments, 30 addresses");
}

/// One step of a random chain history.
#[derive(Debug, Clone)]
enum Op {
    Pay(u64),
    PayStranger,
    Mine,
    Reorg { depth: usize, back_to_mempool: bool },
    ReplaceNewest,
}

fn arb_op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        3 => (1_u64..200_000).prop_map(Op::Pay),
        1 => Just(Op::PayStranger),
        3 => Just(Op::Mine),
        1 => (1_usize..3, any::<bool>()).prop_map(|(depth, back_to_mempool)| Op::Reorg { depth, back_to_mempool }),
        1 => Just(Op::ReplaceNewest),
    ]
}

/// What the chain says the address received: (everything, confirmed at `depth`).
fn truth(fake: &FakeEsplora, address: &Address, depth: u64) -> (u64, u64) {
    let c = fake.chain.lock().unwrap();
    let script = address.script_pubkey();
    let paid = |t: &Transaction| -> u64 {
        t.output
            .iter()
            .filter(|o| o.script_pubkey == script)
            .map(|o| o.value.to_sat())
            .sum()
    };
    let tip = c.blocks.len() as u64 - 1;
    let mut seen: u64 = c.mempool.iter().map(paid).sum();
    let mut confirmed = 0;
    for (h, b) in c.blocks.iter().enumerate() {
        let sum: u64 = b.txs.iter().map(paid).sum();
        seen += sum;
        if tip - h as u64 + 1 >= depth {
            confirmed += sum;
        }
    }
    (seen, confirmed)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// After any history of payments, blocks, reorgs and replacements, `check` reports exactly
    /// what the best chain and mempool hold for the address.
    #[test]
    fn random_chain_histories_are_accounted_exactly(
        ops in proptest::collection::vec(arb_op(), 1..14),
        depth in 1_u64..4,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = harness(depth).await;
            let (p, addr) = open(&h, 300_000).await;
            for op in &ops {
                match op {
                    Op::Pay(v) => { h.fake.pay(&addr, *v); }
                    Op::PayStranger => { h.fake.pay(&stranger(7), 50_000); }
                    Op::Mine => { h.fake.mine(); }
                    Op::Reorg { depth, back_to_mempool } => {
                        let height = h.fake.chain.lock().unwrap().blocks.len();
                        if height > *depth { h.fake.reorg(*depth, *back_to_mempool); }
                    }
                    Op::ReplaceNewest => {
                        let newest = h.fake.chain.lock().unwrap().mempool.last().map(Transaction::compute_txid);
                        if let Some(txid) = newest { h.fake.replace(txid); }
                    }
                }
                let o = h.verifier.check(&p).await.unwrap();
                let (seen, confirmed) = truth(&h.fake, &addr, depth);
                assert_eq!(
                    (o.seen.minor_u64().unwrap(), o.confirmed.minor_u64().unwrap()),
                    (seen, confirmed),
                    "after {op:?} in {ops:?}"
                );
            }
        });
    }
}

/// The whole path through the real `Provisioner`: a USD plan priced in BTC through a rate
/// source (rate locked, amount rounded up), the address from the verifier, payment seen in
/// the mempool, then confirmed, and the order paid with provisioning queued.
#[tokio::test]
async fn provisioner_prices_opens_and_settles_a_btc_order() {
    use nemordp_core::{
        Currency, Decimal,
        order::{Customer, OrderState},
        plan::PlanCatalog,
        provisioner::Provisioner,
        seal::Sealer,
        sim::{cloud::SimCloud, notify::RecordingNotifier, rates::FixedRates},
    };
    let h = harness(2).await;
    let cloud = SimCloud::builder().seed(1).build();
    let rates = FixedRates::default()
        .with_rate(Asset::Btc, Currency::Usd, Decimal::from(60_000))
        .unwrap();
    let plans = PlanCatalog::from_toml_str(
        r#"
        [[plan]]
        id = "win"
        name = "Windows Server 2022, 2 vCPU, 4 GB"
        provider = "sim"
        os = "windows_server"
        region = "sim-1"
        size = "small"
        price = "25.00 USD"
        period = "monthly"
    "#,
    )
    .unwrap();
    let provisioner = Provisioner::builder()
        .store(h.store.clone())
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(h.verifier.clone())
        .rates(Arc::new(rates))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(plans)
        .sealer(Sealer::ephemeral())
        .build()
        .unwrap();
    let order = provisioner
        .place_order(&"win".into(), Customer::new("customer-1"))
        .await
        .unwrap();
    let invoice = provisioner.open_payment(order.id, "btc").await.unwrap();
    // 25 / 60,000 = 0.000416666… BTC → 41,667 sat (rounded up).
    assert_eq!(invoice.terms.due, sats(41_667));
    assert_eq!(invoice.locked_rate.as_ref().unwrap().source, "fixed");
    let addr = Address::from_str(invoice.pay_to.as_deref().unwrap())
        .unwrap()
        .require_network(Network::Regtest)
        .unwrap();
    h.fake.pay(&addr, 41_667);
    let p = provisioner.refresh_payment(invoice.id).await.unwrap();
    assert_eq!(p.state.status, InvoiceStatus::Processing);
    h.fake.mine();
    let p = provisioner.refresh_payment(invoice.id).await.unwrap();
    assert_eq!(
        p.state.status,
        InvoiceStatus::Processing,
        "1 of 2 confirmations"
    );
    h.fake.mine();
    let p = provisioner.refresh_payment(invoice.id).await.unwrap();
    assert_eq!(p.state, state(InvoiceStatus::Settled, None));
    let order = h.store.get_order(order.id).await.unwrap().unwrap();
    assert!(
        matches!(
            order.state,
            OrderState::Paid | OrderState::Provisioning { .. }
        ),
        "{:?}",
        order.state
    );
}

/// Drives the fake chain for the conformance kit.
struct Driver {
    fake: FakeEsplora,
    depth: usize,
}

#[async_trait]
impl PaymentKitDriver for Driver {
    async fn pay(&self, payment: &Payment, amount: Money, confirmed: bool) -> Result<()> {
        let addr = Address::from_str(payment.pay_to.as_deref().unwrap_or_default())
            .map_err(|e| nemordp_core::Error::invalid_input(e.to_string()))?
            .assume_checked();
        self.fake.pay(&addr, amount.minor_u64().unwrap());
        if confirmed {
            self.fake.mine_n(self.depth);
        }
        Ok(())
    }

    async fn signed_webhook(&self, payment: &Payment) -> Result<(http::HeaderMap, Vec<u8>)> {
        let body = serde_json::to_vec(&json!({"address": payment.reference})).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(SIGNATURE_HEADER, sign_nudge(SECRET, &body).parse().unwrap());
        Ok((headers, body))
    }
}

#[tokio::test]
async fn payment_conformance_kit() {
    let h = harness(3).await;
    let driver = Driver {
        fake: h.fake.clone(),
        depth: 3,
    };
    kit::run_all(h.verifier.as_ref(), &driver).await;
}
