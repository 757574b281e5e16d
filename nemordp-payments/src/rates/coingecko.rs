//! CoinGecko simple price: `GET /api/v3/simple/price?ids=bitcoin&vs_currencies=usd&…`.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::value::RawValue;

use nemordp_core::{
    Asset, Currency, Error, ErrorKind, Result, Timestamp,
    rates::{Quote, RateSource},
};

use super::http::{DEFAULT_TIMEOUT, Http, parse_price, unexpected};

/// CoinGecko's public (and demo-key) API.
pub const DEFAULT_URL: &str = "https://api.coingecko.com";
/// CoinGecko's paid API.
pub const PRO_URL: &str = "https://pro-api.coingecko.com";
const NAME: &str = "coingecko";

/// CoinGecko prices for BTC, ETH and USDT in any fiat currency CoinGecko lists. Keyless use
/// is heavily throttled; a demo key goes in `x-cg-demo-api-key`, a paid key in
/// `x-cg-pro-api-key` against [`PRO_URL`].
#[derive(Clone)]
pub struct CoinGecko {
    http: Http,
    key: Option<(&'static str, SecretString)>,
}

impl std::fmt::Debug for CoinGecko {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoinGecko")
            .field("base_url", &self.http.base_url())
            .field("key", &self.key.as_ref().map(|(h, _)| (*h, "[REDACTED]")))
            .finish()
    }
}

impl CoinGecko {
    /// The keyless public API at [`DEFAULT_URL`].
    pub fn new() -> Result<Self> {
        Self::with_base_url(DEFAULT_URL)
    }

    /// The API at `base_url` (without `/api/v3`).
    pub fn with_base_url(base_url: &str) -> Result<Self> {
        Ok(Self {
            http: Http::new(NAME, base_url, DEFAULT_TIMEOUT)?,
            key: None,
        })
    }

    /// From `COINGECKO_PRO_API_KEY` (paid, pro URL) or `COINGECKO_API_KEY` (demo), and
    /// `COINGECKO_URL` for the base URL, each when set.
    pub fn from_env() -> Result<Self> {
        let pro = std::env::var("COINGECKO_PRO_API_KEY").ok();
        let url = std::env::var("COINGECKO_URL")
            .ok()
            .unwrap_or_else(|| if pro.is_some() { PRO_URL } else { DEFAULT_URL }.to_owned());
        let mut cg = Self::with_base_url(&url)?;
        if let Some(k) = pro {
            cg = cg.with_pro_api_key(k);
        } else if let Ok(k) = std::env::var("COINGECKO_API_KEY") {
            cg = cg.with_api_key(k);
        }
        Ok(cg)
    }

    /// A demo API key (header `x-cg-demo-api-key`).
    #[must_use]
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(("x-cg-demo-api-key", SecretString::from(key.into())));
        self
    }

    /// A paid API key (header `x-cg-pro-api-key`; use with [`PRO_URL`]).
    #[must_use]
    pub fn with_pro_api_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(("x-cg-pro-api-key", SecretString::from(key.into())));
        self
    }

    /// Sets the request timeout.
    pub fn with_timeout(self, timeout: Duration) -> Result<Self> {
        Ok(Self {
            http: self.http.with_timeout(timeout)?,
            ..self
        })
    }

    fn coin_id(base: Asset) -> Option<&'static str> {
        match base {
            Asset::Btc => Some("bitcoin"),
            Asset::Eth => Some("ethereum"),
            Asset::Usdt => Some("tether"),
            _ => None,
        }
    }
}

#[async_trait]
impl RateSource for CoinGecko {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let Some(id) = Self::coin_id(base) else {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("coingecko does not quote {base}"),
            )
            .with_backend(NAME));
        };
        let vs = quote.code().to_ascii_lowercase();
        let headers: Vec<(&'static str, String)> = self
            .key
            .iter()
            .map(|(h, k)| (*h, k.expose_secret().to_owned()))
            .collect();
        let body = self
            .http
            .get(
                "/api/v3/simple/price",
                &[
                    ("ids", id.to_owned()),
                    ("vs_currencies", vs.clone()),
                    ("include_last_updated_at", "true".to_owned()),
                    ("precision", "full".to_owned()),
                ],
                &headers,
            )
            .await
            .map_err(|e| e.with_backend(NAME))?;
        // Prices are JSON numbers: keep their text (RawValue) instead of an f64.
        let parsed: HashMap<String, HashMap<String, Box<RawValue>>> = serde_json::from_slice(&body)
            .map_err(|e| {
                unexpected(NAME, format_args!("unreadable price: {e}")).with_backend(NAME)
            })?;
        let Some(coin) = parsed.get(id) else {
            return Err(
                unexpected(NAME, format_args!("no {id} in the response")).with_backend(NAME)
            );
        };
        let Some(raw) = coin.get(&vs) else {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("coingecko has no {base}/{quote} price"),
            )
            .with_backend(NAME));
        };
        let price = parse_price(NAME, raw.get()).map_err(|e| e.with_backend(NAME))?;
        let at = coin
            .get("last_updated_at")
            .and_then(|r| r.get().parse::<i64>().ok())
            .map(Timestamp::from_unix_secs)
            .ok_or_else(|| unexpected(NAME, "no last_updated_at").with_backend(NAME))?;
        Quote::new(base, quote, price, None, at, NAME)
    }
}
