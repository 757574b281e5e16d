//! Shared by the SQLite and PostgreSQL tests: a database left at schema version 3 by an older
//! nemordp, and the checks that an upgraded store still holds its rows and takes a
//! provisioning step through the statement migration 4 added.

use std::{fmt::Write as _, time::Duration};

use nemordp_core::{
    Currency, Money, PlanId, Store, Timestamp,
    order::{Customer, Order, OrderEvent},
    store::{Batch, ClaimRequest, CommitOutcome, InstanceRecord, Job, JobKind},
};

/// A SQL script that leaves an empty database where a version-3 binary would: its migrations
/// (for `dialect`, `"sqlite"` or `"postgres"`) recorded as applied, and one order it wrote.
pub(crate) fn version_3_database(dialect: &str) -> (Order, String) {
    let migrations = match dialect {
        "sqlite" => [
            include_str!("../../migrations/sqlite/0001_initial.sql"),
            include_str!("../../migrations/sqlite/0002_records.sql"),
            include_str!("../../migrations/sqlite/0003_outbox_failures.sql"),
        ],
        _ => [
            include_str!("../../migrations/postgres/0001_initial.sql"),
            include_str!("../../migrations/postgres/0002_records.sql"),
            include_str!("../../migrations/postgres/0003_outbox_failures.sql"),
        ],
    };
    let order = Order::new(
        PlanId::new("p"),
        Customer::new("written-before-the-upgrade"),
        Money::from_minor(Currency::Usd, 100_u64),
        Timestamp::from_unix_secs(1_000),
    );
    let mut script = "CREATE TABLE nemordp_migrations (version BIGINT PRIMARY KEY NOT NULL, \
         description TEXT NOT NULL, applied_at BIGINT NOT NULL);\n"
        .to_owned();
    for (version, sql) in (1..).zip(migrations) {
        script.push_str(sql);
        let _ = writeln!(
            script,
            ";\nINSERT INTO nemordp_migrations VALUES ({version}, 'old', 0);"
        );
    }
    let json = serde_json::to_string(&order)
        .expect("order JSON")
        .replace('\'', "''");
    let _ = write!(
        script,
        "INSERT INTO orders (id, state_kind, version, created_at, updated_at, data) \
         VALUES ('{}', 'created', 0, 1000000, 1000000, '{json}');",
        order.id
    );
    (order, script)
}

/// The upgraded store still reads `old` and takes a fenced step (order + instance record)
/// through the one-statement path, then refuses a stale one.
pub(crate) async fn upgraded_store_takes_a_step(store: &dyn Store, old: &Order) {
    let t = Timestamp::from_unix_secs(2_000);
    assert_eq!(store.get_order(old.id).await.unwrap().as_ref(), Some(old));
    store
        .commit(
            Batch::new().enqueue(Job::new(JobKind::Provision, old.id, t)),
            t,
        )
        .await
        .unwrap();
    let claimed = store
        .claim_jobs(&ClaimRequest {
            owner: "upgraded".into(),
            limit: 1,
            lease_for: Duration::from_secs(60),
            now: t,
        })
        .await
        .unwrap()
        .pop()
        .expect("the job");
    let next = old.transition(&OrderEvent::PaymentRequested, t).unwrap();
    let record = InstanceRecord::intent(old.id, "sim", "lagos", "2c-4g", "win-2022", t);
    let step = Batch::new()
        .fenced(&claimed.lease)
        .update_order(next.clone())
        .put_instance(record.clone());
    assert!(matches!(
        store.commit(step.clone(), t).await,
        Ok(CommitOutcome::Applied)
    ));
    assert_eq!(
        store.get_order(old.id).await.unwrap().map(|o| o.version),
        Some(next.version + 1)
    );
    assert_eq!(store.get_instance(old.id).await.unwrap(), Some(record));
    let stale = store.commit(step, t).await.unwrap_err();
    assert_eq!(stale.kind(), nemordp_core::ErrorKind::Conflict, "{stale}");
}
