//! Signed webhooks for the host's own systems, per [Standard Webhooks] 1.0.
//!
//! [`WebhookNotifier`] POSTs one JSON event per notification with
//!
//! - `webhook-id`: the notification (outbox row) id, the same on every retry, so receivers
//!   dedupe on it;
//! - `webhook-timestamp`: Unix seconds of this attempt;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`.
//!
//! 2xx is success. 5xx, 408, 429 and network errors are retried with exponential backoff and
//! jitter (honouring `Retry-After`) a few times in-process, then handed back as retryable so
//! the outbox relay keeps trying for hours; any other status (410 included) is `Rejected` and
//! never retried. Redirects are not followed.
//!
//! Receivers check requests with [`WebhookVerifier`] (5-minute tolerance both ways, several
//! secrets for rotation):
//!
//! ```
//! use nemordp_core::{Timestamp, secrecy::SecretString};
//! use nemordp_notify::webhook::{WebhookSecret, WebhookVerifier};
//!
//! let secret = WebhookSecret::parse(&SecretString::from(
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
//! ))
//! .unwrap();
//! let body = br#"{"type":"nemordp.ready"}"#;
//! let signature = secret.sign("msg_1", 1_700_000_000, body);
//! let verifier = WebhookVerifier::new([secret]);
//! let now = Timestamp::from_unix_secs(1_700_000_100);
//! verifier
//!     .verify_parts("msg_1", "1700000000", &signature, body, now)
//!     .unwrap();
//! assert!(verifier
//!     .verify_parts("msg_1", "1700000000", &signature, b"tampered", now)
//!     .is_err());
//! ```
//!
//! [Standard Webhooks]: https://www.standardwebhooks.com/

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac as _};
use nemordp_core::{
    Clock, Error, ErrorKind, Result, SystemClock, Timestamp,
    notify::{Delivery, Notification, NotificationKind, Notifier},
    secrecy::{ExposeSecret, SecretBox, SecretString},
};
use rand::Rng as _;
use serde::Serialize;
use sha2::Sha256;

const BACKEND: &str = "webhook";

/// Header names (lower case, as sent).
pub const HEADER_ID: &str = "webhook-id";
/// See [`HEADER_ID`].
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// See [`HEADER_ID`].
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The default timestamp tolerance of [`WebhookVerifier`].
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

type HmacSha256 = Hmac<Sha256>;

fn config_err(message: impl Into<String>) -> Error {
    Error::invalid_config(message).with_backend(BACKEND)
}

