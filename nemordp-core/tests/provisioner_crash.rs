//! Crash anywhere: for several seeds, stop the Provisioner at every step boundary (drop it, or
//! panic inside the step), start a new one on the same store and cloud, and check that every
//! paid order ends active with exactly one machine, or in needs-attention — never two machines,
//! never a lost order, never a lost notification.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::FutureExt as _;
use nemordp_core::{
    Asset, Currency, Money, Timestamp, TokioClock,
    notify::NotificationKind,
    order::{Customer, OrderState},
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{CrashHook, Provisioner, ProvisionerConfig},
    seal::Sealer,
    sim::{
        cloud::{Fault, SimCloud, SimOp},
        notify::RecordingNotifier,
        payments::SimPayments,
        store::MemoryStore,
    },
    store::Store,
};
use secrecy::SecretString;

#[derive(Clone, Copy, Debug)]
enum Mode {
    /// The process vanishes: the worker stops writing and is dropped.
    Drop,
    /// The step panics.
    Panic,
}

struct World {
    cloud: SimCloud,
    store: MemoryStore,
    payments: SimPayments,
    notifier: RecordingNotifier,
}

fn world(seed: u64) -> World {
    let cloud = SimCloud::builder()
        .seed(seed)
        .boot_time(
            OsKind::WindowsServer,
            Duration::from_secs(90),
            Duration::from_secs(150),
        )
        // A few percent of calls fail with 5xx, so crashes meet retries too.
        .random_faults(if seed.is_multiple_of(2) { 0 } else { 40_000 })
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(1_767_225_600),
        )))
        .build();
    if seed % 3 == 1 {
        cloud.push_fault(SimOp::Create, Fault::LostResponse);
    }
    World {
        cloud,
        store: MemoryStore::new(),
        payments: SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("s")),
        notifier: RecordingNotifier::new(),
    }
}

fn provisioner(w: &World, worker: &str, hook: Option<CrashHook>) -> Provisioner {
    let mut config = ProvisionerConfig::default();
    worker.clone_into(&mut config.worker_id);
    let plan = Plan::new(
        "win",
        "sim",
        OsKind::WindowsServer,
        "sim-1",
        "small",
        Money::parse_major(Currency::Ngn, "1000").unwrap(),
    );
    let mut b = Provisioner::builder()
        .store(Arc::new(w.store.clone()))
        .provider(Arc::new(w.cloud.clone()))
        .probe(Arc::new(w.cloud.rdp_probe()))
        .payment(Arc::new(w.payments.clone()))
        .notifier(Arc::new(w.notifier.clone()))
        .catalog(PlanCatalog::from_plans([plan]).unwrap())
        .sealer(Sealer::new("k", [9; 32]).unwrap())
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(1_767_225_600),
        )))
        .config(config);
    if let Some(h) = hook {
        b = b.crash_hook(h);
    }
    b.build().unwrap()
}

/// Runs one scenario, crashing at the `k`-th boundary (or never, for `k = usize::MAX`).
/// Returns how many boundaries the first worker passed.
async fn scenario(seed: u64, k: usize, mode: Mode) -> usize {
    let w = world(seed);
    let passed = Arc::new(AtomicUsize::new(0));
    let crashed = Arc::new(AtomicBool::new(false));
    let hook: CrashHook = {
        let passed = passed.clone();
        let crashed = crashed.clone();
        Arc::new(move |_site| {
            if crashed.load(Ordering::SeqCst) {
                return true; // a dead process does nothing more
            }
            if passed.fetch_add(1, Ordering::SeqCst) == k {
                crashed.store(true, Ordering::SeqCst);
                if let Mode::Panic = mode {
                    panic!("injected crash");
                }
                return true;
            }
            false
        })
    };
    let first = provisioner(&w, "worker-a", Some(hook));
    let mut orders = Vec::new();
    for _ in 0..2 {
        let order = first
            .place_order(&"win".into(), Customer::new("c"))
            .await
            .unwrap();
        let payment = first.open_payment(order.id, "sim").await.unwrap();
        w.payments.pay_in_full(&payment.reference).unwrap();
        first.refresh_payment(payment.id).await.unwrap();
        orders.push(order.id);
    }
    // The first worker runs until it dies (or finishes).
    loop {
        let round = AssertUnwindSafe(async {
            let n = first.run_jobs_once().await.unwrap();
            n + first.relay_outbox_once().await.unwrap()
        })
        .catch_unwind()
        .await;
        if crashed.load(Ordering::SeqCst) || round.is_err() {
            break;
        }
        let mut settled = true;
        for id in &orders {
            settled &= matches!(
                first.order(*id).await.unwrap().state,
                OrderState::Active | OrderState::NeedsAttention { .. }
            );
        }
        if settled && round.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(first);

    // A new process takes over the same store once the dead one's leases lapse.
    let second = provisioner(&w, "worker-b", None);
    for id in &orders {
        let order = second.run_until_settled(*id).await.unwrap();
        let label = order.instance_label();
        match order.state {
            OrderState::Active => assert_eq!(
                w.cloud.live_with_label(&label),
                1,
                "seed {seed} k {k} {mode:?}: machines for one order"
            ),
            OrderState::NeedsAttention { reason } => {
                assert!(
                    w.cloud.live_with_label(&label) <= 1,
                    "seed {seed} k {k}: duplicate machines ({reason})"
                );
            }
            other => panic!("seed {seed} k {k} {mode:?}: order ended {other:?}"),
        }
    }
    for _ in 0..10 {
        second.relay_outbox_once().await.unwrap();
        tokio::time::sleep(Duration::from_secs(61)).await;
    }
    assert!(
        w.cloud.live_instances().len() <= orders.len(),
        "more machines than orders"
    );
    for id in &orders {
        let state = second.order(*id).await.unwrap().state;
        if state == OrderState::Active {
            let ready = w
                .notifier
                .sent_for(*id)
                .into_iter()
                .filter(|n| n.kind == NotificationKind::Ready)
                .count();
            assert!(
                ready >= 1,
                "seed {seed} k {k} {mode:?}: credentials never sent"
            );
            assert!(w.store.get_credentials(*id).await.unwrap().is_some());
        }
    }
    // Every live machine belongs to an order (nothing leaked).
    for inst in w.cloud.live_instances() {
        assert!(
            orders.iter().any(|id| id.instance_label() == inst.label),
            "stray machine {inst:?}"
        );
    }
    passed.load(Ordering::SeqCst)
}

async fn crash_everywhere(seed: u64, mode: Mode) {
    let boundaries = scenario(seed, usize::MAX, mode).await;
    assert!(boundaries > 10, "suspiciously few boundaries: {boundaries}");
    for k in 0..boundaries {
        scenario(seed, k, mode).await;
    }
}

#[tokio::test(start_paused = true)]
async fn crash_at_every_boundary_seed_0() {
    crash_everywhere(0, Mode::Drop).await;
}

#[tokio::test(start_paused = true)]
async fn crash_at_every_boundary_seed_1() {
    crash_everywhere(1, Mode::Drop).await;
}

#[tokio::test(start_paused = true)]
async fn crash_at_every_boundary_seed_2_by_panic() {
    crash_everywhere(2, Mode::Panic).await;
}

#[tokio::test(start_paused = true)]
async fn crash_at_every_boundary_seed_4_by_panic() {
    crash_everywhere(4, Mode::Panic).await;
}
