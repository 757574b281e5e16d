//! End-to-end tests of the Provisioner on the simulated backends, under a paused Tokio clock:
//! a 45-minute Windows boot completes in milliseconds of wall time.

use std::{sync::Arc, time::Duration};

use nemordp_core::{
    Asset, Currency, Money, Timestamp, TokioClock,
    notify::NotificationKind,
    order::{AttentionCode, Customer, Order, OrderState},
    payment::WebhookRequest,
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{LifecycleOp, OrphanPolicy, Provisioner, ProvisionerConfig, Stage},
    seal::Sealer,
    sim::{
        cloud::{Fault, SimCloud, SimOp},
        notify::RecordingNotifier,
        payments::SimPayments,
        store::MemoryStore,
    },
    store::{JobState, Store},
};
use secrecy::{ExposeSecret, SecretString};

const MIN: Duration = Duration::from_secs(60);
const EPOCH_2026: i64 = 1_767_225_600;

struct Harness {
    provisioner: Provisioner,
    cloud: SimCloud,
    payments: SimPayments,
    notifier: RecordingNotifier,
    store: MemoryStore,
}

fn plans() -> PlanCatalog {
    PlanCatalog::from_plans([
        Plan::new(
            "win",
            "sim",
            OsKind::WindowsServer,
            "sim-1",
            "small",
            Money::parse_major(Currency::Ngn, "45000").unwrap(),
        )
        .with_packages(["googlechrome", "7zip"]),
        Plan::new(
            "ubuntu",
            "sim",
            OsKind::UbuntuDesktop,
            "sim-1",
            "small",
            Money::parse_major(Currency::Ngn, "20000").unwrap(),
        )
        .with_packages(["firefox"]),
    ])
    .unwrap()
}

fn build(
    cloud: &SimCloud,
    store: &MemoryStore,
    payments: &SimPayments,
    notifier: &RecordingNotifier,
    config: ProvisionerConfig,
    sealer: Sealer,
) -> Provisioner {
    Provisioner::builder()
        .store(Arc::new(store.clone()))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(plans())
        .sealer(sealer)
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(EPOCH_2026),
        )))
        .config(config)
        .build()
        .unwrap()
}

fn key() -> Sealer {
    Sealer::new("k1", [42; 32]).unwrap()
}

fn harness(cloud: SimCloud) -> Harness {
    harness_with(cloud, ProvisionerConfig::default())
}

fn harness_with(cloud: SimCloud, config: ProvisionerConfig) -> Harness {
    let store = MemoryStore::new();
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("whsec_test"));
    let notifier = RecordingNotifier::new();
    let provisioner = build(&cloud, &store, &payments, &notifier, config, key());
    Harness {
        provisioner,
        cloud,
        payments,
        notifier,
        store,
    }
}

fn windows_cloud(seed: u64, boot: Duration) -> SimCloud {
    SimCloud::builder()
        .seed(seed)
        .boot_time(OsKind::WindowsServer, boot, boot)
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(EPOCH_2026),
        )))
        .build()
}

/// Places and pays an order; returns it (state Paid).
async fn paid_order(h: &Harness, plan: &str) -> Order {
    let p = &h.provisioner;
    let order = p
        .place_order(
            &plan.into(),
            Customer::new("cust-1").with_email("c@example.com"),
        )
        .await
        .unwrap();
    let payment = p.open_payment(order.id, "sim").await.unwrap();
    h.payments.pay_in_full(&payment.reference).unwrap();
    p.refresh_payment(payment.id).await.unwrap();
    let order = p.order(order.id).await.unwrap();
    assert_eq!(order.state, OrderState::Paid);
    order
}

#[tokio::test(start_paused = true)]
async fn a_shortfall_within_the_configured_tolerance_settles_and_one_beyond_does_not() {
    let mut config = ProvisionerConfig::default();
    config.payment_tolerance_percent = "1".parse().unwrap();
    let h = harness_with(windows_cloud(7, Duration::from_secs(60)), config);
    let p = &h.provisioner;
    let mut results = Vec::new();
    // The Windows plan costs 45,000.00 NGN: 1 % is 450.00.
    for paid_kobo in [4_455_000_u64, 4_454_999] {
        let order = p
            .place_order(&"win".into(), Customer::new("cust-t"))
            .await
            .unwrap();
        let payment = p.open_payment(order.id, "sim").await.unwrap();
        assert_eq!(
            payment.terms.tolerance_percent,
            "1".parse::<nemordp_core::Decimal>().unwrap()
        );
        h.payments
            .pay_confirmed(
                &payment.reference,
                Money::from_minor(Currency::Ngn, paid_kobo),
            )
            .unwrap();
        p.refresh_payment(payment.id).await.unwrap();
        results.push(p.order(order.id).await.unwrap().state);
    }
    assert_eq!(
        results[0],
        OrderState::Paid,
        "99 % of the price is within 1 %"
    );
    assert_ne!(
        results[1],
        OrderState::Paid,
        "one kobo below 99 % is beyond the tolerance"
    );

    let mut bad = ProvisionerConfig::default();
    bad.payment_tolerance_percent = "100".parse().unwrap();
    let err = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(Arc::new(windows_cloud(1, Duration::from_secs(1))))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(plans())
        .sealer(Sealer::ephemeral())
        .config(bad)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), nemordp_core::ErrorKind::InvalidConfig, "{err}");
}

