//! `WebhookNotifier` against a local receiver (wiremock): signatures verify with
//! `WebhookVerifier`, 503 is retried, other 4xx are not, replays beyond the tolerance are
//! refused, and through the Provisioner's outbox a crash between the state change and the
//! delivery still delivers once per outbox row (the receiver dedupes on `webhook-id`).

mod support;

use std::{collections::HashSet, sync::Arc, time::Duration};

use nemordp_core::{
    ErrorKind, ManualClock, Store as _, Timestamp,
    notify::{Notification, NotificationKind, Notifier},
    secrecy::SecretString,
};
use nemordp_notify::webhook::{
    HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP, RetryPolicy, WebhookNotifier, WebhookSecret,
    WebhookVerifier,
};
use support::{MACHINE_PASSWORD, customer, ready_notification, world::World};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secret() -> WebhookSecret {
    WebhookSecret::parse(&SecretString::from(SECRET)).unwrap()
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy::new(3, Duration::from_millis(5), Duration::from_millis(50))
}

fn notifier(server: &MockServer, clock: Option<ManualClock>) -> WebhookNotifier {
    let mut b = WebhookNotifier::builder()
        .url(format!("{}/hooks/nemordp", server.uri()))
        .secret(secret())
        .retry(fast_retries())
        .timeout(Duration::from_secs(5));
    if let Some(c) = clock {
        b = b.clock(Arc::new(c));
    }
    b.build().unwrap()
}

async fn answer(server: &MockServer, status: u16) {
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(server)
        .await;
}

fn header<'a>(r: &'a wiremock::Request, name: &str) -> &'a str {
    r.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn signed_events_verify_on_the_receiver() {
    let server = MockServer::start().await;
    answer(&server, 204).await;
    let clock = ManualClock::new(Timestamp::from_unix_secs(1_767_225_600));
    let hooks = notifier(&server, Some(clock.clone()));
    let ready = ready_notification();
    let d = hooks.send(&ready).await.unwrap();
    assert_eq!(d.receipt.as_deref(), Some("HTTP 204"));

    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.url.path(), "/hooks/nemordp");
    assert_eq!(header(r, "content-type"), "application/json");
    assert_eq!(
        header(r, HEADER_ID),
        ready.id.to_string(),
        "webhook-id is the outbox row id"
    );
    assert_eq!(header(r, HEADER_TIMESTAMP), "1767225600");
    assert!(header(r, HEADER_SIGNATURE).starts_with("v1,"));
    let verifier = WebhookVerifier::new([secret()]);
    let v = verifier
        .verify(&r.headers, &r.body, clock.now_ts())
        .unwrap();
    assert_eq!((v.id, v.timestamp), (ready.id.to_string(), 1_767_225_600));

    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["type"], "nemordp.ready");
    assert_eq!(body["data"]["kind"], "ready");
    assert_eq!(body["data"]["order_id"], ready.order_id.to_string());
    assert_eq!(body["data"]["customer"]["email"], "buyer@example.com");
    assert_eq!(body["data"]["connection"]["host"], "203.0.113.7");
    assert!(
        body["data"]["connection"]["rdp_file"]
            .as_str()
            .unwrap()
            .starts_with("full address:s:203.0.113.7:3389")
    );
    assert!(
        body["data"]["connection"].get("password").is_none(),
        "no password unless include_credentials"
    );
    assert!(!String::from_utf8_lossy(&r.body).contains(MACHINE_PASSWORD));

    // Tampering with the body or id breaks the signature.
    let mut tampered = r.body.clone();
    tampered.push(b' ');
    let e = verifier
        .verify(&r.headers, &tampered, clock.now_ts())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    let other = WebhookVerifier::new([WebhookSecret::generate().0]);
    assert!(other.verify(&r.headers, &r.body, clock.now_ts()).is_err());
}

