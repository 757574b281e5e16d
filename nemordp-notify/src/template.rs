//! Message templates: a subject, a plain-text part and an HTML part per notification kind,
//! rendered with [minijinja](https://docs.rs/minijinja). The defaults live in the crate's
//! `templates/` folder; a host overrides any of them by name.
//!
//! Names are `<kind>.subject.txt`, `<kind>.txt` and `<kind>.html` for every kind in
//! [`KINDS`], plus `layout.html`, which the HTML parts extend. `.html` templates escape every
//! value automatically (customer ids, reasons and passwords included); `.txt` templates do not
//! need to. Subjects are folded to one line.
//!
//! Variables: `kind`, `notification_id`, `order_id`, `customer.id`, `customer.email`,
//! `amount` (payment received), `reason` (failed, suspended, renewal failed), `reason_code`
//! (failed: the [`AttentionCode`] in snake case), `connection`
//! (ready only: `host`, `port`, `username`, `password`, `rdp_file_name`) and the globals set
//! with [`Templates::with_global`] (`site_name` by default). Missing variables are errors, so a
//! typo in an override fails loudly instead of sending a blank.
//!
//! ```
//! use nemordp_notify::template::Templates;
//!
//! let templates = Templates::new()
//!     .with_global("site_name", "Example Cloud")
//!     .with_template("terminated.txt", "Bye {{ customer.id }}.")
//!     .unwrap();
//! assert!(templates.has("terminated.txt"));
//! ```

use std::{fmt, path::Path};

use minijinja::{Environment, UndefinedBehavior, Value};
use nemordp_core::{
    Error, ErrorKind, Result,
    notify::{Notification, NotificationKind},
    order::{AttentionCode, AttentionReason},
    secrecy::ExposeSecret,
};
use serde::Serialize;

/// Every notification kind a template set covers (as [`NotificationKind::as_str`]).
pub const KINDS: [&str; 7] = [
    "payment_received",
    "provisioning_started",
    "ready",
    "failed",
    "suspended",
    "terminated",
    "renewal_failed",
];

/// The built-in templates, by name.
const DEFAULTS: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    (
        "payment_received.subject.txt",
        include_str!("../templates/payment_received.subject.txt"),
    ),
    (
        "payment_received.txt",
        include_str!("../templates/payment_received.txt"),
    ),
    (
        "payment_received.html",
        include_str!("../templates/payment_received.html"),
    ),
    (
        "provisioning_started.subject.txt",
        include_str!("../templates/provisioning_started.subject.txt"),
    ),
    (
        "provisioning_started.txt",
        include_str!("../templates/provisioning_started.txt"),
    ),
    (
        "provisioning_started.html",
        include_str!("../templates/provisioning_started.html"),
    ),
    (
        "ready.subject.txt",
        include_str!("../templates/ready.subject.txt"),
    ),
    ("ready.txt", include_str!("../templates/ready.txt")),
    ("ready.html", include_str!("../templates/ready.html")),
    (
        "failed.subject.txt",
        include_str!("../templates/failed.subject.txt"),
    ),
    ("failed.txt", include_str!("../templates/failed.txt")),
    ("failed.html", include_str!("../templates/failed.html")),
    (
        "suspended.subject.txt",
        include_str!("../templates/suspended.subject.txt"),
    ),
    ("suspended.txt", include_str!("../templates/suspended.txt")),
    (
        "suspended.html",
        include_str!("../templates/suspended.html"),
    ),
    (
        "terminated.subject.txt",
        include_str!("../templates/terminated.subject.txt"),
    ),
    (
        "terminated.txt",
        include_str!("../templates/terminated.txt"),
    ),
    (
        "terminated.html",
        include_str!("../templates/terminated.html"),
    ),
    (
        "renewal_failed.subject.txt",
        include_str!("../templates/renewal_failed.subject.txt"),
    ),
    (
        "renewal_failed.txt",
        include_str!("../templates/renewal_failed.txt"),
    ),
    (
        "renewal_failed.html",
        include_str!("../templates/renewal_failed.html"),
    ),
];

/// Longest subject kept (characters); longer ones are cut.
const MAX_SUBJECT_CHARS: usize = 200;

/// A rendered message. `Debug` shows sizes only: the bodies of a `ready` message hold the
/// machine's password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenderedMessage {
    /// One-line subject.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

impl fmt::Debug for RenderedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderedMessage")
            .field("subject", &self.subject)
            .field("text", &format_args!("<{} bytes>", self.text.len()))
            .field("html", &format_args!("<{} bytes>", self.html.len()))
            .finish()
    }
}

