//! Conformance suite for store backends.
//!
//! Run every check against fresh, empty stores with [`run_all`]:
//!
//! ```
//! use std::sync::Arc;
//!
//! use nemordp_core::{Store, sim::store::MemoryStore, testkit::store::run_all};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Replace `MemoryStore` with your backend, connected to an empty database per call.
//! run_all(|| async { Arc::new(MemoryStore::new()) as Arc<dyn Store> }).await;
//! # }
//! ```
//!
//! or call single checks (each takes an empty store). A check panics with a message that starts
//! with `store kit: <check name>:` and names the broken rule. The store is driven with explicit
//! timestamps (`now` is an argument everywhere), so nothing here sleeps.

// Each check is a script read top to bottom; splitting them would hide the rule they test.
#![allow(clippy::too_many_lines)]

use std::{future::Future, sync::Arc, time::Duration};

use rust_decimal::Decimal;

use crate::{
    clock::Timestamp,
    error::{ErrorKind, Result},
    ids::{JobId, NotificationId, OrderId, PaymentId, PlanId},
    money::{Asset, Currency, Money},
    notify::NotificationKind,
    order::{Customer, Order, OrderEvent, OrderStateKind},
    payment::{InvoiceState, InvoiceTerms, Payment},
    store::{
        Batch, ClaimRequest, ClaimedJob, CommitOutcome, InstanceRecord, Job, JobKind, JobOutcome,
        JobState, Lease, OrderQuery, OrderRecords, OutboxEntry, RecordWrite, SealedCredentials,
        Store,
    },
};

/// Runs every check, each against a fresh empty store from `fresh`.
pub async fn run_all<F, Fut>(mut fresh: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    unknown_ids_read_as_none(&*fresh().await).await;
    order_insert_get_and_cas_update(&*fresh().await).await;
    order_duplicate_insert_is_rejected(&*fresh().await).await;
    order_writes_in_one_batch_apply_in_sequence(&*fresh().await).await;
    batch_is_atomic(&*fresh().await).await;
    inbound_event_dedupes(&*fresh().await).await;
    payment_lookup_and_unique_reference(&*fresh().await).await;
    payment_cas_update(&*fresh().await).await;
    payments_for_order_oldest_first(&*fresh().await).await;
    instances_and_credentials_upsert_and_page(&*fresh().await).await;
    list_orders_filters_and_pages(&*fresh().await).await;
    outbox_claim_lease_retry_and_deliver(&*fresh().await).await;
    outbox_rejects_duplicate_ids(&*fresh().await).await;
    orders_read_and_outbox_marked_in_bulk(&*fresh().await).await;
    outbox_failure_keeps_history_and_stays_visible(&*fresh().await).await;
    job_unique_key_dedupes(&*fresh().await).await;
    job_claim_takes_only_due_jobs(&*fresh().await).await;
    concurrent_claims_are_disjoint(&*fresh().await).await;
    claim_bumps_epoch_and_heartbeat_extends(&*fresh().await).await;
    expired_lease_is_reclaimed_and_old_holder_fenced(&*fresh().await).await;
    fenced_commit_applies_while_lease_holds(&*fresh().await).await;
    fenced_step_is_all_or_nothing(&*fresh().await).await;
    concurrent_fenced_steps_are_answered_each_on_its_own(&*fresh().await).await;
    finish_requires_fence(&*fresh().await).await;
    finish_done_retry_failed(&*fresh().await).await;
    retried_job_waits_for_run_at(&*fresh().await).await;
    records_insert_update_and_conflict(&*fresh().await).await;
    records_list_by_prefix_and_page(&*fresh().await).await;
    record_writes_are_atomic_with_the_batch(&*fresh().await).await;
    reserve_index_is_stable_and_unique(&*fresh().await).await;
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// A fixed, arbitrary starting time (2026-01-01T00:00:00Z).
const T0_SECS: i64 = 1_767_225_600;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(T0_SECS + secs)
}

fn order(now: Timestamp) -> Order {
    Order::new(
        PlanId::new("kit-plan"),
        Customer::new("kit-customer"),
        Money::from_minor(Currency::Usd, 1_500_u64),
        now,
    )
}

fn payment(order_id: OrderId, method: &str, reference: &str, now: Timestamp) -> Payment {
    let due = Money::from_minor(Asset::Usdt, 15_000_000_u64);
    Payment {
        id: PaymentId::new(),
        order_id,
        method: method.to_owned(),
        reference: reference.to_owned(),
        pay_to: None,
        checkout_url: None,
        terms: InvoiceTerms {
            due,
            tolerance_percent: Decimal::ZERO,
        },
        locked_rate: None,
        state: InvoiceState::NEW,
        seen: Money::zero(Asset::Usdt),
        confirmed: Money::zero(Asset::Usdt),
        expires_at: now.saturating_add(Duration::from_secs(3600)),
        monitor_until: now.saturating_add(Duration::from_secs(7200)),
        created_at: now,
        updated_at: now,
        version: 0,
    }
}

fn claim(owner: &str, limit: u32, lease_secs: u64, now: Timestamp) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        limit,
        lease_for: Duration::from_secs(lease_secs),
        now,
    }
}

fn kind_of<T>(res: &Result<T>) -> Option<ErrorKind> {
    res.as_ref().err().map(crate::Error::kind)
}

async fn ok<T>(check: &str, what: &str, fut: impl Future<Output = Result<T>>) -> T {
    match fut.await {
        Ok(v) => v,
        Err(e) => panic!("store kit: {check}: {what} failed unexpectedly: {e}"),
    }
}

async fn seed_order(store: &dyn Store, check: &str, now: Timestamp) -> Order {
    let o = order(now);
    ok(
        check,
        "inserting an order",
        store.commit(Batch::new().insert_order(o.clone()), now),
    )
    .await;
    o
}

async fn seed_job(store: &dyn Store, check: &str, order_id: OrderId, run_at: Timestamp) -> Job {
    let job = Job::new(JobKind::Provision, order_id, run_at);
    ok(
        check,
        "enqueueing a job",
        store.commit(Batch::new().enqueue(job.clone()), run_at),
    )
    .await;
    job
}

async fn claim_one(store: &dyn Store, check: &str, req: &ClaimRequest) -> ClaimedJob {
    let mut claimed = ok(check, "claim_jobs", store.claim_jobs(req)).await;
    assert_eq!(
        claimed.len(),
        1,
        "store kit: {check}: expected exactly one due job to be claimed by {}, got {claimed:?}",
        req.owner
    );
    claimed.remove(0)
}

async fn job(store: &dyn Store, check: &str, id: JobId) -> Job {
    ok(check, "get_job", store.get_job(id))
        .await
        .unwrap_or_else(|| panic!("store kit: {check}: job {id} vanished"))
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

/// Rule: reads of unknown ids return `Ok(None)` (or an empty list), never an error.
pub async fn unknown_ids_read_as_none(store: &dyn Store) {
    const C: &str = "unknown_ids_read_as_none";
    let oid = OrderId::new();
    let msg = |what: &str| format!("store kit: {C}: {what} of an unknown id must be Ok(None)");
    assert!(
        matches!(store.get_order(oid).await, Ok(None)),
        "{}",
        msg("get_order")
    );
    assert!(
        matches!(store.get_payment(PaymentId::new()).await, Ok(None)),
        "{}",
        msg("get_payment")
    );
    assert!(
        matches!(store.find_payment("kit", "nope").await, Ok(None)),
        "{}",
        msg("find_payment")
    );
    assert!(
        matches!(store.get_instance(oid).await, Ok(None)),
        "{}",
        msg("get_instance")
    );
    assert!(
        matches!(store.get_credentials(oid).await, Ok(None)),
        "{}",
        msg("get_credentials")
    );
    assert!(
        matches!(store.get_job(JobId::new()).await, Ok(None)),
        "{}",
        msg("get_job")
    );
    let empty = |what: &str| format!("store kit: {C}: {what} of an unknown order must be empty");
    assert!(
        ok(C, "payments_for_order", store.payments_for_order(oid))
            .await
            .is_empty(),
        "{}",
        empty("payments_for_order")
    );
    assert!(
        ok(C, "jobs_for_order", store.jobs_for_order(oid))
            .await
            .is_empty(),
        "{}",
        empty("jobs_for_order")
    );
    assert!(
        ok(C, "outbox_for_order", store.outbox_for_order(oid))
            .await
            .is_empty(),
        "{}",
        empty("outbox_for_order")
    );
}

/// Rule: an inserted order reads back equal; an update is a compare-and-set on `version` that
/// bumps it by one; a stale version is `Conflict` and writes nothing; updating an unknown order
/// is `NotFound`.
pub async fn order_insert_get_and_cas_update(store: &dyn Store) {
    const C: &str = "order_insert_get_and_cas_update";
    let t = at(0);
    let o = seed_order(store, C, t).await;
    let got = ok(C, "get_order", store.get_order(o.id)).await;
    assert_eq!(
        got.as_ref(),
        Some(&o),
        "store kit: {C}: an inserted order must read back unchanged"
    );

    let next = o
        .transition(&OrderEvent::PaymentRequested, at(1))
        .expect("legal transition");
    let res = store
        .commit(Batch::new().update_order(next.clone()), at(1))
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: an update at the stored version must apply, got {res:?}"
    );
    let stored = ok(C, "get_order", store.get_order(o.id))
        .await
        .expect("order exists");
    assert_eq!(
        stored.version,
        o.version + 1,
        "store kit: {C}: an update must bump the version by one"
    );
    assert_eq!(
        stored.state.kind(),
        OrderStateKind::AwaitingPayment,
        "store kit: {C}: an update must store the new state"
    );

    // `next` still carries the old version: stale.
    let stale = next
        .transition(&OrderEvent::PaymentExpired, at(2))
        .expect("legal transition");
    let res = store.commit(Batch::new().update_order(stale), at(2)).await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: an update at a stale version must be Conflict, got {res:?}"
    );
    let after = ok(C, "get_order", store.get_order(o.id)).await;
    assert_eq!(
        after.as_ref(),
        Some(&stored),
        "store kit: {C}: a stale update must write nothing"
    );

    let res = store.commit(Batch::new().update_order(order(t)), t).await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::NotFound),
        "store kit: {C}: updating an unknown order must be NotFound, got {res:?}"
    );
}

