//! Figures of the Provisioner on the simulated backends under a paused Tokio clock, printed
//! as a markdown table (`| figure | goal | measured | command |`). Always exits 0: the
//! figures are reported, not enforced.
//!
//! Run: `cargo bench --bench provisioning_figures`.
//!
//! 1. Provider API calls per provision and time to credentials: 50 Windows orders, boot
//!    times drawn from 30–40 min, default `ProvisionerConfig` and provider rate limit, the
//!    sim's RDP probe. Run one order at a time (`run_until_settled`), so the `SimCloud::calls()`
//!    delta is that order's own; then again with all 50 paid first and `start()` workers
//!    (calls reported as total / 50). "RDP answers" is the instance's `created_at` + its drawn
//!    boot time + the sim's RDP delay (30 s); the lag is the `Ready` outbox entry's
//!    `created_at` minus that.
//! 2. Memory per in-flight order: 100,000 Windows orders paid and driven until every one is
//!    in `Booting` (40-minute boots, so none finishes), measured as live heap bytes by a
//!    counting global allocator (`stats_alloc`, safe to install under
//!    `unsafe_code = "forbid"`), with resident memory from `/proc/self/statm` beside it.

mod common;

use std::{alloc::System, fmt::Write as _, time::Duration};

use nemordp_core::{
    ids::OrderId,
    notify::NotificationKind,
    order::{OrderState, ProvisionStep},
    plan::OsKind,
    provisioner::ProvisionerConfig,
    sim::cloud::SimCloud,
    store::Store,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

use common::{Harness, harness, paid_orders};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const MIN: Duration = Duration::from_secs(60);
/// The sim's default delay between `Running` and RDP answering.
const SIM_RDP_DELAY: Duration = Duration::from_secs(30);
const ORDERS: usize = 50;
const IN_FLIGHT: usize = 100_000;
const COMMAND: &str = "`cargo bench --bench provisioning_figures`";

/// Live heap bytes according to the counting allocator.
fn live_heap() -> i128 {
    let s = GLOBAL.stats();
    i128::try_from(s.bytes_allocated).unwrap_or(i128::MAX)
        - i128::try_from(s.bytes_deallocated).unwrap_or(i128::MAX)
}

/// Resident set size from `/proc/self/statm`, if readable.
fn resident_bytes() -> Option<i128> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i128 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

fn windows_cloud(seed: u64, min: Duration, max: Duration) -> SimCloud {
    SimCloud::builder()
        .seed(seed)
        .boot_time(OsKind::WindowsServer, min, max)
        .clock(common::clock())
        .build()
}

/// One order's delivery figures.
struct Delivery {
    boot: Duration,
    calls: u64,
    lag: Duration,
}

/// The boot time and RDP-to-credentials lag of a delivered order.
async fn delivery(h: &Harness, id: OrderId, calls: u64) -> Delivery {
    let label = id.instance_label();
    let inst = h
        .cloud
        .live_instances()
        .into_iter()
        .find(|i| i.label == label)
        .expect("the order's instance");
    let boot = h.cloud.boot_time_of(&inst.id).expect("boot time");
    let reachable = inst
        .created_at
        .expect("created_at")
        .saturating_add(boot + SIM_RDP_DELAY);
    let outbox = h.store.outbox_for_order(id).await.expect("outbox");
    let ready = outbox
        .iter()
        .find(|e| e.kind == NotificationKind::Ready)
        .expect("a Ready notification");
    assert!(
        ready.created_at >= reachable,
        "credentials before RDP answered"
    );
    Delivery {
        boot,
        calls,
        lag: ready.created_at.duration_since(reachable),
    }
}

/// 50 orders one after another: per-order call counts and lags.
async fn sequential() -> Vec<Delivery> {
    let h = harness(
        windows_cloud(11, 30 * MIN, 40 * MIN),
        ProvisionerConfig::default(),
        None,
    );
    let mut out = Vec::with_capacity(ORDERS);
    for _ in 0..ORDERS {
        let id = paid_orders(&h, "win", 1).await[0];
        let before = h.cloud.calls();
        let done = h.provisioner.run_until_settled(id).await.expect("settle");
        assert_eq!(done.state, OrderState::Active, "{done:?}");
        let calls = h.cloud.calls() - before;
        out.push(delivery(&h, id, calls).await);
    }
    out
}

/// 50 orders paid at once and run by `start()` workers: total calls and every lag.
async fn concurrent() -> (u64, Vec<Delivery>) {
    let h = harness(
        windows_cloud(12, 30 * MIN, 40 * MIN),
        ProvisionerConfig::default(),
        None,
    );
    let ids = paid_orders(&h, "win", ORDERS).await;
    let before = h.cloud.calls();
    let workers = h.provisioner.start();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut active = 0;
        for id in &ids {
            let order = h.provisioner.order(*id).await.expect("order");
            assert!(
                !matches!(order.state, OrderState::NeedsAttention { .. }),
                "{order:?}"
            );
            active += usize::from(order.state == OrderState::Active);
        }
        if active == ids.len() {
            break;
        }
    }
    workers.shutdown().await;
    let calls = h.cloud.calls() - before;
    let mut out = Vec::with_capacity(ORDERS);
    for id in ids {
        out.push(delivery(&h, id, 0).await);
    }
    (calls, out)
}

struct Memory {
    baseline: i128,
    paid: i128,
    booting: i128,
    rss_baseline: Option<i128>,
    rss_booting: Option<i128>,
    rounds: usize,
}

