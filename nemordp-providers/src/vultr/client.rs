//! The HTTP client: bearer auth, status mapping, `Retry-After`, bounded retries of safe calls
//! and cursor paging.

use std::time::{Duration, SystemTime};

use reqwest::{Method, header::RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use nemordp_core::{Error, ErrorKind, Result};

use super::{
    NAME,
    error::{VultrError, parse_retry_after, redact},
    model::{ErrorBody, Meta},
};

/// The most items Vultr returns per page.
pub(crate) const MAX_PER_PAGE: u32 = 500;

/// Upper bound on pages walked in one listing (500 × 1000 items is far beyond any account).
const MAX_PAGES: usize = 1000;

/// How a request may be repeated after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent (GET): retried on throttling, 5xx and transport failures.
    Safe,
    /// Not idempotent, or with effects (power actions, delete): retried only when the failure
    /// proves Vultr did not process it (429, connect failure).
    IfNotProcessed,
    /// A create: sent exactly once; unknown outcomes become `Ambiguous`.
    Never,
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

/// The Vultr HTTP client.
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

    /// One exchange; success is any 2xx, returned with its body bytes.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> std::result::Result<Vec<u8>, VultrError> {
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
                VultrError::NotSent(e)
            } else {
                VultrError::Lost(e)
            }
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = resp.bytes().await.map_err(VultrError::Lost)?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let text = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .map(|b| b.error)
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
        let message: String = redact(&text, self.key.expose_secret())
            .chars()
            .take(300)
            .collect();
        Err(VultrError::Status {
            status: status.as_u16(),
            message,
            retry_after,
        })
    }

    /// Sends a request under `retry`, returning the success body.
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            match self.attempt(&method, path, query, body).await {
                Ok(bytes) => return Ok(bytes),
                Err(f) => {
                    let again = attempt < self.retry.max_retries
                        && match retry {
                            Retry::Safe => f.retryable_when_safe(),
                            Retry::IfNotProcessed => f.provably_not_processed(),
                            Retry::Never => false,
                        };
                    if !again {
                        return Err(f.into_error(operation, retry == Retry::Never));
                    }
                    let wait = self.retry.wait(attempt, f.retry_after());
                    tracing::debug!(
                        backend = NAME,
                        operation,
                        attempt,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "retrying vultr request"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// `GET path` decoded as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let bytes = self
            .send(operation, Method::GET, path, query, None, Retry::Safe)
            .await?;
        decode(operation, &bytes, false)
    }

    /// One page of a list: the items under `key` and the next cursor (`None` at the end).
    pub(crate) async fn page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        key: &str,
        filters: &[(&str, String)],
        per_page: u32,
        cursor: Option<&str>,
    ) -> Result<(Vec<T>, Option<String>)> {
        let mut query: Vec<(&str, String)> = filters.to_vec();
        query.push(("per_page", per_page.clamp(1, MAX_PER_PAGE).to_string()));
        if let Some(c) = cursor.filter(|c| !c.is_empty()) {
            query.push(("cursor", c.to_owned()));
        }
        let mut page: Value = self.get(operation, path, &query).await?;
        let items = match page.get_mut(key).map(Value::take) {
            Some(v) => serde_json::from_value::<Vec<T>>(v)
                .map_err(|e| unexpected(operation, format!("unreadable `{key}` list: {e}")))?,
            None => return Err(unexpected(operation, format!("no `{key}` in the response"))),
        };
        let meta: Meta = page
            .get_mut("meta")
            .map(Value::take)
            .and_then(|m| serde_json::from_value(m).ok())
            .unwrap_or_default();
        let next = Some(meta.links.next).filter(|n| !n.is_empty());
        Ok((items, next))
    }

    /// Every item of a paged list, walking the cursor.
    pub(crate) async fn all<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        key: &str,
        filters: &[(&str, String)],
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let (items, next) = self
                .page(
                    operation,
                    path,
                    key,
                    filters,
                    MAX_PER_PAGE,
                    cursor.as_deref(),
                )
                .await?;
            out.extend(items);
            match next {
                // a server repeating its cursor would loop forever
                Some(n) if cursor.as_deref() != Some(n.as_str()) => cursor = Some(n),
                Some(_) => {
                    return Err(unexpected(operation, "the list cursor did not advance"));
                }
                None => return Ok(out),
            }
        }
        Err(unexpected(
            operation,
            format!("no last page after {MAX_PAGES} pages"),
        ))
    }

    /// `POST path` with a JSON body, decoded as `T`.
    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<T> {
        let body = serde_json::to_value(body)
            .map_err(|e| unexpected(operation, format!("could not encode the request: {e}")))?;
        let bytes = self
            .send(operation, Method::POST, path, &[], Some(&body), retry)
            .await?;
        decode(operation, &bytes, retry == Retry::Never)
    }
}

fn decode<T: DeserializeOwned>(operation: &'static str, bytes: &[u8], create: bool) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| VultrError::Decode(e.to_string()).into_error(operation, create))
}

fn unexpected(operation: &'static str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unexpected, message)
        .with_backend(NAME)
        .with_operation(operation)
}