/// Rule: inserting an order whose id exists is `AlreadyExists` and leaves the stored order as
/// it was.
pub async fn order_duplicate_insert_is_rejected(store: &dyn Store) {
    const C: &str = "order_duplicate_insert_is_rejected";
    let o = seed_order(store, C, at(0)).await;
    let mut again = o.clone();
    again.customer = Customer::new("someone-else");
    let res = store.commit(Batch::new().insert_order(again), at(1)).await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::AlreadyExists),
        "store kit: {C}: inserting an existing order id must be AlreadyExists, got {res:?}"
    );
    let got = ok(C, "get_order", store.get_order(o.id)).await;
    assert_eq!(
        got,
        Some(o),
        "store kit: {C}: a rejected duplicate insert must not overwrite the order"
    );
}

/// Rule: several writes to the same order in one batch apply in sequence (insert then update
/// at version 0 ends at version 1).
pub async fn order_writes_in_one_batch_apply_in_sequence(store: &dyn Store) {
    const C: &str = "order_writes_in_one_batch_apply_in_sequence";
    let o = order(at(0));
    let next = o
        .transition(&OrderEvent::PaymentRequested, at(0))
        .expect("legal transition");
    let res = store
        .commit(
            Batch::new().insert_order(o.clone()).update_order(next),
            at(0),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: insert then update of one order in one batch must apply, got {res:?}"
    );
    let got = ok(C, "get_order", store.get_order(o.id))
        .await
        .expect("order exists");
    assert_eq!(
        (got.version, got.state.kind()),
        (o.version + 1, OrderStateKind::AwaitingPayment),
        "store kit: {C}: the update must apply on top of the insert"
    );
}

/// Rule: `commit` is atomic: a batch whose second order write conflicts leaves its first write,
/// and its payment, instance, credentials, outbox and job rows, all unwritten.
pub async fn batch_is_atomic(store: &dyn Store) {
    const C: &str = "batch_is_atomic";
    let t = at(0);
    let existing = seed_order(store, C, t).await;
    let fresh = order(t);
    let mut stale = existing.clone();
    stale.version += 7;
    let pay = payment(fresh.id, "kit", "atomic-ref", t);
    let entry = OutboxEntry::new(fresh.id, NotificationKind::ProvisioningStarted, t);
    let job = Job::provision(fresh.id, t);
    let batch = Batch::new()
        .insert_order(fresh.clone())
        .update_order(stale)
        .insert_payment(pay.clone())
        .put_instance(InstanceRecord::intent(
            fresh.id, "sim", "lagos", "2c-4g", "win-2022", t,
        ))
        .put_credentials(SealedCredentials::new(
            fresh.id,
            "Administrator",
            "k1",
            vec![1, 2, 3],
            t,
        ))
        .notify(entry.clone())
        .enqueue(job.clone())
        .dedupe("kit", "atomic-event");
    let res = store.commit(batch, t).await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a batch with a stale order update must fail with Conflict, got {res:?}"
    );
    let leaked = |what: &str| {
        format!("store kit: {C}: a failed batch must write nothing, but its {what} was written")
    };
    assert!(
        ok(C, "get_order", store.get_order(fresh.id))
            .await
            .is_none(),
        "{}",
        leaked("order insert")
    );
    assert_eq!(
        ok(C, "get_order", store.get_order(existing.id)).await,
        Some(existing),
        "{}",
        leaked("order update")
    );
    assert!(
        ok(C, "get_payment", store.get_payment(pay.id))
            .await
            .is_none(),
        "{}",
        leaked("payment")
    );
    assert!(
        ok(C, "find_payment", store.find_payment("kit", "atomic-ref"))
            .await
            .is_none(),
        "{}",
        leaked("payment reference")
    );
    assert!(
        ok(C, "get_instance", store.get_instance(fresh.id))
            .await
            .is_none(),
        "{}",
        leaked("instance record")
    );
    assert!(
        ok(C, "get_credentials", store.get_credentials(fresh.id))
            .await
            .is_none(),
        "{}",
        leaked("credentials")
    );
    assert!(
        ok(C, "outbox_for_order", store.outbox_for_order(fresh.id))
            .await
            .is_empty(),
        "{}",
        leaked("outbox entry")
    );
    assert!(
        ok(C, "jobs_for_order", store.jobs_for_order(fresh.id))
            .await
            .is_empty(),
        "{}",
        leaked("job")
    );
    assert!(
        ok(C, "get_job", store.get_job(job.id)).await.is_none(),
        "{}",
        leaked("job")
    );
    // The job's unique key and the inbound event must not have been consumed either.
    let res = store
        .commit(
            Batch::new()
                .insert_order(fresh.clone())
                .enqueue(job.clone())
                .dedupe("kit", "atomic-event"),
            t,
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "{}; retrying it without the conflict must apply, got {res:?}",
        leaked("inbound event or job key")
    );
    assert!(
        ok(C, "get_job", store.get_job(job.id)).await.is_some(),
        "{}",
        leaked("job unique key")
    );
}

/// Rule: a batch carrying an inbound event already recorded returns `Duplicate` and writes none
/// of its other rows; the first commit with that key applies.
pub async fn inbound_event_dedupes(store: &dyn Store) {
    const C: &str = "inbound_event_dedupes";
    let t = at(0);
    let first = order(t);
    let res = store
        .commit(
            Batch::new()
                .dedupe("paystack", "charge.success:1")
                .insert_order(first.clone()),
            t,
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: the first commit of an inbound event must apply, got {res:?}"
    );
    let second = order(t);
    let entry = OutboxEntry::new(second.id, NotificationKind::Terminated, t);
    let job = Job::new(JobKind::Terminate, second.id, t);
    let res = store
        .commit(
            Batch::new()
                .dedupe("paystack", "charge.success:1")
                .insert_order(second.clone())
                .notify(entry)
                .enqueue(job.clone()),
            at(1),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Duplicate)),
        "store kit: {C}: a second commit with the same inbound event key must be Duplicate, got {res:?}"
    );
    let leaked = |what: &str| {
        format!("store kit: {C}: a Duplicate commit must write nothing, but its {what} was written")
    };
    assert!(
        ok(C, "get_order", store.get_order(second.id))
            .await
            .is_none(),
        "{}",
        leaked("order")
    );
    assert!(
        ok(C, "outbox_for_order", store.outbox_for_order(second.id))
            .await
            .is_empty(),
        "{}",
        leaked("outbox entry")
    );
    assert!(
        ok(C, "get_job", store.get_job(job.id)).await.is_none(),
        "{}",
        leaked("job")
    );
    // Keys are per source.
    let res = store
        .commit(Batch::new().dedupe("btcpay", "charge.success:1"), at(2))
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: the same key from another source is a different event, got {res:?}"
    );
}

/// Rule: a payment is found by id and by `(method, reference)`; inserting a second payment with
/// a taken `(method, reference)` is `AlreadyExists` and writes nothing; the same reference under
/// another method is free.
pub async fn payment_lookup_and_unique_reference(store: &dyn Store) {
    const C: &str = "payment_lookup_and_unique_reference";
    let t = at(0);
    let o = seed_order(store, C, t).await;
    let p = payment(o.id, "paystack", "ref-1", t);
    ok(
        C,
        "inserting a payment",
        store.commit(Batch::new().insert_payment(p.clone()), t),
    )
    .await;
    assert_eq!(
        ok(C, "get_payment", store.get_payment(p.id)).await.as_ref(),
        Some(&p),
        "store kit: {C}: an inserted payment must read back unchanged"
    );
    assert_eq!(
        ok(C, "find_payment", store.find_payment("paystack", "ref-1"))
            .await
            .as_ref(),
        Some(&p),
        "store kit: {C}: find_payment must find a payment by (method, reference)"
    );
    assert!(
        ok(C, "find_payment", store.find_payment("btc", "ref-1"))
            .await
            .is_none(),
        "store kit: {C}: find_payment must match the method too"
    );

    let dup = payment(o.id, "paystack", "ref-1", at(1));
    let res = store
        .commit(Batch::new().insert_payment(dup.clone()), at(1))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::AlreadyExists),
        "store kit: {C}: a payment with a taken (method, reference) must be AlreadyExists, got {res:?}"
    );
    assert!(
        ok(C, "get_payment", store.get_payment(dup.id))
            .await
            .is_none(),
        "store kit: {C}: a rejected duplicate reference must write nothing"
    );
    let res = store
        .commit(Batch::new().insert_payment(p.clone()), at(1))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::AlreadyExists),
        "store kit: {C}: inserting an existing payment id must be AlreadyExists, got {res:?}"
    );
    let other = payment(o.id, "btc", "ref-1", at(1));
    let res = store
        .commit(Batch::new().insert_payment(other), at(1))
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: the same reference under another method must be accepted, got {res:?}"
    );
}

