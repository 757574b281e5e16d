//! ETH and USDT verifiers against a real anvil node: exact, partial and over payments,
//! confirmations mined on demand, a look-alike token, reorgs, restart, and the payment kit.
#![cfg(all(feature = "eth", feature = "usdt"))]

#[path = "evm/anvil.rs"]
mod anvil;

use std::{sync::Arc, time::Duration};

use alloy_primitives::Address;
use async_trait::async_trait;
use bitcoin::{
    NetworkKind,
    bip32::{ChildNumber, Xpriv, Xpub},
    secp256k1::Secp256k1,
};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::json;

use nemordp_core::{
    Asset, ErrorKind, Money, OrderId, Result, Timestamp,
    payment::{
        InvoiceException, InvoiceStatus, Payment, PaymentRequest, PaymentVerifier, WebhookRequest,
    },
    sim::store::MemoryStore,
    testkit::payment::{self as kit, PaymentKitDriver},
};
use nemordp_payments::evm::{ConfirmationPolicy, EvmPayments, EvmVerifier};

use anvil::Anvil;

const DEPTH: u64 = 3;
const SECRET: &str = "whsec_evm_test_4c1d";

/// An account xpub (m/44'/60'/0') of a test seed that funds nothing on anvil.
fn test_xpub() -> String {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(NetworkKind::Main, &[0x5a; 32]).unwrap();
    let path = [44, 60, 0].map(|i| ChildNumber::from_hardened_idx(i).unwrap());
    Xpub::from_priv(&secp, &master.derive_priv(&secp, &path).unwrap()).to_string()
}

async fn backend(anvil: &Anvil, token: &str, store: Arc<MemoryStore>) -> EvmPayments {
    EvmPayments::builder()
        .rpc_url(&anvil.url)
        .xpub(test_xpub())
        .chain_id(31337)
        .usdt_contract(token.parse().unwrap())
        .confirmations(ConfirmationPolicy::Depth(DEPTH))
        .webhook_secret(SecretString::from(SECRET))
        .min_sync_interval(Duration::ZERO)
        .build(store)
        .await
        .unwrap()
}

/// Opens a request for `units` and returns the stored-shape record.
async fn open(v: &EvmVerifier, units: u128) -> Payment {
    let req = PaymentRequest::new(
        OrderId::new(),
        Money::from_minor(v.asset(), units),
        expiry(),
    );
    let opened = v.open(&req).await.unwrap();
    kit::payment_record(v, &req, &opened)
}

/// Checks and applies the observation; returns the new record.
async fn observe(v: &EvmVerifier, p: &Payment) -> Payment {
    let o = v.check(p).await.unwrap();
    p.transition(&o.as_event(), Timestamp::from_unix_secs(1_700_000_100))
        .unwrap()
}

