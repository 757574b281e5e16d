//! Orchestration throughput of the Provisioner on `MemoryStore` and a zero-latency `SimCloud`,
//! and the latency of `MemoryStore::claim_jobs`.
//!
//! Run: `cargo bench --bench orchestration` (add `-- --quick` for a short run).
//!
//! `paid_to_active/{runtime}/{plan}/N`: N orders of one plan (Windows or Ubuntu) are placed and paid through the
//! real payment path in the untimed setup; the timed part calls `run_jobs_once()` until it
//! finds no due job, on a Tokio runtime (multi-thread with 2 workers, or current-thread).
//! Every order is checked to be `Active` afterwards (untimed). The cloud boots in zero time,
//! assigns addresses at once and opens RDP at once; neither the sim nor the provisioner rate
//! limits; the RDP probe is the sim's.

mod common;

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nemordp_core::{
    Timestamp,
    ids::OrderId,
    order::OrderState,
    plan::OsKind,
    provisioner::ProvisionerConfig,
    sim::{cloud::SimCloud, store::MemoryStore},
    store::{Batch, ClaimRequest, Job, JobKind, Store},
};
use tokio::runtime::Runtime;

use common::{Harness, harness, paid_orders};

fn zero_latency_cloud(seed: u64) -> SimCloud {
    SimCloud::builder()
        .seed(seed)
        .boot_time(OsKind::WindowsServer, Duration::ZERO, Duration::ZERO)
        .boot_time(OsKind::UbuntuDesktop, Duration::ZERO, Duration::ZERO)
        .install_delay(Duration::ZERO)
        .rdp_delay(Duration::ZERO)
        .clock(common::clock())
        .build()
}

/// A fresh provisioner with `n` paid orders of `plan` (untimed setup).
fn setup(rt: &Runtime, plan: &str, n: usize, seed: u64) -> (Harness, Vec<OrderId>) {
    rt.block_on(async {
        let h = harness(
            zero_latency_cloud(seed),
            ProvisionerConfig::default(),
            Some(0),
        );
        let ids = paid_orders(&h, plan, n).await;
        (h, ids)
    })
}

/// The timed part: job rounds until none is due.
async fn drive(h: &Harness) -> usize {
    let mut rounds = 0;
    while h.provisioner.run_jobs_once().await.expect("job round") > 0 {
        rounds += 1;
    }
    rounds
}

fn check_all_active(rt: &Runtime, h: &Harness, ids: &[OrderId]) {
    rt.block_on(async {
        for id in ids {
            let order = h.provisioner.order(*id).await.expect("order");
            assert_eq!(order.state, OrderState::Active, "order {id} not active");
        }
    });
}

fn runtime(flavor: &str) -> Runtime {
    match flavor {
        "current_thread" => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    }
    .expect("runtime")
}

fn paid_to_active(c: &mut Criterion) {
    let mut group = c.benchmark_group("paid_to_active");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    // Ubuntu orders hash the user's password with SHA-512 crypt (5,000 rounds) for the
    // cloud-config, a few milliseconds of CPU each, so they get only the small size.
    let cases = [
        ("multi_thread_2", "win", 1_000_usize),
        ("multi_thread_2", "win", 10_000),
        ("current_thread", "win", 1_000),
        ("current_thread", "win", 10_000),
        ("multi_thread_2", "ubuntu", 1_000),
        ("current_thread", "ubuntu", 1_000),
    ];
    for (flavor, plan, n) in cases {
        let rt = runtime(flavor);
        {
            group.throughput(Throughput::Elements(n as u64));
            let id = BenchmarkId::new(format!("{flavor}/{plan}"), n);
            group.bench_with_input(id, &n, |b, &n| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for i in 0..iters {
                        let (h, ids) = setup(&rt, plan, n, i);
                        let started = Instant::now();
                        black_box(rt.block_on(drive(&h)));
                        total += started.elapsed();
                        check_all_active(&rt, &h, &ids);
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

/// A store holding `total` queued provisioning jobs of which `due` are due at `now`.
fn job_table(rt: &Runtime, total: usize, due: usize, now: Timestamp) -> MemoryStore {
    let store = MemoryStore::new();
    let later = now.saturating_add(Duration::from_secs(3600));
    rt.block_on(async {
        let mut batch = Batch::new();
        for i in 0..total {
            let run_at = if i < due { now } else { later };
            batch = batch.enqueue(Job::new(JobKind::Provision, OrderId::new(), run_at));
        }
        store.commit(batch, now).await.expect("enqueue");
    });
    store
}

fn claim_jobs(c: &mut Criterion) {
    let rt = runtime("current_thread");
    let now = Timestamp::from_unix_secs(common::EPOCH_2026);
    let mut group = c.benchmark_group("memory_store_claim_jobs");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    // A zero-length lease expires at `now`, so claimed jobs stay claimable and every claim
    // sees the same table.
    let cases = [
        ("10000_due", 10_000, 10_000, 1_u32),
        ("10000_due", 10_000, 10_000, 256),
        ("256_due_of_10000", 10_000, 256, 256),
    ];
    for (table, total, due, limit) in cases {
        let store = job_table(&rt, total, due, now);
        let request = ClaimRequest {
            owner: "bench".to_owned(),
            limit,
            lease_for: Duration::ZERO,
            now,
        };
        group.throughput(Throughput::Elements(u64::from(limit)));
        group.bench_function(BenchmarkId::new(table, format!("claim_{limit}")), |b| {
            b.iter(|| {
                let claimed = rt.block_on(store.claim_jobs(&request)).expect("claim");
                assert_eq!(claimed.len(), limit as usize);
                black_box(claimed)
            });
        });
    }
    group.finish();
}

criterion_group!(benches, paid_to_active, claim_jobs);
criterion_main!(benches);
