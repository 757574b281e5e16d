//! Fiat exchange rates from open.er-api.com (ExchangeRate-API's open access):
//! `GET /v6/latest/USD`.

use std::{collections::HashMap, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::value::RawValue;

use nemordp_core::{
    Asset, Currency, Error, ErrorKind, Result, Timestamp,
    rates::{Quote, RateSource},
};

use super::http::{DEFAULT_TIMEOUT, Http, parse_price, unexpected};

/// The open-access endpoint.
pub const DEFAULT_URL: &str = "https://open.er-api.com";
const NAME: &str = "open.er-api";

/// Daily fiat rates (e.g. USD → NGN, GHS, ZAR, KES) so a plan priced in USD can be charged in
/// local currency through Paystack. Quotes carry the provider's update time, so a cache or
/// [`super::MedianRates`] with a maximum age of about a day refuses a feed that stopped.
#[derive(Debug, Clone)]
pub struct OpenErApi {
    http: Http,
}

#[derive(Deserialize)]
struct Latest {
    result: String,
    #[serde(rename = "error-type", default)]
    error_type: Option<String>,
    #[serde(default)]
    base_code: Option<String>,
    #[serde(default)]
    time_last_update_unix: Option<i64>,
    #[serde(default)]
    rates: HashMap<String, Box<RawValue>>,
}

impl OpenErApi {
    /// The open-access API at [`DEFAULT_URL`].
    pub fn new() -> Result<Self> {
        Self::with_base_url(DEFAULT_URL)
    }

    /// The API at `base_url` (without `/v6`).
    pub fn with_base_url(base_url: &str) -> Result<Self> {
        Ok(Self {
            http: Http::new(NAME, base_url, DEFAULT_TIMEOUT)?,
        })
    }

    /// [`OpenErApi::new`], or the base URL from `FX_RATES_URL` when set.
    pub fn from_env() -> Result<Self> {
        match std::env::var("FX_RATES_URL") {
            Ok(url) => Self::with_base_url(&url),
            Err(_) => Self::new(),
        }
    }

    /// Sets the request timeout.
    pub fn with_timeout(self, timeout: Duration) -> Result<Self> {
        Ok(Self {
            http: self.http.with_timeout(timeout)?,
        })
    }
}

#[async_trait]
impl RateSource for OpenErApi {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let Some(base_fiat) = base.fiat() else {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("{NAME} only converts fiat, not {base}"),
            )
            .with_backend(NAME));
        };
        if base_fiat == quote {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("{NAME}: {base}/{quote} is not a pair"),
            )
            .with_backend(NAME));
        }
        let body = self
            .http
            .get(&format!("/v6/latest/{}", base_fiat.code()), &[], &[])
            .await
            .map_err(|e| e.with_backend(NAME))?;
        let latest: Latest = serde_json::from_slice(&body).map_err(|e| {
            unexpected(NAME, format_args!("unreadable rates: {e}")).with_backend(NAME)
        })?;
        if latest.result != "success" {
            let why = latest.error_type.unwrap_or_else(|| latest.result.clone());
            let kind = if why == "unsupported-code" {
                ErrorKind::NotSupported
            } else {
                ErrorKind::Unavailable
            };
            return Err(Error::new(kind, format!("{NAME}: {why}")).with_backend(NAME));
        }
        if latest.base_code.as_deref() != Some(base_fiat.code()) {
            return Err(unexpected(
                NAME,
                format_args!("asked for {base} rates, got {:?}", latest.base_code),
            )
            .with_backend(NAME));
        }
        let at = latest
            .time_last_update_unix
            .map(Timestamp::from_unix_secs)
            .ok_or_else(|| unexpected(NAME, "no time_last_update_unix").with_backend(NAME))?;
        let Some(raw) = latest.rates.get(quote.code()) else {
            return Err(Error::new(
                ErrorKind::NotSupported,
                format!("{NAME} has no {base}/{quote} rate"),
            )
            .with_backend(NAME));
        };
        let price = parse_price(NAME, raw.get()).map_err(|e| e.with_backend(NAME))?;
        Quote::new(base, quote, price, None, at, NAME)
    }
}
