//! Kraken's public ticker: `GET /0/public/Ticker?pair=XBTUSD`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;

use nemordp_core::{
    Asset, Clock, Currency, Error, ErrorKind, Result, SystemClock,
    rates::{Quote, RateSource},
};

use super::http::{DEFAULT_TIMEOUT, Http, parse_price, unexpected};

/// Kraken's public API.
pub const DEFAULT_URL: &str = "https://api.kraken.com";
const NAME: &str = "kraken";

/// Kraken ticker quotes (bid and ask) for BTC, ETH and USDT in USD, EUR, GBP, CAD and JPY.
#[derive(Debug, Clone)]
pub struct Kraken {
    http: Http,
    clock: Arc<dyn Clock>,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    error: Vec<String>,
    #[serde(default)]
    result: Option<HashMap<String, Ticker>>,
}

#[derive(Deserialize)]
struct Ticker {
    /// `[price, whole lot volume, lot volume]`
    a: Vec<String>,
    b: Vec<String>,
}

impl Kraken {
    /// The public API at [`DEFAULT_URL`].
    pub fn new() -> Result<Self> {
        Self::with_base_url(DEFAULT_URL)
    }

    /// The API at `base_url` (without `/0/public`). `KRAKEN_URL` overrides it in `from_env`.
    pub fn with_base_url(base_url: &str) -> Result<Self> {
        Ok(Self {
            http: Http::new(NAME, base_url, DEFAULT_TIMEOUT)?,
            clock: Arc::new(SystemClock),
        })
    }

    /// [`Kraken::new`], or the base URL from `KRAKEN_URL` when set.
    pub fn from_env() -> Result<Self> {
        match std::env::var("KRAKEN_URL") {
            Ok(url) => Self::with_base_url(&url),
            Err(_) => Self::new(),
        }
    }

    /// Sets the request timeout.
    pub fn with_timeout(self, timeout: Duration) -> Result<Self> {
        Ok(Self {
            http: self.http.with_timeout(timeout)?,
            ..self
        })
    }

    /// The clock stamping quotes (Kraken's ticker carries no time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn pair(base: Asset, quote: Currency) -> Result<String> {
        let b = match base {
            Asset::Btc => "XBT",
            Asset::Eth => "ETH",
            Asset::Usdt => "USDT",
            _ => return Err(not_supported(base, quote)),
        };
        let q = match quote {
            Currency::Usd | Currency::Eur | Currency::Gbp | Currency::Cad | Currency::Jpy => {
                quote.code()
            }
            _ => return Err(not_supported(base, quote)),
        };
        Ok(format!("{b}{q}"))
    }
}

fn not_supported(base: Asset, quote: Currency) -> Error {
    Error::new(
        ErrorKind::NotSupported,
        format!("kraken does not quote {base}/{quote}"),
    )
    .with_backend(NAME)
}

#[async_trait]
impl RateSource for Kraken {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let pair = Self::pair(base, quote)?;
        let body = self
            .http
            .get("/0/public/Ticker", &[("pair", pair.clone())], &[])
            .await
            .map_err(|e| e.with_backend(NAME))?;
        let env: Envelope = serde_json::from_slice(&body).map_err(|e| {
            unexpected(NAME, format_args!("unreadable ticker: {e}")).with_backend(NAME)
        })?;
        if !env.error.is_empty() {
            let text = env.error.join("; ");
            let kind = if text.contains("Unknown asset pair") {
                ErrorKind::NotSupported
            } else if text.contains("Too many requests") || text.contains("Rate limit") {
                ErrorKind::RateLimited
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(kind, format!("kraken: {text}")).with_backend(NAME));
        }
        // Kraken answers under its own pair name (XXBTZUSD for XBTUSD): one pair asked, one
        // entry expected.
        let result = env.result.unwrap_or_default();
        let mut entries = result.into_iter();
        let (Some((_, t)), None) = (entries.next(), entries.next()) else {
            return Err(
                unexpected(NAME, format_args!("expected exactly one ticker for {pair}"))
                    .with_backend(NAME),
            );
        };
        let price = |v: &[String], what: &str| {
            v.first()
                .ok_or_else(|| unexpected(NAME, format_args!("no {what} price")))
                .and_then(|p| parse_price(NAME, p))
                .map_err(|e| e.with_backend(NAME))
        };
        let bid = price(&t.b, "bid")?;
        let ask = price(&t.a, "ask")?;
        Quote::new(base, quote, bid, Some(ask), self.clock.now(), NAME)
    }
}