#[tokio::test(start_paused = true)]
async fn windows_boot_of_45_minutes_completes_with_few_api_calls() {
    let h = harness(windows_cloud(1, 45 * MIN));
    let mut events = h.provisioner.subscribe();
    let order = paid_order(&h, "win").await;
    let started = tokio::time::Instant::now();
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    assert_eq!(done.state, OrderState::Active, "{done:?}");
    let took = started.elapsed();
    assert!(took >= 45 * MIN && took < 47 * MIN, "virtual time {took:?}");
    let calls = h.cloud.calls();
    assert!(
        calls <= 20,
        "{calls} provider API calls for one 45-minute boot"
    );
    assert_eq!(h.cloud.creates_applied(), 1);

    // The customer got payment, started and ready notifications, with working credentials.
    h.provisioner.relay_outbox_once().await.unwrap();
    let kinds = h.notifier.sent_kinds();
    assert!(
        kinds.contains(&NotificationKind::ProvisioningStarted),
        "{kinds:?}"
    );
    let ready: Vec<_> = h
        .notifier
        .sent_for(order.id)
        .into_iter()
        .filter(|n| n.kind == NotificationKind::Ready)
        .collect();
    assert_eq!(ready.len(), 1);
    let conn = ready[0]
        .connection
        .as_ref()
        .expect("ready carries credentials");
    assert_eq!(conn.username, "Administrator");
    assert!(
        conn.rdp_file
            .contains(&format!("full address:s:{}:3389", conn.host))
    );
    assert!(nemordp_core::password::is_acceptable_password(
        conn.password.expose_secret(),
        "Administrator"
    ));
    let details = h.provisioner.connection_details(order.id).await.unwrap();
    assert_eq!(
        details.password.expose_secret(),
        conn.password.expose_secret()
    );

    // Progress events arrived in order and ended active.
    let mut stages = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1), events.next()).await {
        assert_eq!(e.order_id, order.id);
        stages.push(e.stage);
    }
    assert_eq!(stages.first(), Some(&Stage::Paid));
    assert_eq!(stages.last(), Some(&Stage::Active));
    assert!(stages.contains(&Stage::WaitingForRdp));
}

