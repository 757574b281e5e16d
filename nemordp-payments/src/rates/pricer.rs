//! [`Pricer`]: a fiat price → the amount to charge in another asset, with a locked rate.

use std::{sync::Arc, time::Duration};

use nemordp_core::{
    Asset, Clock, Decimal, Error, ErrorKind, Money, Rate, Result, Rounding, SystemClock,
    payment::LockedRate, rates::RateSource,
};

/// Prices orders in crypto (or in another fiat currency) from a [`RateSource`], usually a
/// [`super::MedianRates`] behind a [`super::CachedRates`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use nemordp_core::{Asset, Currency, Decimal, Money, sim::rates::FixedRates};
/// use nemordp_payments::rates::Pricer;
///
/// let rates = FixedRates::default()
///     .with_rate(Asset::Btc, Currency::Usd, Decimal::from(50_000))
///     .unwrap();
/// let pricer = Pricer::new(Arc::new(rates)).with_spread_percent(Decimal::ONE).unwrap();
/// let (sats, locked) = pricer
///     .price(Money::parse_major(Currency::Usd, "25.00").unwrap(), Asset::Btc)
///     .await
///     .unwrap();
/// // 25 / (50,000 × 0.99) BTC, rounded up to the satoshi.
/// assert_eq!(sats.to_string(), "0.00050506 BTC");
/// assert_eq!(locked.rate.price, Decimal::from(49_500));
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct Pricer {
    source: Arc<dyn RateSource>,
    spread_percent: Decimal,
    max_age: Duration,
    clock: Arc<dyn Clock>,
}

impl Pricer {
    /// No spread; quotes older than 10 minutes refused.
    pub fn new(source: Arc<dyn RateSource>) -> Self {
        Self {
            source,
            spread_percent: Decimal::ZERO,
            max_age: Duration::from_secs(600),
            clock: Arc::new(SystemClock),
        }
    }

    /// The margin against volatility, in percent (`0 ≤ spread < 50`), always in the
    /// merchant's favour: the customer is charged as if the rate were `spread` % worse.
    pub fn with_spread_percent(mut self, spread: Decimal) -> Result<Self> {
        if spread.is_sign_negative() || spread >= Decimal::from(50) {
            return Err(Error::invalid_config(format!(
                "spread {spread}% is outside 0 ≤ spread < 50"
            )));
        }
        self.spread_percent = spread;
        Ok(self)
    }

    /// The oldest quote accepted (a day or so for fiat FX, minutes for crypto).
    #[must_use]
    pub fn with_max_age(mut self, max_age: Duration) -> Self {
        self.max_age = max_age;
        self
    }

    /// The clock judging freshness and stamping the lock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The amount of `target` to charge for the fiat `price`, rounded up to `target`'s
    /// smallest unit, and the rate to lock into the invoice (spread included).
    ///
    /// Fails with `Unavailable` when the source has no fresh quote, `InvalidInput` when
    /// `price` is not fiat or already in `target`.
    pub async fn price(&self, price: Money, target: Asset) -> Result<(Money, LockedRate)> {
        let Some(fiat) = price.asset().fiat() else {
            return Err(Error::invalid_input(format!("{price} is not a fiat price")));
        };
        if target == price.asset() {
            return Err(Error::invalid_input(format!(
                "{price} is already in {target}"
            )));
        }
        let spread = self.spread_percent / Decimal::ONE_HUNDRED;
        let (quote, rate) = if target.is_crypto() {
            // fiat per coin: a lower price means more coins for the same fiat.
            let q = self.source.quote(target, fiat).await?;
            let eff = q.bid * (Decimal::ONE - spread);
            let rate = Rate::new(target, fiat, eff)?;
            (q, rate)
        } else {
            // target per one unit of the price's currency: a higher rate means more target.
            let target_fiat = target.fiat().unwrap_or(fiat);
            let q = self.source.quote(price.asset(), target_fiat).await?;
            let eff = q.bid * (Decimal::ONE + spread);
            let rate = Rate::new(price.asset(), target_fiat, eff)?;
            (q, rate)
        };
        let now = self.clock.now();
        let age = now.duration_since(quote.at);
        if age > self.max_age {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the {}/{} rate from {} is {} s old (max {} s): refusing to price with it",
                    quote.base,
                    quote.quote,
                    quote.source,
                    age.as_secs(),
                    self.max_age.as_secs()
                ),
            )
            .with_operation("price"));
        }
        let amount = price.convert(&rate, Rounding::Up)?;
        if amount.is_zero() {
            return Err(Error::invalid_input(format!(
                "{price} is worth nothing in {target}"
            )));
        }
        Ok((
            amount,
            LockedRate {
                rate,
                source: quote.source,
                quoted_at: quote.at,
            },
        ))
    }
}
