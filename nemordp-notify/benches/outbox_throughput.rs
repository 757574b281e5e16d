//! Outbox throughput: how many queued notifications per second the Provisioner's relay
//! delivers through `SmtpNotifier` to a local SMTP server (aiosmtpd, STARTTLS + AUTH) and
//! through `WebhookNotifier` to a local HTTP receiver (wiremock), plus the cost of composing
//! one "ready" e-mail. Prints figures; `cargo bench -p nemordp-notify --all-features --bench
//! outbox_throughput`. The relay delivers one row at a time, so these are per-relay figures.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use nemordp_core::{
    Notifier, Store as _, StoreExt as _,
    notify::NotificationKind,
    store::{Batch, OutboxEntry},
};
use nemordp_notify::{
    smtp::SmtpNotifier,
    webhook::{WebhookNotifier, WebhookSecret},
};
use support::{SMTP_PASSWORD, SmtpSink, customer, ready_notification, world::World};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

/// Queues `n` notifications (one order each) and relays until all are delivered.
async fn relay_throughput(notifier: Arc<dyn Notifier>, n: usize) -> (usize, Duration) {
    let w = World::new();
    let p = w.provisioner("bench", notifier);
    let now = nemordp_core::Clock::now(&w.clock);
    let mut batch = Batch::new();
    for _ in 0..n {
        let order = p.place_order(&"win".into(), customer()).await.unwrap();
        batch = batch.notify(OutboxEntry::new(
            order.id,
            NotificationKind::ProvisioningStarted,
            now,
        ));
    }
    w.store.commit(batch, now).await.unwrap();
    let started = Instant::now();
    let mut delivered = 0;
    while delivered < n {
        let sent = p.relay_outbox_once().await.unwrap();
        assert!(sent > 0, "relay stalled at {delivered}/{n}");
        delivered += sent;
    }
    let elapsed = started.elapsed();
    let orders = w.store.all_orders_in(None).await.unwrap();
    assert_eq!(orders.len(), n);
    (delivered, elapsed)
}

// Figures for people: a few thousand fit an f64 exactly.
#[allow(clippy::cast_precision_loss)]
fn report(what: &str, n: usize, elapsed: Duration) {
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{what:<44} {n:>6} in {:>8.1} ms  = {rate:>8.0} /s  ({:.2} ms each)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e3 / n as f64
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("nemordp-notify outbox throughput (one relay, MemoryStore)");

        // Composing a "ready" e-mail: templates (text + HTML) and MIME with the .rdp file.
        let composer = SmtpNotifier::builder()
            .url(nemordp_core::secrecy::SecretString::from(
                "smtp://127.0.0.1:9?tls=none",
            ))
            .from("noreply@cloud.example")
            .build()
            .unwrap();
        let ready = ready_notification();
        let n = 5_000;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(composer.compose(&ready).unwrap());
        }
        report(
            "compose ready e-mail (templates + MIME)",
            n,
            started.elapsed(),
        );

        // Webhooks to a local receiver.
        let receiver = MockServer::start().await;
        Mock::given(matchers::method("POST"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&receiver)
            .await;
        let hooks = WebhookNotifier::builder()
            .url(receiver.uri())
            .secret(WebhookSecret::generate().0)
            .build()
            .unwrap();
        let (n, elapsed) = relay_throughput(Arc::new(hooks), 2_000).await;
        report("outbox -> webhook (wiremock, HTTP/1.1)", n, elapsed);
        assert_eq!(receiver.received_requests().await.unwrap().len(), n);

        // E-mail to a local SMTP server, STARTTLS + AUTH, pooled connections.
        match SmtpSink::start("starttls").await {
            Some(sink) => {
                let smtp = SmtpNotifier::builder()
                    .url(sink.url("smtp", SMTP_PASSWORD))
                    .from("noreply@cloud.example")
                    .add_root_certificate_pem(sink.cert_pem.clone())
                    .build()
                    .unwrap();
                let (n, elapsed) = relay_throughput(Arc::new(smtp), 500).await;
                report("outbox -> SMTP (aiosmtpd, STARTTLS + AUTH)", n, elapsed);
                assert_eq!(sink.wait_for(n).await.len(), n);
            }
            None => println!("outbox -> SMTP: skipped (aiosmtpd not installed)"),
        }
    });
}
