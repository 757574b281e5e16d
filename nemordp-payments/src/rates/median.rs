//! [`MedianRates`]: the median of several fresh sources, failing closed.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use async_trait::async_trait;

use nemordp_core::{
    Asset, Clock, Currency, Decimal, Error, ErrorKind, Result, SystemClock,
    rates::{Quote, RateSource},
};

/// Name of the aggregate source.
const NAME: &str = "median";

/// Asks every source at once and quotes the median bid of the fresh answers.
///
/// A source that fails, answers for another pair, is older than `max_age` or (when set)
/// lies more than `max_deviation_percent` from the median is left out; if fewer than
/// `min_sources` remain the quote fails with `Unavailable` and a message naming each
/// source's problem. The quote's `at` is the oldest time among the quotes used and its
/// `source` lists them, e.g. `median(coinbase,kraken)`.
#[derive(Debug, Clone)]
pub struct MedianRates {
    sources: Vec<Arc<dyn RateSource>>,
    min_sources: usize,
    max_age: Duration,
    max_deviation_percent: Option<Decimal>,
    clock: Arc<dyn Clock>,
}

impl MedianRates {
    /// Over `sources`; by default at least 2 fresh quotes no older than 10 minutes, and
    /// quotes further than 5 % from the median dropped.
    pub fn new(sources: Vec<Arc<dyn RateSource>>) -> Self {
        Self {
            sources,
            min_sources: 2,
            max_age: Duration::from_secs(600),
            max_deviation_percent: Some(Decimal::from(5)),
            clock: Arc::new(SystemClock),
        }
    }

    /// The fewest fresh quotes that make a rate (at least 1).
    #[must_use]
    pub fn with_min_sources(mut self, n: usize) -> Self {
        self.min_sources = n.max(1);
        self
    }

    /// The oldest quote accepted (about a day for daily FX feeds).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// Drops quotes further than `percent` from the median (`None` keeps all).
    #[must_use]
    pub fn with_max_deviation_percent(mut self, percent: Option<Decimal>) -> Self {
        self.max_deviation_percent = percent;
        self
    }

    /// The clock judging freshness.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// The median of a non-empty list (mean of the middle two for an even count).
fn median(mut values: Vec<Decimal>) -> Option<Decimal> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / Decimal::TWO
    })
}

#[async_trait]
impl RateSource for MedianRates {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let answers = futures::future::join_all(
            self.sources
                .iter()
                .map(|s| async move { (s.name(), s.quote(base, quote).await) }),
        )
        .await;
        let now = self.clock.now();
        let mut problems = String::new();
        let mut fresh: Vec<Quote> = Vec::new();
        for (name, answer) in answers {
            match answer {
                Err(e) => {
                    let _ = write!(problems, "; {name}: {e}");
                }
                Ok(q) if q.base != base || q.quote != quote => {
                    let _ = write!(problems, "; {name}: answered {}/{}", q.base, q.quote);
                }
                Ok(q) if now.duration_since(q.at) > self.max_age => {
                    let _ = write!(
                        problems,
                        "; {name}: stale ({} s old, max {} s)",
                        now.duration_since(q.at).as_secs(),
                        self.max_age.as_secs()
                    );
                }
                Ok(q) if q.at.duration_since(now) > Duration::from_secs(300) => {
                    let _ = write!(problems, "; {name}: dated in the future");
                }
                Ok(q) => fresh.push(q),
            }
        }
        let mid = median(fresh.iter().map(|q| q.bid).collect());
        if let (Some(mid), Some(dev)) = (mid, self.max_deviation_percent) {
            fresh.retain(|q| {
                let off = ((q.bid - mid).abs() / mid) * Decimal::ONE_HUNDRED;
                if off > dev {
                    let _ = write!(
                        problems,
                        "; {}: {} is {}% from the median {mid}",
                        q.source,
                        q.bid,
                        off.round_dp(2)
                    );
                }
                off <= dev
            });
        }
        if fresh.len() < self.min_sources {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "no usable {base}/{quote} rate: {} fresh quote(s), {} required{problems}",
                    fresh.len(),
                    self.min_sources
                ),
            )
            .with_backend(NAME)
            .with_operation("quote"));
        }
        let bid = median(fresh.iter().map(|q| q.bid).collect()).unwrap_or_default();
        let ask = median(fresh.iter().filter_map(|q| q.ask).collect()).filter(|a| *a >= bid);
        let at = fresh.iter().map(|q| q.at).min().unwrap_or(now);
        let mut names: Vec<&str> = fresh.iter().map(|q| q.source.as_str()).collect();
        names.sort_unstable();
        Quote::new(
            base,
            quote,
            bid,
            ask,
            at,
            format!("median({})", names.join(",")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        let d = |v: &[i64]| v.iter().map(|x| Decimal::from(*x)).collect::<Vec<_>>();
        assert_eq!(median(d(&[3, 1, 2])), Some(Decimal::from(2)));
        assert_eq!(median(d(&[4, 1, 2, 3])), Some(Decimal::new(25, 1)));
        assert_eq!(median(Vec::new()), None);
    }
}
