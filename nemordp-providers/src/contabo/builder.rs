//! [`ContaboBuilder`]: configuration of the Contabo provider.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use nemordp_core::{Error, Result};

use super::{
    Contabo, NAME,
    client::{Client, Credentials, RetryPolicy},
};

/// The production API.
pub const DEFAULT_BASE_URL: &str = "https://api.contabo.com";

/// The production token endpoint (Keycloak realm `contabo`).
pub const DEFAULT_AUTH_URL: &str =
    "https://auth.contabo.com/auth/realms/contabo/protocol/openid-connect/token";

/// Every region the API accepts at create (`CreateInstanceRequest.region`).
pub const REGIONS: [&str; 9] = [
    "EU",
    "US-central",
    "US-east",
    "US-west",
    "SIN",
    "UK",
    "AUS",
    "JPN",
    "IND",
];

/// Contract lengths Contabo sells, in months.
pub const PERIODS: [u32; 4] = [1, 3, 6, 12];

/// One product (machine size) the operator sells. Contabo has no product endpoint, so sizes
/// come from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ContaboProduct {
    /// Product id, e.g. `V92`.
    pub id: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub ram_mib: u32,
    /// Disk in GiB.
    pub disk_gib: u32,
    /// Regions it may be bought in; empty means every configured region.
    pub regions: Vec<String>,
}

impl ContaboProduct {
    /// A product sold in every configured region.
    pub fn new(id: impl Into<String>, vcpus: u32, ram_mib: u32, disk_gib: u32) -> Self {
        Self {
            id: id.into(),
            vcpus,
            ram_mib,
            disk_gib,
            regions: Vec::new(),
        }
    }

    /// Restricts the product to `regions`.
    #[must_use]
    pub fn in_regions<I, S>(mut self, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.regions = regions.into_iter().map(Into::into).collect();
        self
    }
}

/// The Cloud VPS 10–60 products: ids and disks from the API's create table (May 2025),
/// CPU and memory as Contabo's product pages listed them then. Check them against your
/// panel; [`ContaboBuilder::with_products`] replaces the list.
pub fn default_products() -> Vec<ContaboProduct> {
    const GIB: u32 = 1024;
    [
        ("V91", 4, 8, 75),
        ("V92", 4, 8, 150),
        ("V93", 4, 8, 300),
        ("V94", 6, 12, 100),
        ("V95", 6, 12, 200),
        ("V96", 6, 12, 400),
        ("V97", 8, 24, 200),
        ("V98", 8, 24, 400),
        ("V99", 8, 24, 1000),
        ("V100", 12, 48, 250),
        ("V101", 12, 48, 500),
        ("V102", 12, 48, 1200),
        ("V103", 16, 64, 300),
        ("V104", 16, 64, 600),
        ("V105", 16, 64, 1400),
        ("V106", 18, 96, 350),
        ("V107", 18, 96, 700),
    ]
    .into_iter()
    .map(|(id, cpu, ram_gib, disk)| ContaboProduct::new(id, cpu, ram_gib * GIB, disk))
    .collect()
}

/// Builds a [`Contabo`] provider.
///
/// ```
/// use nemordp_providers::contabo::ContaboBuilder;
///
/// let contabo = ContaboBuilder::new()
///     .with_credentials("client-id", "client-secret", "api@example.com", "api-Pass-w0rd")
///     .with_period_months(3)
///     .build()
///     .unwrap();
/// assert!(!format!("{contabo:?}").contains("client-secret"));
/// ```
#[derive(Debug, Clone)]
pub struct ContaboBuilder {
    client_id: Option<SecretString>,
    client_secret: Option<SecretString>,
    api_user: Option<SecretString>,
    api_password: Option<SecretString>,
    base_url: String,
    auth_url: String,
    allow_http: bool,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
    max_retries: u32,
    retry_base: Duration,
    max_retry_wait: Duration,
    refresh_margin: Duration,
    products: Vec<ContaboProduct>,
    regions: Vec<String>,
    period_months: u32,
    default_user: String,
    pool_name: Option<String>,
    ssh_keys: Vec<String>,
}