/// Rule: a payment update is a compare-and-set on `version` that bumps it by one; a stale
/// version is `Conflict` and writes nothing; an unknown payment is `NotFound`.
pub async fn payment_cas_update(store: &dyn Store) {
    const C: &str = "payment_cas_update";
    let t = at(0);
    let o = seed_order(store, C, t).await;
    let p = payment(o.id, "sim", "cas-ref", t);
    ok(
        C,
        "inserting a payment",
        store.commit(Batch::new().insert_payment(p.clone()), t),
    )
    .await;
    let mut next = p.clone();
    next.seen = Money::from_minor(Asset::Usdt, 1_u64);
    next.updated_at = at(1);
    let res = store
        .commit(Batch::new().update_payment(next.clone()), at(1))
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: a payment update at the stored version must apply, got {res:?}"
    );
    let stored = ok(C, "get_payment", store.get_payment(p.id))
        .await
        .expect("payment exists");
    assert_eq!(
        (stored.version, stored.seen),
        (p.version + 1, next.seen),
        "store kit: {C}: a payment update must store the record and bump the version by one"
    );
    let res = store
        .commit(Batch::new().update_payment(next.clone()), at(2))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a payment update at a stale version must be Conflict, got {res:?}"
    );
    assert_eq!(
        ok(C, "get_payment", store.get_payment(p.id)).await,
        Some(stored),
        "store kit: {C}: a stale payment update must write nothing"
    );
    let res = store
        .commit(
            Batch::new().update_payment(payment(o.id, "sim", "ghost", t)),
            t,
        )
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::NotFound),
        "store kit: {C}: updating an unknown payment must be NotFound, got {res:?}"
    );
}

/// Rule: `payments_for_order` returns exactly that order's payments, oldest first.
pub async fn payments_for_order_oldest_first(store: &dyn Store) {
    const C: &str = "payments_for_order_oldest_first";
    let o = seed_order(store, C, at(0)).await;
    let other = seed_order(store, C, at(0)).await;
    let late = payment(o.id, "btc", "addr-2", at(20));
    let early = payment(o.id, "paystack", "ref-a", at(10));
    let foreign = payment(other.id, "paystack", "ref-b", at(15));
    ok(
        C,
        "inserting payments",
        store.commit(
            Batch::new()
                .insert_payment(late.clone())
                .insert_payment(foreign)
                .insert_payment(early.clone()),
            at(30),
        ),
    )
    .await;
    let got: Vec<PaymentId> = ok(C, "payments_for_order", store.payments_for_order(o.id))
        .await
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(
        got,
        vec![early.id, late.id],
        "store kit: {C}: payments_for_order must list the order's payments only, oldest first"
    );
}

/// Rule: instance records and sealed credentials are upserts keyed by order id; instance
/// records page in order-id order after `after`, at most `limit`.
pub async fn instances_and_credentials_upsert_and_page(store: &dyn Store) {
    const C: &str = "instances_and_credentials_upsert_and_page";
    let t = at(0);
    let mut ids: Vec<OrderId> = (0..5).map(|_| OrderId::new()).collect();
    let mut batch = Batch::new();
    for id in &ids {
        batch = batch.put_instance(InstanceRecord::intent(
            *id, "sim", "lagos", "2c-4g", "win-2022", t,
        ));
    }
    ok(C, "putting instances", store.commit(batch, t)).await;
    ids.sort();

    let mut updated = InstanceRecord::intent(ids[2], "sim", "lagos", "2c-4g", "win-2022", t);
    updated.instance_id = Some("i-123".into());
    updated.create_attempts = 1;
    updated.updated_at = at(5);
    ok(
        C,
        "replacing an instance",
        store.commit(Batch::new().put_instance(updated.clone()), at(5)),
    )
    .await;
    assert_eq!(
        ok(C, "get_instance", store.get_instance(ids[2])).await,
        Some(updated),
        "store kit: {C}: put_instance must replace the record of the same order"
    );

    let page1 = ok(C, "list_instances", store.list_instances(None, 2)).await;
    let after = page1.last().map(|r| r.order_id);
    let page2 = ok(C, "list_instances", store.list_instances(after, 2)).await;
    let after = page2.last().map(|r| r.order_id);
    let page3 = ok(C, "list_instances", store.list_instances(after, 2)).await;
    let after = page3.last().map(|r| r.order_id);
    let page4 = ok(C, "list_instances", store.list_instances(after, 2)).await;
    let seen: Vec<OrderId> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|r| r.order_id)
        .collect();
    assert_eq!(
        (page1.len(), page2.len(), page3.len()),
        (2, 2, 1),
        "store kit: {C}: list_instances must return at most `limit` records per page"
    );
    assert_eq!(
        seen, ids,
        "store kit: {C}: list_instances must page through every record once, in order-id order"
    );
    assert!(
        page4.is_empty(),
        "store kit: {C}: list_instances after the last record must be empty"
    );

    let creds = SealedCredentials::new(ids[0], "Administrator", "k1", vec![9; 32], t);
    ok(
        C,
        "putting credentials",
        store.commit(Batch::new().put_credentials(creds.clone()), t),
    )
    .await;
    assert_eq!(
        ok(C, "get_credentials", store.get_credentials(ids[0])).await,
        Some(creds),
        "store kit: {C}: sealed credentials must read back unchanged"
    );
    let rotated = SealedCredentials::new(ids[0], "Administrator", "k2", vec![7; 32], at(9));
    ok(
        C,
        "replacing credentials",
        store.commit(Batch::new().put_credentials(rotated.clone()), at(9)),
    )
    .await;
    assert_eq!(
        ok(C, "get_credentials", store.get_credentials(ids[0])).await,
        Some(rotated),
        "store kit: {C}: put_credentials must replace the credentials of the same order"
    );
}

/// Rule: `list_orders` returns orders in id order, filtered by state kind, keyset-paged by
/// `after`, at most `limit` (0 means a default of 100).
pub async fn list_orders_filters_and_pages(store: &dyn Store) {
    const C: &str = "list_orders_filters_and_pages";
    let t = at(0);
    let mut created = Vec::new();
    let mut awaiting = Vec::new();
    let mut batch = Batch::new();
    for i in 0..7 {
        let o = order(t);
        if i % 2 == 0 {
            let o = o
                .transition(&OrderEvent::PaymentRequested, t)
                .expect("legal transition");
            awaiting.push(o.id);
            batch = batch.insert_order(o);
        } else {
            created.push(o.id);
            batch = batch.insert_order(o);
        }
    }
    ok(C, "inserting orders", store.commit(batch, t)).await;
    created.sort();
    awaiting.sort();
    let mut all: Vec<OrderId> = created.iter().chain(&awaiting).copied().collect();
    all.sort();

    let everything: Vec<OrderId> = ok(C, "list_orders", store.list_orders(&OrderQuery::default()))
        .await
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(
        everything, all,
        "store kit: {C}: list_orders with no filter and limit 0 must list every order in id order"
    );

    let mut paged = Vec::new();
    loop {
        let page = ok(
            C,
            "list_orders",
            store.list_orders(&OrderQuery {
                state: Some(OrderStateKind::AwaitingPayment),
                after: paged.last().copied(),
                limit: 2,
            }),
        )
        .await;
        assert!(
            page.len() <= 2,
            "store kit: {C}: list_orders must return at most `limit` orders"
        );
        assert!(
            page.iter()
                .all(|o| o.state.kind() == OrderStateKind::AwaitingPayment),
            "store kit: {C}: list_orders must only return orders in the requested state"
        );
        if page.is_empty() {
            break;
        }
        paged.extend(page.into_iter().map(|o| o.id));
        assert!(
            paged.len() <= awaiting.len(),
            "store kit: {C}: keyset paging must not repeat orders"
        );
    }
    assert_eq!(
        paged, awaiting,
        "store kit: {C}: paging a state filter must visit each matching order once, in id order"
    );
    let none = ok(
        C,
        "list_orders",
        store.list_orders(&OrderQuery {
            state: Some(OrderStateKind::Active),
            ..OrderQuery::default()
        }),
    )
    .await;
    assert!(
        none.is_empty(),
        "store kit: {C}: a state nobody is in must list nothing"
    );
}

