//! Composition shared by the benchmarks: a `Provisioner` on the simulated backends, and paid
//! orders driven through the real payment path (place, open, pay in full, refresh).
#![allow(dead_code)] // each bench binary uses a different part

use std::sync::Arc;

use nemordp_core::{
    Asset, Currency, Money, Timestamp, TokioClock,
    ids::OrderId,
    order::{Customer, OrderState},
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig},
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
};
use secrecy::SecretString;

/// 2026-01-01T00:00:00Z, the sims' default epoch.
pub(crate) const EPOCH_2026: i64 = 1_767_225_600;

/// A provisioner with handles on its simulated backends.
pub(crate) struct Harness {
    pub(crate) provisioner: Provisioner,
    pub(crate) cloud: SimCloud,
    pub(crate) payments: SimPayments,
    pub(crate) store: MemoryStore,
}

/// A TokioClock at 2026-01-01, as in the end-to-end tests.
pub(crate) fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::starting_at(Timestamp::from_unix_secs(
        EPOCH_2026,
    )))
}

fn plans() -> PlanCatalog {
    let price = |s| Money::parse_major(Currency::Ngn, s).expect("price");
    PlanCatalog::from_plans([
        Plan::new(
            "win",
            "sim",
            OsKind::WindowsServer,
            "sim-1",
            "small",
            price("45000"),
        )
        .with_packages(["googlechrome", "7zip"]),
        Plan::new(
            "ubuntu",
            "sim",
            OsKind::UbuntuDesktop,
            "sim-1",
            "small",
            price("20000"),
        )
        .with_packages(["firefox"]),
    ])
    .expect("catalog")
}

/// Builds a provisioner on `cloud`, a fresh `MemoryStore`, `SimPayments` and a recording
/// notifier. `provider_rate_limit` overrides the limiter for `"sim"` (0 disables it).
pub(crate) fn harness(
    cloud: SimCloud,
    config: ProvisionerConfig,
    provider_rate_limit: Option<u32>,
) -> Harness {
    let store = MemoryStore::new();
    let payments = SimPayments::new(
        Asset::Fiat(Currency::Ngn),
        SecretString::from("whsec_bench"),
    );
    let mut builder = Provisioner::builder()
        .store(Arc::new(store.clone()))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(plans())
        .sealer(Sealer::new("k1", [42; 32]).expect("sealer"))
        .clock(clock())
        .config(config);
    if let Some(rps) = provider_rate_limit {
        builder = builder.provider_rate_limit("sim", rps);
    }
    Harness {
        provisioner: builder.build().expect("provisioner"),
        cloud,
        payments,
        store,
    }
}

/// Places and pays `n` orders of `plan` through the real payment path; every one ends `Paid`
/// with its provisioning job queued.
pub(crate) async fn paid_orders(h: &Harness, plan: &str, n: usize) -> Vec<OrderId> {
    let p = &h.provisioner;
    let plan = plan.into();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let order = p
            .place_order(
                &plan,
                Customer::new(format!("cust-{i}")).with_email("c@example.com"),
            )
            .await
            .expect("place order");
        let payment = p.open_payment(order.id, "sim").await.expect("open payment");
        h.payments
            .pay_in_full(&payment.reference)
            .expect("pay in full");
        p.refresh_payment(payment.id)
            .await
            .expect("refresh payment");
        ids.push(order.id);
    }
    debug_assert!(
        p.order(ids[0])
            .await
            .is_ok_and(|o| o.state == OrderState::Paid),
        "orders are paid"
    );
    ids
}
