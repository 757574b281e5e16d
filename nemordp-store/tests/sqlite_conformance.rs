//! The store conformance kit against [`SqliteStore`], plus migrations and corrupt rows.
#![cfg(feature = "sqlite")]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use nemordp_core::{
    Currency, ErrorKind, Money, PlanId, Store, Timestamp,
    order::{Customer, Order},
    store::{Batch, Job, JobKind},
    testkit::store as kit,
};
use nemordp_store::SqliteStore;

mod common;

fn url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store_passes_the_kit() {
    let dir = tempfile::tempdir().unwrap();
    let n = Arc::new(AtomicU32::new(0));
    kit::run_all(|| {
        let url = url(
            &dir,
            &format!("kit-{}.db", n.fetch_add(1, Ordering::Relaxed)),
        );
        async move { Arc::new(SqliteStore::connect(&url).await.unwrap()) as Arc<dyn Store> }
    })
    .await;
}

#[tokio::test]
async fn sqlite_memory_store_passes_the_kit() {
    kit::run_all(|| async {
        Arc::new(SqliteStore::connect("sqlite::memory:").await.unwrap()) as Arc<dyn Store>
    })
    .await;
}

fn order(t: Timestamp) -> Order {
    Order::new(
        PlanId::new("p"),
        Customer::new("c"),
        Money::from_minor(Currency::Usd, 100_u64),
        t,
    )
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir, "reopen.db");
    let t = Timestamp::from_unix_secs(1_000);
    let o = order(t);
    {
        let store = SqliteStore::connect(&url).await.unwrap();
        assert_eq!(store.name(), "sqlite");
        assert!(!store.is_in_memory());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        store
            .commit(Batch::new().insert_order(o.clone()), t)
            .await
            .unwrap();
        store.migrate().await.unwrap();
        store.pool().close().await;
    }
    let store = SqliteStore::connect(&url).await.unwrap();
    assert_eq!(store.get_order(o.id).await.unwrap(), Some(o));
    let applied: i64 = sqlx::query_scalar("SELECT MAX(version) FROM nemordp_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, SqliteStore::SCHEMA_VERSION);
    let debug = format!("{store:?}");
    assert!(debug.starts_with("SqliteStore"), "{debug}");
}

#[tokio::test]
async fn a_database_from_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir, "newer.db");
    let store = SqliteStore::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO nemordp_migrations (version, description, applied_at) VALUES ($1, 'future', 0)")
        .bind(SqliteStore::SCHEMA_VERSION + 1)
        .execute(store.pool())
        .await
        .unwrap();
    store.pool().close().await;
    let err = SqliteStore::connect(&url).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert_eq!((err.backend(), err.operation()), ("sqlite", "migrate"));
    assert!(err.message().contains("newer"), "{err}");
}

#[tokio::test]
async fn corrupt_rows_are_typed_errors_naming_table_and_row() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    assert!(store.is_in_memory());
    assert_eq!(store.pool().options().get_max_connections(), 1);
    let t = Timestamp::from_unix_secs(1_000);
    let o = order(t);
    let job = Job::new(JobKind::Provision, o.id, t);
    store
        .commit(Batch::new().insert_order(o.clone()).enqueue(job.clone()), t)
        .await
        .unwrap();

    sqlx::query("UPDATE orders SET data = '{not json' WHERE id = $1")
        .bind(o.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_order(o.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert_eq!((err.backend(), err.operation()), ("sqlite", "get_order"));
    assert!(err.message().contains("orders"), "{err}");
    assert!(err.message().contains(&o.id.to_string()), "{err}");
    let err = store
        .list_orders(&nemordp_core::store::OrderQuery::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);

    sqlx::query("UPDATE jobs SET kind = 'explode' WHERE id = $1")
        .bind(job.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.get_job(job.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.message().contains("jobs"), "{err}");
    assert!(err.message().contains(&job.id.to_string()), "{err}");
    assert!(err.message().contains("kind"), "{err}");

    sqlx::query("UPDATE jobs SET kind = 'provision', attempt = -4 WHERE id = $1")
        .bind(job.id.to_string())
        .execute(store.pool())
        .await
        .unwrap();
    let err = store.jobs_for_order(o.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unexpected);
    assert!(err.message().contains("attempt"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_from_two_stores_on_one_file_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir, "race.db");
    let a = SqliteStore::connect(&url).await.unwrap();
    let b = SqliteStore::connect(&url).await.unwrap();
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
            let cas = store.commit(Batch::new().update_order(o), t).await;
            let dedupe = store
                .commit(Batch::new().dedupe("race", key), t)
                .await
                .unwrap();
            (cas.map_err(|e| e.kind()), dedupe)
        }));
    }
    let (mut wins, mut applied) = (0, 0);
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
}

#[tokio::test]
async fn a_version_3_database_upgrades_and_keeps_its_rows() {
    use sqlx::{Connection as _, sqlite::SqliteConnectOptions};
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir, "v3.db");
    let (old, script) = common::version_3_database("sqlite");
    {
        let options = <SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::raw_sql(&script).execute(&mut conn).await.unwrap();
        drop(conn.close().await);
    }
    let store = SqliteStore::connect(&url).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT MAX(version) FROM nemordp_migrations")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(applied, SqliteStore::SCHEMA_VERSION);
    common::upgraded_store_takes_a_step(&store, &old).await;
}
