//! Multi-process proofs: separate `nemordp-sim-worker` OS processes run Provisioners on one SQL
//! store against one `SimCloud` served from this test process (`sim::remote`), while the test
//! places and pays orders through the real payment path. Then every order must be active with
//! exactly one `Ready` notification and one finished job, the cloud must hold exactly one
//! machine per order label, and the cloud must have received exactly one create per order.
//!
//! - 4 workers on PostgreSQL, 2 workers on one SQLite file.
//! - The same with a worker SIGKILLed at random moments and restarted, over and over, while
//!   orders are in flight (2-second leases, so a killed worker's jobs are taken over soon).
//!
//! Orders per test: `NEMORDP_MULTIWORKER_ORDERS` (default 1,000, 500 with kills, so a debug
//! build finishes in well under a minute per test; the full 10,000 runs with
//! `NEMORDP_MULTIWORKER_ORDERS=10000 cargo test --release -p nemordp-store --features sim-worker --test multiworker`).
//! PostgreSQL: `NEMORDP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! one fresh schema per test; without a server the PostgreSQL tests print `skipping: …` and
//! pass, unless `CI=true`. Real time throughout (processes cannot share a paused clock); the
//! waits are bounded only to turn a hang into a failure.
#![cfg(feature = "sim-worker")]

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    str::FromStr as _,
    sync::Arc,
    time::{Duration, Instant},
};

use nemordp_core::{
    Asset, Currency, Money, OrderId, Store, StoreExt as _, SystemClock,
    notify::NotificationKind,
    order::{Customer, OrderState, OrderStateKind},
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::Provisioner,
    seal::Sealer,
    sim::{
        cloud::{SimCloud, SimOp},
        notify::RecordingNotifier,
        payments::SimPayments,
        remote::{self, RemoteSimCloud},
    },
    store::{JobKind, JobState},
};
use rand::Rng as _;
use secrecy::SecretString;

/// A hang becomes a failure after this long.
const GIVE_UP: Duration = Duration::from_secs(900);
/// Lease of the workers: short, so a killed worker's jobs come back quickly.
const LEASE_MS: &str = "2000";

