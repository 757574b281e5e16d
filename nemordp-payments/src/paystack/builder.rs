//! [`PaystackBuilder`]: configuration of the Paystack verifier.

use std::{net::IpAddr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use nemordp_core::{Asset, Currency, Error, Result};

use super::{
    NAME, Paystack,
    client::{Client, RetryPolicy},
};

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.paystack.co";

/// The currencies Paystack's `Currency` schema lists.
pub const SUPPORTED_CURRENCIES: [Currency; 5] = [
    Currency::Ghs,
    Currency::Kes,
    Currency::Ngn,
    Currency::Zar,
    Currency::Usd,
];

/// Builds a [`Paystack`] verifier.
///
/// ```
/// use nemordp_payments::paystack::PaystackBuilder;
/// use nemordp_core::Currency;
///
/// let paystack = PaystackBuilder::new()
///     .with_secret_key("sk_test_not_a_real_key")
///     .with_currency(Currency::Ngn)
///     .with_callback_url("https://panel.example/paid")
///     .build()
///     .unwrap();
/// assert!(!format!("{paystack:?}").contains("not_a_real_key"));
/// ```
#[derive(Debug, Clone)]
pub struct PaystackBuilder {
    secret_key: Option<SecretString>,
    base_url: String,
    allow_http: bool,
    currency: Currency,
    callback_url: Option<String>,
    channels: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
    max_retries: u32,
    retry_base: Duration,
    max_retry_wait: Duration,
    source_ips: Option<Vec<IpAddr>>,
    source_ip_header: String,
    fraud: Option<nemordp_core::fraud::FraudEngine>,
    review_store: Option<std::sync::Arc<dyn nemordp_core::Store>>,
    clock: Option<std::sync::Arc<dyn nemordp_core::Clock>>,
}

impl Default for PaystackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PaystackBuilder {
    /// Defaults: production URL, NGN, 30 s timeout, 10 s connect timeout, 3 retries of
    /// idempotent calls, no source-IP allow-list.
    pub fn new() -> Self {
        Self {
            secret_key: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            allow_http: false,
            currency: Currency::Ngn,
            callback_url: None,
            channels: Vec::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("nemordp/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_retries: 3,
            retry_base: Duration::from_millis(500),
            max_retry_wait: Duration::from_secs(30),
            source_ips: None,
            source_ip_header: "x-forwarded-for".to_owned(),
            fraud: None,
            review_store: None,
            clock: None,
        }
    }

    /// [`PaystackBuilder::new`] with the key from `PAYSTACK_SECRET_KEY` and, when set, the
    /// base URL from `PAYSTACK_API_URL`, the currency from `PAYSTACK_CURRENCY` and the
    /// callback URL from `PAYSTACK_CALLBACK_URL`. An unknown currency is reported by `build`.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        if let Ok(key) = std::env::var("PAYSTACK_SECRET_KEY") {
            b = b.with_secret_key(key);
        }
        if let Ok(url) = std::env::var("PAYSTACK_API_URL") {
            b = b.with_base_url(url);
        }
        if let Ok(url) = std::env::var("PAYSTACK_CALLBACK_URL") {
            b = b.with_callback_url(url);
        }
        if let Ok(code) = std::env::var("PAYSTACK_CURRENCY") {
            match code.trim().parse::<Currency>() {
                Ok(c) => b = b.with_currency(c),
                Err(_) => b.currency = Currency::Jpy, // rejected by build with a clear message
            }
        }
        b
    }

    /// The secret key (`sk_live_…`/`sk_test_…`): API bearer and webhook HMAC key.
    #[must_use]
    pub fn with_secret_key(mut self, key: impl Into<String>) -> Self {
        self.secret_key = Some(SecretString::from(key.into()));
        self
    }

    /// The API base URL.
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

    /// The currency charged (one of [`SUPPORTED_CURRENCIES`]); the verifier's asset.
    #[must_use]
    pub fn with_currency(mut self, currency: Currency) -> Self {
        self.currency = currency;
        self
    }

    /// Where Paystack sends the customer after paying. A visit proves nothing: only a verify
    /// call does.
    #[must_use]
    pub fn with_callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    /// Restricts checkout to these channels (`card`, `bank`, `ussd`, …); empty = all.
    #[must_use]
    pub fn with_channels(mut self, channels: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.channels = channels.into_iter().map(Into::into).collect();
        self
    }

    /// Whole-request and connect timeouts.
    #[must_use]
    pub fn with_timeouts(mut self, request: Duration, connect: Duration) -> Self {
        self.timeout = request;
        self.connect_timeout = connect;
        self
    }

    /// Retries of idempotent calls after throttling, 5xx or timeouts, the first backoff when
    /// Paystack sends no `Retry-After` (doubled per attempt), and the longest single wait.
    #[must_use]
    pub fn with_retries(mut self, max_retries: u32, base: Duration, max_wait: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_base = base;
        self.max_retry_wait = max_wait;
        self
    }

    /// Accepts webhooks only from these source addresses, read from `header` (the last
    /// address of `X-Forwarded-For`, as appended by the host's own proxy). Use
    /// [`PAYSTACK_SOURCE_IPS`](super::PAYSTACK_SOURCE_IPS) for Paystack's documented list.
    #[must_use]
    pub fn with_source_ip_allow_list(
        mut self,
        ips: impl IntoIterator<Item = IpAddr>,
        header: impl Into<String>,
    ) -> Self {
        self.source_ips = Some(ips.into_iter().collect());
        self.source_ip_header = header.into().to_ascii_lowercase();
        self
    }

    /// Hands what verify calls learn about the payer (card fingerprint =
    /// `authorization.signature`, IP address, e-mail) to the fraud engine the Provisioner
    /// uses, for card and IP velocity at payment arrival.
    #[must_use]
    pub fn with_fraud_engine(mut self, engine: nemordp_core::fraud::FraudEngine) -> Self {
        self.fraud = Some(engine);
        self
    }

    /// Files every mismatched payment and partial refund durably in `store` (collection
    /// `paystack.mismatch`, key `<reference>:<transaction id>:<kind>[:<refund id>]`), so an
    /// operator's review queue survives restarts and is shared by every process.
    ///
    /// Not needed with a Provisioner: registering the verifier with one
    /// (`ProvisionerBuilder::payment`) files them in the Provisioner's store by default. Use
    /// this for another store, or when the verifier runs on its own; without either,
    /// mismatches are only logged, counted and kept in memory ([`Paystack::mismatches`],
    /// [`Paystack::review_is_durable`] says which).
    #[must_use]
    pub fn with_review_store(mut self, store: std::sync::Arc<dyn nemordp_core::Store>) -> Self {
        self.review_store = Some(store);
        self
    }

    /// The clock that stamps review records (default: the Provisioner's once registered with
    /// one, else the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn nemordp_core::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Checks the configuration and builds the verifier.
    pub fn build(self) -> Result<Paystack> {
        let invalid = |m: String| Error::invalid_config(m).with_backend(NAME);
        let key = self
            .secret_key
            .filter(|k| !k.expose_secret().trim().is_empty())
            .ok_or_else(|| {
                invalid("no secret key: set PAYSTACK_SECRET_KEY or call with_secret_key".into())
            })?;
        if key.expose_secret().starts_with("pk_") {
            return Err(invalid(
                "that is the public key; the secret key starts with sk_".into(),
            ));
        }
        if !SUPPORTED_CURRENCIES.contains(&self.currency) {
            return Err(invalid(format!(
                "currency {} is not one Paystack charges in (GHS, KES, NGN, ZAR, USD)",
                self.currency
            )));
        }
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
        if let Some(url) = &self.callback_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(invalid(format!(
                "callback url {url:?} must be an http(s) url"
            )));
        }
        if self.source_ips.as_ref().is_some_and(Vec::is_empty) {
            return Err(invalid(
                "the source-ip allow-list is empty: it would refuse every webhook".into(),
            ));
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
        let paystack = Paystack::from_parts(
            client,
            Asset::Fiat(self.currency),
            self.callback_url,
            self.channels,
            self.source_ips.map(|ips| (ips, self.source_ip_header)),
            self.fraud,
        );
        // Set before any Provisioner attaches, so explicit choices win over its defaults.
        if let Some(store) = self.review_store {
            let _ = paystack.review_store.set(store);
        }
        if let Some(clock) = self.clock {
            let _ = paystack.clock.set(clock);
        }
        Ok(paystack)
    }
}