#[tokio::test]
async fn the_password_is_in_the_ready_event_only_when_asked_for() {
    let server = MockServer::start().await;
    answer(&server, 200).await;
    let hooks = WebhookNotifier::builder()
        .url(server.uri())
        .secret(secret())
        .include_credentials(true)
        .build()
        .unwrap();
    hooks.send(&ready_notification()).await.unwrap();
    let started = Notification::new(
        nemordp_core::NotificationId::new(),
        nemordp_core::OrderId::new(),
        customer(),
        NotificationKind::ProvisioningStarted,
    );
    hooks.send(&started).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    let ready: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(ready["data"]["connection"]["password"], MACHINE_PASSWORD);
    let other: serde_json::Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(other["type"], "nemordp.provisioning_started");
    assert!(other["data"].get("connection").is_none());
}

#[tokio::test]
async fn a_503_is_retried_with_the_same_id_until_it_succeeds() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    answer(&server, 200).await;
    let hooks = notifier(&server, None);
    let n = ready_notification();
    hooks.send(&n).await.unwrap();
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 3, "two 503s, then success");
    let verifier = WebhookVerifier::new([secret()]);
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    for r in &reqs {
        assert_eq!(header(r, HEADER_ID), n.id.to_string());
        verifier.verify(&r.headers, &r.body, now).unwrap();
    }
}

#[tokio::test]
async fn retryable_statuses_end_retryable_and_others_are_never_retried() {
    for (status, kind, expected_requests) in [
        (503, ErrorKind::Unavailable, 3),
        (500, ErrorKind::Unavailable, 3),
        (408, ErrorKind::Unavailable, 3),
        (429, ErrorKind::RateLimited, 3),
        (400, ErrorKind::Rejected, 1),
        (401, ErrorKind::Rejected, 1),
        (404, ErrorKind::Rejected, 1),
        (410, ErrorKind::Rejected, 1),
        (302, ErrorKind::Rejected, 1),
    ] {
        let server = MockServer::start().await;
        answer(&server, status).await;
        let err = notifier(&server, None)
            .send(&ready_notification())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "HTTP {status}: {err}");
        assert_eq!(
            err.is_retryable(),
            kind != ErrorKind::Rejected,
            "HTTP {status}"
        );
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            expected_requests,
            "HTTP {status}"
        );
    }
}

#[tokio::test]
async fn a_long_retry_after_is_left_to_the_outbox() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .mount(&server)
        .await;
    let err = notifier(&server, None)
        .send(&ready_notification())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn network_errors_are_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hooks = WebhookNotifier::builder()
        .url(format!("http://127.0.0.1:{port}/gone"))
        .secret(secret())
        .retry(fast_retries())
        .build()
        .unwrap();
    let err = hooks.send(&ready_notification()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_replay_older_than_the_tolerance_is_rejected() {
    let server = MockServer::start().await;
    answer(&server, 200).await;
    let clock = ManualClock::new(Timestamp::from_unix_secs(1_767_225_600));
    notifier(&server, Some(clock.clone()))
        .send(&ready_notification())
        .await
        .unwrap();
    let r = &server.received_requests().await.unwrap()[0];
    let verifier = WebhookVerifier::new([secret()]);
    clock.advance(Duration::from_secs(299));
    verifier
        .verify(&r.headers, &r.body, clock.now_ts())
        .unwrap();
    clock.advance(Duration::from_secs(2));
    let e = verifier
        .verify(&r.headers, &r.body, clock.now_ts())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    assert!(e.to_string().contains("replay"), "{e}");
    // Re-signing the same body with an old timestamp (a forged "fresh" replay) cannot verify
    // without the secret: swapping in a current timestamp breaks the signature.
    let mut headers = r.headers.clone();
    headers.insert(
        HEADER_TIMESTAMP,
        clock.now_ts().as_unix_secs().to_string().parse().unwrap(),
    );
    let e = verifier
        .verify(&headers, &r.body, clock.now_ts())
        .unwrap_err();
    assert!(e.to_string().contains("does not verify"), "{e}");
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        nemordp_core::Clock::now(self)
    }
}

/// The receiver of the crash tests: verifies every request received since `seen` at `now`
/// (the moment it arrived) and returns all webhook ids so far, repeats included.
async fn receive(server: &MockServer, seen: &mut usize, now: Timestamp) -> Vec<String> {
    let verifier = WebhookVerifier::new([secret()]);
    let reqs = server.received_requests().await.unwrap();
    for r in &reqs[*seen..] {
        verifier.verify(&r.headers, &r.body, now).unwrap();
    }
    *seen = reqs.len();
    reqs.iter()
        .map(|r| header(r, HEADER_ID).to_owned())
        .collect()
}