#[tokio::test(start_paused = true)]
async fn credentials_go_out_within_five_seconds_of_rdp_answering() {
    for seed in 0..5 {
        let boot = Duration::from_secs(30 * 60 + seed * 97);
        let h = harness(windows_cloud(seed, boot));
        let order = paid_order(&h, "win").await;
        h.provisioner.run_until_settled(order.id).await.unwrap();
        let inst = &h.cloud.live_instances()[0];
        // RDP opens boot time + the sim's 30 s RDP delay after create.
        let reachable = inst
            .created_at
            .unwrap()
            .saturating_add(boot + Duration::from_secs(30));
        let outbox = h.store.outbox_for_order(order.id).await.unwrap();
        let ready = outbox
            .iter()
            .find(|e| e.kind == NotificationKind::Ready)
            .unwrap();
        let lag = ready.created_at.duration_since(reachable);
        assert!(
            ready.created_at >= reachable,
            "credentials before RDP answered"
        );
        assert!(
            lag <= Duration::from_secs(5),
            "seed {seed}: credentials {lag:?} after RDP answered"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn boot_past_its_deadline_needs_attention() {
    let h = harness(windows_cloud(2, 30 * MIN));
    h.cloud.stick_next_boot();
    let order = paid_order(&h, "win").await;
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    match done.state {
        OrderState::NeedsAttention { reason } => {
            assert_eq!(reason.code, AttentionCode::BootDeadline);
        }
        other => panic!("expected needs-attention, got {other:?}"),
    }
    h.provisioner.relay_outbox_once().await.unwrap();
    assert!(
        h.notifier
            .sent_kinds()
            .iter()
            .any(|k| matches!(k, NotificationKind::Failed { .. }))
    );
    let jobs = h.store.jobs_for_order(order.id).await.unwrap();
    assert!(
        jobs.iter()
            .all(|j| j.state != JobState::Queued && j.state != JobState::Running)
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_storm_is_ridden_out() {
    // The sim allows 2 requests/s; our own limiter is set to twice that so the storm really
    // hits, and every 429 must be absorbed by backing off.
    let cloud = SimCloud::builder()
        .seed(3)
        .rate_limit(2)
        .boot_time(OsKind::WindowsServer, 31 * MIN, 35 * MIN)
        .build();
    let store = MemoryStore::new();
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("s"));
    let notifier = RecordingNotifier::new();
    let p = Provisioner::builder()
        .store(Arc::new(store.clone()))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(plans())
        .sealer(key())
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(EPOCH_2026),
        )))
        .provider_rate_limit("sim", 4)
        .build()
        .unwrap();
    let h = Harness {
        provisioner: p,
        cloud,
        payments,
        notifier,
        store,
    };
    let mut orders = Vec::new();
    for _ in 0..20 {
        orders.push(paid_order(&h, "win").await.id);
    }
    let workers = h.provisioner.start();
    wait_all_settled(&h, &orders).await;
    workers.shutdown().await;
    assert!(h.cloud.rate_limited_calls() > 0, "the storm never happened");
    for id in orders {
        assert_eq!(
            h.provisioner.order(id).await.unwrap().state,
            OrderState::Active
        );
        assert_eq!(h.cloud.live_with_label(&id.instance_label()), 1);
    }
}

async fn wait_all_settled(h: &Harness, orders: &[nemordp_core::OrderId]) {
    loop {
        let mut pending = 0;
        for id in orders {
            let o = h.provisioner.order(*id).await.unwrap();
            if !matches!(
                o.state,
                OrderState::Active | OrderState::NeedsAttention { .. }
            ) {
                pending += 1;
            }
        }
        if pending == 0 {
            return;
        }
        if std::env::var("DEBUG_SETTLE").is_ok() {
            let mut states = std::collections::BTreeMap::new();
            for id in orders {
                let o = h.provisioner.order(*id).await.unwrap();
                *states.entry(format!("{:?}", o.state)).or_insert(0) += 1;
            }
            eprintln!(
                "{:?} calls={} 429={} {states:?}",
                tokio::time::Instant::now(),
                h.cloud.calls(),
                h.cloud.rate_limited_calls()
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_provisions_never_trip_a_30_rps_limit() {
    let cloud = SimCloud::builder()
        .seed(4)
        .rate_limit(30)
        .boot_time(OsKind::WindowsServer, 30 * MIN, 40 * MIN)
        .build();
    let h = harness(cloud);
    let mut orders = Vec::new();
    for _ in 0..1000 {
        orders.push(paid_order(&h, "win").await.id);
    }
    let workers = h.provisioner.start();
    wait_all_settled(&h, &orders).await;
    workers.shutdown().await;
    assert_eq!(
        h.cloud.rate_limited_calls(),
        0,
        "requests rejected with 429"
    );
    assert_eq!(h.cloud.creates_applied(), 1000);
    for id in &orders {
        assert_eq!(
            h.provisioner.order(*id).await.unwrap().state,
            OrderState::Active
        );
    }
}

#[tokio::test(start_paused = true)]
async fn lost_create_response_is_adopted_by_label() {
    let h = harness(windows_cloud(5, 35 * MIN));
    h.cloud.push_fault(SimOp::Create, Fault::LostResponse);
    let order = paid_order(&h, "win").await;
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    assert_eq!(done.state, OrderState::Active);
    assert_eq!(h.cloud.calls_of(SimOp::Create), 1, "create was re-sent");
    assert_eq!(h.cloud.creates_applied(), 1);
    assert_eq!(h.cloud.live_with_label(&order.instance_label()), 1);
}

#[tokio::test(start_paused = true)]
async fn create_that_never_landed_is_resent_only_after_the_grace_period() {
    let h = harness(windows_cloud(6, 35 * MIN));
    h.cloud.push_fault(SimOp::Create, Fault::Timeout);
    let order = paid_order(&h, "win").await;
    let started = tokio::time::Instant::now();
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    assert_eq!(done.state, OrderState::Active);
    assert_eq!(h.cloud.calls_of(SimOp::Create), 2);
    assert_eq!(h.cloud.creates_applied(), 1);
    assert_eq!(h.cloud.live_with_label(&order.instance_label()), 1);
    assert!(
        started.elapsed() >= 10 * MIN + 35 * MIN,
        "re-created before the grace period"
    );
}

#[tokio::test(start_paused = true)]
async fn provider_outage_is_waited_out() {
    let h = harness(windows_cloud(7, 30 * MIN));
    let order = paid_order(&h, "win").await;
    h.cloud.set_outage(true);
    let cloud = h.cloud.clone();
    tokio::spawn(async move {
        tokio::time::sleep(45 * MIN).await;
        cloud.set_outage(false);
    });
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    assert_eq!(done.state, OrderState::Active, "{done:?}");
    assert_eq!(h.cloud.live_with_label(&order.instance_label()), 1);
}

#[tokio::test(start_paused = true)]
async fn outage_past_the_order_deadline_needs_attention() {
    let mut config = ProvisionerConfig::default();
    config.order_deadline = Duration::from_secs(2 * 60 * 60);
    let h = harness_with(windows_cloud(8, 30 * MIN), config);
    let order = paid_order(&h, "win").await;
    h.cloud.set_outage(true);
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    match done.state {
        OrderState::NeedsAttention { reason } => {
            assert_eq!(reason.code, AttentionCode::ProviderOutage);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn duplicate_webhooks_make_one_job_and_forged_ones_change_nothing() {
    let h = harness(windows_cloud(9, 30 * MIN));
    let p = &h.provisioner;
    let order = p
        .place_order(&"win".into(), Customer::new("c"))
        .await
        .unwrap();
    let payment = p.open_payment(order.id, "sim").await.unwrap();
    h.payments.pay_in_full(&payment.reference).unwrap();
    let (headers, body) = h.payments.signed_webhook(&payment.reference).unwrap();
    let first = p
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &headers,
                body: &body,
            },
        )
        .await
        .unwrap();
    let again = p
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &headers,
                body: &body,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.applied, 1);
    assert_eq!(again.duplicates, 1);
    assert_eq!(h.store.jobs_for_order(order.id).await.unwrap().len(), 1);

    let other = p
        .place_order(&"win".into(), Customer::new("c"))
        .await
        .unwrap();
    let other_pay = p.open_payment(other.id, "sim").await.unwrap();
    let (mut forged_headers, forged) = h.payments.signed_webhook(&other_pay.reference).unwrap();
    let mut tampered = forged.clone();
    *tampered.last_mut().unwrap() ^= 1;
    let err = p
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &forged_headers,
                body: &tampered,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), nemordp_core::ErrorKind::Unauthenticated);
    forged_headers.clear();
    assert!(
        p.handle_webhook(
            "sim",
            WebhookRequest {
                headers: &forged_headers,
                body: &forged
            }
        )
        .await
        .is_err()
    );
    assert_eq!(
        p.order(other.id).await.unwrap().state,
        OrderState::AwaitingPayment
    );
    assert!(h.store.jobs_for_order(other.id).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_store_never_holds_a_plaintext_password() {
    let h = harness(windows_cloud(10, 30 * MIN));
    let order = paid_order(&h, "win").await;
    h.provisioner.run_until_settled(order.id).await.unwrap();
    let password = h
        .provisioner
        .connection_details(order.id)
        .await
        .unwrap()
        .password;
    let pw = password.expose_secret().as_bytes();
    let creds = h.store.get_credentials(order.id).await.unwrap().unwrap();
    let rec = h.store.get_instance(order.id).await.unwrap().unwrap();
    let mut everything = Vec::new();
    everything.extend(creds.sealed_password.clone());
    everything.extend(rec.sealed_password.clone().unwrap());
    everything.extend(serde_json::to_vec(&rec).unwrap());
    everything.extend(serde_json::to_vec(&h.store.get_order(order.id).await.unwrap()).unwrap());
    everything
        .extend(serde_json::to_vec(&h.store.outbox_for_order(order.id).await.unwrap()).unwrap());
    everything
        .extend(serde_json::to_vec(&h.store.jobs_for_order(order.id).await.unwrap()).unwrap());
    everything.extend(format!("{creds:?}{rec:?}{:?}", h.store).into_bytes());
    assert!(
        !everything.windows(pw.len()).any(|w| w == pw),
        "plaintext password stored"
    );
    // A different key cannot open what was stored.
    let other = build(
        &h.cloud,
        &h.store,
        &h.payments,
        &h.notifier,
        ProvisionerConfig::default(),
        Sealer::new("k1", [7; 32]).unwrap(),
    );
    assert!(other.connection_details(order.id).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn lifecycle_operations_converge() {
    let h = harness(windows_cloud(11, 30 * MIN));
    let order = paid_order(&h, "win").await;
    let p = &h.provisioner;
    p.run_until_settled(order.id).await.unwrap();
    let id = h
        .store
        .get_instance(order.id)
        .await
        .unwrap()
        .unwrap()
        .instance_id
        .unwrap();
    let status = |cloud: &SimCloud| {
        let cloud = cloud.clone();
        let id = id.clone();
        async move {
            nemordp_core::CloudProvider::get_instance(&cloud, &id)
                .await
                .unwrap()
                .status
        }
    };

    p.request(order.id, LifecycleOp::Suspend, Some("unpaid renewal"))
        .await
        .unwrap();
    drain(p).await;
    assert_eq!(
        p.order(order.id).await.unwrap().state,
        OrderState::Suspended
    );
    assert_eq!(
        status(&h.cloud).await,
        nemordp_core::cloud::InstanceStatus::Stopped
    );

    p.request(order.id, LifecycleOp::Unsuspend, None)
        .await
        .unwrap();
    drain(p).await;
    assert_eq!(p.order(order.id).await.unwrap().state, OrderState::Active);
    assert!(status(&h.cloud).await.is_running());

    h.cloud.push_fault(SimOp::Reboot, Fault::Unavailable);
    p.request(order.id, LifecycleOp::Restart, None)
        .await
        .unwrap();
    drain(p).await;
    assert_eq!(
        h.cloud.calls_of(SimOp::Reboot),
        2,
        "restart retried after a 5xx"
    );

    p.request(order.id, LifecycleOp::Terminate, None)
        .await
        .unwrap();
    drain(p).await;
    assert_eq!(
        p.order(order.id).await.unwrap().state,
        OrderState::Terminated
    );
    assert_eq!(h.cloud.live_with_label(&order.instance_label()), 0);
    // Idempotent.
    p.request(order.id, LifecycleOp::Terminate, None)
        .await
        .unwrap();
    drain(p).await;
    let kinds: Vec<_> = h
        .notifier
        .sent_for(order.id)
        .into_iter()
        .map(|n| n.kind)
        .collect();
    assert!(kinds.iter().any(
        |k| matches!(k, NotificationKind::Suspended { reason } if reason == "unpaid renewal")
    ));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == NotificationKind::Terminated)
            .count(),
        1
    );
}

/// Runs jobs and the outbox until nothing is due for a while.
async fn drain(p: &Provisioner) {
    let mut idle = 0;
    while idle < 2000 {
        let ran = p.run_jobs_once().await.unwrap() + p.relay_outbox_once().await.unwrap();
        if ran == 0 {
            idle += 1;
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            idle = 0;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn terminating_an_order_whose_machine_vanished_still_terminates() {
    let h = harness(windows_cloud(12, 30 * MIN));
    let order = paid_order(&h, "win").await;
    h.provisioner.run_until_settled(order.id).await.unwrap();
    let id = h
        .store
        .get_instance(order.id)
        .await
        .unwrap()
        .unwrap()
        .instance_id
        .unwrap();
    nemordp_core::CloudProvider::delete_instance(&h.cloud, &id)
        .await
        .unwrap();
    h.provisioner
        .request(order.id, LifecycleOp::Terminate, None)
        .await
        .unwrap();
    drain(&h.provisioner).await;
    assert_eq!(
        h.provisioner.order(order.id).await.unwrap().state,
        OrderState::Terminated
    );
}

#[tokio::test(start_paused = true)]
async fn orphans_are_found_after_their_grace_and_removed_by_policy() {
    let h = harness(windows_cloud(13, 30 * MIN));
    let order = paid_order(&h, "win").await;
    h.provisioner.run_until_settled(order.id).await.unwrap();
    // A machine with our label that no order owns, and one that is not ours at all.
    let image = nemordp_core::CloudProvider::resolve_image(&h.cloud, OsKind::WindowsServer, None)
        .await
        .unwrap();
    let stray = nemordp_core::OrderId::new().instance_label();
    for label in [stray.as_str(), "someone-elses"] {
        let spec = nemordp_core::cloud::InstanceSpec::new(label, "sim-1", "small", image.clone());
        nemordp_core::CloudProvider::create_instance(&h.cloud, &spec)
            .await
            .unwrap();
    }
    assert!(
        h.provisioner
            .reconcile_orphans(OrphanPolicy::Report)
            .await
            .unwrap()
            .is_empty(),
        "younger than the grace"
    );
    tokio::time::sleep(16 * MIN).await;
    let found = h
        .provisioner
        .reconcile_orphans(OrphanPolicy::Report)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].label, stray);
    let removed = h
        .provisioner
        .reconcile_orphans(OrphanPolicy::Delete)
        .await
        .unwrap();
    assert!(removed[0].removed);
    assert_eq!(h.cloud.live_with_label(&stray), 0);
    assert_eq!(h.cloud.live_with_label("someone-elses"), 1);
    assert_eq!(
        h.cloud.live_with_label(&order.instance_label()),
        1,
        "an owned machine was touched"
    );
}

#[tokio::test(start_paused = true)]
async fn ubuntu_desktop_plans_provision_too() {
    let h = harness(windows_cloud(14, 30 * MIN));
    let order = paid_order(&h, "ubuntu").await;
    let done = h.provisioner.run_until_settled(order.id).await.unwrap();
    assert_eq!(done.state, OrderState::Active);
    assert_eq!(
        h.provisioner
            .connection_details(order.id)
            .await
            .unwrap()
            .username,
        "rdpuser"
    );
}

#[tokio::test(start_paused = true)]
async fn unpaid_orders_expire_and_late_money_needs_attention() {
    let h = harness(windows_cloud(15, 30 * MIN));
    let p = &h.provisioner;
    let order = p
        .place_order(&"win".into(), Customer::new("c"))
        .await
        .unwrap();
    let payment = p.open_payment(order.id, "sim").await.unwrap();
    tokio::time::sleep(16 * MIN).await;
    assert_eq!(p.expire_payments().await.unwrap(), 1);
    assert_eq!(p.order(order.id).await.unwrap().state, OrderState::Expired);
    h.payments.pay_in_full(&payment.reference).unwrap();
    p.refresh_payment(payment.id).await.unwrap();
    match p.order(order.id).await.unwrap().state {
        OrderState::NeedsAttention { reason } => assert_eq!(reason.code, AttentionCode::PaidLate),
        other => panic!("late money lost: {other:?}"),
    }
    assert!(
        h.store.jobs_for_order(order.id).await.unwrap().is_empty(),
        "no machine without a human"
    );
}

#[tokio::test(start_paused = true)]
async fn two_provisioners_sharing_one_store_deliver_each_order_once() {
    let h = harness(windows_cloud(16, 30 * MIN));
    let mut config = ProvisionerConfig::default();
    config.worker_id = "second-process".into();
    let second = build(&h.cloud, &h.store, &h.payments, &h.notifier, config, key());
    let mut orders = Vec::new();
    for _ in 0..200 {
        orders.push(paid_order(&h, "win").await.id);
    }
    let a = h.provisioner.start();
    let b = second.start();
    wait_all_settled(&h, &orders).await;
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(h.cloud.creates_applied(), 200, "an order was created twice");
    for id in &orders {
        assert_eq!(
            h.provisioner.order(*id).await.unwrap().state,
            OrderState::Active
        );
        assert_eq!(h.cloud.live_with_label(&id.instance_label()), 1);
    }
    let readies = h
        .notifier
        .sent_kinds()
        .iter()
        .filter(|k| **k == NotificationKind::Ready)
        .count();
    assert!(
        readies >= 200,
        "{readies} ready notifications for 200 orders"
    );
}

#[test]
fn provisioning_reports_metrics_through_the_facade() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let h = harness(windows_cloud(17, 30 * MIN));
            let order = paid_order(&h, "win").await;
            assert_eq!(
                h.provisioner
                    .run_until_settled(order.id)
                    .await
                    .unwrap()
                    .state,
                OrderState::Active
            );
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, label: Option<(&str, &str)>| {
        snapshot.iter().find(|(key, _, _, _)| {
            key.key().name() == name
                && label
                    .is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
        })
    };
    let counter = |name, label| match find(name, label) {
        Some((_, _, _, DebugValue::Counter(n))) => *n,
        other => panic!("{name} missing or not a counter: {other:?}"),
    };
    assert_eq!(
        counter("nemordp_provisions_total", Some(("outcome", "active"))),
        1
    );
    assert_eq!(
        counter(
            "nemordp_provider_api_calls_total",
            Some(("op", "create_instance"))
        ),
        1
    );
    assert_eq!(counter("nemordp_payments_settled_total", None), 1);
    match find("nemordp_paid_to_active_seconds", None) {
        Some((_, _, _, DebugValue::Histogram(v))) => assert!(v[0].into_inner() >= 30.0 * 60.0),
        other => panic!("paid-to-active histogram missing: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_job_for_a_missing_order_fails_instead_of_spinning() {
    use nemordp_core::store::{Job, StoreExt as _};
    let h = harness(windows_cloud(19, 30 * MIN));
    let ghost = nemordp_core::OrderId::new();
    h.store
        .enqueue(
            Job::provision(ghost, h.provisioner.now()),
            h.provisioner.now(),
        )
        .await
        .unwrap();
    assert_eq!(h.provisioner.run_jobs_once().await.unwrap(), 1);
    assert_eq!(
        h.provisioner.run_jobs_once().await.unwrap(),
        0,
        "job ran again"
    );
    let jobs = h.store.jobs_for_order(ghost).await.unwrap();
    assert_eq!(jobs[0].state, JobState::Failed);
    assert_eq!(h.cloud.calls(), 0);
}

/// A store that lets the host terminate the order just before the provisioner's first
/// "created" write lands, so that write loses its compare-and-set.
#[derive(Debug)]
struct HostTerminatesMidStep {
    inner: MemoryStore,
    fired: std::sync::atomic::AtomicBool,
}

#[nemordp_core::async_trait]
impl Store for HostTerminatesMidStep {
    fn name(&self) -> &'static str {
        "interfering"
    }
    async fn commit(
        &self,
        batch: nemordp_core::store::Batch,
        now: Timestamp,
    ) -> nemordp_core::Result<nemordp_core::store::CommitOutcome> {
        use nemordp_core::store::{Job, JobKind, OrderWrite, StoreExt as _};
        // The write after the create (it moves the order on to booting).
        let created = batch.orders.iter().find_map(|w| match w {
            OrderWrite::Update(o)
                if o.state
                    == (OrderState::Provisioning {
                        step: nemordp_core::order::ProvisionStep::Booting,
                    }) =>
            {
                Some(o.id)
            }
            _ => None,
        });
        if let Some(id) = created
            && !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let order = self.inner.require_order(id).await?;
            let terminated = order.transition(&nemordp_core::order::OrderEvent::Terminate, now)?;
            self.inner
                .commit(
                    nemordp_core::store::Batch::new()
                        .update_order(terminated)
                        .enqueue(Job::new(JobKind::Terminate, id, now)),
                    now,
                )
                .await?;
        }
        self.inner.commit(batch, now).await
    }
    async fn get_order(&self, id: nemordp_core::OrderId) -> nemordp_core::Result<Option<Order>> {
        self.inner.get_order(id).await
    }
    async fn list_orders(
        &self,
        q: &nemordp_core::store::OrderQuery,
    ) -> nemordp_core::Result<Vec<Order>> {
        self.inner.list_orders(q).await
    }
    async fn get_payment(
        &self,
        id: nemordp_core::PaymentId,
    ) -> nemordp_core::Result<Option<nemordp_core::payment::Payment>> {
        self.inner.get_payment(id).await
    }
    async fn find_payment(
        &self,
        m: &str,
        r: &str,
    ) -> nemordp_core::Result<Option<nemordp_core::payment::Payment>> {
        self.inner.find_payment(m, r).await
    }
    async fn payments_for_order(
        &self,
        id: nemordp_core::OrderId,
    ) -> nemordp_core::Result<Vec<nemordp_core::payment::Payment>> {
        self.inner.payments_for_order(id).await
    }
    async fn get_instance(
        &self,
        id: nemordp_core::OrderId,
    ) -> nemordp_core::Result<Option<nemordp_core::store::InstanceRecord>> {
        self.inner.get_instance(id).await
    }
    async fn list_instances(
        &self,
        after: Option<nemordp_core::OrderId>,
        limit: u32,
    ) -> nemordp_core::Result<Vec<nemordp_core::store::InstanceRecord>> {
        self.inner.list_instances(after, limit).await
    }
    async fn get_credentials(
        &self,
        id: nemordp_core::OrderId,
    ) -> nemordp_core::Result<Option<nemordp_core::store::SealedCredentials>> {
        self.inner.get_credentials(id).await
    }
    async fn claim_outbox(
        &self,
        limit: u32,
        lease_for: Duration,
        now: Timestamp,
    ) -> nemordp_core::Result<Vec<nemordp_core::store::OutboxEntry>> {
        self.inner.claim_outbox(limit, lease_for, now).await
    }
    async fn mark_outbox_delivered(
        &self,
        id: nemordp_core::NotificationId,
        now: Timestamp,
    ) -> nemordp_core::Result<()> {
        self.inner.mark_outbox_delivered(id, now).await
    }
    async fn retry_outbox(
        &self,
        id: nemordp_core::NotificationId,
        at: Timestamp,
        e: &str,
        now: Timestamp,
    ) -> nemordp_core::Result<()> {
        self.inner.retry_outbox(id, at, e, now).await
    }
    async fn fail_outbox(
        &self,
        id: nemordp_core::NotificationId,
        e: &str,
        now: Timestamp,
    ) -> nemordp_core::Result<()> {
        self.inner.fail_outbox(id, e, now).await
    }
    async fn requeue_outbox(
        &self,
        id: nemordp_core::NotificationId,
        now: Timestamp,
    ) -> nemordp_core::Result<()> {
        self.inner.requeue_outbox(id, now).await
    }
    async fn failed_outbox(
        &self,
        after: Option<nemordp_core::NotificationId>,
        limit: u32,
    ) -> nemordp_core::Result<Vec<nemordp_core::store::OutboxEntry>> {
        self.inner.failed_outbox(after, limit).await
    }
    async fn outbox_for_order(
        &self,
        id: nemordp_core::OrderId,
    ) -> nemordp_core::Result<Vec<nemordp_core::store::OutboxEntry>> {
        self.inner.outbox_for_order(id).await
    }
    async fn claim_jobs(
        &self,
        r: &nemordp_core::store::ClaimRequest,
    ) -> nemordp_core::Result<Vec<nemordp_core::store::ClaimedJob>> {
        self.inner.claim_jobs(r).await
    }
    async fn heartbeat(
        &self,
        l: &nemordp_core::store::Lease,
        by: Duration,
        now: Timestamp,
    ) -> nemordp_core::Result<nemordp_core::store::Lease> {
        self.inner.heartbeat(l, by, now).await
    }
    async fn get_job(
        &self,
        id: nemordp_core::JobId,
    ) -> nemordp_core::Result<Option<nemordp_core::store::Job>> {
        self.inner.get_job(id).await
    }
    async fn jobs_for_order(
        &self,
        id: nemordp_core::OrderId,
    ) -> nemordp_core::Result<Vec<nemordp_core::store::Job>> {
        self.inner.jobs_for_order(id).await
    }
    async fn get_record(
        &self,
        collection: &str,
        key: &str,
    ) -> nemordp_core::Result<Option<nemordp_core::Record>> {
        self.inner.get_record(collection, key).await
    }
    async fn list_records(
        &self,
        collection: &str,
        key_prefix: &str,
        after_key: Option<&str>,
        limit: u32,
    ) -> nemordp_core::Result<Vec<nemordp_core::Record>> {
        self.inner
            .list_records(collection, key_prefix, after_key, limit)
            .await
    }
    async fn reserve_index(
        &self,
        scope: &str,
        claimant: &str,
        now: Timestamp,
    ) -> nemordp_core::Result<u64> {
        self.inner.reserve_index(scope, claimant, now).await
    }
}

#[tokio::test(start_paused = true)]
async fn an_order_changed_by_the_host_mid_step_is_reread_not_stalled() {
    let cloud = windows_cloud(20, 30 * MIN);
    let memory = MemoryStore::new();
    let store = Arc::new(HostTerminatesMidStep {
        inner: memory.clone(),
        fired: false.into(),
    });
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("s"));
    let notifier = RecordingNotifier::new();
    let p = Provisioner::builder()
        .store(store)
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(plans())
        .sealer(key())
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(EPOCH_2026),
        )))
        .build()
        .unwrap();
    let h = Harness {
        provisioner: p,
        cloud,
        payments,
        notifier,
        store: memory,
    };
    let order = paid_order(&h, "win").await;
    let started = tokio::time::Instant::now();
    // One round: the "created" write loses to the host's terminate, the step re-reads and
    // finishes instead of sitting on its lease.
    h.provisioner.run_jobs_once().await.unwrap();
    let provision_job = h
        .store
        .jobs_for_order(order.id)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.kind == nemordp_core::store::JobKind::Provision)
        .unwrap();
    assert_eq!(provision_job.state, JobState::Done, "{provision_job:?}");
    drain(&h.provisioner).await;
    assert_eq!(
        h.provisioner.order(order.id).await.unwrap().state,
        OrderState::Terminated
    );
    assert_eq!(
        h.cloud.live_instances().len(),
        0,
        "the machine created meanwhile was left running"
    );
    assert!(started.elapsed() < Duration::from_secs(3600));
}