/// A set of message templates (defaults plus the host's overrides).
#[derive(Clone)]
pub struct Templates {
    env: Environment<'static>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("templates", &self.env.templates().count())
            .finish_non_exhaustive()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

fn template_error(what: &str, e: &minijinja::Error) -> Error {
    // minijinja's message names the template and line, never the rendered values.
    Error::new(ErrorKind::InvalidConfig, format!("{what}: {e}"))
        .with_backend("template")
        .with_operation("render")
}

impl Templates {
    /// The built-in templates, with `site_name` = "nemordp".
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, source) in DEFAULTS {
            // The built-ins are compiled in tests; a failure here is a bug in this crate.
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("built-in template {name} does not compile: {e}"));
        }
        env.add_global("site_name", Value::from("nemordp"));
        Self { env }
    }

    /// Replaces (or adds) the template `name`; `InvalidConfig` if it does not compile.
    pub fn with_template(mut self, name: &str, source: &str) -> Result<Self> {
        self.set(name, source)?;
        Ok(self)
    }

    /// Replaces (or adds) the template `name`; `InvalidConfig` if it does not compile.
    pub fn set(&mut self, name: &str, source: &str) -> Result<()> {
        self.env
            .add_template_owned(name.to_owned(), source.to_owned())
            .map_err(|e| template_error(&format!("template {name} does not compile"), &e))
    }

    /// Sets a global variable every template sees (e.g. `site_name`, `support_email`).
    #[must_use]
    pub fn with_global(mut self, name: &str, value: impl Serialize) -> Self {
        self.env
            .add_global(name.to_owned(), Value::from_serialize(value));
        self
    }

    /// Overrides every template found in `dir` whose file name is a template name (files
    /// with other names are ignored, so the folder can hold notes or assets).
    pub fn with_dir(mut self, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let io = |e: std::io::Error| {
            Error::invalid_config(format!("cannot read template folder {}", dir.display()))
                .with_source(e)
                .with_backend("template")
        };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if DEFAULTS.iter().any(|(known, _)| *known == name) {
                let source = std::fs::read_to_string(&path).map_err(io)?;
                self.set(name, &source)?;
            }
        }
        Ok(self)
    }

    /// True if a template of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// Renders the subject, text and HTML of `notification`.
    pub fn render(&self, notification: &Notification) -> Result<RenderedMessage> {
        let kind = notification.kind.as_str();
        let ctx = context(notification)?;
        let render = |suffix: &str| -> Result<String> {
            let name = format!("{kind}.{suffix}");
            self.env
                .get_template(&name)
                .and_then(|t| t.render(&ctx))
                .map_err(|e| template_error(&format!("cannot render {name}"), &e))
        };
        Ok(RenderedMessage {
            subject: one_line(&render("subject.txt")?),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// Folds whitespace (newlines included, so nothing can be smuggled into headers) and caps
/// the length.
fn one_line(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_SUBJECT_CHARS)
        .collect()
}

/// The name of the `.rdp` attachment of an order.
pub fn rdp_file_name(notification: &Notification) -> String {
    format!("nemordp-{}.rdp", notification.order_id)
}

#[derive(Serialize)]
struct CustomerCtx<'a> {
    id: &'a str,
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct ConnectionCtx<'a> {
    host: &'a str,
    port: u16,
    username: &'a str,
    password: &'a str,
    rdp_file_name: String,
}

#[derive(Serialize)]
struct Ctx<'a> {
    kind: &'static str,
    notification_id: String,
    order_id: String,
    customer: CustomerCtx<'a>,
    amount: Option<String>,
    reason: Option<String>,
    reason_code: Option<Value>,
    connection: Option<ConnectionCtx<'a>>,
}

/// What the customer is told about a needs-attention reason (the operator's message may hold
/// provider internals, so it is not shown).
fn customer_reason(reason: &AttentionReason) -> &'static str {
    match reason.code {
        AttentionCode::BootDeadline => "the machine did not start in time",
        AttentionCode::ProviderOutage => "our cloud provider was unavailable for too long",
        AttentionCode::ProviderRejected => "our cloud provider could not supply this plan",
        AttentionCode::ProviderAccount => "our cloud provider account needs attention",
        AttentionCode::PaidLate => "the payment arrived after the order expired",
        AttentionCode::PaymentReversed => "the payment was reversed",
        _ => "an unexpected problem",
    }
}

fn context(n: &Notification) -> Result<Value> {
    let (amount, reason, reason_code) = match &n.kind {
        NotificationKind::PaymentReceived { amount } => (Some(amount.to_string()), None, None),
        NotificationKind::Failed { reason } => (
            None,
            Some(customer_reason(reason).to_owned()),
            Some(Value::from_serialize(reason.code)),
        ),
        NotificationKind::Suspended { reason } | NotificationKind::RenewalFailed { reason } => {
            (None, Some(reason.clone()), None)
        }
        _ => (None, None, None),
    };
    let connection = match (&n.kind, &n.connection) {
        (NotificationKind::Ready, Some(c)) => Some(ConnectionCtx {
            host: &c.host,
            port: c.port,
            username: &c.username,
            // The only place the password leaves its SecretString: the ready message body.
            password: c.password.expose_secret(),
            rdp_file_name: rdp_file_name(n),
        }),
        (NotificationKind::Ready, None) => {
            return Err(Error::invalid_input(format!(
                "ready notification {} carries no connection details",
                n.id
            ))
            .with_backend("template")
            .with_operation("render"));
        }
        _ => None,
    };
    Ok(Value::from_serialize(Ctx {
        kind: n.kind.as_str(),
        notification_id: n.id.to_string(),
        order_id: n.order_id.to_string(),
        customer: CustomerCtx {
            id: &n.customer.id,
            email: n.customer.email.as_deref(),
        },
        amount,
        reason,
        reason_code,
        connection,
    }))
}

