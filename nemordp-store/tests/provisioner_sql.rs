//! End-to-end: two Provisioner processes on one SQL store (SQLite file, then PostgreSQL) take a
//! few paid orders to active, each machine created exactly once. Simulated cloud and payments,
//! paused Tokio clock (a 30-minute Windows boot takes milliseconds of wall time; the only real
//! waiting is on the database).
//!
//! A paused clock jumps ahead whenever the runtime idles, including while it waits for the
//! database: with no shorter timer pending it would jump straight to the pool's acquire
//! timeout. So the pools are opened before pausing and kept at full size, their acquire timeout
//! is out of reach, and a ticker task keeps a 10 ms timer pending so each idle step advances
//! simulated time by at most 10 ms while a query is in flight.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

use std::{sync::Arc, time::Duration};

use nemordp_core::{
    Asset, Currency, Money, OrderId, Store, Timestamp, TokioClock,
    notify::NotificationKind,
    order::{Customer, OrderState},
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig},
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, payments::SimPayments},
    store::JobState,
};
use secrecy::SecretString;

const EPOCH_2026: i64 = 1_767_225_600;
const ORDERS: u64 = 6;

fn clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::starting_at(Timestamp::from_unix_secs(
        EPOCH_2026,
    )))
}

fn provisioner(
    store: &Arc<dyn Store>,
    cloud: &SimCloud,
    payments: &SimPayments,
    notifier: &RecordingNotifier,
    worker: &str,
) -> Provisioner {
    let mut config = ProvisionerConfig::default();
    config.worker_id = worker.into();
    Provisioner::builder()
        .store(Arc::clone(store))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(
            PlanCatalog::from_plans([Plan::new(
                "win",
                "sim",
                OsKind::WindowsServer,
                "sim-1",
                "small",
                Money::parse_major(Currency::Ngn, "45000").unwrap(),
            )])
            .unwrap(),
        )
        .sealer(Sealer::new("k1", [42; 32]).unwrap())
        .clock(clock())
        .config(config)
        .build()
        .unwrap()
}

/// Pays `ORDERS` orders, runs two provisioners until all settle, checks each is active once.
async fn a_few_orders_go_active_exactly_once(store: Arc<dyn Store>) {
    let boot = Duration::from_secs(30 * 60);
    let cloud = SimCloud::builder()
        .seed(21)
        .boot_time(OsKind::WindowsServer, boot, boot)
        .clock(clock())
        .build();
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("whsec_test"));
    let notifier = RecordingNotifier::new();
    let a = provisioner(&store, &cloud, &payments, &notifier, "first");
    let b = provisioner(&store, &cloud, &payments, &notifier, "second");
    let mut orders: Vec<OrderId> = Vec::new();
    for _ in 0..ORDERS {
        let order = a
            .place_order(
                &"win".into(),
                Customer::new("cust").with_email("c@example.com"),
            )
            .await
            .unwrap();
        let payment = a.open_payment(order.id, "sim").await.unwrap();
        payments.pay_in_full(&payment.reference).unwrap();
        a.refresh_payment(payment.id).await.unwrap();
        assert_eq!(a.order(order.id).await.unwrap().state, OrderState::Paid);
        orders.push(order.id);
    }
    let (wa, wb) = (a.start(), b.start());
    loop {
        let mut pending = 0;
        for id in &orders {
            let state = a.order(*id).await.unwrap().state;
            assert!(
                !matches!(state, OrderState::NeedsAttention { .. }),
                "order {id} needs attention: {state:?}"
            );
            if state != OrderState::Active {
                pending += 1;
            }
        }
        // The ready notice is queued in the write that activates the order; the relay sends
        // it right after.
        let readies = notifier
            .sent_kinds()
            .iter()
            .filter(|k| **k == NotificationKind::Ready)
            .count();
        if pending == 0 && readies >= orders.len() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    wa.shutdown().await;
    wb.shutdown().await;
    assert_eq!(
        cloud.creates_applied(),
        ORDERS,
        "an order was created twice"
    );
    for id in &orders {
        assert_eq!(cloud.live_with_label(&id.instance_label()), 1);
        let jobs = store.jobs_for_order(*id).await.unwrap();
        assert_eq!(jobs.len(), 1, "one provisioning job per order: {jobs:?}");
        assert_eq!(jobs[0].state, JobState::Done);
        let creds = store
            .get_credentials(*id)
            .await
            .unwrap()
            .expect("credentials");
        assert!(!creds.sealed_password.is_empty());
    }
    let readies = notifier
        .sent_kinds()
        .iter()
        .filter(|k| **k == NotificationKind::Ready)
        .count();
    assert!(readies >= orders.len(), "{readies} ready notifications");
}

/// Simulated time never reaches this.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn provisioning_on_sqlite_goes_active_exactly_once() {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

    let dir = tempfile::tempdir().unwrap();
    let pool = SqlitePoolOptions::new()
        .min_connections(4)
        .max_connections(4)
        .acquire_timeout(FOREVER)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(
            SqliteConnectOptions::new()
                .filename(dir.path().join("e2e.db"))
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let store = nemordp_store::SqliteStore::from_pool(pool).await.unwrap();
    warm(store.pool(), 4).await;
    tokio::time::pause();
    let _ticker = ticker();
    a_few_orders_go_active_exactly_once(Arc::new(store)).await;
}

/// Keeps a 10 ms timer pending (see the module docs).
fn ticker() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Opens all `n` connections of `pool` now, while the clock still runs.
async fn warm<DB: sqlx::Database>(pool: &sqlx::Pool<DB>, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(pool.acquire().await.unwrap());
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn provisioning_on_postgres_goes_active_exactly_once() {
    use std::str::FromStr;

    use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};

    let url = std::env::var("NEMORDP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options = PgConnectOptions::from_str(&url).unwrap();
    let mut admin = match PgConnection::connect_with(&options).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            println!("skipping: PostgreSQL at {url} is unreachable: {e}");
            return;
        }
        Err(e) => panic!("CI=true but PostgreSQL at {url} is unreachable: {e}"),
    };
    let schema = format!("nemordp_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .min_connections(6)
        .max_connections(6)
        .acquire_timeout(FOREVER)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_with(options.options([("search_path", &schema)]))
        .await
        .unwrap();
    let store = nemordp_store::PostgresStore::from_pool(pool).await.unwrap();
    warm(store.pool(), 6).await;
    tokio::time::pause();
    let ticker = ticker();
    a_few_orders_go_active_exactly_once(Arc::new(store.clone())).await;
    ticker.abort();
    tokio::time::resume();
    store.pool().close().await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}
