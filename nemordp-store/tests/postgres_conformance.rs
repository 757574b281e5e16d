//! The store conformance kit against [`PostgresStore`] on a real server, plus concurrent
//! claimers, migrations and corrupt rows.
//!
//! Server: `NEMORDP_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`). Each
//! fresh store gets its own schema. Without a server the tests print `skipping: …` and pass,
//! unless `CI=true`.
#![cfg(feature = "postgres")]

use std::{
    collections::HashSet,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use nemordp_core::{
    Currency, ErrorKind, JobId, Money, OrderId, PlanId, Store, Timestamp,
    order::{Customer, Order},
    store::{Batch, ClaimRequest, Job, JobKind},
    testkit::store as kit,
};
use nemordp_store::PostgresStore;

mod common;
use sqlx::{
    Connection as _, PgConnection,
    postgres::{PgConnectOptions, PgPoolOptions},
};

fn url() -> String {
    std::env::var("NEMORDP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Schemas made by one test, dropped when it ends.
struct Server {
    options: PgConnectOptions,
    schemas: Mutex<Vec<String>>,
}

impl Server {
    /// The server, or `None` (after printing why) when it is unreachable outside CI.
    async fn get() -> Option<Arc<Self>> {
        let url = url();
        let options = PgConnectOptions::from_str(&url).expect("NEMORDP_TEST_POSTGRES_URL parses");
        match PgConnection::connect_with(&options).await {
            Ok(conn) => {
                drop(conn.close().await);
                Some(Arc::new(Self {
                    options,
                    schemas: Mutex::new(Vec::new()),
                }))
            }
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                println!("skipping: PostgreSQL at {url} is unreachable: {e}");
                None
            }
            Err(e) => panic!("CI=true but PostgreSQL at {url} is unreachable: {e}"),
        }
    }

    /// Creates a fresh schema and returns options whose connections use it.
    async fn schema(&self) -> PgConnectOptions {
        let name = format!("nemordp_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&self.options).await.unwrap();
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        drop(conn.close().await);
        self.schemas.lock().unwrap().push(name.clone());
        self.options.clone().options([("search_path", name)])
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect_with(self.schema().await)
            .await
            .unwrap()
    }

    async fn cleanup(&self) {
        let schemas = std::mem::take(&mut *self.schemas.lock().unwrap());
        let mut conn = PgConnection::connect_with(&self.options).await.unwrap();
        for name in schemas {
            sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut conn)
                .await
                .unwrap();
        }
        drop(conn.close().await);
    }
}

fn order(t: Timestamp) -> Order {
    Order::new(
        PlanId::new("p"),
        Customer::new("c"),
        Money::from_minor(Currency::Usd, 100_u64),
        t,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_kit() {
    let Some(server) = Server::get().await else {
        return;
    };
    let s = Arc::clone(&server);
    kit::run_all(move || {
        let s = Arc::clone(&s);
        async move { Arc::new(s.store().await) as Arc<dyn Store> }
    })
    .await;
    server.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_claiming_concurrently_never_share_a_job() {
    let Some(server) = Server::get().await else {
        return;
    };
    let options = server.schema().await;
    let a = PostgresStore::connect_with(options.clone()).await.unwrap();
    let b = PostgresStore::from_pool(
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    let t = Timestamp::from_unix_secs(1_000);
    let mut all = HashSet::new();
    let mut batch = Batch::new();
    for i in 0..300 {
        let job = Job::new(JobKind::Provision, OrderId::new(), t);
        all.insert(job.id);
        batch = batch.enqueue(job);
        if i % 100 == 99 {
            a.commit(std::mem::take(&mut batch), t).await.unwrap();
        }
    }
    let claimer = |store: PostgresStore, owner: &'static str| {
        tokio::spawn(async move {
            let mut got: Vec<JobId> = Vec::new();
            loop {
                let claimed = store
                    .claim_jobs(&ClaimRequest {
                        owner: owner.to_owned(),
                        limit: 7,
                        lease_for: Duration::from_secs(60),
                        now: t,
                    })
                    .await
                    .unwrap();
                if claimed.is_empty() {
                    return got;
                }
                for c in claimed {
                    assert_eq!(c.lease.owner, owner);
                    assert_eq!(c.lease.epoch, 1);
                    got.push(c.job.id);
                }
            }
        })
    };
    let (ga, gb) = (claimer(a.clone(), "a"), claimer(b.clone(), "b"));
    let (ga, gb) = (ga.await.unwrap(), gb.await.unwrap());
    let mut seen = HashSet::new();
    for id in ga.iter().chain(&gb) {
        assert!(seen.insert(*id), "job {id} claimed twice");
    }
    assert_eq!(seen, all);
    println!("claimer a took {}, claimer b took {}", ga.len(), gb.len());
    a.pool().close().await;
    b.pool().close().await;
    server.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_from_two_pools_have_one_winner() {
    let Some(server) = Server::get().await else {
        return;
    };
    let options = server.schema().await;
    let a = PostgresStore::connect_with(options.clone()).await.unwrap();
    let b = PostgresStore::connect_with(options).await.unwrap();
    let t = Timestamp::from_unix_secs(1_000);
    let o = order(t);
    a.commit(Batch::new().insert_order(o.clone()), t)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (o, key) = (o.clone(), format!("evt-{}", i % 4));
        tasks.push(tokio::spawn(async move {
            // Same order version from every task: one CAS may win.
            let cas = store.commit(Batch::new().update_order(o), t).await;
            // Four distinct events, four racers each: one record per event.
            let dedupe = store
                .commit(Batch::new().dedupe("race", key), t)
                .await
                .unwrap();
            (cas.map_err(|e| e.kind()), dedupe)
        }));
    }
    let mut wins = 0;
    let mut applied = 0;
    for task in tasks {
        let (cas, dedupe) = task.await.unwrap();
        match cas {
            Ok(_) => wins += 1,
            Err(kind) => assert_eq!(kind, ErrorKind::Conflict),
        }
        if dedupe == nemordp_core::store::CommitOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one compare-and-set wins");
    assert_eq!(applied, 4, "each inbound event is recorded once");
    assert_eq!(a.get_order(o.id).await.unwrap().unwrap().version, 1);
    a.pool().close().await;
    b.pool().close().await;
    server.cleanup().await;
}

#[tokio::test]
async fn postgres_migrations_refuse_a_newer_schema_and_corrupt_rows_are_typed() {
    let Some(server) = Server::get().await else {
        return;
    };
    let options = server.schema().await;
    let store = PostgresStore::connect_with(options.clone()).await.unwrap();
    assert_eq!(store.name(), "postgres");
    store.migrate().await.unwrap();

    let t = Timestamp::from_unix_secs(1_000);
    let o = order(t);
    let job = Job::new(JobKind::Provision, o.id, t);
    store
        .commit(Batch::new().insert_order(o.clone()).enqueue(job.clone()), t)
        .await
        .unwrap();
    sqlx::query("UPDATE orders SET data = '{\"state\": 7}' WHERE id = $1")
        .bind(o.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_order(o.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert_eq!((err.backend(), err.operation()), ("postgres", "get_order"));
    assert!(err.message().contains("orders"), "{err}");
    assert!(err.message().contains(&o.id.to_string()), "{err}");
    sqlx::query("UPDATE jobs SET state = 'sideways' WHERE id = $1")
        .bind(job.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_job(job.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.message().contains("jobs"), "{err}");
    assert!(err.message().contains(&job.id.to_string()), "{err}");

    sqlx::query(
        "INSERT INTO nemordp_migrations (version, description, applied_at) VALUES ($1, 'future', 0)",
    )
    .bind(PostgresStore::SCHEMA_VERSION + 1)
    .execute(store.pool())
    .await
    .unwrap();
    store.pool().close().await;
    let err = PostgresStore::connect_with(options).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("newer"), "{err}");
    server.cleanup().await;
}

#[tokio::test]
async fn a_version_3_schema_upgrades_and_keeps_its_rows() {
    let Some(server) = Server::get().await else {
        return;
    };
    let options = server.schema().await;
    let (old, script) = common::version_3_database("postgres");
    {
        let mut conn = PgConnection::connect_with(&options).await.unwrap();
        sqlx::raw_sql(&script).execute(&mut conn).await.unwrap();
        drop(conn.close().await);
    }
    let store = PostgresStore::connect_with(options).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT MAX(version) FROM nemordp_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, PostgresStore::SCHEMA_VERSION);
    common::upgraded_store_takes_a_step(&store, &old).await;
    server.cleanup().await;
}
