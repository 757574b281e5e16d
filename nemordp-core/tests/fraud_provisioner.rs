//! Fraud rules plugged into the Provisioner: decisions stored on orders and emitted, rejected
//! orders never paid for or provisioned.

use std::{sync::Arc, time::Duration};

use nemordp_core::{
    Asset, Currency, ErrorKind, Money, Timestamp, TokioClock,
    fraud::{FraudEngine, FraudRule, FraudRules, FraudStage, PaymentSignals, VelocityKey, Verdict},
    order::{Customer, OrderState},
    payment::WebhookRequest,
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, Stage},
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
};

struct World {
    payments: SimPayments,
    prov: Provisioner,
}

fn world(rules: FraudRules) -> (World, FraudEngine) {
    let cloud = SimCloud::builder().seed(3).build();
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), "whsec_fraud".to_owned().into());
    let plan = Plan::new(
        "win",
        "sim",
        OsKind::WindowsServer,
        "sim-1",
        "small",
        Money::parse_major(Currency::Ngn, "1000").unwrap(),
    );
    let engine = FraudEngine::new(rules);
    let prov = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(PlanCatalog::from_plans([plan]).unwrap())
        .sealer(Sealer::new("k", [7; 32]).unwrap())
        .clock(Arc::new(TokioClock::starting_at(
            Timestamp::from_unix_secs(1_767_225_600),
        )))
        .fraud(engine.clone())
        .build()
        .unwrap();
    (World { payments, prov }, engine)
}

async fn pay_and_deliver(w: &World, reference: &str, amount: Option<Money>) {
    match amount {
        Some(a) => w.payments.pay_confirmed(reference, a).unwrap(),
        None => w.payments.pay_in_full(reference).unwrap(),
    }
    let (headers, body) = w.payments.signed_webhook(reference).unwrap();
    w.prov
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &headers,
                body: &body,
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn review_is_stored_and_emitted_but_the_order_proceeds() {
    let rules = FraudRules::default().with_disposable_domains(["mailinator.com"], Verdict::Review);
    let (w, _) = world(rules);
    let mut events = w.prov.subscribe();
    let order = w
        .prov
        .place_order(
            &"win".into(),
            Customer::new("c1").with_email("x@mailinator.com"),
        )
        .await
        .unwrap();
    let stored = w.prov.order(order.id).await.unwrap();
    assert_eq!(stored.fraud.len(), 1);
    assert_eq!(stored.fraud[0].verdict, Verdict::Review);
    assert_eq!(stored.fraud[0].reasons[0].rule, FraudRule::DisposableEmail);
    let e = events.next().await.unwrap();
    assert_eq!((e.order_id, e.stage), (order.id, Stage::Fraud));
    assert!(e.message.contains("disposable"), "{}", e.message);
    let payment = w.prov.open_payment(order.id, "sim").await.unwrap();
    pay_and_deliver(&w, &payment.reference, None).await;
    assert_eq!(
        w.prov.order(order.id).await.unwrap().state,
        OrderState::Paid
    );
}

#[tokio::test]
async fn too_many_unpaid_orders_reject_the_new_one_for_good() {
    let (w, _) = world(FraudRules::default().with_max_unpaid_orders(1, Verdict::Reject));
    let first = w
        .prov
        .place_order(&"win".into(), Customer::new("c1").with_email("a@b.co"))
        .await
        .unwrap();
    let e = w
        .prov
        .place_order(&"win".into(), Customer::new("c1").with_email("a@b.co"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Rejected);
    assert!(e.to_string().contains("unpaid orders"), "{e}");
    // Another customer is unaffected.
    w.prov
        .place_order(&"win".into(), Customer::new("c2").with_email("c@d.co"))
        .await
        .unwrap();
    // The rejected order is stored with its decision and can never be paid for.
    let id: nemordp_core::OrderId = e
        .message()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let order = w.prov.order(id).await.unwrap();
    assert!(order.fraud_rejected());
    assert_eq!(
        w.prov.open_payment(id, "sim").await.unwrap_err().kind(),
        ErrorKind::Rejected
    );
    assert!(w.prov.open_payment(first.id, "sim").await.is_ok());
}

#[tokio::test]
async fn a_mismatched_payment_is_rejected_and_never_provisioned() {
    let (w, _) = world(FraudRules::default());
    let order = w
        .prov
        .place_order(&"win".into(), Customer::new("c1"))
        .await
        .unwrap();
    let payment = w.prov.open_payment(order.id, "sim").await.unwrap();
    let mut events = w.prov.subscribe();
    // Over-payment settles the invoice (PaidOver) but is not what the order expects.
    let over = Money::parse_major(Currency::Ngn, "1000.01").unwrap();
    pay_and_deliver(&w, &payment.reference, Some(over)).await;
    let order = w.prov.order(order.id).await.unwrap();
    assert!(
        matches!(order.state, OrderState::NeedsAttention { .. }),
        "{:?}",
        order.state
    );
    assert!(order.fraud_rejected());
    assert_eq!(order.fraud[0].stage, FraudStage::PaymentArrived);
    assert_eq!(order.fraud[0].reasons[0].rule, FraudRule::AmountMismatch);
    assert_eq!(events.next().await.unwrap().stage, Stage::Fraud);
    // No provisioning job was queued, and an operator retry is refused.
    assert_eq!(w.prov.run_jobs_once().await.unwrap(), 0);
    assert_eq!(
        w.prov
            .retry_provisioning(order.id)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Rejected
    );
}

#[tokio::test]
async fn card_velocity_from_verifier_signals_rejects_at_payment() {
    let rules = FraudRules::default().with_velocity(
        VelocityKey::Card,
        FraudStage::PaymentArrived,
        1,
        Duration::from_secs(3600),
        Verdict::Reject,
    );
    let (w, engine) = world(rules);
    let mut states = Vec::new();
    for c in ["c1", "c2"] {
        let order = w
            .prov
            .place_order(&"win".into(), Customer::new(c))
            .await
            .unwrap();
        let payment = w.prov.open_payment(order.id, "sim").await.unwrap();
        engine.note_signals(
            &payment.reference,
            PaymentSignals::new(Some("SIG_same_card".into()), None, None),
        );
        pay_and_deliver(&w, &payment.reference, None).await;
        states.push(w.prov.order(order.id).await.unwrap());
    }
    assert_eq!(states[0].state, OrderState::Paid);
    assert!(states[1].fraud_rejected(), "{:?}", states[1].fraud);
    assert_eq!(
        states[1].fraud[0].reasons[0].rule,
        FraudRule::Velocity(VelocityKey::Card)
    );
}
