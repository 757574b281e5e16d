//! A full run (order → payment → provisioning → ready) with the SMTP and webhook notifiers
//! behind the Provisioner's outbox relay, with failures on the way, while every tracing event
//! at TRACE level is captured: the machine password, the SMTP password, the webhook secret and
//! the sealing key never appear in the logs, the progress events or the errors; the password
//! does appear where it belongs, in the "ready" message body. In its own test binary: the
//! subscriber is thread-local (see nemordp-core/tests/provisioner_tracing.rs).

mod support;

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use mail_parser::MessageParser;
use nemordp_core::{
    Result, async_trait,
    notify::{Delivery, Notification, Notifier},
    secrecy::{ExposeSecret as _, SecretString},
};
use nemordp_notify::{
    smtp::SmtpNotifier,
    webhook::{RetryPolicy, WebhookNotifier, WebhookSecret},
};
use support::{
    SMTP_PASSWORD, SmtpSink, customer,
    world::{SEAL_KEY, World},
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The host's composition: e-mail to the customer, then a webhook to its own systems.
#[derive(Debug)]
struct Both(SmtpNotifier, WebhookNotifier);

#[async_trait]
impl Notifier for Both {
    fn name(&self) -> &'static str {
        "both"
    }

    async fn send(&self, n: &Notification) -> Result<Delivery> {
        self.0.send(n).await?;
        self.1.send(n).await
    }
}

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

#[test]
fn no_password_or_key_reaches_logs_events_or_errors() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let sink = SmtpSink::start("starttls").await?;
            let receiver = MockServer::start().await;
            // The host's endpoint is down at first: the relay logs failures and retries.
            Mock::given(matchers::method("POST"))
                .respond_with(ResponseTemplate::new(503))
                .up_to_n_times(2)
                .with_priority(1)
                .mount(&receiver)
                .await;
            Mock::given(matchers::method("POST"))
                .respond_with(ResponseTemplate::new(200))
                .mount(&receiver)
                .await;
            let w = World::new();
            let smtp = SmtpNotifier::builder()
                .url(sink.url("smtp", SMTP_PASSWORD))
                .from("noreply@cloud.example")
                .add_root_certificate_pem(sink.cert_pem.clone())
                .build()
                .unwrap();
            let hooks = WebhookNotifier::builder()
                .url(receiver.uri())
                .secret(WebhookSecret::parse(&SecretString::from(WEBHOOK_SECRET)).unwrap())
                .include_credentials(true)
                .retry(RetryPolicy::new(1, Duration::ZERO, Duration::ZERO))
                .clock(Arc::new(w.clock.clone()))
                .build()
                .unwrap();
            tracing::info!(?smtp, ?hooks, "notifiers configured");

            // A wrong SMTP password, logged the way a host would log it.
            let wrong = SmtpNotifier::builder()
                .url(sink.url("smtp", "wr0ng-Secret-pw"))
                .from("noreply@cloud.example")
                .add_root_certificate_pem(sink.cert_pem.clone())
                .build()
                .unwrap();
            let err = wrong.check_connection().await.unwrap_err();
            tracing::error!(error = %err, debug = ?err, "smtp check failed");

            let p = w.provisioner("worker", Arc::new(Both(smtp, hooks)));
            let mut progress = p.subscribe();
            let order = w.paid_order(&p, customer()).await;
            w.run_to_active(&p, order).await;
            let password = p.connection_details(order).await.unwrap().password;
            let mut events = Vec::new();
            while let Ok(Some(e)) =
                tokio::time::timeout(Duration::from_millis(10), progress.next()).await
            {
                events.push(format!("{e:?}"));
            }
            let outbox = format!("{:?}", w.store_outbox(order).await);
            let mails: Vec<Vec<u8>> = sink.wait_for(3).await.into_iter().map(|r| r.raw).collect();
            let hooks: Vec<Vec<u8>> = receiver
                .received_requests()
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.body)
                .collect();
            Some((password, events, outbox, mails, hooks))
        })
    });
    let Some((password, events, outbox, mails, hooks)) = outcome else {
        return;
    };
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let password = password.expose_secret().to_owned();

    // The run did what it should, so the searches below search something real.
    assert!(log.contains("notification failed; will retry"), "{log}");
    assert!(log.contains("HTTP 503"), "{log}");
    assert!(
        log.contains("535"),
        "the wrong-password error was logged: {log}"
    );
    assert!(!events.is_empty());
    let ready_mail = mails
        .iter()
        .map(|m| MessageParser::default().parse(m).unwrap())
        .find(|m| m.subject().is_some_and(|s| s.contains("ready")))
        .expect("a ready e-mail");
    assert!(ready_mail.body_text(0).unwrap().contains(&password));
    assert!(
        hooks
            .iter()
            .any(|b| String::from_utf8_lossy(b).contains(&password)),
        "the ready event carries the password when include_credentials is on"
    );
    // The webhook's 503s made the relay resend (at least once), so e-mails repeat with the
    // same Message-ID: payment received and provisioning started, plus ready.
    let ids: std::collections::HashSet<String> = mails
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(m)
                .unwrap()
                .message_id()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    for m in mails
        .iter()
        .filter(|m| !String::from_utf8_lossy(m).contains("machine is ready"))
    {
        assert!(!String::from_utf8_lossy(m).contains(&password));
    }

    let webhook_key = WEBHOOK_SECRET.trim_start_matches("whsec_");
    let secrets = [
        ("machine password", password.clone()),
        ("SMTP password", SMTP_PASSWORD.to_owned()),
        ("wrong SMTP password", "wr0ng-Secret-pw".to_owned()),
        ("webhook secret", webhook_key.to_owned()),
        ("sealing key (hex)", hex::encode(SEAL_KEY)),
        ("sealing key (base64)", B64.encode(SEAL_KEY)),
    ];
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{what} reached the logs");
        assert!(
            !events.iter().any(|e| e.contains(secret.as_str())),
            "{what} reached a progress event"
        );
        assert!(
            !outbox.contains(secret.as_str()),
            "{what} reached the outbox"
        );
    }
}