#[cfg(test)]
mod tests {
    use nemordp_core::ErrorKind;

    use super::*;

    #[test]
    fn build_checks_the_config() {
        let kind = |b: PaystackBuilder| b.build().unwrap_err().kind();
        let e = PaystackBuilder::new().build().unwrap_err();
        assert!(e.to_string().contains("PAYSTACK_SECRET_KEY"));
        let k = || PaystackBuilder::new().with_secret_key("sk_test_x");
        assert_eq!(
            kind(PaystackBuilder::new().with_secret_key("pk_test_x")),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(k().with_base_url("http://127.0.0.1:1")),
            ErrorKind::InvalidConfig
        );
        assert!(
            k().with_base_url("http://127.0.0.1:1")
                .with_allow_http(true)
                .build()
                .is_ok()
        );
        assert_eq!(kind(k().with_base_url("ftp://x")), ErrorKind::InvalidConfig);
        assert_eq!(
            kind(k().with_currency(Currency::Eur)),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(k().with_callback_url("javascript:alert(1)")),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(k().with_timeouts(Duration::ZERO, Duration::ZERO)),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            kind(k().with_source_ip_allow_list([], "x-real-ip")),
            ErrorKind::InvalidConfig
        );
        assert!(k().with_currency(Currency::Usd).build().is_ok());
    }

    #[test]
    fn debug_never_prints_the_key() {
        let b = PaystackBuilder::new().with_secret_key("sk_test_sekrit123");
        assert!(!format!("{b:?}").contains("sekrit123"));
        assert!(!format!("{:?}", b.build().unwrap()).contains("sekrit123"));
    }
}
