//! The HTTP client: OpenID Connect password-grant tokens (cached, refreshed before expiry,
//! renewed once on a 401), `x-request-id` / `x-trace-id` headers, status mapping,
//! `Retry-After`, bounded retries of safe calls and `page`/`size` paging.

use std::time::{Duration, SystemTime};

use reqwest::{
    Method,
    header::{HeaderValue, RETRY_AFTER},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use tokio::time::Instant;

use nemordp_core::{Error, ErrorKind, Result};

use super::{
    NAME,
    error::{ContaboError, describe, parse_retry_after, redact},
    model::{Data, ErrorBody, Pagination, TokenError, TokenResponse},
};

/// The most items asked for per page.
pub(crate) const MAX_PAGE_SIZE: u32 = 100;

/// Upper bound on pages walked in one listing.
const MAX_PAGES: u64 = 1000;

/// Assumed token lifetime when the token endpoint names none (Contabo's are about 5 min).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);

/// How a request may be repeated after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent (GET): retried on throttling, 5xx and transport failures.
    Safe,
    /// With effects (actions, cancel, secrets): retried only when the failure proves Contabo
    /// did not process it (429, connect failure, no token).
    IfNotProcessed,
    /// A create or reinstall: never repeated once it may have been processed; unknown
    /// outcomes become `Ambiguous`.
    Never,
}

/// Retry tuning.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) max_retries: u32,
    pub(crate) base: Duration,
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

/// The four panel credentials.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    pub(crate) client_id: SecretString,
    pub(crate) client_secret: SecretString,
    pub(crate) api_user: SecretString,
    pub(crate) api_password: SecretString,
}