/// Rule: `claim_outbox` hands out due, undelivered entries, bumping `attempts` and leasing them
/// until `now + lease_for`; `retry_outbox` reschedules; `mark_outbox_delivered` is idempotent and
/// delivered entries are never claimed again; unknown ids are `NotFound`.
pub async fn outbox_claim_lease_retry_and_deliver(store: &dyn Store) {
    const C: &str = "outbox_claim_lease_retry_and_deliver";
    let o = seed_order(store, C, at(0)).await;
    let first = OutboxEntry::new(o.id, NotificationKind::ProvisioningStarted, at(0));
    let mut later = OutboxEntry::new(o.id, NotificationKind::Ready, at(1));
    later.next_attempt_at = at(100);
    ok(
        C,
        "queueing notifications",
        store.commit(
            Batch::new().notify(first.clone()).notify(later.clone()),
            at(1),
        ),
    )
    .await;
    let listed = ok(C, "outbox_for_order", store.outbox_for_order(o.id)).await;
    assert_eq!(
        listed,
        vec![first.clone(), later.clone()],
        "store kit: {C}: outbox_for_order must list the queued entries, oldest first"
    );

    let lease = Duration::from_secs(30);
    let claimed = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(2))).await;
    assert_eq!(
        claimed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first.id],
        "store kit: {C}: claim_outbox must hand out due entries only"
    );
    assert_eq!(
        (claimed[0].attempts, claimed[0].next_attempt_at),
        (1, at(32)),
        "store kit: {C}: a claim must bump attempts and lease the entry until now + lease_for"
    );
    let again = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(3))).await;
    assert!(
        again.is_empty(),
        "store kit: {C}: a leased entry must not be claimed again before its lease ends, got {again:?}"
    );
    let relapsed = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(32))).await;
    assert_eq!(
        relapsed
            .iter()
            .map(|e| (e.id, e.attempts))
            .collect::<Vec<_>>(),
        vec![(first.id, 2)],
        "store kit: {C}: an entry whose claim lapsed must be claimable again"
    );

    ok(
        C,
        "retry_outbox",
        store.retry_outbox(first.id, at(60), "smtp 451", at(33)),
    )
    .await;
    let got = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(59))).await;
    assert!(
        got.is_empty(),
        "store kit: {C}: a retried entry must wait for its next_attempt_at, got {got:?}"
    );
    let stored = ok(C, "outbox_for_order", store.outbox_for_order(o.id)).await;
    let entry = stored
        .iter()
        .find(|e| e.id == first.id)
        .expect("entry exists");
    assert_eq!(
        (entry.next_attempt_at, entry.last_error.as_deref()),
        (at(60), Some("smtp 451")),
        "store kit: {C}: retry_outbox must store next_attempt_at and the error"
    );

    let got = ok(C, "claim_outbox", store.claim_outbox(1, lease, at(60))).await;
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first.id],
        "store kit: {C}: a retried entry must be claimable at its next_attempt_at"
    );
    ok(
        C,
        "mark_outbox_delivered",
        store.mark_outbox_delivered(first.id, at(61)),
    )
    .await;
    ok(
        C,
        "mark_outbox_delivered (again)",
        store.mark_outbox_delivered(first.id, at(62)),
    )
    .await;
    ok(
        C,
        "retry_outbox of a delivered entry",
        store.retry_outbox(first.id, at(63), "late", at(63)),
    )
    .await;
    let stored = ok(C, "outbox_for_order", store.outbox_for_order(o.id)).await;
    let entry = stored
        .iter()
        .find(|e| e.id == first.id)
        .expect("entry exists");
    assert_eq!(
        entry.delivered_at,
        Some(at(61)),
        "store kit: {C}: marking delivered twice must keep the first delivery time"
    );
    let got = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(1000))).await;
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![later.id],
        "store kit: {C}: delivered entries must never be claimed again"
    );

    let res = store
        .mark_outbox_delivered(NotificationId::new(), at(5))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::NotFound),
        "store kit: {C}: marking an unknown entry delivered must be NotFound, got {res:?}"
    );
    let res = store
        .retry_outbox(NotificationId::new(), at(5), "x", at(5))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::NotFound),
        "store kit: {C}: retrying an unknown entry must be NotFound, got {res:?}"
    );
}

/// Rule: `retry_outbox` and `fail_outbox` append the failed attempt to the entry's history;
/// a failed entry is never claimed, is listed by `failed_outbox` (keyset paged) and by
/// `outbox_for_order` with its history, ignores later retries and failures, and becomes due
/// again through `requeue_outbox`; unknown ids are `NotFound`.
pub async fn outbox_failure_keeps_history_and_stays_visible(store: &dyn Store) {
    const C: &str = "outbox_failure_keeps_history_and_stays_visible";
    let o = seed_order(store, C, at(0)).await;
    let doomed = OutboxEntry::new(o.id, NotificationKind::Ready, at(0));
    let other = OutboxEntry::new(o.id, NotificationKind::ProvisioningStarted, at(0));
    ok(
        C,
        "queueing notifications",
        store.commit(
            Batch::new().notify(doomed.clone()).notify(other.clone()),
            at(0),
        ),
    )
    .await;
    let lease = Duration::from_secs(30);
    let claimed = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(1))).await;
    assert_eq!(claimed.len(), 2, "store kit: {C}: both entries are due");
    ok(
        C,
        "retry_outbox",
        store.retry_outbox(doomed.id, at(10), "smtp 451 try later", at(2)),
    )
    .await;
    ok(
        C,
        "retry_outbox (other)",
        store.retry_outbox(other.id, at(10), "timeout", at(2)),
    )
    .await;
    let claimed = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(10))).await;
    assert_eq!(
        claimed.len(),
        2,
        "store kit: {C}: retried entries come back"
    );
    ok(
        C,
        "fail_outbox",
        store.fail_outbox(doomed.id, "smtp 550 no such user", at(11)),
    )
    .await;
    let stored = ok(C, "outbox_for_order", store.outbox_for_order(o.id)).await;
    let entry = stored
        .iter()
        .find(|e| e.id == doomed.id)
        .expect("failed entry is still listed");
    assert_eq!(
        (entry.failed_at, entry.delivered_at, entry.attempts),
        (Some(at(11)), None, 2),
        "store kit: {C}: fail_outbox must set failed_at and keep the attempt count"
    );
    assert_eq!(
        entry
            .history
            .iter()
            .map(|h| (h.attempt, h.at, h.error.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (1, at(2), "smtp 451 try later"),
            (2, at(11), "smtp 550 no such user")
        ],
        "store kit: {C}: every failed attempt must be kept in the history, oldest first"
    );
    assert_eq!(
        entry.last_error.as_deref(),
        Some("smtp 550 no such user"),
        "store kit: {C}: fail_outbox must store the last error"
    );
    // Later writes to a failed entry change nothing.
    ok(
        C,
        "retry_outbox of a failed entry",
        store.retry_outbox(doomed.id, at(12), "late", at(12)),
    )
    .await;
    ok(
        C,
        "fail_outbox again",
        store.fail_outbox(doomed.id, "again", at(13)),
    )
    .await;
    let got = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(10_000))).await;
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![other.id],
        "store kit: {C}: a failed entry must never be claimed"
    );
    let failed = ok(C, "failed_outbox", store.failed_outbox(None, 0)).await;
    assert_eq!(
        failed
            .iter()
            .map(|e| (e.id, e.failed_at, e.history.len()))
            .collect::<Vec<_>>(),
        vec![(doomed.id, Some(at(11)), 2)],
        "store kit: {C}: failed_outbox must list the failed entry, unchanged by later writes"
    );
    let after = ok(C, "failed_outbox", store.failed_outbox(Some(doomed.id), 10)).await;
    assert!(
        after.is_empty(),
        "store kit: {C}: failed_outbox must page after the given id, got {after:?}"
    );
    // A delivered entry is not failed, and fail_outbox leaves it delivered.
    ok(
        C,
        "mark_outbox_delivered",
        store.mark_outbox_delivered(other.id, at(10_001)),
    )
    .await;
    ok(
        C,
        "fail_outbox of a delivered entry",
        store.fail_outbox(other.id, "late", at(10_002)),
    )
    .await;
    let failed = ok(C, "failed_outbox", store.failed_outbox(None, 10)).await;
    assert_eq!(
        failed.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![doomed.id],
        "store kit: {C}: a delivered entry must never become failed"
    );
    ok(
        C,
        "requeue_outbox",
        store.requeue_outbox(doomed.id, at(20_000)),
    )
    .await;
    let got = ok(C, "claim_outbox", store.claim_outbox(10, lease, at(20_000))).await;
    assert_eq!(
        got.iter()
            .map(|e| (e.id, e.attempts, e.failed_at, e.history.len()))
            .collect::<Vec<_>>(),
        vec![(doomed.id, 3, None, 2)],
        "store kit: {C}: a requeued entry must be due at once, keeping attempts and history"
    );
    for (op, res) in [
        (
            "fail_outbox",
            store.fail_outbox(NotificationId::new(), "x", at(1)).await,
        ),
        (
            "requeue_outbox",
            store.requeue_outbox(NotificationId::new(), at(1)).await,
        ),
    ] {
        assert_eq!(
            kind_of(&res),
            Some(ErrorKind::NotFound),
            "store kit: {C}: {op} of an unknown entry must be NotFound, got {res:?}"
        );
    }
}

/// Rule: inserting an outbox entry whose id exists is `AlreadyExists`.
pub async fn outbox_rejects_duplicate_ids(store: &dyn Store) {
    const C: &str = "outbox_rejects_duplicate_ids";
    let o = seed_order(store, C, at(0)).await;
    let entry = OutboxEntry::new(o.id, NotificationKind::Ready, at(0));
    ok(
        C,
        "queueing a notification",
        store.commit(Batch::new().notify(entry.clone()), at(0)),
    )
    .await;
    let res = store.commit(Batch::new().notify(entry), at(1)).await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::AlreadyExists),
        "store kit: {C}: a duplicate notification id must be AlreadyExists, got {res:?}"
    );
}

/// Rule: enqueueing a job whose `unique_key` any job (in any state) already has is a silent
/// no-op; the rest of the batch still applies. A duplicate job id is `AlreadyExists`.
pub async fn job_unique_key_dedupes(store: &dyn Store) {
    const C: &str = "job_unique_key_dedupes";
    let o = seed_order(store, C, at(0)).await;
    let first = Job::provision(o.id, at(0));
    ok(
        C,
        "enqueueing a job",
        store.commit(Batch::new().enqueue(first.clone()), at(0)),
    )
    .await;
    let second = Job::provision(o.id, at(0));
    let entry = OutboxEntry::new(o.id, NotificationKind::ProvisioningStarted, at(1));
    let res = store
        .commit(
            Batch::new().enqueue(second.clone()).notify(entry.clone()),
            at(1),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: a job with a taken unique_key must be skipped silently, got {res:?}"
    );
    let jobs = ok(C, "jobs_for_order", store.jobs_for_order(o.id)).await;
    assert_eq!(
        jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![first.id],
        "store kit: {C}: a job with a taken unique_key must not be enqueued"
    );
    assert_eq!(
        ok(C, "outbox_for_order", store.outbox_for_order(o.id))
            .await
            .len(),
        1,
        "store kit: {C}: the rest of a batch with a skipped job must still apply"
    );

    // Still deduped once the first job is finished.
    let claimed = claim_one(store, C, &claim("w1", 10, 60, at(2))).await;
    ok(
        C,
        "finishing a job",
        store.commit(
            Batch::new().fenced(&claimed.lease).finish(JobOutcome::Done),
            at(3),
        ),
    )
    .await;
    ok(
        C,
        "enqueueing a duplicate key",
        store.commit(Batch::new().enqueue(Job::provision(o.id, at(4))), at(4)),
    )
    .await;
    assert_eq!(
        ok(C, "jobs_for_order", store.jobs_for_order(o.id))
            .await
            .len(),
        1,
        "store kit: {C}: a unique_key stays taken after its job is done"
    );

    // Two keyless jobs are fine; a repeated id is not.
    let a = Job::new(JobKind::Restart, o.id, at(5));
    let b = Job::new(JobKind::Restart, o.id, at(5));
    ok(
        C,
        "enqueueing keyless jobs",
        store.commit(Batch::new().enqueue(a.clone()).enqueue(b), at(5)),
    )
    .await;
    assert_eq!(
        ok(C, "jobs_for_order", store.jobs_for_order(o.id))
            .await
            .len(),
        3,
        "store kit: {C}: jobs without a unique_key must all be enqueued"
    );
    let res = store.commit(Batch::new().enqueue(a), at(6)).await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::AlreadyExists),
        "store kit: {C}: enqueueing an existing job id must be AlreadyExists, got {res:?}"
    );
}

