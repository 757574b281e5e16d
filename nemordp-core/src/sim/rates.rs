//! A [`RateSource`] with fixed, settable prices: for demos and for tests of rate locking.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use rust_decimal::Decimal;

use crate::{
    clock::{Clock, SystemClock},
    error::{Error, ErrorKind, Result},
    money::{Asset, Currency},
    rates::{Quote, RateSource},
};

const NAME: &str = "fixed";

/// A rate source that quotes the prices it was given, stamped with its clock's time.
///
/// Cloning shares the prices: change one with [`FixedRates::set_rate`] and every clone quotes
/// the new price.
///
/// ```
/// # use nemordp_core::{sim::rates::FixedRates, *};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let rates = FixedRates::default().with_rate(Asset::Btc, Currency::Ngn, Decimal::from(150_000_000))?;
/// let q = rates.quote(Asset::Btc, Currency::Ngn).await?;
/// assert_eq!(q.bid, Decimal::from(150_000_000));
/// # Ok::<(), Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct FixedRates {
    clock: Arc<dyn Clock>,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    rates: HashMap<(Asset, Currency), Decimal>,
    failures: VecDeque<ErrorKind>,
}

impl FixedRates {
    /// A source with no prices yet, reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            state: Arc::new(Mutex::new(State::default())),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn validate(&self, base: Asset, quote: Currency, price: Decimal) -> Result<()> {
        Quote::new(base, quote, price, None, self.clock.now(), NAME)
            .and_then(|q| q.rate())
            .map(drop)
            .map_err(|e| e.with_backend(NAME))
    }

    /// Adds (or replaces) the price of one `base` in `quote`. A price that is not positive, or
    /// a pair from a currency to itself → `InvalidInput`.
    pub fn with_rate(self, base: Asset, quote: Currency, price: Decimal) -> Result<Self> {
        self.set_rate(base, quote, price)?;
        Ok(self)
    }

    /// Changes (or adds) the price of one `base` in `quote` at run time; every clone sees it.
    /// Same validation as [`FixedRates::with_rate`].
    pub fn set_rate(&self, base: Asset, quote: Currency, price: Decimal) -> Result<()> {
        self.validate(base, quote, price)?;
        self.state().rates.insert((base, quote), price);
        Ok(())
    }

    /// Stops quoting `base` in `quote`; later quotes for it are `NotSupported`.
    pub fn remove_rate(&self, base: Asset, quote: Currency) {
        self.state().rates.remove(&(base, quote));
    }

    /// Makes the next quote fail with `kind` (queued: call several times to script several
    /// failures). For testing fallbacks and fail-closed pricing.
    pub fn fail_next(&self, kind: ErrorKind) {
        self.state().failures.push_back(kind);
    }
}

impl Default for FixedRates {
    /// No prices, reading time from the [`SystemClock`].
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl fmt::Debug for FixedRates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pairs: Vec<String> = self
            .state()
            .rates
            .iter()
            .map(|((b, q), p)| format!("{b}/{q}={p}"))
            .collect();
        pairs.sort();
        f.debug_struct("FixedRates")
            .field("clock", &self.clock)
            .field("rates", &pairs)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl RateSource for FixedRates {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let fail = |e: Error| e.with_backend(NAME).with_operation("quote");
        let price = {
            let mut state = self.state();
            if let Some(kind) = state.failures.pop_front() {
                return Err(fail(Error::new(kind, "scripted failure")));
            }
            state.rates.get(&(base, quote)).copied()
        };
        let price = price.ok_or_else(|| {
            fail(Error::new(
                ErrorKind::NotSupported,
                format!("no fixed rate for {base}/{quote}"),
            ))
        })?;
        Quote::new(base, quote, price, None, self.clock.now(), NAME).map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, Timestamp};
    use std::time::Duration;

    #[tokio::test]
    async fn quotes_settable_prices_with_clock_time() {
        let clock = ManualClock::new(Timestamp::from_unix_secs(1_000));
        let rates = FixedRates::new(Arc::new(clock.clone()))
            .with_rate(Asset::Btc, Currency::Ngn, Decimal::from(150_000_000))
            .unwrap();
        let q = rates.quote(Asset::Btc, Currency::Ngn).await.unwrap();
        assert_eq!(
            (q.bid, q.at, q.source.as_str()),
            (
                Decimal::from(150_000_000),
                Timestamp::from_unix_secs(1_000),
                "fixed"
            )
        );
        assert_eq!(
            q.rate().unwrap().price,
            Decimal::from(150_000_000),
            "usable as a rate"
        );

        // A locked quote keeps its price when the source moves on.
        let shared = rates.clone();
        shared
            .set_rate(Asset::Btc, Currency::Ngn, Decimal::new(1_605_000_005, 1))
            .unwrap();
        clock.advance(Duration::from_secs(60));
        let q2 = rates.quote(Asset::Btc, Currency::Ngn).await.unwrap();
        assert_eq!(q2.bid, Decimal::new(1_605_000_005, 1));
        assert_eq!(q2.at, Timestamp::from_unix_secs(1_060));
        assert_eq!(q.bid, Decimal::from(150_000_000));
    }

    #[tokio::test]
    async fn unsupported_pairs_and_bad_prices() {
        let rates = FixedRates::default()
            .with_rate(Asset::Usdt, Currency::Usd, Decimal::ONE)
            .unwrap();
        for (b, q) in [
            (Asset::Usdt, Currency::Ngn),
            (Asset::Btc, Currency::Usd),
            (Asset::Eth, Currency::Eur),
        ] {
            let e = rates.quote(b, q).await.unwrap_err();
            assert_eq!((e.kind(), e.backend()), (ErrorKind::NotSupported, "fixed"));
        }
        for bad in [Decimal::ZERO, Decimal::NEGATIVE_ONE] {
            let e = rates.set_rate(Asset::Btc, Currency::Usd, bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        assert_eq!(
            rates
                .set_rate(Asset::Fiat(Currency::Usd), Currency::Usd, Decimal::ONE)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        assert!(rates.quote(Asset::Btc, Currency::Usd).await.is_err());
        rates.remove_rate(Asset::Usdt, Currency::Usd);
        assert_eq!(
            rates
                .quote(Asset::Usdt, Currency::Usd)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::NotSupported
        );
    }

    #[tokio::test]
    async fn scripted_failures() {
        let rates = FixedRates::default()
            .with_rate(Asset::Eth, Currency::Usd, Decimal::from(3_000))
            .unwrap();
        rates.fail_next(ErrorKind::Unavailable);
        assert_eq!(
            rates
                .quote(Asset::Eth, Currency::Usd)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Unavailable
        );
        assert!(rates.quote(Asset::Eth, Currency::Usd).await.is_ok());
        assert!(format!("{rates:?}").contains("ETH/USD=3000"));
    }
}
