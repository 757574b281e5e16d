//! The one public error type of `nemordp-core`, shared by every backend trait.
//!
//! Business outcomes (an underpaid invoice, an instance still booting) are data, not errors:
//! an [`Error`] always means something went wrong talking to a backend or validating input,
//! and its [`ErrorKind`] tells the caller whether trying again can help.

use std::{error::Error as StdError, fmt, time::Duration};

/// What went wrong, coarse enough to steer retries and HTTP status mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing asked for does not exist (unknown id, no such order).
    NotFound,
    /// A create collided with something that already exists under the same key.
    AlreadyExists,
    /// A compare-and-set lost: the record changed since it was read, or a lease was lost.
    Conflict,
    /// Input failed validation (bad amount string, illegal state transition, malformed reply).
    InvalidInput,
    /// A builder or configuration value is missing or malformed.
    InvalidConfig,
    /// Credentials were missing or refused, or a webhook signature did not verify.
    Unauthenticated,
    /// Credentials were accepted but lack the permission (or the source IP is not allowed).
    PermissionDenied,
    /// The backend throttled us; see [`Error::retry_after`].
    RateLimited,
    /// The backend is down or unreachable for now (5xx, connect failure, timeout on a safe call).
    Unavailable,
    /// The backend understood the request and refused it for good (4xx other than the above).
    Rejected,
    /// The backend does not offer this operation.
    NotSupported,
    /// The request may or may not have taken effect (timeout or lost response on a create).
    /// Never retry blindly: look the outcome up first.
    Ambiguous,
    /// Anything else; a bug or a reply we could not make sense of.
    Unexpected,
}

impl ErrorKind {
    /// Lower-case name used in messages and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not found",
            Self::AlreadyExists => "already exists",
            Self::Conflict => "conflict",
            Self::InvalidInput => "invalid input",
            Self::InvalidConfig => "invalid config",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission denied",
            Self::RateLimited => "rate limited",
            Self::Unavailable => "unavailable",
            Self::Rejected => "rejected",
            Self::NotSupported => "not supported",
            Self::Ambiguous => "ambiguous outcome",
            Self::Unexpected => "unexpected",
        }
    }

    /// Whether the same request may simply be sent again later.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::RateLimited | Self::Unavailable)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every `nemordp` backend.
///
/// Messages are lower-case, name the backend and operation, and never contain keys,
/// tokens, passwords or signed URLs.
pub struct Error {
    kind: ErrorKind,
    backend: &'static str,
    operation: &'static str,
    message: String,
    retry_after: Option<Duration>,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            backend: "",
            operation: "",
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Shorthand for [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for [`ErrorKind::NotFound`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for [`ErrorKind::Conflict`].
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// Shorthand for [`ErrorKind::InvalidConfig`].
    pub fn invalid_config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, message)
    }

    /// Shorthand for [`ErrorKind::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A [`ErrorKind::RateLimited`] error with the server's suggested wait, if any.
    pub fn rate_limited(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self::new(ErrorKind::RateLimited, message).with_retry_after(retry_after)
    }

    /// Names the backend (`"vultr"`, `"memory"`, …) the error came from.
    #[must_use]
    pub fn with_backend(mut self, backend: &'static str) -> Self {
        self.backend = backend;
        self
    }

    /// Names the operation (`"create_instance"`, …) that failed.
    #[must_use]
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = operation;
        self
    }

    /// Sets how long the backend asked us to wait.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Attaches the underlying cause.
    #[must_use]
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend name, or `""` when not set.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The operation name, or `""` when not set.
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The message without backend or operation prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether sending the same request again later can succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// How long the backend asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if !self.backend.is_empty() {
            d.field("backend", &self.backend);
        }
        if !self.operation.is_empty() {
            d.field("operation", &self.operation);
        }
        d.field("message", &self.message);
        if let Some(after) = self.retry_after {
            d.field("retry_after", &after);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.backend.is_empty() {
            write!(f, "{}: ", self.backend)?;
        }
        if !self.operation.is_empty() {
            write!(f, "{}: ", self.operation)?;
        }
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {}s)", after.as_secs_f32().ceil())?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_kinds_are_exactly_throttling_and_outages() {
        let all = [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::Conflict,
            ErrorKind::InvalidInput,
            ErrorKind::InvalidConfig,
            ErrorKind::Unauthenticated,
            ErrorKind::PermissionDenied,
            ErrorKind::RateLimited,
            ErrorKind::Unavailable,
            ErrorKind::Rejected,
            ErrorKind::NotSupported,
            ErrorKind::Ambiguous,
            ErrorKind::Unexpected,
        ];
        let retryable: Vec<_> = all.into_iter().filter(|k| k.is_retryable()).collect();
        assert_eq!(retryable, [ErrorKind::RateLimited, ErrorKind::Unavailable]);
    }

    #[test]
    fn display_names_backend_operation_and_wait() {
        let e = Error::rate_limited("too many requests", Some(Duration::from_secs(3)))
            .with_backend("vultr")
            .with_operation("get_instance");
        assert_eq!(
            e.to_string(),
            "vultr: get_instance: rate limited: too many requests (retry after 3s)"
        );
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }
}