/// Delivers the current signed webhook of the order's (only) payment.
async fn deliver(
    h: &Harness,
    order: &Order,
) -> (
    nemordp_core::provisioner::WebhookOutcome,
    (http::HeaderMap, Vec<u8>),
) {
    let payment = h
        .store
        .payments_for_order(order.id)
        .await
        .unwrap()
        .remove(0);
    let delivery = h.payments.signed_webhook(&payment.reference).unwrap();
    let out = redeliver(h, &delivery).await;
    (out, delivery)
}

async fn redeliver(
    h: &Harness,
    (headers, body): &(http::HeaderMap, Vec<u8>),
) -> nemordp_core::provisioner::WebhookOutcome {
    h.provisioner
        .handle_webhook("sim", WebhookRequest { headers, body })
        .await
        .unwrap()
}

async fn reference_of(h: &Harness, order: &Order) -> String {
    h.store.payments_for_order(order.id).await.unwrap()[0]
        .reference
        .clone()
}

async fn active_order(h: &Harness) -> Order {
    let order = paid_order(h, "win").await;
    h.provisioner.run_until_settled(order.id).await.unwrap();
    assert_eq!(
        h.provisioner.order(order.id).await.unwrap().state,
        OrderState::Active
    );
    order
}

#[tokio::test(start_paused = true)]
async fn a_won_dispute_resumes_only_what_its_own_reversal_suspended() {
    use nemordp_core::provisioner::ReversalStatus;
    let h = harness(windows_cloud(21, MIN));
    let p = &h.provisioner;
    let state = |id| async move { p.order(id).await.unwrap().state };

    // Disputed: suspended through the lifecycle job, recorded as an open reversal.
    let order = active_order(&h).await;
    let reference = reference_of(&h, &order).await;
    h.payments.reverse(&reference, "dispute opened").unwrap();
    let (out, opened) = deliver(&h, &order).await;
    assert_eq!(out.applied, 1);
    drain(p).await;
    assert_eq!(state(order.id).await, OrderState::Suspended);
    let rec = p.reversal(order.id).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.reference.as_str()),
        (ReversalStatus::Open, reference.as_str())
    );
    assert_eq!(redeliver(&h, &opened).await.duplicates, 1);

    // Won: resumed (machine running again), and a redelivery changes nothing.
    h.payments
        .reinstate(&reference, "dispute declined")
        .unwrap();
    let (out, won) = deliver(&h, &order).await;
    assert_eq!((out.applied, out.ignored), (1, 0));
    drain(p).await;
    assert_eq!(state(order.id).await, OrderState::Active);
    let id = h
        .store
        .get_instance(order.id)
        .await
        .unwrap()
        .unwrap()
        .instance_id
        .unwrap();
    assert!(
        nemordp_core::CloudProvider::get_instance(&h.cloud, &id)
            .await
            .unwrap()
            .status
            .is_running()
    );
    assert_eq!(
        p.reversal(order.id).await.unwrap().unwrap().status,
        ReversalStatus::Reinstated
    );
    let again = redeliver(&h, &won).await;
    assert_eq!((again.applied, again.duplicates), (0, 1));
    // The old "dispute opened" delivery replayed after the win is still a duplicate.
    assert_eq!(redeliver(&h, &opened).await.duplicates, 1);
    drain(p).await;
    assert_eq!(state(order.id).await, OrderState::Active);

    // Suspended by the operator, never reversed: a reinstatement does not resume it.
    let operator = active_order(&h).await;
    p.request(operator.id, LifecycleOp::Suspend, Some("abuse report"))
        .await
        .unwrap();
    drain(p).await;
    h.payments
        .reinstate(&reference_of(&h, &operator).await, "dispute declined")
        .unwrap();
    let (out, _) = deliver(&h, &operator).await;
    assert_eq!((out.applied, out.ignored), (0, 1));
    drain(p).await;
    assert_eq!(state(operator.id).await, OrderState::Suspended);

    // Suspended by the operator, then disputed (needs attention), then won: the attention
    // is cleared but the machine stays suspended for the operator's own reason.
    let both = active_order(&h).await;
    p.request(both.id, LifecycleOp::Suspend, Some("abuse report"))
        .await
        .unwrap();
    drain(p).await;
    let both_ref = reference_of(&h, &both).await;
    h.payments.reverse(&both_ref, "dispute opened").unwrap();
    deliver(&h, &both).await;
    assert!(matches!(
        state(both.id).await,
        OrderState::NeedsAttention { reason } if reason.code == AttentionCode::PaymentReversed
    ));
    h.payments.reinstate(&both_ref, "dispute declined").unwrap();
    assert_eq!(deliver(&h, &both).await.0.applied, 1);
    drain(p).await;
    assert_eq!(state(both.id).await, OrderState::Suspended);
}

