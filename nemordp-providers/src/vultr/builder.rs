//! [`VultrBuilder`]: configuration of the Vultr provider.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use nemordp_core::{Error, Result};

use super::{
    NAME, Vultr,
    client::{Client, RetryPolicy},
};

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.vultr.com/v2";

/// Builds a [`Vultr`] provider.
///
/// ```
/// use std::time::Duration;
/// use nemordp_providers::vultr::VultrBuilder;
///
/// let vultr = VultrBuilder::new()
///     .with_api_key("not-a-real-key")
///     .with_timeout(Duration::from_secs(20))
///     .build()
///     .unwrap();
/// assert!(!format!("{vultr:?}").contains("not-a-real-key"));
/// ```
#[derive(Debug, Clone)]
pub struct VultrBuilder {
    api_key: Option<SecretString>,
    base_url: String,
    allow_http: bool,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
    max_retries: u32,
    retry_base: Duration,
    max_retry_wait: Duration,
    delete_attempts: u32,
    delete_backoff: Duration,
    firewall: bool,
    firewall_description: String,
    user_data: bool,
}

impl Default for VultrBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl VultrBuilder {
    /// Defaults: production URL, 30 s request timeout, 10 s connect timeout, 3 retries of
    /// safe calls, RDP firewall on.
    pub fn new() -> Self {
        Self {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            allow_http: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("nemordp/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_retries: 3,
            retry_base: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(60),
            delete_attempts: 8,
            delete_backoff: Duration::from_secs(5),
            firewall: true,
            firewall_description: "nemordp-rdp".to_owned(),
            user_data: false,
        }
    }

    /// [`VultrBuilder::new`] with the key from `VULTR_API_KEY` and, when set, the base URL
    /// from `VULTR_API_URL`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        if let Ok(key) = std::env::var("VULTR_API_KEY") {
            b = b.with_api_key(key);
        }
        if let Ok(url) = std::env::var("VULTR_API_URL") {
            b = b.with_base_url(url);
        }
        b
    }

    /// The API key (sent as `Authorization: Bearer`).
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    /// The API base URL, including `/v2`.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Allows a plain-`http` base URL (local fakes only).
    #[must_use]
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Whole-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connect timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `User-Agent` header.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Retries of safe calls after throttling or outages (creates are never retried), the
    /// first backoff when Vultr sends no `Retry-After` (doubled per attempt), and the
    /// longest single wait.
    #[must_use]
    pub fn with_retries(mut self, max_retries: u32, base: Duration, max_wait: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_base = base;
        self.max_retry_wait = max_wait;
        self
    }

    /// How often a delete refused because the fresh machine is still locked is tried, and
    /// the first backoff between tries (doubled each time, at most 60 s).
    #[must_use]
    pub fn with_delete_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.delete_attempts = attempts;
        self.delete_backoff = backoff;
        self
    }

    /// Whether creates attach an RDP-only firewall group (default on).
    #[must_use]
    pub fn with_firewall(mut self, enabled: bool) -> Self {
        self.firewall = enabled;
        self
    }

    /// Description of the shared RDP firewall group (default `nemordp-rdp`); groups for one
    /// customer address get `-<ip>` appended.
    #[must_use]
    pub fn with_firewall_description(mut self, description: impl Into<String>) -> Self {
        self.firewall_description = description.into();
        self
    }

    /// Whether the Provisioner may rely on first-boot user-data (default off).
    ///
    /// Off: the provider reports no user-data support, so the Provisioner delivers the
    /// password Vultr generates (`default_password`, only in the create response; sealed and
    /// stored at once). Vultr does not document that its Windows images run user-data, and a
    /// password set by a script that never runs would lock the customer out.
    ///
    /// On: for images you have verified run user-data (e.g. a snapshot with cloudbase-init),
    /// the Provisioner sets a random password of its own in a first-boot PowerShell script and
    /// delivers that one; it then also survives a lost create response.
    #[must_use]
    pub fn with_user_data(mut self, enabled: bool) -> Self {
        self.user_data = enabled;
        self
    }

    /// Checks the configuration and builds the provider.
    pub fn build(self) -> Result<Vultr> {
        let invalid = |m: String| Error::invalid_config(m).with_backend(NAME);
        let key = self
            .api_key
            .filter(|k| !k.expose_secret().trim().is_empty())
            .ok_or_else(|| invalid("no api key: set VULTR_API_KEY or call with_api_key".into()))?;
        let base = self.base_url.trim().trim_end_matches('/').to_owned();
        let rest = if let Some(rest) = base.strip_prefix("https://") {
            rest
        } else if let Some(rest) = base.strip_prefix("http://") {
            if !self.allow_http {
                return Err(invalid(format!(
                    "base url {base:?} is plain http; use https or with_allow_http(true) for a local fake"
                )));
            }
            rest
        } else {
            return Err(invalid(format!(
                "base url {base:?} must start with https://"
            )));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid(format!("base url {base:?} has no host")));
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid("timeouts must be greater than zero".into()));
        }
        if self.delete_attempts == 0 {
            return Err(invalid("delete attempts must be at least 1".into()));
        }
        if self.firewall_description.trim().is_empty() {
            return Err(invalid("firewall description must not be empty".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent)
            .build()
            .map_err(|e| invalid(format!("http client: {e}")))?;
        let client = Client::new(
            http,
            &base,
            key,
            RetryPolicy {
                max_retries: self.max_retries,
                base: self.retry_base,
                max_wait: self.max_retry_wait,
            },
        );
        Ok(Vultr::from_parts(
            client,
            self.firewall.then_some(self.firewall_description),
            self.delete_attempts,
            self.delete_backoff,
            self.user_data,
        ))
    }
}

#[cfg(test)]
mod tests {
    use nemordp_core::ErrorKind;

    use super::*;

    #[test]
    fn build_checks_the_config() {
        let err = VultrBuilder::new().build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("VULTR_API_KEY"));
        let err = VultrBuilder::new()
            .with_api_key("k")
            .with_base_url("http://127.0.0.1:1/v2")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            VultrBuilder::new()
                .with_api_key("k")
                .with_base_url("http://127.0.0.1:1/v2")
                .with_allow_http(true)
                .build()
                .is_ok()
        );
        let err = VultrBuilder::new()
            .with_api_key("k")
            .with_base_url("ftp://x")
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        let err = VultrBuilder::new()
            .with_api_key("k")
            .with_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    }

    #[test]
    fn debug_never_prints_the_key() {
        let b = VultrBuilder::new().with_api_key("sekrit-key-123");
        assert!(!format!("{b:?}").contains("sekrit-key-123"));
        let v = b.build().unwrap();
        assert!(!format!("{v:?}").contains("sekrit-key-123"));
    }
}