impl Default for ContaboBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ContaboBuilder {
    /// Defaults: production URLs, 30 s request timeout, 10 s connect timeout, 3 retries of
    /// safe calls, tokens renewed 30 s before expiry, the Cloud VPS products in every region,
    /// one-month contracts, `root` as Contabo's default user, no reuse pool.
    pub fn new() -> Self {
        Self {
            client_id: None,
            client_secret: None,
            api_user: None,
            api_password: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            auth_url: DEFAULT_AUTH_URL.to_owned(),
            allow_http: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            user_agent: concat!("nemordp/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_retries: 3,
            retry_base: Duration::from_secs(1),
            max_retry_wait: Duration::from_secs(60),
            refresh_margin: Duration::from_secs(30),
            products: default_products(),
            regions: REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            period_months: 1,
            default_user: "root".to_owned(),
            pool_name: None,
            ssh_keys: Vec::new(),
        }
    }

    /// [`ContaboBuilder::new`] with the credentials from `CONTABO_CLIENT_ID`,
    /// `CONTABO_CLIENT_SECRET`, `CONTABO_API_USER` and `CONTABO_API_PASSWORD`, and, when set,
    /// the URLs from `CONTABO_API_URL` and `CONTABO_AUTH_URL`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut b = Self::new();
        b.client_id = var("CONTABO_CLIENT_ID").map(SecretString::from);
        b.client_secret = var("CONTABO_CLIENT_SECRET").map(SecretString::from);
        b.api_user = var("CONTABO_API_USER").map(SecretString::from);
        b.api_password = var("CONTABO_API_PASSWORD").map(SecretString::from);
        if let Some(url) = var("CONTABO_API_URL") {
            b = b.with_base_url(url);
        }
        if let Some(url) = var("CONTABO_AUTH_URL") {
            b = b.with_auth_url(url);
        }
        b
    }

    /// The four panel credentials: ClientId, ClientSecret, API user (e-mail), API password.
    #[must_use]
    pub fn with_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        api_user: impl Into<String>,
        api_password: impl Into<String>,
    ) -> Self {
        self.client_id = Some(SecretString::from(client_id.into()));
        self.client_secret = Some(SecretString::from(client_secret.into()));
        self.api_user = Some(SecretString::from(api_user.into()));
        self.api_password = Some(SecretString::from(api_password.into()));
        self
    }

    /// The API base URL, without `/v1`.
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The OpenID Connect token endpoint.
    #[must_use]
    pub fn with_auth_url(mut self, url: impl Into<String>) -> Self {
        self.auth_url = url.into();
        self
    }

    /// Allows plain-`http` URLs (local fakes only).
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
    /// first backoff when Contabo sends no `Retry-After` (doubled per attempt; Contabo
    /// documents 429 without one), and the longest single wait.
    #[must_use]
    pub fn with_retries(mut self, max_retries: u32, base: Duration, max_wait: Duration) -> Self {
        self.max_retries = max_retries;
        self.retry_base = base;
        self.max_retry_wait = max_wait;
        self
    }

    /// How long before its expiry an access token is renewed (default 30 s; at most half
    /// the token's lifetime).
    #[must_use]
    pub fn with_token_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// The products sold (replaces the defaults).
    #[must_use]
    pub fn with_products<I: IntoIterator<Item = ContaboProduct>>(mut self, products: I) -> Self {
        self.products = products.into_iter().collect();
        self
    }

    /// The regions machines may be bought in (each must be a Contabo region, see [`REGIONS`]).
    #[must_use]
    pub fn with_regions<I, S>(mut self, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.regions = regions.into_iter().map(Into::into).collect();
        self
    }

    /// Contract length for creates whose spec names none (1, 3, 6 or 12 months).
    #[must_use]
    pub fn with_period_months(mut self, months: u32) -> Self {
        self.period_months = months;
        self
    }

    /// Contabo's `defaultUser`, which receives the root password secret: `root` (default)
    /// or `admin`.
    #[must_use]
    pub fn with_default_user(mut self, user: impl Into<String>) -> Self {
        self.default_user = user.into();
        self
    }

    /// Reuse pool: creates first look for an instance whose display name is exactly `name`
    /// (a paid, unowned machine an operator released with [`Contabo::release_to_pool`]), and
    /// reinstall it instead of ordering a new one.
    #[must_use]
    pub fn with_reuse_pool(mut self, name: impl Into<String>) -> Self {
        self.pool_name = Some(name.into());
        self
    }

    /// Operator SSH public keys installed for Contabo's default user on every machine. They
    /// travel as Contabo `ssh` secrets (created once, found again by name after a restart),
    /// never as raw values in the instance request.
    #[must_use]
    pub fn with_ssh_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.ssh_keys = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Checks the configuration and builds the provider.
    pub fn build(self) -> Result<Contabo> {
        let invalid = |m: String| Error::invalid_config(m).with_backend(NAME);
        let need = |v: Option<SecretString>, var: &str| {
            v.filter(|s| !s.expose_secret().trim().is_empty())
                .ok_or_else(|| {
                    invalid(format!(
                        "no {var}: set CONTABO_CLIENT_ID, CONTABO_CLIENT_SECRET, \
                         CONTABO_API_USER and CONTABO_API_PASSWORD or call with_credentials"
                    ))
                })
        };
        let creds = Credentials {
            client_id: need(self.client_id, "CONTABO_CLIENT_ID")?,
            client_secret: need(self.client_secret, "CONTABO_CLIENT_SECRET")?,
            api_user: need(self.api_user, "CONTABO_API_USER")?,
            api_password: need(self.api_password, "CONTABO_API_PASSWORD")?,
        };
        let base = check_url(&self.base_url, self.allow_http, "base url")?;
        let auth = check_url(&self.auth_url, self.allow_http, "auth url")?;
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(invalid("timeouts must be greater than zero".into()));
        }
        if !PERIODS.contains(&self.period_months) {
            return Err(invalid(format!(
                "contract period {} months is not one Contabo sells ({PERIODS:?})",
                self.period_months
            )));
        }
        if !matches!(self.default_user.as_str(), "root" | "admin") {
            return Err(invalid(format!(
                "default user {:?} must be root or admin for Linux images",
                self.default_user
            )));
        }
        if self.regions.is_empty() {
            return Err(invalid("no regions configured".into()));
        }
        for r in &self.regions {
            if !REGIONS.contains(&r.as_str()) {
                return Err(invalid(format!(
                    "unknown contabo region {r:?}; regions are {}",
                    REGIONS.join(", ")
                )));
            }
        }
        if self.products.is_empty() {
            return Err(invalid("no products configured".into()));
        }
        for p in &self.products {
            if p.id.trim().is_empty() {
                return Err(invalid("a product has an empty id".into()));
            }
            if let Some(r) = p.regions.iter().find(|r| !self.regions.contains(r)) {
                return Err(invalid(format!(
                    "product {} lists region {r:?}, which is not configured",
                    p.id
                )));
            }
        }
        if self
            .pool_name
            .as_ref()
            .is_some_and(|n| n.trim().is_empty() || n.starts_with(nemordp_core::ids::LABEL_PREFIX))
        {
            return Err(invalid(
                "the reuse pool name must be non-empty and must not look like an order label"
                    .into(),
            ));
        }
        for key in &self.ssh_keys {
            let kind = key.split_whitespace().next().unwrap_or_default();
            let known =
                kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
            if !known || key.split_whitespace().count() < 2 || key.len() > 500 {
                return Err(invalid(format!(
                    "ssh key {:?}… is not an OpenSSH public key line (at most 500 characters)",
                    key.chars().take(20).collect::<String>()
                )));
            }
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
            &auth,
            creds,
            RetryPolicy {
                max_retries: self.max_retries,
                base: self.retry_base,
                max_wait: self.max_retry_wait,
            },
            self.refresh_margin,
        );
        Ok(Contabo::from_parts(
            client,
            super::Settings {
                products: self.products,
                regions: self.regions,
                period_months: self.period_months,
                default_user: self.default_user,
                pool_name: self.pool_name,
                ssh_keys: self
                    .ssh_keys
                    .into_iter()
                    .map(|k| k.trim().to_owned())
                    .collect(),
            },
        ))
    }
}

