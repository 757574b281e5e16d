//! [`SmtpNotifier`]: customer e-mail over SMTP (lettre, tokio, rustls) with a plain-text and
//! an HTML part from [`Templates`], and the `.rdp` file attached to the "ready" message.
//!
//! The server is one URL, kept as a secret because it holds the password:
//!
//! | URL | transport |
//! |---|---|
//! | `smtp://user:pass@host` | STARTTLS, required (port 587 unless given) |
//! | `smtps://user:pass@host` | implicit TLS (port 465 unless given) |
//! | `smtp://host?tls=opportunistic` | STARTTLS if offered, else plain |
//! | `smtp://host:25?tls=none` | plain text (only for a relay on the same machine) |
//!
//! User and password are percent-decoded. Every message gets `Message-ID:
//! <notification-id@sender-domain>`, so a resend after a crash carries the same id and mail
//! clients and archives fold the copies.
//!
//! ```no_run
//! # fn demo() -> nemordp_core::Result<()> {
//! use nemordp_notify::smtp::SmtpNotifier;
//!
//! // SMTP_URL=smtps://mailer:secret@mail.example.com SMTP_FROM="Example <noreply@example.com>"
//! let notifier = SmtpNotifier::from_env()?;
//! # let _ = notifier; Ok(()) }
//! ```

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{
        Attachment, Mailbox, MultiPart,
        header::{ContentType, HeaderName, HeaderValue},
    },
    transport::smtp::{
        PoolConfig,
        authentication::Credentials,
        client::{Certificate, Tls, TlsParameters},
    },
};
use nemordp_core::{
    Error, ErrorKind, Result,
    notify::{Delivery, Notification, Notifier},
    secrecy::{ExposeSecret, SecretString},
};

use crate::template::{RenderedMessage, Templates, rdp_file_name};

const BACKEND: &str = "smtp";

/// How the connection to the server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS; refuses servers that do not offer it.
    StartTls,
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS when offered, plain otherwise.
    Opportunistic,
    /// No TLS at all.
    None,
}

fn config_err(message: impl Into<String>) -> Error {
    Error::invalid_config(message).with_backend(BACKEND)
}

/// Where and how to connect, parsed from `SMTP_URL` (credentials kept apart, as secrets).
struct Endpoint {
    host: String,
    port: u16,
    security: SmtpSecurity,
    username: Option<String>,
    password: Option<SecretString>,
}

fn decode(part: &str, what: &str) -> Result<String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| config_err(format!("SMTP URL {what} is not valid UTF-8")))
}

fn parse_endpoint(url: &SecretString) -> Result<Endpoint> {
    // Errors never repeat the URL: it holds the password.
    let url = url::Url::parse(url.expose_secret())
        .map_err(|e| config_err(format!("SMTP URL does not parse ({e})")))?;
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| config_err("SMTP URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let security = match (url.scheme(), tls.as_deref()) {
        ("smtps", None | Some("implicit" | "wrapper")) => SmtpSecurity::Implicit,
        ("smtp", None | Some("required" | "starttls")) => SmtpSecurity::StartTls,
        ("smtp", Some("opportunistic")) => SmtpSecurity::Opportunistic,
        ("smtp", Some("none")) => SmtpSecurity::None,
        ("smtp" | "smtps", Some(other)) => {
            return Err(config_err(format!(
                "SMTP URL tls={other:?} is not one of required, opportunistic, none"
            )));
        }
        (scheme, _) => {
            return Err(config_err(format!(
                "SMTP URL scheme {scheme:?} is not smtp or smtps"
            )));
        }
    };
    let port = url.port().unwrap_or(match security {
        SmtpSecurity::Implicit => 465,
        SmtpSecurity::StartTls => 587,
        SmtpSecurity::Opportunistic | SmtpSecurity::None => 25,
    });
    let username = (!url.username().is_empty())
        .then(|| decode(url.username(), "user"))
        .transpose()?;
    let password = url
        .password()
        .map(|p| decode(p, "password").map(SecretString::from))
        .transpose()?;
    Ok(Endpoint {
        host,
        port,
        security,
        username,
        password,
    })
}

