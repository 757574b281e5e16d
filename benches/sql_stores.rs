//! Throughput and claim latency of the SQL stores, printed as a markdown table
//! (`| figure | goal | measured | command |`). Always exits 0: the figures are reported, not
//! enforced.
//!
//! Run: `cargo bench --bench sql_stores --features sqlite,postgres`.
//! PostgreSQL: `NEMORDP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`),
//! one fresh schema per figure, dropped afterwards; without a server its rows say so.
//! Orders per run: `NEMORDP_BENCH_ORDERS` (default 5,000); stores: `NEMORDP_BENCH_STORES`
//! (default `sqlite,postgres`); Tokio runtime: multi-thread with 2 workers, or one thread with
//! `NEMORDP_BENCH_RUNTIME=current_thread`.
//!
//! 1. Paid → active: N orders are placed and paid through the real payment path (untimed),
//!    then Provisioners run (`start()`: job, outbox and expiry loops, real time, wall clock)
//!    against a zero-latency `SimCloud` (machines boot, get addresses and answer RDP at once;
//!    no provider rate limit) until every order has emitted its `Active` event. Measured:
//!    orders / wall seconds from the workers' start. SQLite: one Provisioner on a WAL file.
//!    PostgreSQL: 4 Provisioners in this process, each with its own 8-connection pool, like
//!    4 worker processes; once with durable commits (the default) and once with
//!    `synchronous_commit = off`. Every order is then checked `Active` (untimed).
//! 2. Job-claim latency: `claim_jobs` against a table of 10,000 due provisioning jobs with a
//!    zero-length lease (claimed jobs stay claimable, so every claim sees the same table);
//!    1,000 sequential claims of 1 and 200 of 64; p50 and p99 per call.

use std::{
    collections::HashSet,
    fmt::Write as _,
    str::FromStr as _,
    sync::Arc,
    time::{Duration, Instant},
};

use nemordp_core::{
    Asset, Currency, Money, StoreExt as _, SystemClock, Timestamp,
    ids::OrderId,
    order::{Customer, OrderState},
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig, Stage},
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, payments::SimPayments},
    store::{Batch, ClaimRequest, Job, JobKind, Store},
};
use nemordp_store::{PostgresStore, SqliteStore};
use secrecy::SecretString;
use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};

const COMMAND: &str = "`cargo bench --bench sql_stores --features sqlite,postgres`";
const GOAL_PER_SEC: f64 = 2_000.0;
const PG_WORKERS: usize = 4;

