//! [`RoutedRates`]: one [`RateSource`] for a `Provisioner` that takes both crypto and a
//! fiat currency other than the price's (Paystack in NGN for a USD price).

use std::sync::Arc;

use async_trait::async_trait;

use nemordp_core::{
    Asset, Currency, Result,
    rates::{Quote, RateSource},
};

/// Sends crypto pairs (BTC, ETH, USDT → fiat) to one source and fiat pairs (NGN → USD) to
/// another, so each keeps its own sources, cache, freshness and spread rules.
///
/// ```
/// # use std::sync::Arc;
/// # use nemordp_core::{Asset, Currency, RateSource, SystemClock, sim::rates::FixedRates};
/// # use nemordp_payments::rates::RoutedRates;
/// # async fn demo() -> nemordp_core::Result<()> {
/// let clock = Arc::new(SystemClock);
/// let crypto = FixedRates::new(clock.clone()).with_rate(Asset::Btc, Currency::Usd, 60_000.into())?;
/// let fiat = FixedRates::new(clock).with_rate(Asset::Fiat(Currency::Ngn), Currency::Usd, "0.00065".parse().unwrap())?;
/// let rates = RoutedRates::new(Arc::new(crypto), Arc::new(fiat));
/// assert_eq!(rates.quote(Asset::Btc, Currency::Usd).await?.bid, 60_000.into());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RoutedRates {
    crypto: Arc<dyn RateSource>,
    fiat: Arc<dyn RateSource>,
}

impl RoutedRates {
    /// Crypto bases go to `crypto`, fiat bases to `fiat`.
    pub fn new(crypto: Arc<dyn RateSource>, fiat: Arc<dyn RateSource>) -> Self {
        Self { crypto, fiat }
    }
}

#[async_trait]
impl RateSource for RoutedRates {
    fn name(&self) -> &'static str {
        "routed"
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        match base {
            Asset::Fiat(_) => self.fiat.quote(base, quote).await,
            _ => self.crypto.quote(base, quote).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nemordp_core::sim::rates::FixedRates;

    #[tokio::test]
    async fn crypto_and_fiat_pairs_go_to_their_own_source() {
        let clock: Arc<dyn nemordp_core::Clock> = Arc::new(nemordp_core::SystemClock);
        let crypto = FixedRates::new(clock.clone())
            .with_rate(Asset::Btc, Currency::Usd, 60_000.into())
            .unwrap();
        let fiat = FixedRates::new(clock.clone())
            .with_rate(
                Asset::Fiat(Currency::Ngn),
                Currency::Usd,
                "0.00065".parse().unwrap(),
            )
            .unwrap();
        let rates = RoutedRates::new(Arc::new(crypto.clone()), Arc::new(fiat.clone()));
        let btc = rates.quote(Asset::Btc, Currency::Usd).await.unwrap();
        assert_eq!(btc.bid, 60_000.into());
        let ngn = rates
            .quote(Asset::Fiat(Currency::Ngn), Currency::Usd)
            .await
            .unwrap();
        assert_eq!(ngn.bid, "0.00065".parse().unwrap());
        // Swapped, each pair reaches the source that does not know it.
        let swapped = RoutedRates::new(Arc::new(fiat), Arc::new(crypto));
        assert!(swapped.quote(Asset::Btc, Currency::Usd).await.is_err());
        assert!(
            swapped
                .quote(Asset::Fiat(Currency::Ngn), Currency::Usd)
                .await
                .is_err()
        );
    }
}
