//! The HTTP client: bearer auth, Paystack's `{status, message, data}` envelope, error bodies
//! mapped onto [`ErrorKind`]s, `Retry-After`, and bounded retries of idempotent calls only.

use std::time::Duration;

use reqwest::{Method, header::RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};

use nemordp_core::{Error, ErrorKind, Result};

use super::{NAME, model::ErrorBody};

/// How a request may be repeated after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent (GET verify, fetch): retried on throttling, 5xx and transport failures.
    Safe,
    /// Has effects (initialize, create, charge): retried only when the failure proves Paystack
    /// did not process it (429, connect failure); a lost answer becomes `Ambiguous`.
    IfNotProcessed,
}

/// Retry tuning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Extra attempts after the first.
    pub(crate) max_retries: u32,
    /// First backoff when the server gave no `Retry-After`; doubled per attempt.
    pub(crate) base: Duration,
    /// Longest single wait, whatever `Retry-After` says.
    pub(crate) max_wait: Duration,
}

impl RetryPolicy {
    fn wait(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let backoff = self
            .base
            .saturating_mul(2_u32.saturating_pow(attempt.min(16)));
        asked.unwrap_or(backoff).min(self.max_wait)
    }
}

/// One failed exchange, before it becomes an [`Error`].
#[derive(Debug)]
pub(crate) enum Failure {
    /// Provably never reached Paystack (connect or request-building failure).
    NotSent(reqwest::Error),
    /// May have reached Paystack, but no readable answer came back.
    Lost(reqwest::Error),
    /// Paystack answered with an error status or `status: false`.
    Status {
        status: u16,
        message: String,
        code: String,
        retry_after: Option<Duration>,
    },
    /// A success status with a body we could not read.
    Decode(String),
}

impl Failure {
    fn retryable(&self, retry: Retry) -> bool {
        match (retry, self) {
            (_, Self::NotSent(_) | Self::Status { status: 429, .. })
            | (Retry::Safe, Self::Lost(_)) => true,
            (Retry::Safe, Self::Status { status, .. }) => *status >= 500,
            _ => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Maps onto the shared error; `effects` marks a call with effects, whose unknown outcome
    /// is [`ErrorKind::Ambiguous`].
    pub(crate) fn into_error(self, operation: &'static str, effects: bool) -> Error {
        let e = match self {
            Self::NotSent(e) => {
                Error::unavailable(format!("could not reach paystack: {}", describe(&e)))
                    .with_source(e.without_url())
            }
            Self::Lost(e) if effects => Error::new(
                ErrorKind::Ambiguous,
                format!(
                    "no answer ({}); verify the reference before retrying",
                    describe(&e)
                ),
            )
            .with_source(e.without_url()),
            Self::Lost(e) => {
                Error::unavailable(format!("no answer from paystack: {}", describe(&e)))
                    .with_source(e.without_url())
            }
            Self::Decode(msg) if effects => Error::new(
                ErrorKind::Ambiguous,
                format!("unreadable response: {msg}; verify the reference before retrying"),
            ),
            Self::Decode(msg) => {
                Error::new(ErrorKind::Unexpected, format!("unreadable response: {msg}"))
            }
            Self::Status {
                status,
                message,
                code,
                retry_after,
            } => {
                let kind = status_kind(status, &code, &message, effects);
                let code = if code.is_empty() {
                    String::new()
                } else {
                    format!(" [{code}]")
                };
                Error::new(kind, format!("http {status}: {message}{code}"))
                    .with_retry_after(retry_after)
            }
        };
        e.with_backend(NAME).with_operation(operation)
    }
}

/// The error kind for a Paystack error answer. Paystack's `code` is read first (it is stable),
/// then the well-known message texts of `api-errors.json`, then the HTTP status.
pub(crate) fn status_kind(status: u16, code: &str, message: &str, effects: bool) -> ErrorKind {
    let lower = message.to_ascii_lowercase();
    if code == "duplicate_reference" || lower.contains("duplicate transaction reference") {
        return ErrorKind::AlreadyExists;
    }
    match status {
        429 => ErrorKind::RateLimited,
        500..=599 if effects => ErrorKind::Ambiguous,
        500..=599 => ErrorKind::Unavailable,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        _ if lower.contains("not found") => ErrorKind::NotFound,
        _ if lower.contains("invalid key") || lower.contains("authorization bearer") => {
            ErrorKind::Unauthenticated
        }
        _ if code == "validation_error" || code == "invalid_params" => ErrorKind::InvalidInput,
        _ => ErrorKind::Rejected,
    }
}

fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "broken response body"
    } else {
        "transport error"
    }
}

/// Removes every occurrence of `secret` from `text`: nothing from the server is trusted not
/// to echo the key.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "[REDACTED]")
    }
}

/// The Paystack HTTP client.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base_url: String,
    key: SecretString,
    retry: RetryPolicy,
}