fn parse_mailbox(value: &str, what: &str) -> Result<Mailbox> {
    value
        .parse::<Mailbox>()
        .map_err(|e| config_err(format!("{what} {value:?} is not an e-mail address ({e})")))
}

/// Builds an [`SmtpNotifier`].
#[derive(Default)]
pub struct SmtpNotifierBuilder {
    url: Option<SecretString>,
    from: Option<String>,
    reply_to: Option<String>,
    templates: Option<Templates>,
    templates_dir: Option<PathBuf>,
    root_certificates: Vec<Vec<u8>>,
    timeout: Option<Duration>,
    pool_max: Option<u32>,
}

impl fmt::Debug for SmtpNotifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifierBuilder")
            .field("url", &self.url.as_ref().map(|_| "[REDACTED]"))
            .field("from", &self.from)
            .field("reply_to", &self.reply_to)
            .field("extra_roots", &self.root_certificates.len())
            .finish_non_exhaustive()
    }
}

impl SmtpNotifierBuilder {
    /// The server URL (see the module docs); it may hold the password.
    #[must_use]
    pub fn url(mut self, url: SecretString) -> Self {
        self.url = Some(url);
        self
    }

    /// The sender, e.g. `Example Cloud <noreply@example.com>`.
    #[must_use]
    pub fn from(mut self, from: impl Into<String>) -> Self {
        self.from = Some(from.into());
        self
    }

    /// A `Reply-To` address (e.g. support).
    #[must_use]
    pub fn reply_to(mut self, reply_to: impl Into<String>) -> Self {
        self.reply_to = Some(reply_to.into());
        self
    }

    /// The templates (default: [`Templates::new`]).
    #[must_use]
    pub fn templates(mut self, templates: Templates) -> Self {
        self.templates = Some(templates);
        self
    }