fn units(p: &Payment) -> (u128, u128) {
    let u = |m: &Money| u128::try_from(m.minor_units()).unwrap();
    (u(&p.seen), u(&p.confirmed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_exact_payment_settles_after_the_configured_confirmations() {
    let Some(anvil) = anvil::start_or_skip("eth_exact_payment").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let eth = payments.eth();
    let due = 250_000_000_000_000_000_u128; // 0.25 ETH
    let p = open(&eth, due).await;
    let pay_to = p.pay_to.clone().unwrap();
    assert_eq!(p.reference, pay_to);
    assert!(
        eth.payment_uri(&pay_to, &p.terms.due)
            .unwrap()
            .starts_with(&format!("ethereum:{pay_to}@31337?value={due}"))
    );

    let p = observe(&eth, &p).await;
    assert_eq!((p.state.status, units(&p)), (InvoiceStatus::New, (0, 0)));
    anvil.send_eth(1, &pay_to, due).await;
    let p = observe(&eth, &p).await;
    assert_eq!(units(&p), (0, 0), "not mined yet: not seen");
    anvil.mine(1).await;
    let p = observe(&eth, &p).await;
    assert_eq!(
        (p.state.status, units(&p)),
        (InvoiceStatus::Processing, (due, 0))
    );
    anvil.mine(DEPTH - 2).await;
    let p = observe(&eth, &p).await;
    assert_eq!(
        p.state.status,
        InvoiceStatus::Processing,
        "{} of {DEPTH} confirmations",
        DEPTH - 1
    );
    anvil.mine(1).await;
    let p = observe(&eth, &p).await;
    assert_eq!(
        (p.state.status, p.state.exception, units(&p)),
        (InvoiceStatus::Settled, None, (due, due))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdt_partial_then_over_payment_settles_paid_over() {
    let Some(anvil) = anvil::start_or_skip("usdt_partial_then_over").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let usdt = payments.usdt();
    let p = open(&usdt, 25_000_000).await; // 25 USDT
    let pay_to = p.pay_to.clone().unwrap();
    anvil.send_token(&token, &pay_to, 10_000_000).await;
    anvil.mine(DEPTH).await;
    let p = observe(&usdt, &p).await;
    assert_eq!(
        (p.state.status, p.state.exception, units(&p)),
        (
            InvoiceStatus::New,
            Some(InvoiceException::PaidPartial),
            (10_000_000, 10_000_000)
        )
    );
    // Two transfers in one block both count (distinct log indexes).
    anvil.send_token(&token, &pay_to, 10_000_000).await;
    anvil.send_token(&token, &pay_to, 7_500_000).await;
    anvil.mine(1).await;
    let p = observe(&usdt, &p).await;
    assert_eq!(
        (p.state.status, p.state.exception, units(&p)),
        (
            InvoiceStatus::Processing,
            Some(InvoiceException::PaidOver),
            (27_500_000, 10_000_000)
        )
    );
    anvil.mine(DEPTH).await;
    let p = observe(&usdt, &p).await;
    assert_eq!(
        (p.state.status, p.state.exception, units(&p)),
        (
            InvoiceStatus::Settled,
            Some(InvoiceException::PaidOver),
            (27_500_000, 27_500_000)
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_partial_payment_with_tolerance() {
    let Some(anvil) = anvil::start_or_skip("eth_partial_with_tolerance").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let eth = payments.eth();
    let mut p = open(&eth, 1_000_000_000_000_000_000).await;
    p.terms.tolerance_percent = Decimal::ONE;
    let pay_to = p.pay_to.clone().unwrap();
    anvil.send_eth(2, &pay_to, 980_000_000_000_000_000).await;
    anvil.mine(DEPTH).await;
    let p = observe(&eth, &p).await;
    assert_eq!(
        (p.state.status, p.state.exception),
        (InvoiceStatus::New, Some(InvoiceException::PaidPartial))
    );
    anvil.send_eth(2, &pay_to, 10_000_000_000_000_000).await; // now 0.99: within 1 %
    anvil.mine(DEPTH).await;
    let p = observe(&eth, &p).await;
    assert_eq!(
        (p.state.status, p.state.exception),
        (InvoiceStatus::Settled, None)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_invoiced_asset_from_the_pinned_contract_counts() {
    let Some(anvil) = anvil::start_or_skip("only_the_invoiced_asset").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let look_alike = anvil.deploy_token().await;
    assert_ne!(token, look_alike);
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let (eth, usdt) = (payments.eth(), payments.usdt());
    let pu = open(&usdt, 5_000_000).await;
    let pe = open(&eth, 5_000_000).await;
    let (to_u, to_e) = (pu.pay_to.clone().unwrap(), pe.pay_to.clone().unwrap());
    assert_ne!(to_u, to_e, "every request gets its own address");
    anvil.send_token(&look_alike, &to_u, 5_000_000).await; // same code, another contract
    anvil.send_eth(1, &to_u, 5_000_000).await; // ETH to the USDT request
    anvil.send_token(&token, &to_e, 5_000_000).await; // USDT to the ETH request
    anvil
        .send_token(&token, &anvil.accounts[3].clone(), 5_000_000)
        .await; // someone else
    anvil.mine(DEPTH + 1).await;
    let pu2 = observe(&usdt, &pu).await;
    let pe2 = observe(&eth, &pe).await;
    assert_eq!(
        (units(&pu2), pu2.state.status),
        ((0, 0), InvoiceStatus::New)
    );
    assert_eq!(
        (units(&pe2), pe2.state.status),
        ((0, 0), InvoiceStatus::New)
    );
    // The right token to the right address does count.
    anvil.send_token(&token, &to_u, 5_000_000).await;
    anvil.mine(DEPTH).await;
    assert_eq!(
        observe(&usdt, &pu).await.state.status,
        InvoiceStatus::Settled
    );
    // The other verifier does not answer for a request it did not open.
    let e = eth.check(&pu).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_that_drops_a_counted_payment_undoes_it() {
    let Some(anvil) = anvil::start_or_skip("reorg_snapshot_revert").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let (eth, usdt) = (payments.eth(), payments.usdt());
    let pe = open(&eth, 3_000_000).await;
    let pu = open(&usdt, 3_000_000).await;
    let snap = anvil.snapshot().await;
    anvil
        .send_eth(1, pe.pay_to.as_ref().unwrap(), 3_000_000)
        .await;
    anvil
        .send_token(&token, pu.pay_to.as_ref().unwrap(), 3_000_000)
        .await;
    anvil.mine(1).await;
    let pe = observe(&eth, &pe).await;
    let pu = observe(&usdt, &pu).await;
    assert_eq!(
        (pe.state.status, pu.state.status),
        (InvoiceStatus::Processing, InvoiceStatus::Processing)
    );
    let old_head = anvil.head().await;
    // The branch with the payments goes away; a longer one without them replaces it.
    anvil.revert(snap).await;
    anvil.rpc("anvil_dropAllTransactions", json!([])).await;
    anvil.mine(3).await;
    assert!(anvil.head().await > old_head);
    let pe = observe(&eth, &pe).await;
    let pu = observe(&usdt, &pu).await;
    assert_eq!((pe.state.status, units(&pe)), (InvoiceStatus::New, (0, 0)));
    assert_eq!((pu.state.status, units(&pu)), (InvoiceStatus::New, (0, 0)));
    // A shorter branch (head below what was scanned) is handled too.
    let snap = anvil.snapshot().await;
    anvil
        .send_eth(1, pe.pay_to.as_ref().unwrap(), 1_000_000)
        .await;
    anvil.mine(2).await;
    assert_eq!(units(&observe(&eth, &pe).await), (1_000_000, 0));
    anvil.revert(snap).await;
    anvil.rpc("anvil_dropAllTransactions", json!([])).await;
    assert_eq!(units(&observe(&eth, &pe).await), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anvil_reorg_replacing_the_payment_block_undoes_it() {
    let Some(anvil) = anvil::start_or_skip("reorg_anvil_reorg").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let usdt = payments.usdt();
    let p = open(&usdt, 2_000_000).await;
    anvil
        .send_token(&token, p.pay_to.as_ref().unwrap(), 2_000_000)
        .await;
    anvil.mine(2).await;
    let p = observe(&usdt, &p).await;
    assert_eq!(units(&p), (2_000_000, 0));
    // Replace the last 2 blocks (the payment's and the next) with empty ones at the same
    // heights: only the block hashes tell.
    let head = anvil.head().await;
    anvil.rpc("anvil_reorg", json!([2, []])).await;
    assert_eq!(anvil.head().await, head);
    let p = observe(&usdt, &p).await;
    assert_eq!((p.state.status, units(&p)), (InvoiceStatus::New, (0, 0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_is_idempotent_and_a_restart_finds_payments_again() {
    let Some(anvil) = anvil::start_or_skip("restart").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let store = Arc::new(MemoryStore::new());
    let first = backend(&anvil, &token, store.clone()).await;
    let req = PaymentRequest::new(
        OrderId::new(),
        Money::from_minor(Asset::Usdt, 4_000_000_u64),
        expiry(),
    );
    let a = first.usdt().open(&req).await.unwrap();
    let b = first.usdt().open(&req).await.unwrap();
    assert_eq!(a, b);
    // The same payment id for the other asset is refused, not given a second address.
    let mut eth_req = req.clone();
    eth_req.amount = Money::from_minor(Asset::Eth, 4_000_000_u64);
    assert_eq!(
        first.eth().open(&eth_req).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    let p = kit::payment_record(&first.usdt(), &req, &a);
    anvil.send_token(&token, &a.reference, 4_000_000).await;
    anvil.mine(DEPTH).await;
    // A new process with the same store watches the request again and rescans its blocks.
    let second = backend(&anvil, &token, store).await;
    assert_eq!(second.watched().await, 1);
    let again = observe(&second.usdt(), &p).await;
    assert_eq!(
        (again.state.status, units(&again)),
        (InvoiceStatus::Settled, (4_000_000, 4_000_000))
    );
    let changed = second.sync().await.unwrap();
    assert_eq!(changed.len(), 1, "the rescan credited it: {changed:?}");
    assert_eq!(changed[0].method, "usdt");
    assert_eq!(
        changed[0].observation,
        second.usdt().check(&p).await.unwrap()
    );
    assert_eq!(
        second.sync().await.unwrap().len(),
        0,
        "confirmed and reported: nothing changes"
    );
    second.unwatch(p.id).await.unwrap();
    assert_eq!(second.watched().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_notice_is_authenticated_and_rechecked_on_chain() {
    let Some(anvil) = anvil::start_or_skip("activity_notice").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let eth = payments.eth();
    let p = open(&eth, 1_000).await;
    let address: Address = p.reference.parse().unwrap();
    anvil.send_eth(1, &p.reference, 1_500).await;
    anvil.mine(1).await;
    let (headers, body) = payments
        .activity_notice("0xblock", &[address, Address::ZERO])
        .unwrap();
    let events = eth
        .parse_webhook(WebhookRequest {
            headers: &headers,
            body: &body,
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "unknown addresses are skipped: {events:?}");
    assert_eq!(events[0].event_key, format!("eth:0xblock:{}", p.reference));
    // The USDT verifier ignores the ETH request named in the same notice.
    assert!(
        payments
            .usdt()
            .parse_webhook(WebhookRequest {
                headers: &headers,
                body: &body
            })
            .await
            .unwrap()
            .is_empty()
    );
    // A signed notice whose body is not a notice is InvalidInput.
    let (h, _) = payments.activity_notice("x", &[]).unwrap();
    let e = eth
        .parse_webhook(WebhookRequest {
            headers: &h,
            body: b"{}",
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::Unauthenticated,
        "signature covers the body: {e}"
    );
}

/// Makes money arrive on anvil for the kit.
struct AnvilDriver {
    anvil: Anvil,
    token: String,
    payments: EvmPayments,
}

#[async_trait]
impl PaymentKitDriver for AnvilDriver {
    async fn pay(&self, payment: &Payment, amount: Money, confirmed: bool) -> Result<()> {
        let to = payment
            .pay_to
            .as_deref()
            .expect("chain payments have an address");
        let units = u128::try_from(amount.minor_units()).unwrap();
        match amount.asset() {
            Asset::Eth => self.anvil.send_eth(4, to, units).await,
            Asset::Usdt => self.anvil.send_token(&self.token, to, units).await,
            other => panic!("kit paid in {other}"),
        };
        self.anvil.mine(if confirmed { DEPTH } else { 1 }).await;
        Ok(())
    }

    async fn signed_webhook(&self, payment: &Payment) -> Result<(http::HeaderMap, Vec<u8>)> {
        let address: Address = payment.reference.parse().unwrap();
        self.payments
            .activity_notice(&format!("kit-{}", payment.id), &[address])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_kit_passes_for_eth_and_usdt() {
    let Some(anvil) = anvil::start_or_skip("payment_kit").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let driver = AnvilDriver {
        anvil,
        token,
        payments: payments.clone(),
    };
    kit::run_all(&payments.eth(), &driver).await;
    kit::run_all(&payments.usdt(), &driver).await;
}

/// The checked-in bytecode is what solc-js makes of TestToken.sol.
#[test]
fn token_bytecode_matches_source() {
    let solc = std::env::var("NEMORDP_SOLCJS_DIR")
        .unwrap_or_else(|_| "/var/tmp/nemordp-peers/node_modules/solc".to_owned());
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok || !std::path::Path::new(&solc).join("solc.js").is_file() {
        let reason = "token_bytecode_matches_source: skipped: node or solc-js missing (run scripts/peers.d/20-anvil.sh)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{reason}; CI=true requires it"
        );
        eprintln!("{reason}");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/evm");
    let out = std::process::Command::new("node")
        .arg(dir.join("compile.js"))
        .arg(&solc)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        anvil::TOKEN_BIN.trim(),
        "TestToken.bin is stale: run nemordp-payments/scripts/regen-test-token.sh"
    );
}

/// With the `finalized` (or `safe`) policy a payment is confirmed once the node's tagged
/// block reaches it; anvil puts `finalized` 64 and `safe` 32 blocks behind the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalized_and_safe_policies_follow_the_node_tags() {
    let Some(anvil) = anvil::start_or_skip("finalized_policy").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    for (policy, lag) in [
        (ConfirmationPolicy::Finalized, 64),
        (ConfirmationPolicy::Safe, 32),
    ] {
        let payments = EvmPayments::builder()
            .rpc_url(&anvil.url)
            .xpub(test_xpub())
            .usdt_contract(token.parse().unwrap())
            .confirmations(policy)
            .min_sync_interval(Duration::ZERO)
            .build(Arc::new(MemoryStore::new()))
            .await
            .unwrap();
        let usdt = payments.usdt();
        let p = open(&usdt, 1_000_000).await;
        anvil
            .send_token(&token, p.pay_to.as_ref().unwrap(), 1_000_000)
            .await;
        anvil.mine(lag - 1).await;
        let p = observe(&usdt, &p).await;
        assert_eq!(
            (p.state.status, units(&p)),
            (InvoiceStatus::Processing, (1_000_000, 0)),
            "{policy:?}: head {lag} − 2 blocks past the payment"
        );
        anvil.mine(1).await;
        let p = observe(&usdt, &p).await;
        assert_eq!(p.state.status, InvoiceStatus::Processing, "{policy:?}");
        anvil.mine(1).await;
        let p = observe(&usdt, &p).await;
        assert_eq!(
            (p.state.status, units(&p)),
            (InvoiceStatus::Settled, (1_000_000, 1_000_000)),
            "{policy:?}"
        );
    }
}

/// Past the topic-filter limit the watcher asks for all of the token's transfers in the block
/// and matches them here: the same payments count, strangers' transfers do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usdt_matching_without_a_topic_filter() {
    let Some(anvil) = anvil::start_or_skip("usdt_without_topic_filter").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = EvmPayments::builder()
        .rpc_url(&anvil.url)
        .xpub(test_xpub())
        .usdt_contract(token.parse().unwrap())
        .confirmations(ConfirmationPolicy::Depth(1))
        .topic_filter_limit(0)
        .min_sync_interval(Duration::ZERO)
        .build(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    let usdt = payments.usdt();
    let p = open(&usdt, 9_000_000).await;
    anvil
        .send_token(&token, &anvil.accounts[5].clone(), 1_000_000)
        .await;
    anvil
        .send_token(&token, p.pay_to.as_ref().unwrap(), 9_000_000)
        .await;
    anvil.mine(1).await;
    let p = observe(&usdt, &p).await;
    assert_eq!(
        (p.state.status, units(&p)),
        (InvoiceStatus::Settled, (9_000_000, 9_000_000))
    );
}

/// A transaction that pays the address but fails (status 0) is not a payment: the address is
/// given code that always reverts (`anvil_setCode`), so the value transfer is mined but undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_transaction_to_the_address_does_not_count() {
    let Some(anvil) = anvil::start_or_skip("failed_transaction").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = backend(&anvil, &token, Arc::new(MemoryStore::new())).await;
    let eth = payments.eth();
    let p = open(&eth, 7_000).await;
    let to = p.pay_to.clone().unwrap();
    // PUSH1 0 PUSH1 0 REVERT
    anvil
        .rpc("anvil_setCode", json!([to, "0x60006000fd"]))
        .await;
    let hash = anvil
        .send(json!({"from": anvil.accounts[1], "to": to, "value": "0x1b58", "gas": "0x186a0"}))
        .await;
    anvil.mine(DEPTH).await;
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(
        receipt["status"], "0x0",
        "the transfer was mined and failed"
    );
    let p = observe(&eth, &p).await;
    assert_eq!((p.state.status, units(&p)), (InvoiceStatus::New, (0, 0)));
}

/// Fifteen minutes from now (requests are watched until expiry + the monitoring window).
fn expiry() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
        .saturating_add(std::time::Duration::from_secs(900))
}
