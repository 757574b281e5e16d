//! [`BtcBuilder`]: configuration of the Bitcoin verifier.

use std::{fmt, sync::Arc, time::Duration};

use bitcoin::Network;
use secrecy::SecretString;

use nemordp_core::{Clock, Error, Result, Store, SystemClock};

use super::{
    BtcVerifier, NAME,
    derive::{AddressDeriver, parse_network},
    esplora::{Budget, Esplora},
};

/// Blockstream's public mainnet Esplora.
pub const DEFAULT_MAINNET_URL: &str = "https://blockstream.info/api";

/// Builds a [`BtcVerifier`].
///
/// ```
/// use std::sync::Arc;
/// use nemordp_core::sim::store::MemoryStore;
/// use nemordp_payments::btc::BtcBuilder;
///
/// // BIP84 test vector account key (mnemonic "abandon … about").
/// let zpub = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs";
/// let btc = BtcBuilder::new()
///     .with_xpub(zpub)
///     .with_confirmations(2)
///     .with_webhook_secret("whsec")
///     .build(Arc::new(MemoryStore::new()))
///     .unwrap();
/// assert!(!format!("{btc:?}").contains("whsec"));
/// ```
#[derive(Clone)]
pub struct BtcBuilder {
    xpub: Option<String>,
    network: Network,
    config_error: Option<String>,
    esplora_url: Option<String>,
    fallback_urls: Vec<String>,
    allow_http: bool,
    confirmations: u64,
    gap_limit: u64,
    webhook_secret: Option<SecretString>,
    clock: Arc<dyn Clock>,
    timeout: Duration,
    connect_timeout: Duration,
    budget: Budget,
    tip_ttl: Duration,
}