    /// Overrides templates from files in `dir` (see [`Templates::with_dir`]).
    #[must_use]
    pub fn templates_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.templates_dir = Some(dir.into());
        self
    }

    /// Trusts an extra root certificate (PEM) besides the public web roots: a private CA or a
    /// test server's self-signed certificate.
    #[must_use]
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates.push(pem.into());
        self
    }

    /// Timeout of each SMTP command (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Most connections kept open to the server (default 4).
    #[must_use]
    pub fn pool_max(mut self, connections: u32) -> Self {
        self.pool_max = Some(connections);
        self
    }

    /// Reads `SMTP_URL` (required, a secret), `SMTP_FROM` (required), `SMTP_REPLY_TO`,
    /// `SMTP_TEMPLATES_DIR` and `SMTP_TIMEOUT_SECS`.
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let url = var("SMTP_URL").ok_or_else(|| config_err("SMTP_URL is not set"))?;
        let from = var("SMTP_FROM").ok_or_else(|| config_err("SMTP_FROM is not set"))?;
        let mut b = Self::default().url(SecretString::from(url)).from(from);
        if let Some(reply_to) = var("SMTP_REPLY_TO") {
            b = b.reply_to(reply_to);
        }
        if let Some(dir) = var("SMTP_TEMPLATES_DIR") {
            b = b.templates_dir(dir);
        }
        if let Some(secs) = var("SMTP_TIMEOUT_SECS") {
            let secs: u64 = secs
                .trim()
                .parse()
                .map_err(|_| config_err(format!("SMTP_TIMEOUT_SECS {secs:?} is not a number")))?;
            b = b.timeout(Duration::from_secs(secs));
        }
        Ok(b)
    }

    /// Checks the configuration and builds the notifier (no connection is made yet). Must run
    /// inside a Tokio runtime (the connection pool lives on it).
    pub fn build(self) -> Result<SmtpNotifier> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(config_err(
                "build the SMTP notifier inside a Tokio runtime (its pool runs there)",
            ));
        }
        let url = self.url.ok_or_else(|| config_err("SMTP URL is not set"))?;
        let endpoint = parse_endpoint(&url)?;
        let from = parse_mailbox(
            self.from
                .as_deref()
                .ok_or_else(|| config_err("SMTP sender (from) is not set"))?,
            "sender",
        )?;
        let reply_to = self
            .reply_to
            .as_deref()
            .map(|r| parse_mailbox(r, "reply-to"))
            .transpose()?;
        let mut templates = self.templates.unwrap_or_default();
        if let Some(dir) = &self.templates_dir {
            templates = templates.with_dir(dir)?;
        }
        let tls = if endpoint.security == SmtpSecurity::None {
            Tls::None
        } else {
            let mut params = TlsParameters::builder(endpoint.host.clone());
            for pem in &self.root_certificates {
                let cert = Certificate::from_pem(pem)
                    .map_err(|e| config_err(format!("extra root certificate: {e}")))?;
                params = params.add_root_certificate(cert);
            }
            let params = params
                .build_rustls()
                .map_err(|e| config_err(format!("TLS setup for the SMTP server: {e}")))?;
            match endpoint.security {
                SmtpSecurity::Implicit => Tls::Wrapper(params),
                SmtpSecurity::Opportunistic => Tls::Opportunistic(params),
                _ => Tls::Required(params),
            }
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&endpoint.host)
            .port(endpoint.port)
            .tls(tls)
            .timeout(Some(self.timeout.unwrap_or(Duration::from_secs(30))))
            .pool_config(
                PoolConfig::new()
                    .max_size(self.pool_max.unwrap_or(4).max(1))
                    .idle_timeout(Duration::from_secs(60)),
            );
        match (endpoint.username, endpoint.password) {
            (Some(user), Some(password)) => {
                transport = transport
                    .credentials(Credentials::new(user, password.expose_secret().to_owned()));
            }
            (None, None) => {}
            _ => {
                return Err(config_err(
                    "SMTP URL must give both user and password, or neither",
                ));
            }
        }
        let domain = from.email.domain().to_owned();
        Ok(SmtpNotifier {
            transport: transport.build(),
            composer: Composer {
                from,
                reply_to,
                templates: Arc::new(templates),
                message_id_domain: domain,
            },
            endpoint: format!("{}:{}", endpoint.host, endpoint.port),
            security: endpoint.security,
        })
    }
}

/// Turns notifications into complete e-mail messages (shared by [`SmtpNotifier`] and
/// [`EmlDirNotifier`]).
#[derive(Clone)]
struct Composer {
    from: Mailbox,
    reply_to: Option<Mailbox>,
    templates: Arc<Templates>,
    message_id_domain: String,
}

impl Composer {
    fn compose(&self, n: &Notification) -> Result<Message> {
        let reject = |message: String| {
            Error::new(ErrorKind::Rejected, message)
                .with_backend(BACKEND)
                .with_operation("compose")
        };
        let email =
            n.customer.email.as_deref().ok_or_else(|| {
                reject(format!("customer {} has no e-mail address", n.customer.id))
            })?;
        let to: Mailbox = email.parse().map_err(|_| {
            reject(format!(
                "customer {} has an invalid e-mail address",
                n.customer.id
            ))
        })?;
        let RenderedMessage {
            subject,
            text,
            html,
            ..
        } = self.templates.render(n)?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(message_id(n, &self.message_id_domain)))
            .date_now()
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let body = MultiPart::alternative_plain_html(text, html);
        let built = match &n.connection {
            Some(c) => {
                let rdp_type = ContentType::parse("application/x-rdp")
                    .map_err(|e| Error::new(ErrorKind::Unexpected, format!("rdp mime: {e}")))?;
                let attachment = Attachment::new(rdp_file_name(n))
                    .body(c.rdp_file.clone().into_bytes(), rdp_type);
                builder.multipart(MultiPart::mixed().multipart(body).singlepart(attachment))
            }
            None => builder.multipart(body),
        };
        built.map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("cannot build the e-mail: {e}"),
            )
            .with_backend(BACKEND)
            .with_operation("compose")
        })
    }
}