#[cfg(test)]
mod tests {
    use nemordp_core::{
        Asset, Money, NotificationId, OrderId, notify::ConnectionDetails, order::Customer,
        secrecy::SecretString,
    };

    use super::*;

    fn note(kind: NotificationKind) -> Notification {
        let mut customer = Customer::new("<script>alert('x')</script>");
        customer.email = Some("buyer@example.com".into());
        Notification::new(NotificationId::new(), OrderId::new(), customer, kind)
    }

    fn ready() -> Notification {
        note(NotificationKind::Ready).with_connection(ConnectionDetails::new(
            "203.0.113.7",
            3389,
            "Administrator",
            SecretString::from("p<w>&\"d"),
            "full address:s:203.0.113.7:3389\r\n",
        ))
    }

    #[test]
    fn every_kind_renders_with_the_defaults() {
        let t = Templates::new();
        let kinds = [
            NotificationKind::PaymentReceived {
                amount: Money::from_minor(Asset::Usdt, 1_500_000_u64),
            },
            NotificationKind::ProvisioningStarted,
            NotificationKind::Failed {
                reason: AttentionReason::new(AttentionCode::BootDeadline, "probe timed out"),
            },
            NotificationKind::Suspended {
                reason: "unpaid".into(),
            },
            NotificationKind::Terminated,
            NotificationKind::RenewalFailed {
                reason: "card declined".into(),
            },
        ];
        assert_eq!(kinds.len() + 1, KINDS.len());
        for kind in kinds {
            let m = t.render(&note(kind.clone())).unwrap();
            assert!(
                !m.subject.is_empty() && !m.subject.contains('\n'),
                "{kind:?}"
            );
            assert!(m.text.contains("order "), "{kind:?}: {}", m.text);
            assert!(m.html.starts_with("<!DOCTYPE html>"), "{kind:?}");
            assert!(
                !m.text.contains("p<w>") && !m.html.contains("Password"),
                "{kind:?}"
            );
        }
        let m = t.render(&ready()).unwrap();
        assert!(m.text.contains("Password: p<w>&\"d"), "{}", m.text);
        assert!(m.html.contains("p&lt;w&gt;&amp;&quot;d"), "{}", m.html);
        assert!(m.text.contains("203.0.113.7:3389") && m.text.contains(".rdp"));
        let paid = t
            .render(&note(NotificationKind::PaymentReceived {
                amount: Money::from_minor(Asset::Usdt, 1_500_000_u64),
            }))
            .unwrap();
        assert!(paid.text.contains("1.500000 USDT"), "{}", paid.text);
    }

    #[test]
    fn customer_data_is_escaped_in_html() {
        let m = Templates::new()
            .render(&note(NotificationKind::Suspended {
                reason: "<img src=x onerror=alert(1)>".into(),
            }))
            .unwrap();
        assert!(
            !m.html.contains("<script>") && !m.html.contains("<img"),
            "{}",
            m.html
        );
        assert!(m.html.contains("&lt;script&gt;") && m.html.contains("&lt;img src=x"));
        assert!(m.text.contains("<img src=x"), "plain text is not escaped");
    }

    #[test]
    fn overrides_globals_and_subject_folding() {
        let t = Templates::new()
            .with_global("site_name", "Ex & Co")
            .with_template(
                "terminated.subject.txt",
                "Bye\r\nBcc: evil@example.com {{ site_name }}",
            )
            .unwrap()
            .with_template(
                "terminated.html",
                "<p>{{ site_name }} {{ customer.id }}</p>",
            )
            .unwrap();
        let m = t.render(&note(NotificationKind::Terminated)).unwrap();
        assert_eq!(m.subject, "Bye Bcc: evil@example.com Ex & Co");
        assert_eq!(
            m.html,
            "<p>Ex &amp; Co &lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt;</p>"
        );
        let e = Templates::new()
            .with_template("ready.txt", "{% if %}")
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let strict = Templates::new()
            .with_template("terminated.txt", "{{ no_such_thing }}")
            .unwrap();
        let e = strict
            .render(&note(NotificationKind::Terminated))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let e = Templates::new()
            .render(&note(NotificationKind::Ready))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn overrides_from_a_folder() {
        let dir = std::env::temp_dir().join(format!("nemordp-tpl-{}", NotificationId::new()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("terminated.txt"), "gone: {{ order_id }}").unwrap();
        std::fs::write(dir.join("notes.md"), "ignored {{").unwrap();
        let t = Templates::new().with_dir(&dir).unwrap();
        let n = note(NotificationKind::Terminated);
        assert_eq!(t.render(&n).unwrap().text, format!("gone: {}", n.order_id));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_hides_bodies() {
        let m = Templates::new().render(&ready()).unwrap();
        assert!(!format!("{m:?}").contains("p<w>"));
    }
}
