//! `SmtpNotifier` against a real SMTP server (aiosmtpd) on 127.0.0.1: STARTTLS with a
//! certificate made at test time, AUTH, the received MIME (headers, both parts, the `.rdp`
//! attachment), implicit TLS, a wrong password and an untrusted certificate.

mod support;

use mail_parser::{MessageParser, MimeHeaders as _};
use nemordp_core::{
    Asset, ErrorKind, Money, NotificationId, OrderId,
    notify::{Notification, NotificationKind, Notifier},
    order::{AttentionCode, AttentionReason},
    rdp::RdpFile,
};
use nemordp_notify::{
    smtp::{SmtpNotifier, SmtpSecurity},
    template::Templates,
};
use support::{MACHINE_PASSWORD, SMTP_PASSWORD, SMTP_USER, SmtpSink, customer, ready_notification};

fn notifier(sink: &SmtpSink, scheme: &str, password: &str) -> SmtpNotifier {
    SmtpNotifier::builder()
        .url(sink.url(scheme, password))
        .from("Example Cloud <noreply@cloud.example>")
        .reply_to("support@cloud.example")
        .add_root_certificate_pem(sink.cert_pem.clone())
        .templates(Templates::new().with_global("site_name", "Example Cloud"))
        .build()
        .unwrap()
}

#[tokio::test]
async fn starttls_auth_and_the_ready_message_with_its_rdp_attachment() {
    let Some(sink) = SmtpSink::start("starttls").await else {
        return;
    };
    let smtp = notifier(&sink, "smtp", SMTP_PASSWORD);
    assert_eq!(smtp.security(), SmtpSecurity::StartTls);
    smtp.check_connection().await.unwrap();
    let ready = ready_notification();
    let delivery = smtp.send(&ready).await.unwrap();
    assert_eq!(delivery.channel, "smtp");
    assert!(
        delivery
            .receipt
            .as_deref()
            .unwrap()
            .starts_with("250 OK queued as sink-"),
        "{delivery:?}"
    );

    let got = sink.wait_for(1).await;
    let meta = &got[0].meta;
    assert_eq!(
        meta["starttls"], true,
        "the session must have used STARTTLS"
    );
    assert_eq!(meta["authenticated_as"], SMTP_USER);
    assert_eq!(meta["mail_from"], "noreply@cloud.example");
    assert_eq!(meta["rcpt_tos"], serde_json::json!(["buyer@example.com"]));

    let msg = MessageParser::default().parse(&got[0].raw).unwrap();
    assert_eq!(
        msg.from().unwrap().first().unwrap().address(),
        Some("noreply@cloud.example")
    );
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("buyer@example.com")
    );
    assert_eq!(
        msg.reply_to().unwrap().first().unwrap().address(),
        Some("support@cloud.example")
    );
    assert_eq!(msg.subject(), Some("Example Cloud: your machine is ready"));
    assert_eq!(
        msg.message_id(),
        Some(format!("{}@cloud.example", ready.id).as_str()),
        "Message-ID derives from the outbox row id"
    );
    assert!(msg.date().is_some());
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-generated")
    );

    // Both parts, with the password in each and customer data escaped in the HTML.
    assert_eq!((msg.text_body_count(), msg.html_body_count()), (1, 1));
    let text = msg.body_text(0).unwrap();
    assert!(
        text.contains(&format!("Password: {MACHINE_PASSWORD}")),
        "{text}"
    );
    assert!(text.contains("203.0.113.7:3389") && text.contains("Administrator"));
    assert!(
        text.contains("cust-42 <b>bold</b>"),
        "plain text keeps the raw id"
    );
    let html = msg.body_html(0).unwrap();
    assert!(html.contains("Rdp&lt;&amp;&gt;Pw-93x!"), "{html}");
    assert!(
        html.contains("cust-42 &lt;b&gt;bold&lt;&#x2f;b&gt;"),
        "{html}"
    );
    assert!(!html.contains("<b>bold</b>"));

    // The attachment is the .rdp file, byte for byte, and reads as one.
    assert_eq!(msg.attachment_count(), 1);
    let att = msg.attachment(0).unwrap();
    assert_eq!(
        att.attachment_name(),
        Some(format!("nemordp-{}.rdp", ready.order_id).as_str())
    );
    let ct = att.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("application", Some("x-rdp")));
    let rdp = std::str::from_utf8(att.contents()).unwrap();
    assert_eq!(rdp, ready.connection.as_ref().unwrap().rdp_file);
    let settings = RdpFile::parse_settings(rdp);
    let get = |k: &str| {
        settings
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("full address"), Some("s:203.0.113.7:3389"));
    assert_eq!(get("username"), Some("s:Administrator"));
    assert!(
        !rdp.contains(MACHINE_PASSWORD),
        "the .rdp file never holds the password"
    );
}