/// Rule: `claim_jobs` claims only queued jobs with `run_at <= now`, at most `limit`, earliest
/// `run_at` first, and returns them running under the caller's lease.
pub async fn job_claim_takes_only_due_jobs(store: &dyn Store) {
    const C: &str = "job_claim_takes_only_due_jobs";
    let o = seed_order(store, C, at(0)).await;
    let due_late = seed_job(store, C, o.id, at(5)).await;
    let due_early = seed_job(store, C, o.id, at(1)).await;
    let future = seed_job(store, C, o.id, at(100)).await;

    let got = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w1", 0, 60, at(10))),
    )
    .await;
    assert!(
        got.is_empty(),
        "store kit: {C}: a claim with limit 0 must claim nothing"
    );
    let got = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w1", 1, 60, at(10))),
    )
    .await;
    assert_eq!(
        got.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![due_early.id],
        "store kit: {C}: claim_jobs must claim at most `limit` jobs, earliest run_at first"
    );
    let c = &got[0];
    assert_eq!(
        (c.job.state, c.job.attempt, c.lease.owner.as_str()),
        (JobState::Running, 1, "w1"),
        "store kit: {C}: a claimed job must be running, attempt 1, owned by the claimer"
    );
    assert_eq!(
        c.lease.expires_at,
        at(70),
        "store kit: {C}: a lease must expire at now + lease_for"
    );
    assert_eq!(
        (c.lease.job_id, c.job.lease.as_ref().map(|l| l.epoch)),
        (due_early.id, Some(c.lease.epoch)),
        "store kit: {C}: the returned lease must match the job's stored lease"
    );
    let stored = job(store, C, due_early.id).await;
    assert_eq!(
        stored.state,
        JobState::Running,
        "store kit: {C}: a claim must be stored"
    );

    let got = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w2", 10, 60, at(10))),
    )
    .await;
    assert_eq!(
        got.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![due_late.id],
        "store kit: {C}: claim_jobs must skip running and not-yet-due jobs"
    );
    let stored = job(store, C, future.id).await;
    assert_eq!(
        (stored.state, stored.attempt),
        (JobState::Queued, 0),
        "store kit: {C}: a job not yet due must stay queued"
    );
}

/// Rule: two concurrent `claim_jobs` calls never hand out the same job.
pub async fn concurrent_claims_are_disjoint(store: &dyn Store) {
    const C: &str = "concurrent_claims_are_disjoint";
    let o = seed_order(store, C, at(0)).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(seed_job(store, C, o.id, at(i)).await.id);
    }
    let now = at(10);
    let (req_a, req_b) = (claim("worker-a", 4, 60, now), claim("worker-b", 4, 60, now));
    let (a, b) = tokio::join!(store.claim_jobs(&req_a), store.claim_jobs(&req_b));
    let a = a.unwrap_or_else(|e| panic!("store kit: {C}: claim_jobs failed: {e}"));
    let b = b.unwrap_or_else(|e| panic!("store kit: {C}: claim_jobs failed: {e}"));
    let mut all: Vec<JobId> = a.iter().chain(&b).map(|c| c.job.id).collect();
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        claimed,
        "store kit: {C}: claim_jobs handed the same job to two claimers: a={:?} b={:?}",
        a.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        b.iter().map(|c| c.job.id).collect::<Vec<_>>()
    );
    assert_eq!(
        claimed,
        ids.len(),
        "store kit: {C}: two claims of 4 over 6 due jobs must claim all 6"
    );
    for c in a.iter().chain(&b) {
        let stored = job(store, C, c.job.id).await;
        assert_eq!(
            stored.lease.as_ref().map(|l| (l.owner.as_str(), l.epoch)),
            Some((c.lease.owner.as_str(), c.lease.epoch)),
            "store kit: {C}: each job must be stored under the lease its claimer got"
        );
    }
}

/// Rule: every claim of a job bumps its epoch (also across a retry that cleared the lease);
/// `heartbeat` extends the lease to `now + extend_by` while owner and epoch match.
pub async fn claim_bumps_epoch_and_heartbeat_extends(store: &dyn Store) {
    const C: &str = "claim_bumps_epoch_and_heartbeat_extends";
    let o = seed_order(store, C, at(0)).await;
    let j = seed_job(store, C, o.id, at(0)).await;
    let first = claim_one(store, C, &claim("w1", 1, 60, at(1))).await;

    let hb = store
        .heartbeat(&first.lease, Duration::from_secs(90), at(30))
        .await;
    let extended = match hb {
        Ok(l) => l,
        Err(e) => panic!("store kit: {C}: a heartbeat of a held lease must succeed, got {e}"),
    };
    assert_eq!(
        (
            extended.job_id,
            extended.owner.as_str(),
            extended.epoch,
            extended.expires_at
        ),
        (j.id, "w1", first.lease.epoch, at(120)),
        "store kit: {C}: a heartbeat must move expires_at to now + extend_by and keep owner/epoch"
    );
    assert_eq!(
        job(store, C, j.id).await.lease.map(|l| l.expires_at),
        Some(at(120)),
        "store kit: {C}: a heartbeat must be stored"
    );
    let early = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w2", 1, 60, at(100))),
    )
    .await;
    assert!(
        early.is_empty(),
        "store kit: {C}: a heartbeated lease must not be reclaimable before its new expiry, got {early:?}"
    );

    // Retry (clears the lease), then claim again: the epoch still grows.
    ok(
        C,
        "finishing with retry",
        store.commit(
            Batch::new().fenced(&extended).finish(JobOutcome::Retry {
                run_at: at(200),
                error: None,
            }),
            at(110),
        ),
    )
    .await;
    let second = claim_one(store, C, &claim("w2", 1, 60, at(200))).await;
    assert!(
        second.lease.epoch > first.lease.epoch,
        "store kit: {C}: each claim must bump the epoch ({} then {})",
        first.lease.epoch,
        second.lease.epoch
    );
    assert_eq!(
        second.job.attempt, 2,
        "store kit: {C}: each claim must bump attempt"
    );
    let res = store
        .heartbeat(&extended, Duration::from_secs(90), at(201))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a heartbeat of a superseded lease must be Conflict, got {res:?}"
    );
    let mut wrong_owner = second.lease.clone();
    "intruder".clone_into(&mut wrong_owner.owner);
    let res = store
        .heartbeat(&wrong_owner, Duration::from_secs(90), at(201))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a heartbeat by another owner must be Conflict, got {res:?}"
    );
    let ghost = Lease {
        job_id: JobId::new(),
        owner: "w2".to_owned(),
        epoch: 1,
        expires_at: at(300),
    };
    let res = store
        .heartbeat(&ghost, Duration::from_secs(90), at(201))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a heartbeat of an unknown job must be Conflict, got {res:?}"
    );
}

/// Rule: a running job whose lease expired is claimable by another worker (with a higher
/// epoch); afterwards the old lease is fenced: its heartbeat, fenced commit and finish are all
/// `Conflict` and write nothing.
pub async fn expired_lease_is_reclaimed_and_old_holder_fenced(store: &dyn Store) {
    const C: &str = "expired_lease_is_reclaimed_and_old_holder_fenced";
    let o = seed_order(store, C, at(0)).await;
    let j = seed_job(store, C, o.id, at(0)).await;
    let dead = claim_one(store, C, &claim("dead-worker", 1, 60, at(1))).await;
    let none = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("rescuer", 1, 60, at(60))),
    )
    .await;
    assert!(
        none.is_empty(),
        "store kit: {C}: a lease must not be reclaimable before it expires, got {none:?}"
    );
    let rescued = claim_one(store, C, &claim("rescuer", 1, 60, at(61))).await;
    assert_eq!(
        rescued.job.id, j.id,
        "store kit: {C}: the expired job must be reclaimed"
    );
    assert!(
        rescued.lease.epoch > dead.lease.epoch,
        "store kit: {C}: a reclaim must bump the epoch"
    );
    assert_eq!(
        (rescued.job.attempt, rescued.lease.owner.as_str()),
        (2, "rescuer"),
        "store kit: {C}: a reclaim must bump attempt and change the owner"
    );

    let res = store
        .heartbeat(&dead.lease, Duration::from_secs(60), at(62))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: the old holder's heartbeat must be Conflict after a reclaim, got {res:?}"
    );
    let mut next = o.clone();
    next.customer = Customer::new("written-by-stale-worker");
    let entry = OutboxEntry::new(o.id, NotificationKind::Ready, at(62));
    let res = store
        .commit(
            Batch::new()
                .fenced(&dead.lease)
                .update_order(next)
                .notify(entry),
            at(62),
        )
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a commit fenced by a reclaimed lease must be Conflict (lease lost), got {res:?}"
    );
    assert_eq!(
        ok(C, "get_order", store.get_order(o.id)).await,
        Some(o.clone()),
        "store kit: {C}: a commit fenced by a reclaimed lease must write nothing"
    );
    assert!(
        ok(C, "outbox_for_order", store.outbox_for_order(o.id))
            .await
            .is_empty(),
        "store kit: {C}: a commit fenced by a reclaimed lease must write nothing"
    );
    let res = store
        .commit(
            Batch::new().fenced(&dead.lease).finish(JobOutcome::Done),
            at(63),
        )
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: finishing with a reclaimed lease must be Conflict, got {res:?}"
    );
    let stored = job(store, C, j.id).await;
    assert_eq!(
        (stored.state, stored.lease.map(|l| (l.owner, l.epoch))),
        (
            JobState::Running,
            Some(("rescuer".to_owned(), rescued.lease.epoch))
        ),
        "store kit: {C}: the stale holder must not disturb the new holder's lease"
    );
}