impl Client {
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: &str,
        key: SecretString,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
            retry,
        }
    }

    pub(crate) fn key(&self) -> &SecretString {
        &self.key
    }

    /// One exchange; success is a 2xx with `status: true`, returned as the body bytes.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base_url))
            .bearer_auth(self.key.expose_secret());
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_connect() || e.is_builder() {
                Failure::NotSent(e)
            } else {
                Failure::Lost(e)
            }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp.bytes().await.map_err(Failure::Lost)?;
        let parsed = serde_json::from_slice::<ErrorBody>(&bytes).ok();
        // HTTP 200 with `status: false` is an error too.
        let ok = status.is_success() && parsed.as_ref().is_none_or(|b| b.status != Some(false));
        if ok {
            return Ok(bytes.to_vec());
        }
        let (message, code) = match parsed {
            Some(b) => (
                b.message.filter(|m| !m.is_empty()),
                b.code.or(b.kind).unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        let message =
            message.unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
        let message: String = redact(&message, self.key.expose_secret())
            .chars()
            .take(300)
            .collect();
        Err(Failure::Status {
            status: status.as_u16(),
            message,
            code: code.chars().take(60).collect(),
            retry_after,
        })
    }

    /// Sends a request under `retry`, returning the success body.
    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        retry: Retry,
    ) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            match self.attempt(&method, path, query, body).await {
                Ok(bytes) => return Ok(bytes),
                Err(f) => {
                    if attempt >= self.retry.max_retries || !f.retryable(retry) {
                        return Err(f.into_error(operation, retry == Retry::IfNotProcessed));
                    }
                    let wait = self.retry.wait(attempt, f.retry_after());
                    tracing::debug!(
                        backend = NAME,
                        operation,
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "retrying paystack request"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// `GET path`, the envelope's `data` decoded as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let bytes = self
            .send(operation, Method::GET, path, query, None, Retry::Safe)
            .await?;
        decode_data(operation, &bytes, false)
    }

    /// `POST path` with a JSON body, the envelope's `data` decoded as `T`.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<T> {
        let body = serde_json::to_value(body).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("could not encode the request: {e}"),
            )
            .with_backend(NAME)
            .with_operation(operation)
        })?;
        let bytes = self
            .send(operation, Method::POST, path, &[], Some(&body), retry)
            .await?;
        decode_data(operation, &bytes, retry == Retry::IfNotProcessed)
    }
}

impl Client {
    /// `POST path` whose answer carries no `data` (`{status: true, message}`): success is the
    /// 2xx with `status: true` that `send` already checked.
    pub(crate) async fn post_ok<B: Serialize>(
        &self,
        operation: &'static str,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<()> {
        let body = serde_json::to_value(body).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("could not encode the request: {e}"),
            )
            .with_backend(NAME)
            .with_operation(operation)
        })?;
        let bytes = self
            .send(operation, Method::POST, path, &[], Some(&body), retry)
            .await?;
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) if b.status == Some(true) => Ok(()),
            _ => Err(Failure::Decode("no `status: true` in the answer".into())
                .into_error(operation, retry == Retry::IfNotProcessed)),
        }
    }
}

/// Decodes `{status: true, message, data: T}`.
pub(crate) fn decode_data<T: DeserializeOwned>(
    operation: &'static str,
    bytes: &[u8],
    effects: bool,
) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct Envelope<T> {
        data: Option<T>,
    }
    serde_json::from_slice::<Envelope<T>>(bytes)
        .map_err(|e| Failure::Decode(e.to_string()).into_error(operation, effects))?
        .data
        .ok_or_else(|| {
            Failure::Decode("no `data` in the response".into()).into_error(operation, effects)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        let k = |s, c, m, e| status_kind(s, c, m, e);
        assert_eq!(
            k(400, "duplicate_reference", "x", true),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            k(400, "", "Duplicate Transaction Reference", true),
            ErrorKind::AlreadyExists
        );
        assert_eq!(k(429, "", "slow down", false), ErrorKind::RateLimited);
        assert_eq!(k(502, "", "bad gateway", false), ErrorKind::Unavailable);
        assert_eq!(k(502, "", "bad gateway", true), ErrorKind::Ambiguous);
        assert_eq!(k(401, "", "Invalid key", false), ErrorKind::Unauthenticated);
        assert_eq!(
            k(
                400,
                "",
                "Format is Authorization Bearer [secret key]",
                false
            ),
            ErrorKind::Unauthenticated
        );
        assert_eq!(k(403, "", "forbidden", false), ErrorKind::PermissionDenied);
        assert_eq!(
            k(404, "", "Transaction reference not found", false),
            ErrorKind::NotFound
        );
        assert_eq!(
            k(400, "", "Transaction reference not found", false),
            ErrorKind::NotFound
        );
        assert_eq!(
            k(400, "validation_error", "Invalid Amount Sent", true),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            k(400, "processor_error", "Declined", true),
            ErrorKind::Rejected
        );
    }

    #[test]
    fn retry_rules() {
        let st = |status| Failure::Status {
            status,
            message: String::new(),
            code: String::new(),
            retry_after: None,
        };
        assert!(st(503).retryable(Retry::Safe));
        assert!(!st(503).retryable(Retry::IfNotProcessed));
        assert!(st(429).retryable(Retry::IfNotProcessed));
        assert!(!st(400).retryable(Retry::Safe));
        assert!(!Failure::Decode(String::new()).retryable(Retry::Safe));
        let p = RetryPolicy {
            max_retries: 3,
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(5),
        };
        assert_eq!(p.wait(0, None), Duration::from_secs(1));
        assert_eq!(p.wait(2, None), Duration::from_secs(4));
        assert_eq!(p.wait(5, None), Duration::from_secs(5));
        assert_eq!(
            p.wait(0, Some(Duration::from_secs(60))),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn redact_scrubs_the_key() {
        assert_eq!(redact("bad sk_test_1", "sk_test_1"), "bad [REDACTED]");
    }
}