/// The `Message-ID` of a notification's e-mail: stable per outbox row.
pub fn message_id(n: &Notification, domain: &str) -> String {
    format!("<{}@{}>", n.id, domain)
}

/// Sends notifications as e-mail over SMTP. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    composer: Composer,
    endpoint: String,
    security: SmtpSecurity,
}

impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("endpoint", &self.endpoint)
            .field("security", &self.security)
            .field("from", &self.composer.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpNotifier {
    /// A builder.
    pub fn builder() -> SmtpNotifierBuilder {
        SmtpNotifierBuilder::default()
    }

    /// [`SmtpNotifierBuilder::from_env`] then build.
    pub fn from_env() -> Result<Self> {
        SmtpNotifierBuilder::from_env()?.build()
    }

    /// How the connection is secured.
    pub fn security(&self) -> SmtpSecurity {
        self.security
    }

    /// The complete message this notifier would send (RFC 5322 bytes). Contains the password
    /// for a "ready" notification.
    pub fn compose(&self, n: &Notification) -> Result<Vec<u8>> {
        Ok(self.composer.compose(n)?.formatted())
    }

    /// Opens a connection and checks the server answers (and accepts the credentials).
    pub async fn check_connection(&self) -> Result<()> {
        match self.transport.test_connection().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::unavailable(format!(
                "SMTP server {} did not answer",
                self.endpoint
            ))
            .with_backend(BACKEND)
            .with_operation("check_connection")),
            Err(e) => Err(map_smtp_error(e, "check_connection")),
        }
    }
}

/// Maps a lettre error. 5xx refusals are `Rejected` (the relay gives up on them), except
/// authentication failures (`Unauthenticated`: a configuration problem, retried until the
/// outbox deadline so fixing the password sends the mail); 4xx, timeouts, TLS and connection
/// failures are `Unavailable`.
fn map_smtp_error(e: lettre::transport::smtp::Error, operation: &'static str) -> Error {
    let code = e.status().map(u16::from);
    let kind = match code {
        Some(530 | 534 | 535 | 538) => ErrorKind::Unauthenticated,
        Some(c) if c >= 500 => ErrorKind::Rejected,
        Some(421) => ErrorKind::RateLimited,
        _ => ErrorKind::Unavailable,
    };
    let message = match code {
        Some(c) => format!("SMTP server answered {c}: {e}"),
        None => format!("SMTP: {e}"),
    };
    Error::new(kind, message)
        .with_backend(BACKEND)
        .with_operation(operation)
        .with_source(e)
}

#[async_trait]
impl Notifier for SmtpNotifier {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn send(&self, notification: &Notification) -> Result<Delivery> {
        let message = self.composer.compose(notification)?;
        let response = self
            .transport
            .send(message)
            .await
            .map_err(|e| map_smtp_error(e, "send"))?;
        let receipt = format!(
            "{} {}",
            u16::from(response.code()),
            response.message().collect::<Vec<_>>().join(" ")
        );
        tracing::debug!(
            notification_id = %notification.id,
            kind = notification.kind.as_str(),
            receipt = %receipt,
            "e-mail accepted by the SMTP server"
        );
        Ok(Delivery::new(BACKEND, Some(receipt)))
    }
}

/// Writes each notification as a complete e-mail, `<notification id>.eml`, into a folder:
/// what [`SmtpNotifier`] would send, for demos and for checking templates without a mail
/// server. A repeat overwrites the same file. The file of a "ready" message holds the
/// password; on Unix files are created readable by the owner only.
#[derive(Clone)]
pub struct EmlDirNotifier {
    dir: PathBuf,
    composer: Composer,
}