/// Rule: `get_order_records` returns exactly the known orders among its ids (none for none),
/// each with its own instance record and credentials where it has them;
/// `mark_outbox_delivered_many` marks every known entry, keeps a first delivery time, and is
/// `NotFound` when an id is unknown, the known ones marked all the same.
pub async fn orders_read_and_outbox_marked_in_bulk(store: &dyn Store) {
    const C: &str = "orders_read_and_outbox_marked_in_bulk";
    let a = seed_order(store, C, at(0)).await;
    let b = seed_order(store, C, at(0)).await;
    let c = seed_order(store, C, at(0)).await;
    let mut rec_a = InstanceRecord::intent(a.id, "sim", "lagos", "2c-4g", "win-2022", at(1));
    rec_a.sealed_password = Some(vec![0, 1, 254, 255]);
    let creds_a = SealedCredentials::new(a.id, "Administrator", "k1", vec![9, 0, 8], at(1));
    let rec_c = InstanceRecord::intent(c.id, "sim", "abuja", "4c-8g", "win-2025", at(1));
    ok(
        C,
        "putting records",
        store.commit(
            Batch::new()
                .put_instance(rec_a.clone())
                .put_instance(rec_c.clone())
                .put_credentials(creds_a.clone()),
            at(1),
        ),
    )
    .await;
    let mut got = ok(
        C,
        "get_order_records",
        store.get_order_records(&[c.id, OrderId::new(), a.id, b.id]),
    )
    .await;
    got.sort_by_key(|r| r.order.id);
    let mut want = vec![
        OrderRecords::new(a.clone(), Some(rec_a), Some(creds_a)),
        OrderRecords::new(b.clone(), None, None),
        OrderRecords::new(c.clone(), Some(rec_c), None),
    ];
    want.sort_by_key(|r| r.order.id);
    assert_eq!(
        got, want,
        "store kit: {C}: get_order_records must return exactly the known orders asked for, each with its own records"
    );
    assert!(
        ok(C, "get_order_records (none)", store.get_order_records(&[]))
            .await
            .is_empty(),
        "store kit: {C}: get_order_records of no ids must be empty"
    );

    let entries: Vec<OutboxEntry> = (0..3)
        .map(|i| OutboxEntry::new(a.id, NotificationKind::ProvisioningStarted, at(i)))
        .collect();
    let mut batch = Batch::new();
    for e in &entries {
        batch = batch.notify(e.clone());
    }
    ok(C, "queueing", store.commit(batch, at(3))).await;
    ok(
        C,
        "mark_outbox_delivered_many",
        store.mark_outbox_delivered_many(&[entries[0].id, entries[1].id], at(10)),
    )
    .await;
    ok(
        C,
        "mark_outbox_delivered_many (none)",
        store.mark_outbox_delivered_many(&[], at(10)),
    )
    .await;
    let res = store
        .mark_outbox_delivered_many(
            &[entries[0].id, NotificationId::new(), entries[2].id],
            at(20),
        )
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::NotFound),
        "store kit: {C}: marking an unknown entry among others must be NotFound, got {res:?}"
    );
    let mut stored: Vec<(NotificationId, Option<Timestamp>)> =
        ok(C, "outbox_for_order", store.outbox_for_order(a.id))
            .await
            .into_iter()
            .map(|e| (e.id, e.delivered_at))
            .collect();
    stored.sort();
    let mut want: Vec<(NotificationId, Option<Timestamp>)> = vec![
        (entries[0].id, Some(at(10))),
        (entries[1].id, Some(at(10))),
        (entries[2].id, Some(at(20))),
    ];
    want.sort();
    assert_eq!(
        stored, want,
        "store kit: {C}: every known entry must be marked, each keeping its first delivery time"
    );
    assert!(
        ok(
            C,
            "claim_outbox",
            store.claim_outbox(10, Duration::from_secs(60), at(30))
        )
        .await
        .is_empty(),
        "store kit: {C}: entries marked in bulk must never be claimed"
    );
}

/// Rule: a provisioning step's batch (fenced; an order update, the order's instance record
/// and credentials with binary sealed passwords, outbox entries, optionally finishing the job)
/// applies whole and reads back byte for byte; a stale order version, a taken outbox id or a
/// lost lease in such a batch writes none of it. (SQL stores apply this shape in one
/// statement of their own, so it is checked on its own here.)
pub async fn fenced_step_is_all_or_nothing(store: &dyn Store) {
    const C: &str = "fenced_step_is_all_or_nothing";
    let o = seed_order(store, C, at(0)).await;
    let j = seed_job(store, C, o.id, at(0)).await;
    let held = claim_one(store, C, &claim("w1", 1, 600, at(1))).await;

    // Every byte value, so an encoding that mangles any of them shows.
    let all_bytes: Vec<u8> = (0..=255_u8).rev().collect();
    let mut rec = InstanceRecord::intent(o.id, "sim", "lagos", "2c-4g", "win-2022", at(2));
    rec.instance_id = Some("i-1".into());
    rec.sealed_password = Some(all_bytes.clone());
    let creds = SealedCredentials::new(o.id, "Administrator", "k1", all_bytes.clone(), at(2));
    let started = OutboxEntry::new(o.id, NotificationKind::ProvisioningStarted, at(2));
    let next = o
        .transition(&OrderEvent::PaymentRequested, at(2))
        .expect("legal transition");
    let res = store
        .commit(
            Batch::new()
                .fenced(&held.lease)
                .update_order(next.clone())
                .put_instance(rec.clone())
                .put_credentials(creds.clone())
                .notify(started.clone()),
            at(2),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: a fenced step must apply, got {res:?}"
    );
    let mut stored_next = next.clone();
    stored_next.version = next.version + 1;
    assert_eq!(
        ok(C, "get_order", store.get_order(o.id)).await,
        Some(stored_next.clone()),
        "store kit: {C}: the step's order must read back at version + 1"
    );
    assert_eq!(
        ok(C, "get_instance", store.get_instance(o.id)).await,
        Some(rec.clone()),
        "store kit: {C}: the step's instance record must read back byte for byte"
    );
    assert_eq!(
        ok(C, "get_credentials", store.get_credentials(o.id)).await,
        Some(creds.clone()),
        "store kit: {C}: the step's credentials must read back byte for byte"
    );
    let queued = ok(C, "outbox_for_order", store.outbox_for_order(o.id)).await;
    assert_eq!(
        queued.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![started.id],
        "store kit: {C}: the step's outbox entry must be queued"
    );

    // Refused steps: each would also replace the instance record and queue a notice.
    let mut other = rec.clone();
    other.address = Some(std::net::IpAddr::from([192, 0, 2, 7]));
    other.sealed_password = None;
    let ready = OutboxEntry::new(o.id, NotificationKind::Ready, at(3));
    let attempts: [(&str, Batch, ErrorKind); 2] = [
        (
            "a stale order version",
            Batch::new()
                .fenced(&held.lease)
                .update_order(next.clone())
                .put_instance(other.clone())
                .notify(ready.clone()),
            ErrorKind::Conflict,
        ),
        (
            "an outbox id already taken",
            Batch::new()
                .fenced(&held.lease)
                .update_order(stored_next.clone())
                .put_instance(other.clone())
                .notify(started.clone()),
            ErrorKind::AlreadyExists,
        ),
    ];
    for (what, batch, kind) in attempts {
        let res = store.commit(batch, at(3)).await;
        assert_eq!(
            kind_of(&res),
            Some(kind),
            "store kit: {C}: a fenced step with {what} must be {kind:?}, got {res:?}"
        );
        assert_eq!(
            (
                ok(C, "get_order", store.get_order(o.id)).await,
                ok(C, "get_instance", store.get_instance(o.id)).await,
                ok(C, "outbox_for_order", store.outbox_for_order(o.id))
                    .await
                    .len(),
            ),
            (Some(stored_next.clone()), Some(rec.clone()), 1),
            "store kit: {C}: a fenced step with {what} must write nothing"
        );
    }

    // A step that finishes the job: everything lands, and the job is queued again.
    let later = stored_next
        .transition(&OrderEvent::PaymentExpired, at(4))
        .expect("legal transition");
    let res = store
        .commit(
            Batch::new()
                .fenced(&held.lease)
                .update_order(later.clone())
                .put_instance(other.clone())
                .notify(ready.clone())
                .finish(JobOutcome::Retry {
                    run_at: at(90),
                    error: Some("boot still running".into()),
                }),
            at(4),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: a fenced step that finishes its job must apply, got {res:?}"
    );
    let retried = job(store, C, j.id).await;
    assert_eq!(
        (
            retried.state,
            retried.run_at,
            retried.last_error.as_deref(),
            retried.lease.is_none()
        ),
        (JobState::Queued, at(90), Some("boot still running"), true),
        "store kit: {C}: the finished step must queue the job at its run_at with its error"
    );
    assert_eq!(
        (
            ok(C, "get_instance", store.get_instance(o.id)).await,
            ok(C, "outbox_for_order", store.outbox_for_order(o.id))
                .await
                .len(),
        ),
        (Some(other.clone()), 2),
        "store kit: {C}: the finishing step must write its instance record and notice"
    );

    // The lease ended with the job: the same step again is refused and writes nothing.
    let res = store
        .commit(
            Batch::new()
                .fenced(&held.lease)
                .put_instance(rec.clone())
                .notify(OutboxEntry::new(o.id, NotificationKind::Ready, at(5))),
            at(5),
        )
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a step fenced by a finished job's lease must be Conflict, got {res:?}"
    );
    assert_eq!(
        (
            ok(C, "get_instance", store.get_instance(o.id)).await,
            ok(C, "outbox_for_order", store.outbox_for_order(o.id))
                .await
                .len(),
        ),
        (Some(other), 2),
        "store kit: {C}: a step fenced by a finished job's lease must write nothing"
    );
}

