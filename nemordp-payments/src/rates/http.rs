//! The small HTTP layer the rate sources share: one GET, typed errors, `Retry-After`, strict
//! decimal parsing.

use std::{
    str::FromStr,
    time::{Duration, SystemTime},
};

use reqwest::{StatusCode, header::RETRY_AFTER};

use nemordp_core::{Decimal, Error, ErrorKind, Result};

/// Default whole-request timeout of a rate source.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A GET client bound to one source and base URL.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base_url: String,
    source: &'static str,
}

impl Http {
    pub(crate) fn new(source: &'static str, base_url: &str, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("nemordp/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::invalid_config(format!("{source}: http client: {e}")))?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base_url)
            .map_err(|e| Error::invalid_config(format!("{source}: base URL {base_url:?}: {e}")))?;
        Ok(Self {
            client,
            base_url,
            source,
        })
    }

    /// `GET {base}{path}` with `query` and `headers`; the body of a 2xx, else a typed error.
    pub(crate) async fn get(
        &self,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&'static str, String)],
    ) -> Result<Vec<u8>> {
        let op = "quote";
        let mut req = self
            .client
            .get(format!("{}{path}", self.base_url))
            .query(query);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else {
                "unreachable"
            };
            Error::unavailable(format!("{}: {what}", self.source))
                .with_source(e.without_url())
                .with_operation(op)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body = resp.bytes().await.map_err(|e| {
            Error::unavailable(format!("{}: broken response body", self.source))
                .with_source(e.without_url())
                .with_operation(op)
        })?;
        if status.is_success() {
            return Ok(body.to_vec());
        }
        let text: String = String::from_utf8_lossy(&body)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let msg = format!("{}: http {}: {}", self.source, status.as_u16(), text.trim());
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => ErrorKind::RateLimited,
            StatusCode::UNAUTHORIZED => ErrorKind::Unauthenticated,
            StatusCode::FORBIDDEN => ErrorKind::PermissionDenied,
            StatusCode::NOT_FOUND => ErrorKind::NotSupported,
            s if s.is_server_error() => ErrorKind::Unavailable,
            _ => ErrorKind::Rejected,
        };
        Err(Error::new(kind, msg)
            .with_retry_after(retry_after)
            .with_operation(op))
    }

    /// The same client with another timeout.
    pub(crate) fn with_timeout(&self, timeout: Duration) -> Result<Self> {
        Self::new(self.source, &self.base_url, timeout)
    }

    /// The base URL, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }
}

/// An `Unexpected` error for a response we cannot read.
pub(crate) fn unexpected(source: &str, message: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Unexpected, format!("{source}: {message}")).with_operation("quote")
}

/// Parses a price written as decimal text (`"67187.3"`) or as a JSON number's text, which
/// may use an exponent (`1.2e-5`). Never goes through a float.
pub(crate) fn parse_price(source: &str, text: &str) -> Result<Decimal> {
    let t = text.trim().trim_matches('"');
    let bad = || unexpected(source, format_args!("price {text:?} is not a decimal"));
    if t.is_empty() || t.starts_with('+') {
        return Err(bad());
    }
    let d = if t.contains(['e', 'E']) {
        Decimal::from_scientific(t).map_err(|_| bad())?
    } else {
        Decimal::from_str_exact(t)
            .or_else(|_| Decimal::from_str(t))
            .map_err(|_| bad())?
    };
    if d <= Decimal::ZERO {
        return Err(unexpected(
            source,
            format_args!("price {t} is not positive"),
        ));
    }
    Ok(d.normalize())
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any positive decimal written as text (plain or with an exponent, as a JSON number
        /// may be) parses back to the same value.
        #[test]
        fn positive_decimals_round_trip(m in 1_i64..i64::MAX, scale in 0_u32..18) {
            let d = Decimal::new(m, scale);
            prop_assert_eq!(parse_price("t", &d.to_string()).unwrap(), d.normalize());
            let sci = format!("{m}e-{scale}");
            prop_assert_eq!(parse_price("t", &sci).unwrap(), d.normalize());
        }

        /// Arbitrary text never panics and never yields a non-positive price.
        #[test]
        fn arbitrary_text_is_a_price_or_an_error(s in ".{0,40}") {
            if let Ok(d) = parse_price("t", &s) {
                prop_assert!(d > Decimal::ZERO);
            }
        }
    }

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(parse_price("t", "67187.3").unwrap().to_string(), "67187.3");
        assert_eq!(parse_price("t", "\"0.1\"").unwrap().to_string(), "0.1");
        assert_eq!(parse_price("t", "1.2e-5").unwrap().to_string(), "0.000012");
        assert_eq!(
            parse_price("t", "1500.123456789012345678")
                .unwrap()
                .to_string(),
            "1500.123456789012345678"
        );
        for bad in ["0", "-1", "0.0", "", "abc", "NaN", "+5", "1,5"] {
            assert!(parse_price("t", bad).is_err(), "{bad}");
        }
    }
}
