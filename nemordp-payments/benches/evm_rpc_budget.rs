//! JSON-RPC calls per new block with 10,000 pending requests (5,000 ETH, 5,000 USDT), counted
//! against a real anvil node. Goal: at most 3 calls per new block whatever the number of
//! requests. Prints a markdown table; exits non-zero if the goal is missed (skips, with a
//! printed reason, when anvil is not installed).
//!
//! Run: `cargo bench -p nemordp-payments --features eth,usdt --bench evm_rpc_budget`.

#[path = "../tests/evm/anvil.rs"]
mod anvil;

use std::{sync::Arc, time::Duration};

use bitcoin::{
    NetworkKind,
    bip32::{ChildNumber, Xpriv, Xpub},
    secp256k1::Secp256k1,
};

use nemordp_core::{
    Asset, Money, OrderId, Timestamp, payment::PaymentRequest, payment::PaymentVerifier,
    sim::store::MemoryStore,
};
use nemordp_payments::evm::{ConfirmationPolicy, EvmPayments};

const PENDING: usize = 10_000;

fn xpub() -> String {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(NetworkKind::Main, &[0x42; 32]).unwrap();
    let path = [44, 60, 0].map(|i| ChildNumber::from_hardened_idx(i).unwrap());
    Xpub::from_priv(&secp, &master.derive_priv(&secp, &path).unwrap()).to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(anvil) = anvil::start_or_skip("evm_rpc_budget").await else {
        return;
    };
    let token = anvil.deploy_token().await;
    let payments = EvmPayments::builder()
        .rpc_url(&anvil.url)
        .xpub(xpub())
        .usdt_contract(token.parse().unwrap())
        .confirmations(ConfirmationPolicy::Depth(12))
        .min_sync_interval(Duration::ZERO)
        .build(Arc::new(MemoryStore::new()))
        .await
        .unwrap();
    payments.sync().await.unwrap();
    let (eth, usdt) = (payments.eth(), payments.usdt());
    let mut addresses = Vec::with_capacity(PENDING);
    let before_open = payments.rpc_calls();
    for i in 0..PENDING {
        let (v, asset) = if i % 2 == 0 {
            (&eth, Asset::Eth)
        } else {
            (&usdt, Asset::Usdt)
        };
        let req = PaymentRequest::new(
            OrderId::new(),
            Money::from_minor(asset, 1_000_000_u64),
            expiry(),
        );
        addresses.push((asset, v.open(&req).await.unwrap().reference));
    }
    let open_calls = payments.rpc_calls() - before_open;
    assert_eq!(payments.watched().await, PENDING);
    payments.sync().await.unwrap();
    assert_eq!(
        payments.watched().await,
        PENDING,
        "all still in their window"
    );

    let mut rows = Vec::new();
    let mut worst = 0_f64;
    // (label, blocks mined per sync, pay ETH?, pay USDT?)
    let scenarios = [
        ("1 new block, no payment", 1_u64, false, false),
        ("1 new block, 1 USDT payment", 1, false, true),
        ("1 new block, 1 ETH payment", 1, true, false),
        ("1 new block, 1 ETH + 1 USDT payment", 1, true, true),
        (
            "5 new blocks at once, 1 ETH + 1 USDT payment",
            5,
            true,
            true,
        ),
    ];
    for (round, (label, blocks, pay_eth, pay_usdt)) in scenarios.into_iter().enumerate() {
        let mut per_block = Vec::new();
        for rep in 0..10 {
            let pick = |asset| {
                addresses
                    .iter()
                    .filter(|(a, _)| *a == asset)
                    .nth((round * 37 + rep * 101) % (PENDING / 2))
                    .unwrap()
                    .1
                    .clone()
            };
            if pay_eth {
                anvil.send_eth(1, &pick(Asset::Eth), 1_000_000).await;
            }
            if pay_usdt {
                anvil
                    .send_token(&token, &pick(Asset::Usdt), 1_000_000)
                    .await;
            }
            anvil.mine(blocks).await;
            let before = payments.rpc_calls();
            let changed = payments.sync().await.unwrap();
            let calls = payments.rpc_calls() - before;
            assert_eq!(payments.watched().await, PENDING);
            if pay_eth || pay_usdt {
                assert!(!changed.is_empty(), "{label}: the payment was found");
            }
            #[allow(clippy::cast_precision_loss)]
            per_block.push(calls as f64 / blocks as f64);
        }
        let max = per_block.iter().copied().fold(0_f64, f64::max);
        worst = worst.max(max);
        rows.push(format!(
            "| {label} | ≤ 3 | {max:.1} calls/block (max of 10) |"
        ));
    }
    println!(
        "\nEVM watcher, {PENDING} pending requests, anvil at {}",
        anvil.url
    );
    println!("opening {PENDING} requests made {open_calls} RPC calls\n");
    println!("| scenario | goal | measured |\n|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    assert!(worst <= 3.0, "goal missed: {worst} calls per block");
}

/// Fifteen minutes from now (requests are watched until expiry + the monitoring window).
fn expiry() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
        .saturating_add(std::time::Duration::from_secs(900))
}