#[tokio::test]
async fn every_other_kind_arrives_with_both_parts_and_no_credentials() {
    let Some(sink) = SmtpSink::start("starttls").await else {
        return;
    };
    let smtp = notifier(&sink, "smtp", SMTP_PASSWORD);
    let kinds = [
        NotificationKind::PaymentReceived {
            amount: Money::from_minor(Asset::Usdt, 12_500_000_u64),
        },
        NotificationKind::ProvisioningStarted,
        NotificationKind::Failed {
            reason: AttentionReason::new(AttentionCode::ProviderOutage, "vultr 503 for 6h"),
        },
        NotificationKind::Suspended {
            reason: "unpaid <renewal>".into(),
        },
        NotificationKind::Terminated,
        NotificationKind::RenewalFailed {
            reason: "card declined".into(),
        },
    ];
    let notes: Vec<Notification> = kinds
        .iter()
        .map(|k| Notification::new(NotificationId::new(), OrderId::new(), customer(), k.clone()))
        .collect();
    // Sent concurrently through the pool.
    let results = futures_join(&smtp, &notes).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let got = sink.wait_for(notes.len()).await;
    assert_eq!(got.len(), notes.len());
    let mut seen = Vec::new();
    for r in &got {
        let msg = MessageParser::default().parse(&r.raw).unwrap();
        assert_eq!(r.meta["starttls"], true);
        assert_eq!((msg.text_body_count(), msg.html_body_count()), (1, 1));
        assert_eq!(msg.attachment_count(), 0);
        let id = msg.message_id().unwrap().to_owned();
        let n = notes
            .iter()
            .find(|n| format!("{}@cloud.example", n.id) == id)
            .expect("a Message-ID of ours");
        let text = msg.body_text(0).unwrap();
        let html = msg.body_html(0).unwrap();
        assert!(text.contains(&n.order_id.to_string()), "{text}");
        assert!(!text.contains("Password") && !html.contains("Password"));
        match &n.kind {
            NotificationKind::PaymentReceived { .. } => assert!(text.contains("12.500000 USDT")),
            NotificationKind::Failed { .. } => {
                assert!(text.contains("What happens next"), "{text}");
                assert!(
                    !text.contains("vultr 503"),
                    "operator detail stays internal"
                );
            }
            NotificationKind::Suspended { .. } => {
                assert!(text.contains("unpaid <renewal>"));
                assert!(html.contains("unpaid &lt;renewal&gt;"), "{html}");
            }
            _ => {}
        }
        seen.push(n.kind.as_str());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            "failed",
            "payment_received",
            "provisioning_started",
            "renewal_failed",
            "suspended",
            "terminated"
        ]
    );
}

async fn futures_join(
    smtp: &SmtpNotifier,
    notes: &[Notification],
) -> Vec<nemordp_core::Result<nemordp_core::notify::Delivery>> {
    let mut set = tokio::task::JoinSet::new();
    for n in notes {
        let smtp = smtp.clone();
        let n = n.clone();
        set.spawn(async move { smtp.send(&n).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test]
async fn implicit_tls_delivers() {
    let Some(sink) = SmtpSink::start("implicit").await else {
        return;
    };
    let smtp = notifier(&sink, "smtps", SMTP_PASSWORD);
    assert_eq!(smtp.security(), SmtpSecurity::Implicit);
    smtp.send(&ready_notification()).await.unwrap();
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].meta["implicit_tls"], true);
    assert_eq!(got[0].meta["authenticated_as"], SMTP_USER);
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_nothing_is_delivered() {
    let Some(sink) = SmtpSink::start("starttls").await else {
        return;
    };
    let smtp = notifier(&sink, "smtp", "not-the-password");
    let err = smtp.send(&ready_notification()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(err.to_string().contains("535"), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
    assert!(!format!("{err:?}").contains("not-the-password"));
    let err = smtp.check_connection().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    // The right password still works against the same server, so the refusal was the password.
    notifier(&sink, "smtp", SMTP_PASSWORD)
        .send(&ready_notification())
        .await
        .unwrap();
    assert_eq!(sink.wait_for(1).await.len(), 1);
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused() {
    let Some(sink) = SmtpSink::start("starttls").await else {
        return;
    };
    let smtp = SmtpNotifier::builder()
        .url(sink.url("smtp", SMTP_PASSWORD))
        .from("noreply@cloud.example")
        .build()
        .unwrap();
    let err = smtp.send(&ready_notification()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(sink.received().is_empty());
}

#[tokio::test]
async fn a_customer_without_e_mail_is_rejected_before_connecting() {
    let Some(sink) = SmtpSink::start("starttls").await else {
        return;
    };
    let smtp = notifier(&sink, "smtp", SMTP_PASSWORD);
    let mut n = ready_notification();
    n.customer.email = None;
    assert_eq!(smtp.send(&n).await.unwrap_err().kind(), ErrorKind::Rejected);
    n.customer.email = Some("not an address".into());
    assert_eq!(smtp.send(&n).await.unwrap_err().kind(), ErrorKind::Rejected);
    assert!(sink.received().is_empty());
}