/// A cached access token.
struct Token {
    access: SecretString,
    expires_at: Instant,
    refresh: Option<(SecretString, Instant)>,
    /// Counts tokens fetched, so a 401 only discards the token it was sent with.
    generation: u64,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The Contabo HTTP client.
#[derive(Debug)]
pub(crate) struct Client {
    http: reqwest::Client,
    base_url: String,
    auth_url: String,
    creds: Credentials,
    retry: RetryPolicy,
    refresh_margin: Duration,
    /// One mutex: concurrent callers wait for one token fetch instead of each doing one.
    token: tokio::sync::Mutex<Option<Token>>,
}

impl Client {
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: &str,
        auth_url: &str,
        creds: Credentials,
        retry: RetryPolicy,
        refresh_margin: Duration,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            auth_url: auth_url.to_owned(),
            creds,
            retry,
            refresh_margin,
            token: tokio::sync::Mutex::new(None),
        }
    }

    fn secrets(&self) -> [&str; 4] {
        [
            self.creds.client_secret.expose_secret(),
            self.creds.api_password.expose_secret(),
            self.creds.api_user.expose_secret(),
            self.creds.client_id.expose_secret(),
        ]
    }

    /// A valid access token and its generation. `stale` names a generation the API just
    /// refused: that one is discarded even if it has not expired.
    async fn access_token(&self, stale: Option<u64>) -> Result<(SecretString, u64)> {
        let mut slot = self.token.lock().await;
        let now = Instant::now();
        if let Some(t) = slot.as_ref()
            && stale != Some(t.generation)
            && now < t.expires_at
        {
            return Ok((t.access.clone(), t.generation));
        }
        let generation = slot.as_ref().map_or(1, |t| t.generation + 1);
        let refresh = slot
            .as_ref()
            .and_then(|t| t.refresh.as_ref())
            .filter(|(_, until)| now < *until)
            .map(|(r, _)| r.clone());
        let got = match refresh {
            Some(r) => match self
                .grant(&[("grant_type", "refresh_token")], Some(&r))
                .await
            {
                Ok(t) => t,
                Err(e) if !e.is_retryable() => {
                    tracing::debug!(backend = NAME, error = %e, "refresh refused; password grant");
                    self.grant(&[("grant_type", "password")], None).await?
                }
                Err(e) => return Err(e),
            },
            None => self.grant(&[("grant_type", "password")], None).await?,
        };
        let fetched = Instant::now();
        let lifetime = got
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        // renew early, but never so early that a short-lived token is never used
        let margin = self.refresh_margin.min(lifetime / 2);
        let refresh = got.refresh_token.filter(|r| !r.is_empty()).map(|r| {
            let life = got.refresh_expires_in.map_or(lifetime, Duration::from_secs);
            (
                SecretString::from(r),
                fetched + life.saturating_sub(self.refresh_margin.min(life / 2)),
            )
        });
        let token = Token {
            access: SecretString::from(got.access_token),
            expires_at: fetched + lifetime.saturating_sub(margin),
            refresh,
            generation,
        };
        let out = (token.access.clone(), generation);
        *slot = Some(token);
        tracing::debug!(
            backend = NAME,
            generation,
            lifetime_s = lifetime.as_secs(),
            "contabo token fetched"
        );
        Ok(out)
    }

    /// One call to the token endpoint.
    async fn grant(
        &self,
        grant: &[(&str, &str)],
        refresh: Option<&SecretString>,
    ) -> Result<TokenResponse> {
        const OP: &str = "authenticate";
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", self.creds.client_id.expose_secret()),
            ("client_secret", self.creds.client_secret.expose_secret()),
        ];
        form.extend_from_slice(grant);
        if let Some(r) = refresh {
            form.push(("refresh_token", r.expose_secret()));
        } else {
            form.push(("username", self.creds.api_user.expose_secret()));
            form.push(("password", self.creds.api_password.expose_secret()));
        }
        let fail = |e: Error| e.with_backend(NAME).with_operation(OP);
        let resp = self
            .http
            .post(&self.auth_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| {
                fail(
                    Error::unavailable(format!(
                        "contabo token endpoint unreachable: {}",
                        describe(&e)
                    ))
                    .with_source(e.without_url()),
                )
            })?;
        let status = resp.status();
        let retry_after = retry_after_of(&resp);
        let bytes = resp.bytes().await.map_err(|e| {
            fail(Error::unavailable(format!(
                "contabo token endpoint: {}",
                describe(&e)
            )))
        })?;
        if status.is_success() {
            return serde_json::from_slice::<TokenResponse>(&bytes)
                .ok()
                .filter(|t| !t.access_token.is_empty())
                .ok_or_else(|| {
                    fail(Error::new(
                        ErrorKind::Unexpected,
                        "the token endpoint answered without an access_token",
                    ))
                });
        }
        let body: TokenError = serde_json::from_slice(&bytes).unwrap_or_default();
        let text = [body.error, body.error_description]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let text: String = redact(&text, &self.secrets()).chars().take(300).collect();
        let kind = match status.as_u16() {
            400 | 401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            429 => ErrorKind::RateLimited,
            s if s >= 500 => ErrorKind::Unavailable,
            _ => ErrorKind::Rejected,
        };
        Err(fail(
            Error::new(
                kind,
                format!(
                    "token endpoint http {}: {text} (check CONTABO_CLIENT_ID, \
                     CONTABO_CLIENT_SECRET, CONTABO_API_USER and CONTABO_API_PASSWORD)",
                    status.as_u16()
                ),
            )
            .with_retry_after(retry_after),
        ))
    }

    /// One exchange (plus one more with a fresh token after a 401); success is any 2xx.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        trace: Option<&str>,
    ) -> std::result::Result<Vec<u8>, ContaboError> {
        let (mut token, mut generation) =
            self.access_token(None).await.map_err(ContaboError::Auth)?;
        let mut renewed = false;
        loop {
            let request_id = uuid::Uuid::new_v4().to_string();
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base_url))
                .bearer_auth(token.expose_secret())
                .header("x-request-id", &request_id);
            if let Some(t) = trace.and_then(|t| HeaderValue::from_str(t).ok()) {
                req = req.header("x-trace-id", t);
            }
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            tracing::debug!(backend = NAME, %method, path, request_id, "contabo request");
            let resp = req.send().await.map_err(|e| {
                if e.is_connect() || e.is_builder() {
                    ContaboError::NotSent(e)
                } else {
                    ContaboError::Lost(e)
                }
            })?;
            let status = resp.status();
            if status.as_u16() == 401 && !renewed {
                // an expired or revoked token: the request was refused, so it is safe to
                // send once more with a fresh one
                renewed = true;
                (token, generation) = self
                    .access_token(Some(generation))
                    .await
                    .map_err(ContaboError::Auth)?;
                continue;
            }
            let retry_after = retry_after_of(&resp);
            let bytes = resp.bytes().await.map_err(ContaboError::Lost)?;
            if status.is_success() {
                return Ok(bytes.to_vec());
            }
            let text = serde_json::from_slice::<ErrorBody>(&bytes)
                .ok()
                .and_then(ErrorBody::text)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_lowercase());
            let mut secrets = self.secrets().to_vec();
            secrets.push(token.expose_secret());
            let message: String = redact(&text, &secrets).chars().take(300).collect();
            return Err(ContaboError::Status {
                status: status.as_u16(),
                message,
                retry_after,
                request_id,
            });
        }
    }

    /// Sends a request under `retry`, returning the success body.
    #[allow(
        clippy::too_many_arguments,
        reason = "one private call site shape; a parameter struct would only rename them"
    )]
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry: Retry,
        trace: Option<&str>,
    ) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            match self.attempt(&method, path, query, body, trace).await {
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
                        "retrying contabo request"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// `GET path`, the `data` array decoded as `T`s.
    pub(crate) async fn get_data<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(&str, String)],
        trace: Option<&str>,
    ) -> Result<Vec<T>> {
        let bytes = self
            .send(
                operation,
                Method::GET,
                path,
                query,
                None,
                Retry::Safe,
                trace,
            )
            .await?;
        decode::<Data<T>>(operation, &bytes, false).map(|d| d.data)
    }

    /// One page of a list: its items and whether another page follows.
    pub(crate) async fn page<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        filters: &[(&str, String)],
        page: u64,
        size: u32,
        trace: Option<&str>,
    ) -> Result<(Vec<T>, bool)> {
        let mut query: Vec<(&str, String)> = filters.to_vec();
        query.push(("page", page.to_string()));
        query.push(("size", size.clamp(1, MAX_PAGE_SIZE).to_string()));
        let bytes = self
            .send(
                operation,
                Method::GET,
                path,
                &query,
                None,
                Retry::Safe,
                trace,
            )
            .await?;
        let mut v: Value = decode(operation, &bytes, false)?;
        let items: Vec<T> = match v.get_mut("data").map(Value::take) {
            Some(d) => serde_json::from_value(d)
                .map_err(|e| unexpected(operation, format!("unreadable `data` list: {e}")))?,
            None => return Err(unexpected(operation, "no `data` in the response")),
        };
        let meta: Pagination = v
            .get_mut("_pagination")
            .map(Value::take)
            .and_then(|m| serde_json::from_value(m).ok())
            .unwrap_or_default();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "page counts are small whole numbers the spec types as `number`"
        )]
        let total = meta.total_pages.map(|t| t.max(0.0) as u64);
        let more = !items.is_empty() && total.is_some_and(|t| page < t);
        Ok((items, more))
    }

    /// Every item of a paged list.
    pub(crate) async fn all<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        filters: &[(&str, String)],
        trace: Option<&str>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for page in 1..=MAX_PAGES {
            let (items, more) = self
                .page(operation, path, filters, page, MAX_PAGE_SIZE, trace)
                .await?;
            out.extend(items);
            if !more {
                return Ok(out);
            }
        }
        Err(unexpected(
            operation,
            format!("no last page after {MAX_PAGES} pages"),
        ))
    }

    /// A JSON request with a body, the `data` array decoded as `T`s.
    pub(crate) async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        body: &B,
        retry: Retry,
        trace: Option<&str>,
    ) -> Result<Vec<T>> {
        let body = serde_json::to_value(body)
            .map_err(|e| unexpected(operation, format!("could not encode the request: {e}")))?;
        let bytes = self
            .send(operation, method, path, &[], Some(&body), retry, trace)
            .await?;
        decode::<Data<T>>(operation, &bytes, retry == Retry::Never).map(|d| d.data)
    }
}

fn retry_after_of(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

fn decode<T: DeserializeOwned>(operation: &'static str, bytes: &[u8], create: bool) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| ContaboError::Decode(e.to_string()).into_error(operation, create))
}

pub(crate) fn unexpected(operation: &'static str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unexpected, message)
        .with_backend(NAME)
        .with_operation(operation)
}
