//! Contabo failures and their mapping onto [`nemordp_core::Error`].

use std::time::{Duration, SystemTime};

use nemordp_core::{Error, ErrorKind};

use super::NAME;

/// One failed HTTP exchange, before it becomes a [`nemordp_core::Error`].
#[derive(Debug)]
pub(crate) enum ContaboError {
    /// The request provably never reached Contabo (connect or request-building failure).
    NotSent(reqwest::Error),
    /// The request may have reached Contabo, but no (readable) answer came back.
    Lost(reqwest::Error),
    /// Contabo answered with a non-success status.
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
        request_id: String,
    },
    /// A success status with a body we could not read.
    Decode(String),
    /// No access token could be had; already a finished error.
    Auth(Error),
}

impl ContaboError {
    /// Whether a request that is safe to repeat may be sent again after this failure.
    pub(crate) fn retryable_when_safe(&self) -> bool {
        match self {
            Self::NotSent(_) | Self::Lost(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Auth(e) => e.is_retryable(),
            Self::Decode(_) => false,
        }
    }

    /// Whether the failure proves the request was not processed (so even a non-idempotent
    /// request may be sent again).
    pub(crate) fn provably_not_processed(&self) -> bool {
        match self {
            Self::NotSent(_) | Self::Status { status: 429, .. } => true,
            // the API request was never sent without a token
            Self::Auth(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// The wait Contabo asked for, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Auth(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Maps to the shared error. `create` marks a non-idempotent create or reinstall: any
    /// failure that may have happened after Contabo processed it becomes
    /// [`ErrorKind::Ambiguous`].
    pub(crate) fn into_error(self, operation: &'static str, create: bool) -> Error {
        let e = match self {
            Self::Auth(e) => return e.with_operation(operation),
            Self::NotSent(e) => {
                Error::unavailable(format!("could not reach contabo: {}", describe(&e)))
                    .with_source(e.without_url())
            }
            Self::Lost(e) if create => Error::new(
                ErrorKind::Ambiguous,
                format!(
                    "no answer to the create ({}); look the label up before retrying",
                    describe(&e)
                ),
            )
            .with_source(e.without_url()),
            Self::Lost(e) => {
                Error::unavailable(format!("no answer from contabo: {}", describe(&e)))
                    .with_source(e.without_url())
            }
            Self::Decode(msg) if create => Error::new(
                ErrorKind::Ambiguous,
                format!("unreadable create response: {msg}"),
            ),
            Self::Decode(msg) => {
                Error::new(ErrorKind::Unexpected, format!("unreadable response: {msg}"))
            }
            Self::Status {
                status,
                message,
                retry_after,
                request_id,
            } => {
                let kind = status_kind(status, create);
                let hint = match kind {
                    ErrorKind::Unauthenticated => " (check the Contabo API credentials)",
                    ErrorKind::PermissionDenied => " (the API user lacks a role for this call)",
                    ErrorKind::Ambiguous => "; look the label up before retrying",
                    _ => "",
                };
                Error::new(
                    kind,
                    format!("http {status}: {message}{hint} (x-request-id {request_id})"),
                )
                .with_retry_after(retry_after)
            }
        };
        e.with_backend(NAME).with_operation(operation)
    }
}

/// The error kind of an HTTP status.
pub(crate) fn status_kind(status: u16, create: bool) -> ErrorKind {
    match status {
        429 => ErrorKind::RateLimited,
        500..=599 if create => ErrorKind::Ambiguous,
        500..=599 => ErrorKind::Unavailable,
        404 => ErrorKind::NotFound,
        401 => ErrorKind::Unauthenticated,
        403 => ErrorKind::PermissionDenied,
        409 => ErrorKind::Conflict,
        // 400, 402 (needs a paid add-on), 422 and the rest
        _ => ErrorKind::Rejected,
    }
}

pub(crate) fn describe(e: &reqwest::Error) -> &'static str {
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

/// Parses `Retry-After`: delay-seconds or an HTTP-date (a date in the past means no wait).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Removes every occurrence of each secret from `text` (nothing from a server is trusted to
/// be free of them).
pub(crate) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s, "[REDACTED]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mapping() {
        assert_eq!(status_kind(429, true), ErrorKind::RateLimited);
        assert_eq!(status_kind(500, true), ErrorKind::Ambiguous);
        assert_eq!(status_kind(503, false), ErrorKind::Unavailable);
        assert_eq!(status_kind(404, false), ErrorKind::NotFound);
        assert_eq!(status_kind(401, false), ErrorKind::Unauthenticated);
        assert_eq!(status_kind(403, false), ErrorKind::PermissionDenied);
        assert_eq!(status_kind(409, false), ErrorKind::Conflict);
        assert_eq!(status_kind(402, false), ErrorKind::Rejected);
        assert_eq!(status_kind(422, false), ErrorKind::Rejected);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("4", now), Some(Duration::from_secs(4)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("later", now), None);
    }

    #[test]
    fn redact_removes_every_secret() {
        assert_eq!(
            redact("user a@b.c pass hunter22", &["hunter22", "a@b.c", ""]),
            "user [REDACTED] pass [REDACTED]"
        );
    }
}
