//! Crypto checkout end to end: a USD-priced Windows plan is charged in ETH at a locked rate, the
//! customer pays to a fresh address derived from the merchant's xpub, the watcher sees the
//! payment confirm, and the Provisioner builds the machine (on the simulated cloud).
//!
//! ```text
//! # against a local anvil started by the example (installed by scripts/peers.d/20-anvil.sh);
//! # the example pays from an anvil dev account and mines blocks itself:
//! cargo run -p nemordp-payments --features eth --example crypto_checkout
//!
//! # against any node: you pay the printed address/URI from a wallet
//! ETH_RPC_URL=https://… EVM_XPUB=xpub… ETH_CONFIRMATIONS=12 ETH_USD_RATE=3000 \
//!   cargo run -p nemordp-payments --features eth --example crypto_checkout
//! ```
//!
//! The ETH/USD rate here is a fixed one (`ETH_USD_RATE`, default 3000) so the example needs no
//! rate API; a shop uses a live `RateSource`.

#[path = "../tests/evm/anvil.rs"]
mod anvil;

use std::{str::FromStr, sync::Arc, time::Duration};

use bitcoin::{
    NetworkKind,
    bip32::{ChildNumber, Xpriv, Xpub},
    secp256k1::Secp256k1,
};
use nemordp_core::{
    Asset, Currency, Decimal, Money, SystemClock,
    order::{Customer, OrderState},
    payment::InvoiceStatus,
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig, Stage},
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, rates::FixedRates, store::MemoryStore},
};
use nemordp_payments::evm::{ConfirmationPolicy, EvmPayments};

/// The account xpub of a demo seed, only for the example's own anvil (never for real money).
fn demo_xpub() -> String {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(NetworkKind::Main, &[0x11; 32]).expect("seed");
    let path = [44, 60, 0].map(|i| ChildNumber::from_hardened_idx(i).expect("index"));
    Xpub::from_priv(&secp, &master.derive_priv(&secp, &path).expect("path")).to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    // Our own anvil unless a node is given.
    let (url, local) = if let Some(url) = env("ETH_RPC_URL") {
        (url, None)
    } else {
        let Some(node) = anvil::start_or_skip("crypto_checkout").await else {
            return Ok(());
        };
        (node.url.clone(), Some(node))
    };
    let xpub = match (env("EVM_XPUB"), &local) {
        (Some(x), _) => x,
        (None, Some(_)) => demo_xpub(),
        (None, None) => return Err("EVM_XPUB is required with ETH_RPC_URL".into()),
    };
    let policy = match env("ETH_CONFIRMATIONS") {
        Some(c) => ConfirmationPolicy::parse(&c)?,
        None if local.is_some() => ConfirmationPolicy::Depth(3),
        None => ConfirmationPolicy::Depth(12),
    };
    let rate = Decimal::from_str(env("ETH_USD_RATE").as_deref().unwrap_or("3000"))?;

    let store = Arc::new(MemoryStore::new());
    let evm = EvmPayments::builder()
        .rpc_url(&url)
        .xpub(xpub)
        .confirmations(policy)
        .min_sync_interval(Duration::ZERO)
        .build(store.clone())
        .await?;
    let eth = evm.eth();
    let cloud = SimCloud::builder()
        .boot_time(
            OsKind::WindowsServer,
            Duration::from_secs(3),
            Duration::from_secs(4),
        )
        .install_delay(Duration::from_millis(300))
        .rdp_delay(Duration::from_millis(500))
        .build();
    let rates =
        FixedRates::new(Arc::new(SystemClock)).with_rate(Asset::Eth, Currency::Usd, rate)?;
    let catalog = PlanCatalog::from_plans([Plan::new(
        "win",
        "sim",
        OsKind::WindowsServer,
        "sim-1",
        "small",
        Money::parse_major(Currency::Usd, "12.00")?,
    )
    .with_name("Windows Server 2022, 2 vCPU, 4 GB")])?;
    let mut config = ProvisionerConfig::default();
    config.probe_interval = Duration::from_millis(300);
    config.provider_poll_initial = Duration::from_millis(500);
    config.provider_poll_max = Duration::from_secs(1);
    config.idle_poll = Duration::from_millis(50);
    let provisioner = Provisioner::builder()
        .store(store)
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(eth.clone()))
        .rates(Arc::new(rates))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(catalog)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()?;

    let order = provisioner
        .place_order(&"win".into(), Customer::new("demo-customer"))
        .await?;
    let payment = provisioner.open_payment(order.id, "eth").await?;
    let pay_to = payment.pay_to.clone().ok_or("no address")?;
    println!(
        "nemordp crypto checkout (chain {}, {url})\n",
        evm.chain_id()
    );
    println!("  order     {} — 12.00 USD at {rate} USD/ETH", order.id);
    println!("  pay       {} to {pay_to}", payment.terms.due);
    println!(
        "  URI       {}",
        eth.payment_uri(&pay_to, &payment.terms.due)?
    );
    println!("  confirms  {policy:?}\n");

    if let Some(node) = &local {
        let wei = u128::try_from(payment.terms.due.minor_units())?;
        let tx = node.send_eth(1, &pay_to, wei).await;
        println!("  (demo) anvil account 1 paid in {tx}");
    }
    let mut last = None;
    let settled = loop {
        if let Some(node) = &local {
            node.mine(1).await;
        }
        let p = provisioner.refresh_payment(payment.id).await?;
        let now = (p.state, p.seen, p.confirmed);
        if last != Some(now) {
            println!(
                "  invoice   {} {:?}: seen {}, confirmed {}",
                p.state.status, p.state.exception, p.seen, p.confirmed
            );
            last = Some(now);
        }
        match p.state.status {
            InvoiceStatus::Settled => break true,
            InvoiceStatus::Invalid => break false,
            _ => {}
        }
        if p.state.status == InvoiceStatus::Expired && p.monitor_until < p.updated_at {
            break false;
        }
        tokio::time::sleep(Duration::from_secs(if local.is_some() { 0 } else { 6 })).await;
    };
    if !settled {
        return Err("the payment did not settle".into());
    }

    println!("\n  provisioning on the simulated cloud…");
    let mut events = provisioner.subscribe();
    let workers = provisioner.start();
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(e) if e.order_id == order.id => {
                    println!("  [{:>3}%] {}", e.percent, e.message);
                    if matches!(e.stage, Stage::Active | Stage::NeedsAttention) {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    workers.shutdown().await;
    let order = provisioner.order(order.id).await?;
    if order.state != OrderState::Active {
        return Err(format!("order ended in {:?}", order.state).into());
    }
    let login = provisioner.connection_details(order.id).await?;
    println!(
        "\n  machine ready: log in as {} (.rdp file of {} bytes)",
        login.username,
        login.rdp_file.len()
    );
    Ok(())
}