#[tokio::test(start_paused = true)]
async fn a_lost_dispute_keeps_the_order_suspended_and_recorded() {
    use nemordp_core::provisioner::ReversalStatus;
    let h = harness(windows_cloud(22, MIN));
    let p = &h.provisioner;
    let order = active_order(&h).await;
    let reference = reference_of(&h, &order).await;
    h.payments.reverse(&reference, "dispute opened").unwrap();
    deliver(&h, &order).await;
    drain(p).await;
    // The customer won: the same reference is reversed for good.
    h.payments
        .reverse(&reference, "dispute lost (merchant-accepted)")
        .unwrap();
    assert_eq!(deliver(&h, &order).await.0.applied, 1);
    drain(p).await;
    assert_eq!(
        p.order(order.id).await.unwrap().state,
        OrderState::Suspended
    );
    let rec = p.reversal(order.id).await.unwrap().unwrap();
    assert_eq!(rec.status, ReversalStatus::Upheld);
    assert!(rec.reason.contains("merchant-accepted"), "{}", rec.reason);
    // A reinstatement after that (out of order, or bogus) is not acted on.
    h.payments
        .reinstate(&reference, "dispute declined")
        .unwrap();
    assert_eq!(deliver(&h, &order).await.0.ignored, 1);
    drain(p).await;
    assert_eq!(
        p.order(order.id).await.unwrap().state,
        OrderState::Suspended
    );
}