impl fmt::Debug for EmlDirNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmlDirNotifier")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl EmlDirNotifier {
    /// Writes into `dir` (created if missing) as `from`, with `templates`.
    pub fn new(dir: impl Into<PathBuf>, from: &str, templates: Templates) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)
            .map_err(|e| config_err(format!("cannot create {}", dir.display())).with_source(e))?;
        let from = parse_mailbox(from, "sender")?;
        let domain = from.email.domain().to_owned();
        Ok(Self {
            dir,
            composer: Composer {
                from,
                reply_to: None,
                templates: Arc::new(templates),
                message_id_domain: domain,
            },
        })
    }

    /// The folder written to.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl Notifier for EmlDirNotifier {
    fn name(&self) -> &'static str {
        "eml"
    }

    async fn send(&self, notification: &Notification) -> Result<Delivery> {
        let bytes = self.composer.compose(notification)?.formatted();
        let path = self.dir.join(format!("{}.eml", notification.id));
        let tmp = self.dir.join(format!(".{}.eml.tmp", notification.id));
        let written = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &written)
        })
        .await
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("writer task: {e}")))?
        .map_err(|e| {
            Error::unavailable(format!("cannot write {}", path.display()))
                .with_source(e)
                .with_backend("eml")
                .with_operation("send")
        })?;
        Ok(Delivery::new("eml", Some(path.display().to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Result<Endpoint> {
        parse_endpoint(&SecretString::from(url))
    }

    #[test]
    fn urls_choose_security_port_and_credentials() {
        let e = endpoint("smtp://us%40er:p%3Ass@mail.example.com").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.security),
            ("mail.example.com", 587, SmtpSecurity::StartTls)
        );
        assert_eq!(e.username.as_deref(), Some("us@er"));
        assert_eq!(e.password.unwrap().expose_secret(), "p:ss");
        let e = endpoint("smtps://mail.example.com").unwrap();
        assert_eq!((e.port, e.security), (465, SmtpSecurity::Implicit));
        assert!(e.username.is_none() && e.password.is_none());
        let e = endpoint("smtp://127.0.0.1:2525?tls=none").unwrap();
        assert_eq!((e.port, e.security), (2525, SmtpSecurity::None));
        let e = endpoint("smtp://[::1]:25?tls=opportunistic").unwrap();
        assert_eq!(
            (e.host.as_str(), e.security),
            ("::1", SmtpSecurity::Opportunistic)
        );
    }

    #[tokio::test]
    async fn bad_urls_are_config_errors_without_the_password() {
        for url in [
            "http://u:hunter2@mail.example.com",
            "smtp://u:hunter2@mail.example.com?tls=maybe",
            "smtp://u:hunter2@",
            "not a url hunter2",
        ] {
            let e = endpoint(url).err().unwrap();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{url}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        let e = SmtpNotifier::builder()
            .url(SecretString::from("smtp://u:hunter2@mail.example.com"))
            .from("not an address")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let e = SmtpNotifier::builder()
            .url(SecretString::from("smtp://u@mail.example.com"))
            .from("a@example.com")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("both user and password"), "{e}");
    }

    #[test]
    fn building_outside_a_runtime_is_a_config_error() {
        let e = SmtpNotifier::builder()
            .url(SecretString::from("smtps://mail.example.com"))
            .from("a@example.com")
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    }

    #[tokio::test]
    async fn debug_never_shows_the_url_password() {
        let b = SmtpNotifier::builder()
            .url(SecretString::from("smtps://u:hunter2@mail.example.com"))
            .from("Shop <noreply@example.com>");
        assert!(!format!("{b:?}").contains("hunter2"));
        let n = b.build().unwrap();
        let shown = format!("{n:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("mail.example.com:465"),
            "{shown}"
        );
    }
}