fn orders() -> usize {
    std::env::var("NEMORDP_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000)
}

/// Whether `store` ("sqlite", "postgres") is among `NEMORDP_BENCH_STORES` (default both).
fn wanted(store: &str) -> bool {
    std::env::var("NEMORDP_BENCH_STORES").map_or(true, |v| v.split(',').any(|s| s == store))
}

fn zero_latency_cloud() -> SimCloud {
    SimCloud::builder()
        .seed(5)
        .boot_time(OsKind::WindowsServer, Duration::ZERO, Duration::ZERO)
        .install_delay(Duration::ZERO)
        .rdp_delay(Duration::ZERO)
        .build()
}

fn provisioner(
    store: Arc<dyn Store>,
    cloud: &SimCloud,
    payments: &SimPayments,
    worker: &str,
    n: usize,
) -> Provisioner {
    let mut config = ProvisionerConfig::default();
    worker.clone_into(&mut config.worker_id);
    config.idle_poll = Duration::from_millis(10);
    config.probe_interval = Duration::from_millis(20);
    config.provider_poll_initial = Duration::ZERO;
    config.claim_batch = 64;
    // Room for every event of every order, so the counter never misses an `Active`.
    config.event_capacity = n * 10;
    Provisioner::builder()
        .store(store)
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(
            PlanCatalog::from_plans([Plan::new(
                "win",
                "sim",
                OsKind::WindowsServer,
                "sim-1",
                "small",
                Money::parse_major(Currency::Ngn, "45000").expect("price"),
            )])
            .expect("catalog"),
        )
        .sealer(Sealer::new("k1", [42; 32]).expect("sealer"))
        .clock(Arc::new(SystemClock))
        .provider_rate_limit("sim", 0)
        .config(config)
        .build()
        .expect("provisioner")
}

/// Places and pays `n` orders, 32 at a time (untimed setup).
async fn paid_orders(p: &Provisioner, payments: &SimPayments, n: usize) -> Vec<OrderId> {
    let mut ids = Vec::with_capacity(n);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        if tasks.len() >= 32 {
            ids.push(tasks.join_next().await.expect("task").expect("order"));
        }
        let (p, payments) = (p.clone(), payments.clone());
        tasks.spawn(async move {
            let order = p
                .place_order(&"win".into(), Customer::new(format!("cust-{i}")))
                .await
                .expect("place order");
            let payment = p.open_payment(order.id, "sim").await.expect("open payment");
            payments.pay_in_full(&payment.reference).expect("pay");
            p.refresh_payment(payment.id).await.expect("refresh");
            order.id
        });
    }
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("order"));
    }
    ids
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (Linux; clock ticks
/// of 10 ms), or `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// One paid → active run.
struct Throughput {
    per_sec: f64,
    /// CPU time of this process per order during the timed part (the database server's own
    /// CPU is not included for PostgreSQL).
    cpu_per_order: Option<Duration>,
}

impl Throughput {
    fn cpu(&self) -> String {
        self.cpu_per_order.map_or_else(
            || "n/a".to_owned(),
            |d| format!("{:.0} µs", d.as_secs_f64() * 1e6),
        )
    }
}

/// Places `n` paid orders, runs one Provisioner per store until all are active.
async fn paid_to_active(stores: Vec<Arc<dyn Store>>, n: usize) -> Throughput {
    let cloud = zero_latency_cloud();
    let payments = SimPayments::new(
        Asset::Fiat(Currency::Ngn),
        SecretString::from("whsec_bench"),
    );
    let provisioners: Vec<Provisioner> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| provisioner(Arc::clone(s), &cloud, &payments, &format!("w{i}"), n))
        .collect();
    let ids = paid_orders(&provisioners[0], &payments, n).await;
    let mut streams: Vec<_> = provisioners.iter().map(Provisioner::subscribe).collect();
    let cpu_before = cpu_time();
    let started = Instant::now();
    let workers: Vec<_> = provisioners.iter().map(Provisioner::start).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for mut stream in streams.drain(..) {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = stream.next().await {
                if matches!(e.stage, Stage::Active | Stage::NeedsAttention) && tx.send(e).is_err() {
                    return;
                }
            }
        });
    }
    let mut active = HashSet::new();
    while active.len() < n {
        let e = rx.recv().await.expect("events");
        assert_eq!(e.stage, Stage::Active, "{}: {}", e.order_id, e.message);
        active.insert(e.order_id);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before) / u32::try_from(n).unwrap_or(u32::MAX));
    for w in workers {
        w.shutdown().await;
    }
    let store = &stores[0];
    for id in &ids {
        let order = store.require_order(*id).await.expect("order");
        assert_eq!(order.state, OrderState::Active, "{id}");
    }
    assert_eq!(cloud.creates_applied(), n as u64, "one machine per order");
    #[allow(clippy::cast_precision_loss)] // a figure for a table
    let per_sec = n as f64 / elapsed.as_secs_f64();
    Throughput {
        per_sec,
        cpu_per_order: cpu,
    }
}

const CLAIM_NOW: Timestamp = Timestamp::from_unix_secs(1_767_225_600);

/// Queues 10,000 due provisioning jobs.
async fn fill_jobs(store: &dyn Store) {
    for _ in 0..10 {
        let mut batch = Batch::new();
        for _ in 0..1_000 {
            batch = batch.enqueue(Job::new(JobKind::Provision, OrderId::new(), CLAIM_NOW));
        }
        store.commit(batch, CLAIM_NOW).await.expect("enqueue");
    }
}

/// p50 and p99 of `claim_jobs(limit)` over `calls` calls (see the module docs).
async fn claim_latency(store: &dyn Store, limit: u32, calls: usize) -> (Duration, Duration) {
    let now = CLAIM_NOW;
    let request = ClaimRequest {
        owner: "bench".to_owned(),
        limit,
        lease_for: Duration::ZERO,
        now,
    };
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let claimed = store.claim_jobs(&request).await.expect("claim");
        samples.push(t.elapsed());
        assert_eq!(claimed.len(), limit as usize);
    }
    samples.sort_unstable();
    (samples[calls / 2], samples[calls * 99 / 100])
}

struct PgServer {
    url: String,
    options: PgConnectOptions,
    schemas: Vec<String>,
}

