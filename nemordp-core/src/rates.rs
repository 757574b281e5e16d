//! The [`RateSource`] trait: crypto → fiat quotes for pricing orders in BTC, ETH or USDT.

use std::fmt;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{Error, Result},
    money::{Asset, Currency, Rate},
};

/// A quote from one source at one time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Quote {
    /// The crypto asset priced.
    pub base: Asset,
    /// The fiat currency of the price.
    pub quote: Currency,
    /// The price a buyer gets (bid): fiat per one unit of `base`. Positive.
    pub bid: Decimal,
    /// The ask, when the source has one (bid ≤ ask).
    pub ask: Option<Decimal>,
    /// When the source produced it.
    pub at: Timestamp,
    /// Source name, e.g. `"kraken"`.
    pub source: String,
}

impl Quote {
    /// A validated quote (positive bid, bid ≤ ask).
    pub fn new(
        base: Asset,
        quote: Currency,
        bid: Decimal,
        ask: Option<Decimal>,
        at: Timestamp,
        source: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        if bid <= Decimal::ZERO {
            return Err(Error::invalid_input(format!(
                "{source}: {base}/{quote} bid {bid} is not positive"
            )));
        }
        if ask.is_some_and(|a| a < bid) {
            return Err(Error::invalid_input(format!(
                "{source}: {base}/{quote} ask below bid"
            )));
        }
        Ok(Self {
            base,
            quote,
            bid,
            ask,
            at,
            source,
        })
    }

    /// The bid as a [`Rate`] for [`Money::convert`](crate::money::Money::convert).
    pub fn rate(&self) -> Result<Rate> {
        Rate::new(self.base, self.quote, self.bid)
    }
}

/// A source of crypto → fiat quotes.
#[async_trait]
#[auto_impl::auto_impl(&, Arc, Box)]
pub trait RateSource: fmt::Debug + Send + Sync + 'static {
    /// Source name used in quotes, errors and metrics.
    fn name(&self) -> &'static str;

    /// The current quote for one `base` in `quote`.
    ///
    /// # Behavior
    /// - An unsupported pair → `NotSupported`. A zero or negative price from upstream is an
    ///   error (`Unexpected`), never a quote. Safe to call repeatedly; sources cache as needed.
    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote>;
}