/// A signing secret: 24–64 random bytes, written `whsec_<base64>`.
pub struct WebhookSecret {
    key: SecretBox<[u8]>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl Clone for WebhookSecret {
    fn clone(&self) -> Self {
        Self {
            key: SecretBox::from(Box::<[u8]>::from(self.key.expose_secret())),
        }
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the prefix is optional); the key must be 24–64 bytes.
    pub fn parse(secret: &SecretString) -> Result<Self> {
        let text = secret.expose_secret().trim();
        let b64 = text.strip_prefix("whsec_").unwrap_or(text);
        // Never echo the secret in the error.
        let key = B64
            .decode(b64)
            .map_err(|_| config_err("webhook secret is not whsec_<base64>"))?;
        Self::from_bytes(key)
    }

    /// A secret from raw key bytes (24–64).
    pub fn from_bytes(key: Vec<u8>) -> Result<Self> {
        if !(24..=64).contains(&key.len()) {
            return Err(config_err(format!(
                "webhook secret must be 24 to 64 bytes, got {}",
                key.len()
            )));
        }
        Ok(Self {
            key: SecretBox::from(key.into_boxed_slice()),
        })
    }

    /// A fresh random 32-byte secret and its `whsec_…` text (give that to the receiver).
    pub fn generate() -> (Self, SecretString) {
        let mut key = vec![0u8; 32];
        rand::rng().fill(&mut key[..]);
        let text = SecretString::from(format!("whsec_{}", B64.encode(&key)));
        (
            Self {
                key: SecretBox::from(key.into_boxed_slice()),
            },
            text,
        )
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for these parts: `v1,<base64>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!(
            "v1,{}",
            B64.encode(self.mac(id, timestamp, body).finalize().into_bytes())
        )
    }

    fn matches(&self, id: &str, timestamp: i64, body: &[u8], signature: &[u8]) -> bool {
        self.mac(id, timestamp, body)
            .verify_slice(signature)
            .is_ok()
    }
}

/// A verified request's id and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifiedWebhook {
    /// `webhook-id` (dedupe on it).
    pub id: String,
    /// `webhook-timestamp`, Unix seconds.
    pub timestamp: i64,
}

/// Checks Standard Webhooks signatures on the receiving side.
#[derive(Debug, Clone)]
pub struct WebhookVerifier {
    secrets: Vec<WebhookSecret>,
    tolerance: Duration,
}

impl WebhookVerifier {
    /// Accepts signatures by any of `secrets` (two during a rotation), within 5 minutes.
    pub fn new(secrets: impl IntoIterator<Item = WebhookSecret>) -> Self {
        Self {
            secrets: secrets.into_iter().collect(),
            tolerance: DEFAULT_TOLERANCE,
        }
    }

    /// Another timestamp tolerance (both ways).
    #[must_use]
    pub fn with_tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Verifies a request from its headers and raw body (read the body as bytes, before any
    /// JSON parsing). Every failure is `Unauthenticated`.
    pub fn verify(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedWebhook> {
        let header = |name: &str| -> Result<&str> {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| unauthenticated(format!("missing or non-ASCII {name} header")))
        };
        self.verify_parts(
            header(HEADER_ID)?,
            header(HEADER_TIMESTAMP)?,
            header(HEADER_SIGNATURE)?,
            body,
            now,
        )
    }

    /// Verifies the three header values and the raw body.
    pub fn verify_parts(
        &self,
        id: &str,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now: Timestamp,
    ) -> Result<VerifiedWebhook> {
        if id.is_empty() || id.len() > 256 {
            return Err(unauthenticated("webhook-id is empty or too long"));
        }
        let ts: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| unauthenticated("webhook-timestamp is not Unix seconds"))?;
        let now_s = now.as_unix_secs();
        let skew = now_s.abs_diff(ts);
        if Duration::from_secs(skew) > self.tolerance {
            return Err(unauthenticated(format!(
                "webhook-timestamp is {skew} s away from now (tolerance {} s): replay or clock skew",
                self.tolerance.as_secs()
            )));
        }
        let candidates: Vec<Vec<u8>> = signature
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .filter_map(|b64| B64.decode(b64).ok())
            .collect();
        if candidates.is_empty() {
            return Err(unauthenticated("webhook-signature has no v1 signature"));
        }
        let ok = self.secrets.iter().any(|secret| {
            candidates
                .iter()
                .any(|sig| secret.matches(id, ts, body, sig))
        });
        if !ok {
            return Err(unauthenticated("webhook signature does not verify"));
        }
        Ok(VerifiedWebhook {
            id: id.to_owned(),
            timestamp: ts,
        })
    }
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unauthenticated, message)
        .with_backend(BACKEND)
        .with_operation("verify")
}

/// In-process retries of one delivery (the outbox relay retries beyond these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per `send`, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time, with ±20 % jitter.
    pub initial: Duration,
    /// Longest delay; a `Retry-After` beyond it ends the in-process retries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// A policy.
    pub fn new(attempts: u32, initial: Duration, max_delay: Duration) -> Self {
        Self {
            attempts: attempts.max(1),
            initial,
            max_delay,
        }
    }

    fn delay(&self, retry: u32) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << retry.min(16))
            .min(self.max_delay);
        base.mul_f64(rand::rng().random_range(0.8..=1.2))
    }
}

/// Builds a [`WebhookNotifier`].
#[derive(Default)]
pub struct WebhookNotifierBuilder {
    url: Option<String>,
    secret: Option<WebhookSecret>,
    include_credentials: bool,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    clock: Option<Arc<dyn Clock>>,
    client: Option<reqwest::Client>,
}

impl fmt::Debug for WebhookNotifierBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifierBuilder")
            .field("url", &self.url)
            .field("secret", &self.secret)
            .field("include_credentials", &self.include_credentials)
            .finish_non_exhaustive()
    }
}

impl WebhookNotifierBuilder {
    /// The endpoint (http or https).
    #[must_use]
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The signing secret.
    #[must_use]
    pub fn secret(mut self, secret: WebhookSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Puts the machine password into the `ready` event (default: off; the event then carries
    /// host, port, username and the `.rdp` file only).
    #[must_use]
    pub fn include_credentials(mut self, include: bool) -> Self {
        self.include_credentials = include;
        self
    }

    /// Timeout of each request (default 15 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// In-process retries (default: 3 attempts, 1 s doubling, 30 s cap).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The clock that stamps `webhook-timestamp` (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A preconfigured HTTP client (e.g. with an egress proxy). It should not follow
    /// redirects.
    #[must_use]
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Reads `WEBHOOK_URL`, `WEBHOOK_SECRET` (a secret, `whsec_…`) and
    /// `WEBHOOK_INCLUDE_CREDENTIALS` (`1`/`true` to include the password).
    pub fn from_env() -> Result<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let url = var("WEBHOOK_URL").ok_or_else(|| config_err("WEBHOOK_URL is not set"))?;
        let secret = var("WEBHOOK_SECRET")
            .ok_or_else(|| config_err("WEBHOOK_SECRET is not set"))
            .and_then(|s| WebhookSecret::parse(&SecretString::from(s)))?;
        let include = var("WEBHOOK_INCLUDE_CREDENTIALS")
            .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        Ok(Self::default()
            .url(url)
            .secret(secret)
            .include_credentials(include))
    }

    /// Checks the configuration and builds the notifier.
    pub fn build(self) -> Result<WebhookNotifier> {
        let url = self
            .url
            .ok_or_else(|| config_err("webhook URL is not set"))?;
        let url = reqwest::Url::parse(&url)
            .map_err(|e| config_err(format!("webhook URL does not parse: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(config_err("webhook URL must be http(s)://host/…"));
        }
        let secret = self
            .secret
            .ok_or_else(|| config_err("webhook secret is not set"))?;
        let client = match self.client {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(self.timeout.unwrap_or(Duration::from_secs(15)))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("nemordp-webhook/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| config_err(format!("HTTP client: {e}")))?,
        };
        Ok(WebhookNotifier {
            client,
            url,
            secret,
            include_credentials: self.include_credentials,
            retry: self.retry.unwrap_or_default(),
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
        })
    }
}

/// Sends notifications as signed webhooks. Cheap to clone.
#[derive(Clone)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: WebhookSecret,
    include_credentials: bool,
    retry: RetryPolicy,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("host", &self.url.host_str())
            .field("include_credentials", &self.include_credentials)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct EventCustomer<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
}

#[derive(Serialize)]
struct EventConnection<'a> {
    host: &'a str,
    port: u16,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    rdp_file: &'a str,
}

#[derive(Serialize)]
struct EventData<'a> {
    notification_id: String,
    order_id: String,
    customer: EventCustomer<'a>,
    #[serde(flatten)]
    kind: &'a NotificationKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount_display: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<EventConnection<'a>>,
}

#[derive(Serialize)]
struct Event<'a> {
    #[serde(rename = "type")]
    kind_name: String,
    timestamp: i64,
    data: EventData<'a>,
}

/// The JSON body of a notification's event. Holds the password only for a `ready` event of
/// a notifier built with `include_credentials(true)`.
fn event_body(n: &Notification, include_credentials: bool, now: Timestamp) -> Result<Vec<u8>> {
    let event = Event {
        kind_name: format!("nemordp.{}", n.kind.as_str()),
        timestamp: now.as_unix_secs(),
        data: EventData {
            notification_id: n.id.to_string(),
            order_id: n.order_id.to_string(),
            customer: EventCustomer {
                id: &n.customer.id,
                email: n.customer.email.as_deref(),
            },
            kind: &n.kind,
            amount_display: match &n.kind {
                NotificationKind::PaymentReceived { amount } => Some(amount.to_string()),
                _ => None,
            },
            connection: n.connection.as_ref().map(|c| EventConnection {
                host: &c.host,
                port: c.port,
                username: &c.username,
                password: include_credentials.then(|| c.password.expose_secret()),
                rdp_file: &c.rdp_file,
            }),
        },
    };
    serde_json::to_vec(&event).map_err(|e| {
        Error::new(
            ErrorKind::Unexpected,
            format!("cannot encode the event: {e}"),
        )
        .with_backend(BACKEND)
    })
}

/// `Retry-After` as delay-seconds or an HTTP-date.
fn retry_after(headers: &reqwest::header::HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(Timestamp::from_system_time(at).duration_since(now))
}

impl WebhookNotifier {
    /// A builder.
    pub fn builder() -> WebhookNotifierBuilder {
        WebhookNotifierBuilder::default()
    }

    /// [`WebhookNotifierBuilder::from_env`] then build.
    pub fn from_env() -> Result<Self> {
        WebhookNotifierBuilder::from_env()?.build()
    }

    /// One POST. `Ok(status)` on 2xx; otherwise the error and whether it may be retried.
    async fn attempt(&self, n: &Notification) -> std::result::Result<u16, (Error, bool)> {
        let now = self.clock.now();
        let ts = now.as_unix_secs();
        let id = n.id.to_string();
        let body = event_body(n, self.include_credentials, now).map_err(|e| (e, false))?;
        let signature = self.secret.sign(&id, ts, &body);
        let response = self
            .client
            .post(self.url.clone())
            .header(HEADER_ID, &id)
            .header(HEADER_TIMESTAMP, ts.to_string())
            .header(HEADER_SIGNATURE, signature)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                // reqwest's message names the URL without credentials; drop it anyway and
                // keep the cause.
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                let err = Error::unavailable(format!("webhook {what}"))
                    .with_backend(BACKEND)
                    .with_operation("send")
                    .with_source(e.without_url());
                return Err((err, true));
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return Ok(status);
        }
        let after = retry_after(response.headers(), self.clock.now());
        let (kind, retryable) = match status {
            429 => (ErrorKind::RateLimited, true),
            408 | 500..=599 => (ErrorKind::Unavailable, true),
            _ => (ErrorKind::Rejected, false),
        };
        let err = Error::new(kind, format!("webhook receiver answered HTTP {status}"))
            .with_backend(BACKEND)
            .with_operation("send")
            .with_retry_after(if retryable { after } else { None });
        Err((err, retryable))
    }
}

#[async_trait]
impl Notifier for WebhookNotifier {
    fn name(&self) -> &'static str {
        BACKEND
    }

    async fn send(&self, notification: &Notification) -> Result<Delivery> {
        let mut retry = 0;
        loop {
            match self.attempt(notification).await {
                Ok(status) => {
                    return Ok(Delivery::new(BACKEND, Some(format!("HTTP {status}"))));
                }
                Err((e, retryable)) => {
                    retry += 1;
                    if !retryable || retry >= self.retry.attempts {
                        return Err(e);
                    }
                    let wait = self.retry.delay(retry - 1);
                    let wait = match e.retry_after() {
                        // The receiver wants more time than we wait in-process: let the
                        // outbox relay come back later.
                        Some(after) if after > self.retry.max_delay => return Err(e),
                        Some(after) => wait.max(after),
                        None => wait,
                    };
                    tracing::debug!(
                        notification_id = %notification.id,
                        error = %e,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "webhook attempt failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> WebhookSecret {
        WebhookSecret::parse(&SecretString::from(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ))
        .unwrap()
    }

    #[test]
    fn signature_matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification.
        let sig = secret().sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verifier_checks_signature_tolerance_and_rotation() {
        let body = b"{}";
        let ts = 1_700_000_000;
        let now = Timestamp::from_unix_secs(ts);
        let (other, _) = WebhookSecret::generate();
        let sig = secret().sign("id-1", ts, body);
        let v = WebhookVerifier::new([other.clone(), secret()]);
        assert_eq!(
            v.verify_parts(
                "id-1",
                &ts.to_string(),
                &format!("v1,bm9wZQ== {sig}"),
                body,
                now
            )
            .unwrap()
            .id,
            "id-1"
        );
        let only_other = WebhookVerifier::new([other]);
        let stale = Timestamp::from_unix_secs(ts + 301);
        let early = Timestamp::from_unix_secs(ts - 301);
        for (what, res) in [
            (
                "wrong secret",
                only_other.verify_parts("id-1", "1700000000", &sig, body, now),
            ),
            (
                "other id",
                v.verify_parts("id-2", "1700000000", &sig, body, now),
            ),
            (
                "tampered",
                v.verify_parts("id-1", "1700000000", &sig, b"{ }", now),
            ),
            (
                "too old",
                v.verify_parts("id-1", "1700000000", &sig, body, stale),
            ),
            (
                "from the future",
                v.verify_parts("id-1", "1700000000", &sig, body, early),
            ),
            (
                "no v1",
                v.verify_parts("id-1", "1700000000", "v1a,xyz", body, now),
            ),
            ("bad ts", v.verify_parts("id-1", "soon", &sig, body, now)),
        ] {
            let e = res.err().unwrap_or_else(|| panic!("{what} verified"));
            assert_eq!(e.kind(), ErrorKind::Unauthenticated, "{what}");
        }
        let edge = Timestamp::from_unix_secs(ts + 300);
        assert!(
            v.verify_parts("id-1", "1700000000", &sig, body, edge)
                .is_ok()
        );
    }

    #[test]
    fn secrets_are_validated_and_never_printed() {
        let short = WebhookSecret::parse(&SecretString::from("whsec_c2hvcnQ=")).unwrap_err();
        assert_eq!(short.kind(), ErrorKind::InvalidConfig);
        let bad = WebhookSecret::parse(&SecretString::from("whsec_not base64!")).unwrap_err();
        assert!(!bad.to_string().contains("not base64!"));
        let (s, text) = WebhookSecret::generate();
        assert!(text.expose_secret().starts_with("whsec_"));
        let round = WebhookSecret::parse(&text).unwrap();
        assert_eq!(s.sign("a", 1, b"b"), round.sign("a", 1, b"b"));
        assert_eq!(format!("{s:?}"), "WebhookSecret([REDACTED])");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = Timestamp::from_unix_secs(1_700_000_000);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let at = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_030);
        h.insert("retry-after", httpdate::fmt_http_date(at).parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert("retry-after", "later".parse().unwrap());
        assert_eq!(retry_after(&h, now), None);
    }
}
