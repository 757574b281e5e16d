//! Vultr failures and their mapping onto [`nemordp_core::Error`].

use std::time::{Duration, SystemTime};

use nemordp_core::{Error, ErrorKind};

use super::NAME;

/// One failed HTTP exchange, before it becomes a [`nemordp_core::Error`].
#[derive(Debug)]
pub(crate) enum VultrError {
    /// The request provably never reached Vultr (connect or request-building failure).
    NotSent(reqwest::Error),
    /// The request may have reached Vultr, but no (readable) answer came back.
    Lost(reqwest::Error),
    /// Vultr answered with a non-success status.
    Status {
        status: u16,
        message: String,
        retry_after: Option<Duration>,
    },
    /// A success status with a body we could not read.
    Decode(String),
}

impl VultrError {
    /// Whether a request that is safe to repeat may be sent again after this failure.
    pub(crate) fn retryable_when_safe(&self) -> bool {
        match self {
            Self::NotSent(_) | Self::Lost(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Decode(_) => false,
        }
    }

    /// Whether the failure proves the request was not processed (so even a non-idempotent
    /// request may be sent again).
    pub(crate) fn provably_not_processed(&self) -> bool {
        matches!(self, Self::NotSent(_) | Self::Status { status: 429, .. })
    }

    /// The wait Vultr asked for, if any.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Maps to the shared error. `create` marks a non-idempotent create: any failure that may
    /// have happened after Vultr processed it becomes [`ErrorKind::Ambiguous`].
    pub(crate) fn into_error(self, operation: &'static str, create: bool) -> Error {
        let e = match self {
            Self::NotSent(e) => {
                Error::unavailable(format!("could not reach vultr: {}", describe(&e)))
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
            Self::Lost(e) => Error::unavailable(format!("no answer from vultr: {}", describe(&e)))
                .with_source(e.without_url()),
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
            } => {
                let kind = match status {
                    429 => ErrorKind::RateLimited,
                    500..=599 if create => ErrorKind::Ambiguous,
                    500..=599 => ErrorKind::Unavailable,
                    404 => ErrorKind::NotFound,
                    401 => ErrorKind::Unauthenticated,
                    403 => ErrorKind::PermissionDenied,
                    _ => ErrorKind::Rejected,
                };
                let hint = match kind {
                    ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => {
                        " (check the API key and the Vultr API access list)"
                    }
                    ErrorKind::Ambiguous => "; look the label up before retrying",
                    _ => "",
                };
                Error::new(kind, format!("http {status}: {message}{hint}"))
                    .with_retry_after(retry_after)
            }
        };
        e.with_backend(NAME).with_operation(operation)
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

/// Parses `Retry-After`: delay-seconds or an HTTP-date (a date in the past means no wait).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Removes every occurrence of `secret` from `text` (error bodies should never echo the key,
/// but nothing from the server is trusted to be free of it).
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "[REDACTED]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        // Wed, 21 Oct 2015 07:28:00 GMT is 1445412480
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn status_mapping() {
        let kind = |status: u16, create: bool| {
            VultrError::Status {
                status,
                message: "x".into(),
                retry_after: None,
            }
            .into_error("op", create)
            .kind()
        };
        assert_eq!(kind(429, false), ErrorKind::RateLimited);
        assert_eq!(kind(429, true), ErrorKind::RateLimited);
        assert_eq!(kind(503, false), ErrorKind::Unavailable);
        assert_eq!(kind(500, true), ErrorKind::Ambiguous);
        assert_eq!(kind(404, false), ErrorKind::NotFound);
        assert_eq!(kind(401, false), ErrorKind::Unauthenticated);
        assert_eq!(kind(403, false), ErrorKind::PermissionDenied);
        assert_eq!(kind(400, true), ErrorKind::Rejected);
        assert_eq!(kind(422, false), ErrorKind::Rejected);
    }

    #[test]
    fn redact_removes_the_key() {
        assert_eq!(redact("bad key abc123", "abc123"), "bad key [REDACTED]");
        assert_eq!(redact("fine", ""), "fine");
    }
}