/// Orders per run; the kill runs default to half (each kill costs a lease of waiting).
fn orders_wanted(kill: bool) -> usize {
    std::env::var("NEMORDP_MULTIWORKER_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if kill { 500 } else { 1000 })
}

/// Where the workers find the store.
#[derive(Clone)]
struct StoreArgs {
    url: String,
    schema: Option<String>,
}

/// The worker processes, restartable.
struct Fleet {
    store: StoreArgs,
    cloud: SocketAddr,
    children: Vec<Child>,
    started: usize,
}

impl Fleet {
    fn new(store: StoreArgs, cloud: SocketAddr, n: usize) -> Self {
        let mut fleet = Self {
            store,
            cloud,
            children: Vec::new(),
            started: 0,
        };
        for _ in 0..n {
            let child = fleet.spawn();
            fleet.children.push(child);
        }
        fleet
    }

    fn spawn(&mut self) -> Child {
        self.started += 1;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nemordp-sim-worker"));
        cmd.args(["--store", &self.store.url])
            .args(["--cloud", &self.cloud.to_string()])
            .args(["--worker-id", &format!("worker-{}", self.started)])
            .args(["--lease-ms", LEASE_MS])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(schema) = &self.store.schema {
            cmd.args(["--schema", schema]);
        }
        cmd.spawn().expect("spawn nemordp-sim-worker")
    }

    /// SIGKILLs worker `i` (no chance to clean up) and starts a replacement.
    fn kill_and_restart(&mut self, i: usize) {
        let child = &mut self.children[i];
        child.kill().expect("SIGKILL a worker");
        let status = child.wait().expect("reap the killed worker");
        assert!(!status.success(), "a killed worker exits unsuccessfully");
        self.children[i] = self.spawn();
    }

    /// Fails if a worker exited on its own (it only stops when told to).
    fn assert_all_running(&mut self) {
        for child in &mut self.children {
            if let Some(status) = child.try_wait().expect("poll a worker") {
                panic!("a worker exited on its own: {status}");
            }
        }
    }

    /// Closes every worker's standard input and waits for clean exits.
    fn shutdown(mut self) {
        for mut child in self.children.drain(..) {
            drop(child.stdin.take());
            let status = child.wait().expect("wait for a worker");
            assert!(status.success(), "a worker failed to shut down: {status}");
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn catalog() -> PlanCatalog {
    PlanCatalog::from_plans([Plan::new(
        "win",
        "sim",
        OsKind::WindowsServer,
        "sim-1",
        "small",
        Money::parse_major(Currency::Ngn, "45000").unwrap(),
    )])
    .unwrap()
}

/// Serves a zero-latency cloud (machines run and answer RDP at once) on a loopback port.
async fn serve_cloud() -> (SimCloud, SocketAddr, tokio::task::JoinHandle<()>) {
    let cloud = SimCloud::builder()
        .seed(4)
        .boot_time(OsKind::WindowsServer, Duration::ZERO, Duration::ZERO)
        .install_delay(Duration::ZERO)
        .rdp_delay(Duration::ZERO)
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(remote::serve(cloud.clone(), listener));
    (cloud, addr, server)
}

/// A provisioner in this process used only to place and pay orders (never started).
async fn front_desk(store: Arc<dyn Store>, cloud: SocketAddr) -> (Provisioner, SimPayments) {
    let payments = SimPayments::new(Asset::Fiat(Currency::Ngn), SecretString::from("whsec_test"));
    let provisioner = Provisioner::builder()
        .store(store)
        .provider(Arc::new(RemoteSimCloud::connect(cloud).await.unwrap()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(catalog())
        .sealer(Sealer::new("k1", [42; 32]).unwrap())
        .clock(Arc::new(SystemClock))
        .build()
        .unwrap();
    (provisioner, payments)
}

/// Places and pays `n` orders, 16 at a time; each ends `Paid` with its job queued.
async fn place_paid_orders(front: &Provisioner, payments: &SimPayments, n: usize) -> Vec<OrderId> {
    let mut ids = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        if tasks.len() >= 16 {
            ids.push(tasks.join_next().await.unwrap().unwrap());
        }
        let (front, payments) = (front.clone(), payments.clone());
        tasks.spawn(async move {
            let order = front
                .place_order(
                    &"win".into(),
                    Customer::new(format!("cust-{i}")).with_email("c@example.com"),
                )
                .await
                .unwrap();
            let payment = front.open_payment(order.id, "sim").await.unwrap();
            payments.pay_in_full(&payment.reference).unwrap();
            front.refresh_payment(payment.id).await.unwrap();
            order.id
        });
    }
    while let Some(id) = tasks.join_next().await {
        ids.push(id.unwrap());
    }
    ids
}

/// How many orders are active; fails on any order needing attention.
async fn count_active(store: &dyn Store) -> usize {
    let stuck = store
        .all_orders_in(Some(OrderStateKind::NeedsAttention))
        .await
        .unwrap();
    assert!(stuck.is_empty(), "orders need attention: {:?}", &stuck[..1]);
    store
        .all_orders_in(Some(OrderStateKind::Active))
        .await
        .unwrap()
        .len()
}

/// Runs `workers` processes over `n` orders; with `kill`, SIGKILLs and restarts a random
/// worker every 0.1–0.6 s until every order is active. Returns the kills made mid-run.
async fn run_fleet(
    store: Arc<dyn Store>,
    store_args: StoreArgs,
    workers: usize,
    kill: bool,
) -> usize {
    let n = orders_wanted(kill);
    let (cloud, addr, server) = serve_cloud().await;
    let mut fleet = Fleet::new(store_args, addr, workers);
    let (front, payments) = front_desk(Arc::clone(&store), addr).await;
    let started = Instant::now();
    let mut placing = tokio::spawn({
        let (front, payments) = (front.clone(), payments.clone());
        async move { place_paid_orders(&front, &payments, n).await }
    });
    let mut kills = 0;
    let mut placed = None;
    loop {
        let pause = if kill {
            Duration::from_millis(rand::rng().random_range(100..=600))
        } else {
            Duration::from_millis(250)
        };
        tokio::time::sleep(pause).await;
        fleet.assert_all_running();
        if placed.is_none() && placing.is_finished() {
            placed = Some((&mut placing).await.unwrap());
            println!(
                "placed {n} paid orders in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            continue;
        }
        let done = placed.is_some() && count_active(&*store).await == n;
        if done {
            break;
        }
        assert!(
            started.elapsed() < GIVE_UP,
            "{} of {n} orders active after {GIVE_UP:?}",
            count_active(&*store).await
        );
        if kill {
            let victim = rand::rng().random_range(0..workers);
            fleet.kill_and_restart(victim);
            kills += 1;
        }
    }
    let elapsed = started.elapsed();
    fleet.shutdown();
    server.abort();
    let ids = placed.unwrap();
    assert_eq!(ids.len(), n);
    println!(
        "{n} orders active on {} with {workers} worker processes ({kills} kills) in {:.1} s",
        store.name(),
        elapsed.as_secs_f64()
    );
    let n64 = u64::try_from(n).unwrap();
    assert_eq!(cloud.creates_applied(), n64, "machines created");
    assert_eq!(cloud.calls_of(SimOp::Create), n64, "create calls sent");
    assert_eq!(cloud.live_instances().len(), n, "live machines");
    for id in &ids {
        assert_eq!(
            cloud.live_with_label(&id.instance_label()),
            1,
            "machines for {id}"
        );
        let order = store.get_order(*id).await.unwrap().unwrap();
        assert_eq!(order.state, OrderState::Active, "{id}");
        let jobs = store.jobs_for_order(*id).await.unwrap();
        assert_eq!(jobs.len(), 1, "one job for {id}: {jobs:?}");
        assert_eq!(
            (jobs[0].kind, jobs[0].state),
            (JobKind::Provision, JobState::Done)
        );
        let readies = store
            .outbox_for_order(*id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == NotificationKind::Ready)
            .count();
        assert_eq!(readies, 1, "{id} went active {readies} times");
        assert!(store.get_credentials(*id).await.unwrap().is_some());
    }
    kills
}

// ----- SQLite -----

async fn sqlite_store(dir: &tempfile::TempDir) -> (Arc<dyn Store>, StoreArgs) {
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let store = nemordp_store::SqliteStore::connect(&url).await.unwrap();
    (Arc::new(store), StoreArgs { url, schema: None })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_on_one_sqlite_file_activate_every_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, args) = sqlite_store(&dir).await;
    run_fleet(store, args, 2, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_workers_killed_at_random_still_activate_every_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, args) = sqlite_store(&dir).await;
    let kills = run_fleet(store, args, 2, true).await;
    assert!(kills >= 3, "only {kills} kills happened mid-run");
}

// ----- PostgreSQL -----

/// A fresh schema on the test server, or `None` (after printing why) outside CI.
async fn postgres_store() -> Option<(Arc<dyn Store>, StoreArgs)> {
    use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};

    let url = std::env::var("NEMORDP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let options = PgConnectOptions::from_str(&url).unwrap();
    let mut admin = match PgConnection::connect_with(&options).await {
        Ok(conn) => conn,
        Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
            println!("skipping: PostgreSQL at {url} is unreachable: {e}");
            return None;
        }
        Err(e) => panic!("CI=true but PostgreSQL at {url} is unreachable: {e}"),
    };
    let schema = format!("nemordp_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let store =
        nemordp_store::PostgresStore::connect_with(options.options([("search_path", &schema)]))
            .await
            .unwrap();
    Some((
        Arc::new(store),
        StoreArgs {
            url,
            schema: Some(schema),
        },
    ))
}

async fn drop_schema(args: &StoreArgs) {
    use sqlx::{Connection as _, PgConnection};
    let mut admin = PgConnection::connect(&args.url).await.unwrap();
    let schema = args.schema.as_deref().unwrap();
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_on_postgres_activate_every_order_once() {
    let Some((store, args)) = postgres_store().await else {
        return;
    };
    run_fleet(store, args.clone(), 4, false).await;
    drop_schema(&args).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_killed_at_random_still_activate_every_order_once() {
    let Some((store, args)) = postgres_store().await else {
        return;
    };
    let kills = run_fleet(store, args.clone(), 4, true).await;
    assert!(kills >= 3, "only {kills} kills happened mid-run");
    drop_schema(&args).await;
}