fn check_url(url: &str, allow_http: bool, what: &str) -> Result<String> {
    let invalid = |m: String| Error::invalid_config(m).with_backend(NAME);
    let url = url.trim().trim_end_matches('/').to_owned();
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        if !allow_http {
            return Err(invalid(format!(
                "{what} {url:?} is plain http; use https or with_allow_http(true) for a local fake"
            )));
        }
        rest
    } else {
        return Err(invalid(format!("{what} {url:?} must start with https://")));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(invalid(format!("{what} {url:?} has no host")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use nemordp_core::ErrorKind;

    use super::*;

    fn creds() -> ContaboBuilder {
        ContaboBuilder::new().with_credentials("id", "sec-ret-1", "me@example.com", "pw-Secret-9")
    }

    #[test]
    fn build_checks_the_config() {
        let err = ContaboBuilder::new().build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.to_string().contains("CONTABO_CLIENT_ID"), "{err}");
        assert!(creds().build().is_ok());
        for bad in [
            creds().with_base_url("http://127.0.0.1:1"),
            creds().with_auth_url("ftp://x"),
            creds().with_period_months(2),
            creds().with_default_user("administrator"),
            creds().with_regions(["EU", "MARS"]),
            creds().with_regions(Vec::<String>::new()),
            creds()
                .with_products([ContaboProduct::new("V92", 4, 8192, 150).in_regions(["UK"])])
                .with_regions(["EU"]),
            creds().with_reuse_pool("nemordp-x"),
            creds().with_timeout(Duration::ZERO),
            creds().with_ssh_keys(["not a key"]),
        ] {
            let e = bad.build().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
        }
        let e = creds().with_regions(["MARS"]).build().unwrap_err();
        assert!(e.to_string().contains("MARS") && e.to_string().contains("US-east"));
        assert!(
            creds()
                .with_base_url("http://127.0.0.1:1")
                .with_auth_url("http://127.0.0.1:2/token")
                .with_allow_http(true)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn debug_never_prints_credentials() {
        let b = creds();
        let shown = format!("{b:?} {:?}", b.clone().build().unwrap());
        for secret in ["sec-ret-1", "me@example.com", "pw-Secret-9"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
