//! Tracing output of a provisioning run. In its own test binary: a thread-local subscriber
//! races with tests on other threads over tracing's cached callsite interest.

use std::{sync::Arc, time::Duration};

use nemordp_core::{
    Asset, Currency, Money, Timestamp, TokioClock,
    order::{Customer, OrderState},
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::Provisioner,
    seal::Sealer,
    sim::{
        cloud::{Fault, SimCloud, SimOp},
        notify::RecordingNotifier,
        payments::SimPayments,
        store::MemoryStore,
    },
};
use secrecy::{ExposeSecret, SecretString};

const MIN: Duration = Duration::from_secs(60);
const EPOCH_2026: i64 = 1_767_225_600;

struct Harness {
    provisioner: Provisioner,
    cloud: SimCloud,
    payments: SimPayments,
}

fn harness(seed: u64) -> Harness {
    let clock = || {
        Arc::new(TokioClock::starting_at(Timestamp::from_unix_secs(
            EPOCH_2026,
        )))
    };
    let cloud = SimCloud::builder()
        .seed(seed)
        .boot_time(OsKind::WindowsServer, 30 * MIN, 30 * MIN)
        .clock(clock())
        .build();
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("whsec_test"));
    let plan = Plan::new(
        "win",
        "sim",
        OsKind::WindowsServer,
        "sim-1",
        "small",
        Money::parse_major(Currency::Ngn, "45000").unwrap(),
    );
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(PlanCatalog::from_plans([plan]).unwrap())
        .sealer(Sealer::new("k1", [42; 32]).unwrap())
        .clock(clock())
        .build()
        .unwrap();
    Harness {
        provisioner,
        cloud,
        payments,
    }
}

async fn paid_order(h: &Harness) -> nemordp_core::order::Order {
    let p = &h.provisioner;
    let order = p
        .place_order(&"win".into(), Customer::new("c"))
        .await
        .unwrap();
    let payment = p.open_payment(order.id, "sim").await.unwrap();
    h.payments.pay_in_full(&payment.reference).unwrap();
    p.refresh_payment(payment.id).await.unwrap();
    order
}

#[test]
fn traces_name_order_and_step_and_never_a_secret() {
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let (order_id, password) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let h = harness(18);
            // A lost create and a transient failure make the provisioner log warnings too.
            h.cloud.push_fault(SimOp::Create, Fault::LostResponse);
            h.cloud.push_fault(SimOp::Get, Fault::Unavailable);
            let order = paid_order(&h).await;
            assert_eq!(
                h.provisioner
                    .run_until_settled(order.id)
                    .await
                    .unwrap()
                    .state,
                OrderState::Active
            );
            let password = h
                .provisioner
                .connection_details(order.id)
                .await
                .unwrap()
                .password;
            (order.id, password)
        })
    });
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains(&format!("order_id={order_id}")), "{log}");
    assert!(log.contains("step=\"paid\""), "{log}");
    assert!(log.contains("step=\"booting\""), "{log}");
    assert!(log.contains("create outcome unknown"), "{log}");
    assert!(
        !log.contains(password.expose_secret()),
        "a password reached the logs"
    );
}