/// Rule: fenced steps committed at the same moment (which a store may write together) are
/// each answered on their own: a stale order version or a lost lease among them is refused
/// and writes nothing, and every other step applies.
pub async fn concurrent_fenced_steps_are_answered_each_on_its_own(store: &dyn Store) {
    const C: &str = "concurrent_fenced_steps_are_answered_each_on_its_own";
    const N: u32 = 12;
    let mut orders = Vec::new();
    for _ in 0..N {
        let o = seed_order(store, C, at(0)).await;
        seed_job(store, C, o.id, at(0)).await;
        orders.push(o);
    }
    let claimed = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w1", N, 600, at(1))),
    )
    .await;
    assert_eq!(
        claimed.len(),
        N as usize,
        "store kit: {C}: every seeded job must be claimed"
    );
    // Step i belongs to order i; step 3 carries a stale version, step 7 a lease of another epoch.
    let steps = claimed.iter().map(|c| {
        let o = orders
            .iter()
            .find(|o| o.id == c.job.order_id)
            .expect("claimed job of a seeded order");
        let mut next = o
            .transition(&OrderEvent::PaymentRequested, at(2))
            .expect("legal transition");
        let mut lease = c.lease.clone();
        let i = orders.iter().position(|x| x.id == o.id).unwrap_or_default();
        if i == 3 {
            next.version += 5;
        }
        if i == 7 {
            lease.epoch += 1;
        }
        let batch = Batch::new()
            .fenced(&lease)
            .update_order(next)
            .put_instance(InstanceRecord::intent(
                o.id,
                "sim",
                "lagos",
                "2c-4g",
                "win-2022",
                at(2),
            ))
            .notify(OutboxEntry::new(
                o.id,
                NotificationKind::ProvisioningStarted,
                at(2),
            ));
        (i, store.commit(batch, at(2)))
    });
    let (indexes, commits): (Vec<usize>, Vec<_>) = steps.unzip();
    let results = futures::future::join_all(commits).await;
    for (i, res) in indexes.into_iter().zip(results) {
        let o = &orders[i];
        let written = (
            ok(C, "get_order", store.get_order(o.id))
                .await
                .map(|o| o.state.kind()),
            ok(C, "get_instance", store.get_instance(o.id))
                .await
                .is_some(),
            ok(C, "outbox_for_order", store.outbox_for_order(o.id))
                .await
                .len(),
        );
        if i == 3 || i == 7 {
            assert_eq!(
                kind_of(&res),
                Some(ErrorKind::Conflict),
                "store kit: {C}: step {i} (stale) must be Conflict, got {res:?}"
            );
            assert_eq!(
                written,
                (Some(OrderStateKind::Created), false, 0),
                "store kit: {C}: refused step {i} must write nothing"
            );
        } else {
            assert!(
                matches!(res, Ok(CommitOutcome::Applied)),
                "store kit: {C}: step {i} must apply beside refused ones, got {res:?}"
            );
            assert_eq!(
                written,
                (Some(OrderStateKind::AwaitingPayment), true, 1),
                "store kit: {C}: applied step {i} must write all of its rows"
            );
        }
    }
}

/// Rule: a commit fenced by a lease that still holds its job (same owner and epoch, job
/// running) applies, and so does finishing with it.
///
/// Whether a lease that lapsed but was not reclaimed may still write is left to the backend
/// (SQL stores fence on owner and epoch only); the kit does not check it.
pub async fn fenced_commit_applies_while_lease_holds(store: &dyn Store) {
    const C: &str = "fenced_commit_applies_while_lease_holds";
    let o = seed_order(store, C, at(0)).await;
    let j = seed_job(store, C, o.id, at(0)).await;
    let held = claim_one(store, C, &claim("w1", 1, 60, at(1))).await;
    let next = o
        .transition(&OrderEvent::PaymentRequested, at(2))
        .expect("legal transition");
    let entry = OutboxEntry::new(o.id, NotificationKind::ProvisioningStarted, at(2));
    let res = store
        .commit(
            Batch::new()
                .fenced(&held.lease)
                .update_order(next)
                .notify(entry.clone()),
            at(2),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: a commit fenced by a held lease must apply, got {res:?}"
    );
    assert_eq!(
        (
            ok(C, "get_order", store.get_order(o.id))
                .await
                .map(|o| o.state.kind()),
            ok(C, "outbox_for_order", store.outbox_for_order(o.id))
                .await
                .len(),
        ),
        (Some(OrderStateKind::AwaitingPayment), 1),
        "store kit: {C}: a commit fenced by a held lease must write all of its rows"
    );
    let extended = ok(
        C,
        "heartbeat",
        store.heartbeat(&held.lease, Duration::from_secs(60), at(30)),
    )
    .await;
    let res = store
        .commit(
            Batch::new().fenced(&extended).finish(JobOutcome::Done),
            at(31),
        )
        .await;
    assert!(
        matches!(res, Ok(CommitOutcome::Applied)),
        "store kit: {C}: finishing with a heartbeated lease must apply, got {res:?}"
    );
    assert_eq!(
        job(store, C, j.id).await.state,
        JobState::Done,
        "store kit: {C}: finishing with a held lease must end the job"
    );
}

/// Rule: `finish_job` without a `fence` is `InvalidInput` and writes nothing.
pub async fn finish_requires_fence(store: &dyn Store) {
    const C: &str = "finish_requires_fence";
    let o = seed_order(store, C, at(0)).await;
    let entry = OutboxEntry::new(o.id, NotificationKind::Ready, at(1));
    let res = store
        .commit(Batch::new().notify(entry).finish(JobOutcome::Done), at(1))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::InvalidInput),
        "store kit: {C}: finish_job without a fence must be InvalidInput, got {res:?}"
    );
    assert!(
        ok(C, "outbox_for_order", store.outbox_for_order(o.id))
            .await
            .is_empty(),
        "store kit: {C}: a batch rejected as InvalidInput must write nothing"
    );
}

/// Rule: finishing `Done` ends the job and drops its lease; `Retry` re-queues it at `run_at`
/// with the error recorded; `Failed` ends it with the error; finished jobs are never claimed
/// again and their lease no longer fences.
pub async fn finish_done_retry_failed(store: &dyn Store) {
    const C: &str = "finish_done_retry_failed";
    let o = seed_order(store, C, at(0)).await;
    let done = seed_job(store, C, o.id, at(0)).await;
    let retry = seed_job(store, C, o.id, at(1)).await;
    let failed = seed_job(store, C, o.id, at(2)).await;
    let claimed = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w1", 3, 60, at(5))),
    )
    .await;
    let lease_of = |id: JobId| {
        claimed.iter().find(|c| c.job.id == id).map_or_else(
            || panic!("store kit: {C}: every due job must be claimed"),
            |c| c.lease.clone(),
        )
    };
    let (l_done, l_retry, l_failed) = (lease_of(done.id), lease_of(retry.id), lease_of(failed.id));

    ok(
        C,
        "finish Done",
        store.commit(Batch::new().fenced(&l_done).finish(JobOutcome::Done), at(6)),
    )
    .await;
    ok(
        C,
        "finish Retry",
        store.commit(
            Batch::new().fenced(&l_retry).finish(JobOutcome::Retry {
                run_at: at(300),
                error: Some("provider 503".to_owned()),
            }),
            at(6),
        ),
    )
    .await;
    ok(
        C,
        "finish Failed",
        store.commit(
            Batch::new().fenced(&l_failed).finish(JobOutcome::Failed {
                error: "quota".to_owned(),
            }),
            at(6),
        ),
    )
    .await;

    let d = job(store, C, done.id).await;
    assert_eq!(
        (d.state, d.lease.is_none()),
        (JobState::Done, true),
        "store kit: {C}: finish Done must set state Done and clear the lease"
    );
    let r = job(store, C, retry.id).await;
    assert_eq!(
        (
            r.state,
            r.run_at,
            r.lease.is_none(),
            r.last_error.as_deref()
        ),
        (JobState::Queued, at(300), true, Some("provider 503")),
        "store kit: {C}: finish Retry must re-queue at run_at, clear the lease and keep the error"
    );
    let f = job(store, C, failed.id).await;
    assert_eq!(
        (f.state, f.lease.is_none(), f.last_error.as_deref()),
        (JobState::Failed, true, Some("quota")),
        "store kit: {C}: finish Failed must set state Failed with the error"
    );

    let res = store
        .commit(Batch::new().fenced(&l_done).finish(JobOutcome::Done), at(7))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a lease of a finished job must no longer fence, got {res:?}"
    );
    let res = store
        .heartbeat(&l_failed, Duration::from_secs(60), at(7))
        .await;
    assert_eq!(
        kind_of(&res),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a lease of a failed job must no longer heartbeat, got {res:?}"
    );
    let later = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w2", 10, 60, at(100_000))),
    )
    .await;
    assert_eq!(
        later.iter().map(|c| c.job.id).collect::<Vec<_>>(),
        vec![retry.id],
        "store kit: {C}: Done and Failed jobs must never be claimed again"
    );
}