#[tokio::test]
async fn a_crash_between_the_state_change_and_the_delivery_still_delivers_once() {
    let server = MockServer::start().await;
    answer(&server, 200).await;
    let w = World::new();
    let hooks: Arc<dyn Notifier> = Arc::new(notifier(&server, Some(w.clock.clone())));

    // Process A commits the payment (state change + outbox row, one transaction) and dies
    // before its relay runs.
    let a = w.provisioner("worker-a", hooks.clone());
    let order = w.paid_order(&a, customer()).await;
    drop(a);
    let queued = w.store_outbox(order).await;
    assert_eq!(queued.len(), 1);
    assert!(matches!(
        queued[0].kind,
        NotificationKind::PaymentReceived { .. }
    ));
    assert!(server.received_requests().await.unwrap().is_empty());

    // Process B relays it: delivered once, and never again.
    let b = w.provisioner("worker-b", hooks.clone());
    let mut seen = 0;
    assert_eq!(b.relay_outbox_once().await.unwrap(), 1);
    receive(&server, &mut seen, w.clock.now_ts()).await;
    for _ in 0..3 {
        w.clock.advance(Duration::from_secs(120));
        assert_eq!(b.relay_outbox_once().await.unwrap(), 0);
    }
    let ids = receive(&server, &mut seen, w.clock.now_ts()).await;
    assert_eq!(ids, vec![queued[0].id.to_string()]);
    assert!(w.store_outbox(order).await[0].delivered_at.is_some());
}

#[tokio::test]
async fn a_crash_after_sending_but_before_marking_resends_the_same_id() {
    let server = MockServer::start().await;
    answer(&server, 200).await;
    let w = World::new();
    let hooks = notifier(&server, Some(w.clock.clone()));
    let a = w.provisioner("worker-a", Arc::new(hooks.clone()));
    let order = w.paid_order(&a, customer()).await;

    // Process A's relay claims the row and sends it, then dies before marking it delivered.
    let now = nemordp_core::Clock::now(&w.clock);
    let claimed = w
        .store
        .claim_outbox(10, Duration::from_secs(60), now)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let entry = &claimed[0];
    let n = Notification::new(entry.id, entry.order_id, customer(), entry.kind.clone());
    hooks.send(&n).await.unwrap();
    let mut seen = 0;
    receive(&server, &mut seen, w.clock.now_ts()).await;
    drop(a);

    // Process B: the lease still holds, so nothing is sent; once it lapses the row goes out
    // again under the same webhook-id.
    let b = w.provisioner("worker-b", Arc::new(hooks));
    assert_eq!(b.relay_outbox_once().await.unwrap(), 0);
    w.clock.advance(Duration::from_secs(61));
    assert_eq!(b.relay_outbox_once().await.unwrap(), 1);
    receive(&server, &mut seen, w.clock.now_ts()).await;
    w.clock.advance(Duration::from_secs(120));
    assert_eq!(b.relay_outbox_once().await.unwrap(), 0);
    let ids = receive(&server, &mut seen, w.clock.now_ts()).await;
    assert_eq!(
        ids.len(),
        2,
        "at least once: the copy whose receipt was lost is resent"
    );
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(
        distinct.len(),
        1,
        "exactly once for a receiver deduping on webhook-id"
    );
    assert_eq!(ids[0], entry.id.to_string());
    let stored = w.store_outbox(order).await;
    assert!(stored[0].delivered_at.is_some());
    assert_eq!(stored[0].attempts, 2);
}