/// 100,000 orders mid-provisioning.
async fn in_flight() -> Memory {
    let cloud = windows_cloud(13, 40 * MIN, 40 * MIN);
    let h = harness(cloud, ProvisionerConfig::default(), Some(0));
    let rss_baseline = resident_bytes();
    let baseline = live_heap();
    let ids = paid_orders(&h, "win", IN_FLIGHT).await;
    let paid = live_heap();
    let mut rounds = 0;
    while h.provisioner.run_jobs_once().await.expect("job round") > 0 {
        rounds += 1;
    }
    let booting = live_heap();
    let rss_booting = resident_bytes();
    let mut not_booting = 0;
    for id in &ids {
        let order = h.store.get_order(*id).await.expect("get").expect("order");
        if order.state
            != (OrderState::Provisioning {
                step: ProvisionStep::Booting,
            })
        {
            not_booting += 1;
        }
    }
    assert_eq!(not_booting, 0, "every order is booting");
    assert_eq!(h.cloud.live_instances().len(), IN_FLIGHT);
    Memory {
        baseline,
        paid,
        booting,
        rss_baseline,
        rss_booting,
        rounds,
    }
}

#[allow(clippy::cast_precision_loss)] // figures for a table
fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0_u32), |(s, n), x| (s + x, n + 1));
    sum / f64::from(n.max(1))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

#[allow(clippy::cast_precision_loss)] // figures for a table
fn main() {
    let started = std::time::Instant::now();
    let rt = paused_runtime();
    let seq = rt.block_on(sequential());
    let (conc_calls, conc) = rt.block_on(concurrent());
    let mem = rt.block_on(in_flight());

    let max_calls = seq.iter().map(|d| d.calls).max().unwrap_or(0);
    let mean_calls = mean(seq.iter().map(|d| d.calls as f64));
    let min_boot = seq.iter().map(|d| d.boot).min().unwrap_or_default();
    let max_boot = seq.iter().map(|d| d.boot).max().unwrap_or_default();
    let max_lag = seq.iter().map(|d| d.lag).max().unwrap_or_default();
    let mean_lag = mean(seq.iter().map(|d| d.lag.as_secs_f64()));
    let calls_per_order_conc = conc_calls as f64 / ORDERS as f64;
    let max_lag_conc = conc.iter().map(|d| d.lag).max().unwrap_or_default();
    let mean_lag_conc = mean(conc.iter().map(|d| d.lag.as_secs_f64()));
    let n = IN_FLIGHT as f64;
    let per_order = (mem.booting - mem.baseline) as f64 / n;
    let per_order_paid = (mem.paid - mem.baseline) as f64 / n;
    let per_order_prov = (mem.booting - mem.paid) as f64 / n;
    let rss_per_order = mem
        .rss_baseline
        .zip(mem.rss_booting)
        .map(|(a, b)| (b - a) as f64 / n);

    let mut t = String::new();
    let _ = writeln!(t, "| figure | goal | measured | command |");
    let _ = writeln!(t, "| --- | --- | --- | --- |");
    let _ = writeln!(
        t,
        "| provider API calls per provision, 50 Windows orders one at a time (boots {:.1}–{:.1} min) | ≤ 20 | max {max_calls}, mean {mean_calls:.1} ({}) | {COMMAND} |",
        min_boot.as_secs_f64() / 60.0,
        max_boot.as_secs_f64() / 60.0,
        met(max_calls <= 20)
    );
    let _ = writeln!(
        t,
        "| provider API calls per provision, 50 Windows orders at once with `start()` workers (total / 50) | ≤ 20 | {calls_per_order_conc:.1} ({}) | {COMMAND} |",
        met(calls_per_order_conc <= 20.0)
    );
    let _ = writeln!(
        t,
        "| RDP answering → `Ready` outbox entry, one at a time | ≤ 5 s | max {:.3} s, mean {mean_lag:.3} s ({}) | {COMMAND} |",
        max_lag.as_secs_f64(),
        met(max_lag <= Duration::from_secs(5))
    );
    let _ = writeln!(
        t,
        "| RDP answering → `Ready` outbox entry, 50 at once | ≤ 5 s | max {:.3} s, mean {mean_lag_conc:.3} s ({}) | {COMMAND} |",
        max_lag_conc.as_secs_f64(),
        met(max_lag_conc <= Duration::from_secs(5))
    );
    let _ = writeln!(
        t,
        "| live heap per in-flight order, 100,000 orders in `Booting` (from before the orders were placed) | ≤ 4 KiB | {per_order:.0} B = {:.2} KiB ({}) | {COMMAND} |",
        per_order / 1024.0,
        met(per_order <= 4096.0)
    );
    let _ = writeln!(
        t,
        "| … of which placing and paying (order, payment, job, outbox rows, payment sim) | — | {per_order_paid:.0} B | {COMMAND} |"
    );
    let _ = writeln!(
        t,
        "| … of which provisioning to `Booting` (instance rows, outbox, sim instances) | — | {per_order_prov:.0} B | {COMMAND} |"
    );
    if let Some(rss) = rss_per_order {
        let _ = writeln!(
            t,
            "| resident memory growth per in-flight order (`/proc/self/statm`, coarse) | ≤ 4 KiB | {rss:.0} B = {:.2} KiB ({}) | {COMMAND} |",
            rss / 1024.0,
            met(rss <= 4096.0)
        );
    }
    println!("{t}");
    println!(
        "(100,000 in flight reached in {} job rounds; whole run {:.1} s wall time)",
        mem.rounds,
        started.elapsed().as_secs_f64()
    );
}