#[tokio::test(start_paused = true)]
async fn a_dispute_won_before_delivery_provisions_the_order() {
    let h = harness(windows_cloud(23, MIN));
    let p = &h.provisioner;
    let order = paid_order(&h, "win").await;
    let reference = reference_of(&h, &order).await;
    h.payments.reverse(&reference, "dispute opened").unwrap();
    deliver(&h, &order).await;
    drain(p).await;
    assert!(matches!(
        p.order(order.id).await.unwrap().state,
        OrderState::NeedsAttention { reason } if reason.code == AttentionCode::PaymentReversed
    ));
    h.payments
        .reinstate(&reference, "dispute declined")
        .unwrap();
    assert_eq!(deliver(&h, &order).await.0.applied, 1);
    p.run_until_settled(order.id).await.unwrap();
    assert_eq!(p.order(order.id).await.unwrap().state, OrderState::Active);
    assert_eq!(h.cloud.live_with_label(&order.instance_label()), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dispute_won_before_its_suspension_ran_waits_for_it() {
    let h = harness(windows_cloud(24, MIN));
    let p = &h.provisioner;
    let order = active_order(&h).await;
    let reference = reference_of(&h, &order).await;
    h.payments.reverse(&reference, "dispute opened").unwrap();
    deliver(&h, &order).await;
    // Won before the suspend job ran: redeliver later (a retryable error), nothing recorded.
    h.payments
        .reinstate(&reference, "dispute declined")
        .unwrap();
    let payment = h
        .store
        .payments_for_order(order.id)
        .await
        .unwrap()
        .remove(0);
    let (headers, body) = h.payments.signed_webhook(&payment.reference).unwrap();
    let e = p
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &headers,
                body: &body,
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    drain(p).await;
    assert_eq!(
        p.order(order.id).await.unwrap().state,
        OrderState::Suspended
    );
    let out = redeliver(&h, &(headers, body)).await;
    assert_eq!(out.applied, 1);
    drain(p).await;
    assert_eq!(p.order(order.id).await.unwrap().state, OrderState::Active);
}