#[tokio::test]
async fn a_notification_that_keeps_failing_ends_failed_with_its_history() {
    let server = MockServer::start().await;
    answer(&server, 503).await;
    let w = World::new();
    let hooks = WebhookNotifier::builder()
        .url(server.uri())
        .secret(secret())
        .retry(RetryPolicy::new(1, Duration::ZERO, Duration::ZERO))
        .clock(Arc::new(w.clock.clone()))
        .build()
        .unwrap();
    let p = w.provisioner("worker", Arc::new(hooks));
    let order = w.paid_order(&p, customer()).await;
    // The receiver is down for days: the relay backs off (5 s doubling, capped at an hour)
    // and gives up after the 72 h deadline.
    let mut rounds = 0;
    loop {
        p.relay_outbox_once().await.unwrap();
        let entry = &w.store_outbox(order).await[0];
        if entry.failed_at.is_some() {
            break;
        }
        rounds += 1;
        assert!(rounds < 10_000, "never gave up");
        w.clock.advance(Duration::from_secs(60));
    }
    let entry = &w.store_outbox(order).await[0];
    assert!(entry.delivered_at.is_none());
    let requests = server.received_requests().await.unwrap().len();
    assert_eq!(
        entry.history.len(),
        requests.min(64),
        "one history line per attempt"
    );
    assert!(
        (70..=90).contains(&requests),
        "backoff capped at an hour over 72 h gives ~80 attempts, got {requests}"
    );
    assert!(entry.history.iter().all(|h| h.error.contains("HTTP 503")));
    assert_eq!(w.store.failed_outbox(None, 0).await.unwrap().len(), 1);
    // Failed rows are never claimed again...
    w.clock.advance(Duration::from_secs(24 * 3600));
    p.relay_outbox_once().await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), requests);

    // ...until an operator requeues one after fixing the receiver.
    server.reset().await;
    answer(&server, 200).await;
    w.store
        .requeue_outbox(entry.id, nemordp_core::Clock::now(&w.clock))
        .await
        .unwrap();
    assert_eq!(p.relay_outbox_once().await.unwrap(), 1);
    let entry = &w.store_outbox(order).await[0];
    assert!(entry.delivered_at.is_some() && entry.failed_at.is_none());
}

#[tokio::test]
async fn a_refused_notification_fails_at_once() {
    let server = MockServer::start().await;
    answer(&server, 422).await;
    let w = World::new();
    let p = w.provisioner("worker", Arc::new(notifier(&server, Some(w.clock.clone()))));
    let order = w.paid_order(&p, customer()).await;
    p.relay_outbox_once().await.unwrap();
    let entry = &w.store_outbox(order).await[0];
    assert!(entry.failed_at.is_some(), "{entry:?}");
    assert_eq!(entry.history.len(), 1);
    assert!(
        entry.history[0].error.contains("HTTP 422"),
        "{:?}",
        entry.history
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn each_orders_notifications_arrive_in_order_while_orders_go_out_together() {
    let server = MockServer::start().await;
    answer(&server, 200).await;
    let w = World::new();
    let p = w.provisioner("worker", Arc::new(notifier(&server, Some(w.clock.clone()))));
    let now = w.clock.now_ts();
    let mut batch = nemordp_core::store::Batch::new();
    let mut expected = Vec::new();
    for _ in 0..12 {
        let order = p.place_order(&"win".into(), customer()).await.unwrap();
        let kinds = [
            NotificationKind::ProvisioningStarted,
            NotificationKind::Suspended {
                reason: "abuse report".into(),
            },
            NotificationKind::Terminated,
        ];
        for (i, kind) in kinds.into_iter().enumerate() {
            let created = now.saturating_add(Duration::from_millis(u64::try_from(i).unwrap()));
            let entry = nemordp_core::store::OutboxEntry::new(order.id, kind, created);
            expected.push((order.id.to_string(), entry.id.to_string()));
            batch = batch.notify(entry);
        }
    }
    w.store.commit(batch, now).await.unwrap();
    w.clock.advance(Duration::from_secs(1));
    assert_eq!(p.relay_outbox_once().await.unwrap(), 36);
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 36);
    for (order, _) in expected.iter().step_by(3) {
        let sent: Vec<String> = reqs
            .iter()
            .filter_map(|r| {
                let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                (body["data"]["order_id"] == order.as_str())
                    .then(|| header(r, HEADER_ID).to_owned())
            })
            .collect();
        let queued: Vec<String> = expected
            .iter()
            .filter(|(o, _)| o == order)
            .map(|(_, id)| id.clone())
            .collect();
        assert_eq!(sent, queued, "order {order}: notifications out of order");
    }
}
