//! Coinbase exchange rates: `GET /v2/exchange-rates?currency=BTC`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;

use nemordp_core::{
    Asset, Clock, Currency, Error, ErrorKind, Result, SystemClock,
    rates::{Quote, RateSource},
};

use super::http::{DEFAULT_TIMEOUT, Http, parse_price, unexpected};

/// Coinbase's public API.
pub const DEFAULT_URL: &str = "https://api.coinbase.com";
const NAME: &str = "coinbase";

/// Coinbase's reference rates (one price, no bid/ask) for any listed asset in many fiat
/// currencies, NGN, GHS, ZAR and KES included.
#[derive(Debug, Clone)]
pub struct Coinbase {
    http: Http,
    clock: Arc<dyn Clock>,
}

#[derive(Deserialize)]
struct Envelope {
    data: Data,
}

#[derive(Deserialize)]
struct Data {
    currency: String,
    rates: HashMap<String, String>,
}

impl Coinbase {
    /// The public API at [`DEFAULT_URL`].
    pub fn new() -> Result<Self> {
        Self::with_base_url(DEFAULT_URL)
    }

    /// The API at `base_url` (without `/v2`).
    pub fn with_base_url(base_url: &str) -> Result<Self> {
        Ok(Self {
            http: Http::new(NAME, base_url, DEFAULT_TIMEOUT)?,
            clock: Arc::new(SystemClock),
        })
    }

    /// [`Coinbase::new`], or the base URL from `COINBASE_URL` when set.
    pub fn from_env() -> Result<Self> {
        match std::env::var("COINBASE_URL") {
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

    /// The clock stamping quotes (the response carries no time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

#[async_trait]
impl RateSource for Coinbase {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        if Asset::Fiat(quote) == base {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("coinbase: {base}/{quote} is not a pair"),
            )
            .with_backend(NAME));
        }
        let body = self
            .http
            .get(
                "/v2/exchange-rates",
                &[("currency", base.code().to_owned())],
                &[],
            )
            .await
            .map_err(|e| e.with_backend(NAME))?;
        let env: Envelope = serde_json::from_slice(&body).map_err(|e| {
            unexpected(NAME, format_args!("unreadable rates: {e}")).with_backend(NAME)
        })?;
        if env.data.currency != base.code() {
            return Err(unexpected(
                NAME,
                format_args!("asked for {base} rates, got {:?}", env.data.currency),
            )
            .with_backend(NAME));
        }
        let Some(text) = env.data.rates.get(quote.code()) else {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("coinbase has no {base}/{quote} rate"),
            )
            .with_backend(NAME));
        };
        let price = parse_price(NAME, text).map_err(|e| e.with_backend(NAME))?;
        Quote::new(base, quote, price, None, self.clock.now(), NAME)
    }
}