impl PgServer {
    async fn get() -> Result<Self, String> {
        let url = std::env::var("NEMORDP_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let options = PgConnectOptions::from_str(&url).map_err(|e| e.to_string())?;
        PgConnection::connect_with(&options)
            .await
            .map_err(|e| format!("PostgreSQL at {url} is unreachable: {e}"))?;
        Ok(Self {
            url,
            options,
            schemas: Vec::new(),
        })
    }

    async fn schema(&mut self) -> PgConnectOptions {
        let name = format!("nemordp_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&self.options)
            .await
            .expect("connect");
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
        self.schemas.push(name.clone());
        self.options.clone().options([("search_path", name)])
    }

    async fn cleanup(&mut self) {
        let mut conn = PgConnection::connect(&self.url).await.expect("connect");
        for s in self.schemas.drain(..) {
            sqlx::raw_sql(&format!("DROP SCHEMA {s} CASCADE"))
                .execute(&mut conn)
                .await
                .expect("drop schema");
        }
    }
}

fn met(per_sec: f64) -> &'static str {
    if per_sec >= GOAL_PER_SEC {
        "met"
    } else {
        "MISSED"
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[allow(clippy::too_many_lines)]
fn main() {
    // `NEMORDP_BENCH_RUNTIME=current_thread` runs everything on one Tokio thread.
    let rt = if std::env::var("NEMORDP_BENCH_RUNTIME").as_deref() == Ok("current_thread") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    }
    .enable_all()
    .build()
    .expect("runtime");
    let n = orders();
    let mut t = String::new();
    let _ = writeln!(t, "| figure | goal | measured | command |");
    let _ = writeln!(t, "| --- | --- | --- | --- |");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        if wanted("sqlite") {
        // SQLite: one Provisioner on a WAL file.
        let url = format!("sqlite://{}", dir.path().join("bench.db").display());
        let sqlite: Arc<dyn Store> = Arc::new(SqliteStore::connect(&url).await.expect("sqlite"));
        let run = paid_to_active(vec![sqlite], n).await;
        let _ = writeln!(
            t,
            "| paid → active, SQLite (WAL file), 1 Provisioner, zero-latency SimCloud, {n} orders | ≥ 2,000/s | {:.0}/s ({}); {} CPU per order | {COMMAND} |",
            run.per_sec,
            met(run.per_sec),
            run.cpu()
        );
        let claims = SqliteStore::connect(&format!(
            "sqlite://{}",
            dir.path().join("claims.db").display()
        ))
        .await
        .expect("sqlite");
        fill_jobs(&claims).await;
        for (limit, calls) in [(1, 1_000), (64, 200)] {
            let (p50, p99) = claim_latency(&claims, limit, calls).await;
            let _ = writeln!(
                t,
                "| job claim latency, SQLite, `claim_jobs` of {limit} from 10,000 due | — | p50 {:.2} ms, p99 {:.2} ms | {COMMAND} |",
                ms(p50),
                ms(p99)
            );
        }

        }
        if !wanted("postgres") {
            return;
        }
        match PgServer::get().await {
            Ok(mut server) => {
                // Durable commits (the default), then `synchronous_commit = off`: commits
                // return before their WAL reaches disk, so a server crash can lose the last
                // moments of work, which the provisioner re-does (label lookups adopt a
                // machine whose record was lost).
                for (sync, what) in [("on", "default durable commits"), ("off", "`synchronous_commit = off`")] {
                    let options = server
                        .schema()
                        .await
                        .options([("synchronous_commit", sync)]);
                    let mut stores: Vec<Arc<dyn Store>> = Vec::new();
                    for _ in 0..PG_WORKERS {
                        stores.push(Arc::new(
                            PostgresStore::connect_with(options.clone())
                                .await
                                .expect("postgres"),
                        ));
                    }
                    let run = paid_to_active(stores, n).await;
                    let _ = writeln!(
                        t,
                        "| paid → active, PostgreSQL ({what}), {PG_WORKERS} Provisioners (8 connections each), zero-latency SimCloud, {n} orders | ≥ 2,000/s | {:.0}/s ({}); {} CPU per order in the workers' process (server not counted) | {COMMAND} |",
                        run.per_sec,
                        met(run.per_sec),
                        run.cpu()
                    );
                }
                let claims = PostgresStore::connect_with(server.schema().await)
                    .await
                    .expect("postgres");
                fill_jobs(&claims).await;
                for (limit, calls) in [(1, 1_000), (64, 200)] {
                    let (p50, p99) = claim_latency(&claims, limit, calls).await;
                    let _ = writeln!(
                        t,
                        "| job claim latency, PostgreSQL, `claim_jobs` of {limit} from 10,000 due | — | p50 {:.2} ms, p99 {:.2} ms | {COMMAND} |",
                        ms(p50),
                        ms(p99)
                    );
                }
                claims.pool().close().await;
                server.cleanup().await;
            }
            Err(why) => {
                let _ = writeln!(t, "| PostgreSQL figures | — | not measured: {why} | {COMMAND} |");
            }
        }
    });
    println!("{t}");
}