/// Rule: a job finished with `Retry { run_at }` is not claimable before `run_at` and is
/// claimable from `run_at` on, with a higher epoch and attempt.
pub async fn retried_job_waits_for_run_at(store: &dyn Store) {
    const C: &str = "retried_job_waits_for_run_at";
    let o = seed_order(store, C, at(0)).await;
    let j = seed_job(store, C, o.id, at(0)).await;
    let first = claim_one(store, C, &claim("w1", 1, 60, at(0))).await;
    ok(
        C,
        "finish Retry",
        store.commit(
            Batch::new().fenced(&first.lease).finish(JobOutcome::Retry {
                run_at: at(50),
                error: None,
            }),
            at(10),
        ),
    )
    .await;
    let early = ok(
        C,
        "claim_jobs",
        store.claim_jobs(&claim("w2", 1, 60, at(49))),
    )
    .await;
    assert!(
        early.is_empty(),
        "store kit: {C}: a retried job must not be claimable before its run_at, got {early:?}"
    );
    let again = claim_one(store, C, &claim("w2", 1, 60, at(50))).await;
    assert_eq!(
        (again.job.id, again.job.attempt),
        (j.id, 2),
        "store kit: {C}: a retried job must be claimable at its run_at"
    );
    assert!(
        again.lease.epoch > first.lease.epoch,
        "store kit: {C}: re-claiming a retried job must bump the epoch"
    );
}

/// Rule: a record insert stores version 1 and refuses an existing key; an update needs the
/// stored version and bumps it; a refused write changes nothing.
pub async fn records_insert_update_and_conflict(store: &dyn Store) {
    const C: &str = "records_insert_update_and_conflict";
    let write = |v: u32, expected: Option<u64>| {
        match expected {
            None => RecordWrite::insert("kit.records", "a", &v),
            Some(e) => RecordWrite::update("kit.records", "a", &v, e),
        }
        .unwrap_or_else(|e| panic!("store kit: {C}: building a record write failed: {e}"))
    };
    ok(
        C,
        "insert",
        store.commit(Batch::new().put_record(write(1, None)), at(0)),
    )
    .await;
    let got = ok(C, "get_record", store.get_record("kit.records", "a"))
        .await
        .unwrap_or_else(|| panic!("store kit: {C}: an inserted record must be readable"));
    assert_eq!(
        (got.version, got.decode::<u32>().ok(), got.updated_at),
        (1, Some(1), at(0)),
        "store kit: {C}: an insert stores version 1, the data and the commit time"
    );
    let again = store
        .commit(Batch::new().put_record(write(2, None)), at(1))
        .await;
    assert_eq!(
        kind_of(&again),
        Some(ErrorKind::Conflict),
        "store kit: {C}: inserting an existing record key must be a Conflict"
    );
    ok(
        C,
        "update",
        store.commit(Batch::new().put_record(write(3, Some(1))), at(2)),
    )
    .await;
    let stale = store
        .commit(Batch::new().put_record(write(4, Some(1))), at(3))
        .await;
    assert_eq!(
        kind_of(&stale),
        Some(ErrorKind::Conflict),
        "store kit: {C}: an update from a stale version must be a Conflict"
    );
    let missing = store
        .commit(
            Batch::new().put_record(
                RecordWrite::update("kit.records", "nope", &0u32, 1)
                    .unwrap_or_else(|e| panic!("store kit: {C}: {e}")),
            ),
            at(3),
        )
        .await;
    assert_eq!(
        kind_of(&missing),
        Some(ErrorKind::Conflict),
        "store kit: {C}: updating a missing record must be a Conflict"
    );
    let got = ok(C, "get_record", store.get_record("kit.records", "a"))
        .await
        .unwrap_or_else(|| panic!("store kit: {C}: the record vanished"));
    assert_eq!(
        (got.version, got.decode::<u32>().ok()),
        (2, Some(3)),
        "store kit: {C}: after one good update the record is at version 2 with its data"
    );
    assert!(
        ok(C, "get_record", store.get_record("kit.other", "a"))
            .await
            .is_none(),
        "store kit: {C}: collections are separate namespaces"
    );
}

/// Rule: `list_records` returns only keys with the prefix, in key order, after `after_key`,
/// at most `limit`.
pub async fn records_list_by_prefix_and_page(store: &dyn Store) {
    const C: &str = "records_list_by_prefix_and_page";
    let mut batch = Batch::new();
    for key in ["b:2", "a:1", "b:1", "b:3", "c:1", "b"] {
        batch = batch.put_record(
            RecordWrite::insert("kit.list", key, &key)
                .unwrap_or_else(|e| panic!("store kit: {C}: {e}")),
        );
    }
    batch = batch.put_record(
        RecordWrite::insert("kit.elsewhere", "b:0", &0).unwrap_or_else(|e| panic!("{e}")),
    );
    ok(C, "insert", store.commit(batch, at(0))).await;
    let keys =
        |records: Vec<crate::store::Record>| records.into_iter().map(|r| r.key).collect::<Vec<_>>();
    let all = ok(C, "list", store.list_records("kit.list", "b:", None, 0)).await;
    assert_eq!(
        keys(all),
        ["b:1", "b:2", "b:3"],
        "store kit: {C}: prefix `b:` must list exactly its keys in order"
    );
    let page = ok(C, "list", store.list_records("kit.list", "b:", None, 2)).await;
    assert_eq!(keys(page), ["b:1", "b:2"], "store kit: {C}: limit 2");
    let next = ok(
        C,
        "list",
        store.list_records("kit.list", "b:", Some("b:2"), 2),
    )
    .await;
    assert_eq!(keys(next), ["b:3"], "store kit: {C}: keyset page after b:2");
    let everything = ok(C, "list", store.list_records("kit.list", "", None, 0)).await;
    assert_eq!(
        keys(everything),
        ["a:1", "b", "b:1", "b:2", "b:3", "c:1"],
        "store kit: {C}: an empty prefix lists the whole collection, and only it"
    );
}

/// Rule: record writes are part of the batch: a batch that fails on another write leaves its
/// records unwritten, and a failed record write leaves the rest of the batch unwritten.
pub async fn record_writes_are_atomic_with_the_batch(store: &dyn Store) {
    const C: &str = "record_writes_are_atomic_with_the_batch";
    let o = seed_order(store, C, at(0)).await;
    let duplicate_order = store
        .commit(
            Batch::new()
                .put_record(
                    RecordWrite::insert("kit.atomic", "x", &1).unwrap_or_else(|e| panic!("{e}")),
                )
                .insert_order(o.clone()),
            at(1),
        )
        .await;
    assert!(
        duplicate_order.is_err(),
        "store kit: {C}: inserting an existing order must fail"
    );
    assert!(
        ok(C, "get_record", store.get_record("kit.atomic", "x"))
            .await
            .is_none(),
        "store kit: {C}: a failed batch must not write its records"
    );
    let stale_record = store
        .commit(
            Batch::new().insert_order(order(at(2))).put_record(
                RecordWrite::update("kit.atomic", "x", &1, 7).unwrap_or_else(|e| panic!("{e}")),
            ),
            at(2),
        )
        .await;
    assert_eq!(
        kind_of(&stale_record),
        Some(ErrorKind::Conflict),
        "store kit: {C}: a stale record update must fail the batch"
    );
    let orders = ok(C, "list_orders", store.list_orders(&OrderQuery::default())).await;
    assert_eq!(
        orders.len(),
        1,
        "store kit: {C}: a batch whose record write failed must not insert its order"
    );
}

/// Rule: `reserve_index` gives a claimant the same index every time, distinct claimants
/// distinct gap-free indexes per scope, also when claims race.
pub async fn reserve_index_is_stable_and_unique(store: &dyn Store) {
    const C: &str = "reserve_index_is_stable_and_unique";
    let first = ok(C, "reserve", store.reserve_index("kit/0", "p-1", at(0))).await;
    let again = ok(C, "reserve", store.reserve_index("kit/0", "p-1", at(1))).await;
    assert_eq!(
        (first, again),
        (0, 0),
        "store kit: {C}: the first claimant gets 0, and 0 again when it asks twice"
    );
    let other_scope = ok(C, "reserve", store.reserve_index("kit/1", "p-1", at(1))).await;
    assert_eq!(other_scope, 0, "store kit: {C}: scopes count independently");
    let claimants: Vec<String> = (2..=9).map(|i| format!("p-{i}")).collect();
    let raced = futures::future::join_all(
        claimants
            .iter()
            .map(|c| store.reserve_index("kit/0", c, at(2))),
    )
    .await;
    let mut got: Vec<u64> = raced
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("store kit: {C}: reserve_index failed: {e}")))
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (1..=8).collect::<Vec<u64>>(),
        "store kit: {C}: 8 racing claimants must get the distinct indexes 1..=8"
    );
    let empty = store.reserve_index("kit/0", "", at(3)).await;
    assert_eq!(
        kind_of(&empty),
        Some(ErrorKind::InvalidInput),
        "store kit: {C}: an empty claimant is invalid input"
    );
}