impl fmt::Debug for BtcBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtcBuilder")
            .field("network", &self.network)
            .field("esplora_url", &self.esplora_url)
            .field("confirmations", &self.confirmations)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl Default for BtcBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BtcBuilder {
    /// Defaults: mainnet, Blockstream's Esplora, 1 confirmation, gap-limit warning at 20,
    /// 250 ms between requests, 4 in flight, 4 retries (2 s backoff doubling, ≤ 5 min), tip
    /// height cached 10 s, 20 s request timeout.
    pub fn new() -> Self {
        Self {
            xpub: None,
            network: Network::Bitcoin,
            config_error: None,
            esplora_url: None,
            fallback_urls: Vec::new(),
            allow_http: false,
            confirmations: 1,
            gap_limit: 20,
            webhook_secret: None,
            clock: Arc::new(SystemClock),
            timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(10),
            budget: Budget {
                min_spacing: Duration::from_millis(250),
                max_in_flight: 4,
                max_retries: 4,
                backoff_base: Duration::from_secs(2),
                max_wait: Duration::from_secs(300),
                max_chain_pages: 40,
            },
            tip_ttl: Duration::from_secs(10),
        }
    }

    /// [`BtcBuilder::new`] configured from `BTC_XPUB`, `BTC_NETWORK` (`main`, `test`,
    /// `testnet4`, `signet`, `regtest`), `ESPLORA_URL`, `BTC_CONFIRMATIONS` and
    /// `BTC_WEBHOOK_SECRET`, each when set.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        if let Ok(v) = std::env::var("BTC_XPUB") {
            b = b.with_xpub(v);
        }
        if let Ok(v) = std::env::var("BTC_NETWORK") {
            match parse_network(&v) {
                Ok(n) => b = b.with_network(n),
                Err(e) => b.config_error = Some(e.message().to_owned()),
            }
        }
        if let Ok(v) = std::env::var("ESPLORA_URL") {
            b = b.with_esplora_url(v);
        }
        if let Ok(v) = std::env::var("ESPLORA_FALLBACK_URLS") {
            for url in v.split(',').map(str::trim).filter(|u| !u.is_empty()) {
                b = b.with_fallback_esplora_url(url);
            }
        }
        if let Ok(v) = std::env::var("BTC_CONFIRMATIONS") {
            match v.trim().parse() {
                Ok(n) => b = b.with_confirmations(n),
                Err(_) => {
                    b.config_error = Some(format!("BTC_CONFIRMATIONS {v:?} is not a number"));
                }
            }
        }
        if let Ok(v) = std::env::var("BTC_WEBHOOK_SECRET") {
            b = b.with_webhook_secret(v);
        }
        b
    }

    /// The merchant's account extended public key (`xpub`/`zpub`, or `tpub`/`vpub` on test
    /// networks) at the BIP84 account level; receive addresses are `0/i` below it.
    #[must_use]
    pub fn with_xpub(mut self, xpub: impl Into<String>) -> Self {
        self.xpub = Some(xpub.into());
        self
    }

    /// The network (default mainnet).
    #[must_use]
    pub fn with_network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The Esplora base URL including `/api` (blockstream.info, mempool.space, or your own
    /// electrs). Default: Blockstream for mainnet/testnet/signet; regtest needs one.
    #[must_use]
    pub fn with_esplora_url(mut self, url: impl Into<String>) -> Self {
        self.esplora_url = Some(url.into());
        self
    }

    /// Another Esplora asked when the primary (and earlier fallbacks) fail after their retries,
    /// e.g. mempool.space behind your own electrs. Each check reads one explorer only, so
    /// totals never mix two explorers' views.
    #[must_use]
    pub fn with_fallback_esplora_url(mut self, url: impl Into<String>) -> Self {
        self.fallback_urls.push(url.into());
        self
    }

    /// Allows a plain-`http` Esplora URL on a non-loopback host (a self-hosted electrs on a
    /// private network). Loopback `http` is always allowed.
    #[must_use]
    pub fn with_allow_http(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Confirmations for a payment to count as confirmed (≥ 1; default 1; 6 for large sums).
    #[must_use]
    pub fn with_confirmations(mut self, confirmations: u64) -> Self {
        self.confirmations = confirmations;
        self
    }

    /// Consecutive unpaid addresses after which `open` warns (the merchant wallet's gap limit).
    #[must_use]
    pub fn with_gap_limit(mut self, gap_limit: u64) -> Self {
        self.gap_limit = gap_limit;
        self
    }

    /// The secret for signed nudges (see the module docs). Without one every webhook is
    /// `Unauthenticated`.
    #[must_use]
    pub fn with_webhook_secret(mut self, secret: impl Into<String>) -> Self {
        self.webhook_secret = Some(SecretString::from(secret.into()));
        self
    }

    /// The clock for store timestamps (default the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Whole-request timeout (default 20 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Least time between two requests to the explorer (default 250 ms).
    #[must_use]
    pub fn with_min_request_spacing(mut self, spacing: Duration) -> Self {
        self.budget.min_spacing = spacing;
        self
    }

    /// Requests in flight at once (default 4).
    #[must_use]
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.budget.max_in_flight = n.max(1);
        self
    }

    /// Retries after a 429, 5xx or transport failure (default 4), the first backoff when the
    /// server gave no `Retry-After` (doubled per attempt), and the longest single wait.
    #[must_use]
    pub fn with_retries(
        mut self,
        max_retries: u32,
        backoff_base: Duration,
        max_wait: Duration,
    ) -> Self {
        self.budget.max_retries = max_retries;
        self.budget.backoff_base = backoff_base;
        self.budget.max_wait = max_wait;
        self
    }

    /// How long the tip height and block statuses are reused across checks (default 10 s).
    #[must_use]
    pub fn with_tip_cache(mut self, ttl: Duration) -> Self {
        self.tip_ttl = ttl;
        self
    }

    /// Builds the verifier over `store` (which reserves derivation indexes and remembers
    /// opened addresses).
    pub fn build(self, store: Arc<dyn Store>) -> Result<BtcVerifier> {
        if let Some(e) = self.config_error {
            return Err(Error::invalid_config(e).with_backend(NAME));
        }
        let xpub = self.xpub.ok_or_else(|| {
            Error::invalid_config("BTC_XPUB (the merchant's account xpub/zpub) is not set")
                .with_backend(NAME)
        })?;
        let deriver = AddressDeriver::new(&xpub, self.network)?;
        if self.confirmations == 0 {
            return Err(Error::invalid_config(
                "btc confirmations must be at least 1 (unconfirmed payments can be replaced)",
            )
            .with_backend(NAME));
        }
        let url = match (self.esplora_url, self.network) {
            (Some(u), _) => u,
            (None, Network::Bitcoin) => DEFAULT_MAINNET_URL.to_owned(),
            (None, Network::Testnet) => "https://blockstream.info/testnet/api".to_owned(),
            (None, Network::Signet) => "https://blockstream.info/signet/api".to_owned(),
            (None, n) => {
                return Err(
                    Error::invalid_config(format!("ESPLORA_URL is required for {n}"))
                        .with_backend(NAME),
                );
            }
        };
        for u in std::iter::once(&url).chain(&self.fallback_urls) {
            check_url(u, self.allow_http)?;
        }
        let http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("nemordp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::invalid_config(format!("http client: {e}")).with_backend(NAME))?;
        Ok(BtcVerifier {
            deriver,
            explorers: std::iter::once(&url)
                .chain(&self.fallback_urls)
                .map(|u| Esplora::new(http.clone(), u, self.budget, self.tip_ttl))
                .collect(),
            store,
            clock: self.clock,
            confirmations: self.confirmations,
            gap_limit: self.gap_limit,
            webhook_secret: self.webhook_secret,
        })
    }
}

/// https always; plain http only on loopback or when allowed.
fn check_url(url: &str, allow_http: bool) -> Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        Error::invalid_config(format!("ESPLORA_URL {url:?}: {e}")).with_backend(NAME)
    })?;
    let loopback = matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match parsed.scheme() {
        "https" => {}
        "http" if loopback || allow_http => {}
        other => {
            return Err(Error::invalid_config(format!(
                "ESPLORA_URL scheme {other:?}: use https (or allow http for a private electrs)"
            ))
            .with_backend(NAME));
        }
    }
    Ok(())
}
