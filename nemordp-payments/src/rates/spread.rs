//! [`SpreadRates`]: a spread applied inside a [`RateSource`], for hosts that price through
//! the `Provisioner` (which converts `price / bid` with the rate source it is given).

use async_trait::async_trait;

use nemordp_core::{
    Asset, Currency, Decimal, Error, Result,
    rates::{Quote, RateSource},
};

/// Quotes the inner source's bid lowered by `spread` percent.
///
/// The `Provisioner` charges `price ÷ bid` units of the payment asset (BTC for a USD price,
/// NGN for a USD price through Paystack), so a lower bid charges more: the spread is always
/// in the merchant's favour. The quote's source names the spread, e.g. `kraken-2%`.
#[derive(Debug, Clone)]
pub struct SpreadRates<S> {
    inner: S,
    spread_percent: Decimal,
    keep: Decimal,
}

impl<S: RateSource> SpreadRates<S> {
    /// `inner` with a spread of `spread_percent` (`0 ≤ spread < 50`).
    pub fn new(inner: S, spread_percent: Decimal) -> Result<Self> {
        if spread_percent.is_sign_negative() || spread_percent >= Decimal::from(50) {
            return Err(Error::invalid_config(format!(
                "spread {spread_percent}% is outside 0 ≤ spread < 50"
            )));
        }
        Ok(Self {
            inner,
            spread_percent,
            keep: Decimal::ONE - spread_percent / Decimal::ONE_HUNDRED,
        })
    }
}

#[async_trait]
impl<S: RateSource> RateSource for SpreadRates<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let q = self.inner.quote(base, quote).await?;
        if self.spread_percent.is_zero() {
            return Ok(q);
        }
        let source = format!("{}-{}%", q.source, self.spread_percent.normalize());
        Quote::new(q.base, q.quote, q.bid * self.keep, q.ask, q.at, source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nemordp_core::{Money, Rounding, sim::rates::FixedRates};

    #[tokio::test]
    async fn spread_lowers_the_bid_and_charges_more() {
        let fixed = FixedRates::default()
            .with_rate(Asset::Btc, Currency::Usd, Decimal::from(50_000))
            .unwrap();
        let s = SpreadRates::new(fixed, Decimal::from(2)).unwrap();
        let q = s.quote(Asset::Btc, Currency::Usd).await.unwrap();
        assert_eq!(q.bid, Decimal::from(49_000));
        assert_eq!(q.source, "fixed-2%");
        // What the Provisioner does with it: 10 USD → BTC, rounded up.
        let usd = Money::parse_major(Currency::Usd, "10.00").unwrap();
        let btc = usd.convert(&q.rate().unwrap(), Rounding::Up).unwrap();
        assert_eq!(btc, Money::from_minor(Asset::Btc, 20_409_u64));
        assert!(SpreadRates::new(FixedRates::default(), Decimal::from(-1)).is_err());
        assert!(SpreadRates::new(FixedRates::default(), Decimal::from(50)).is_err());
    }
}
