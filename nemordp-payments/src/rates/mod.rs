//! Rate sources (feature `rates`): [`RateSource`] implementations for CoinGecko, Kraken and
//! Coinbase (crypto → fiat) and open.er-api.com (fiat → fiat, for charging a USD price in NGN,
//! GHS, ZAR or KES through Paystack), a TTL cache, a median aggregator, and the [`Pricer`]
//! that turns a price into an amount to charge with a locked rate.
//!
//! Rules, after BTCPay Server's rate engine:
//!
//! - Prices are parsed from the response *text* into [`Decimal`]; JSON numbers are read as
//!   raw text (never through `f64`). A zero, negative or unparsable price is an error.
//! - [`MedianRates`] asks every source at once, drops failures, quotes older than its
//!   maximum age and quotes further than a configurable percent from the median, and takes
//!   the median of what is left; with fewer than `min_sources` fresh quotes (default 2) it
//!   fails with `Unavailable` naming each source's problem, so an order cannot be priced on an
//!   old or single rate.
//! - [`Pricer`] applies a spread (a margin against volatility, default 0 %) in the merchant's
//!   favour, rounds the amount up to the target's smallest unit, re-checks freshness, and
//!   returns the [`LockedRate`] (effective rate, sources, time) to store on the invoice.
//!   Hosts that price through the `Provisioner` (which converts with the rate source it is
//!   given) wrap the source in [`SpreadRates`] instead, and in [`MedianRates`] (with
//!   `min_sources(1)` for a single FX feed) for the freshness check.
//!
//! A typical crypto stack: `SpreadRates(MedianRates[Cached(Kraken), Cached(Coinbase),
//! Cached(CoinGecko)], 1 %)`. For Paystack in NGN/GHS/ZAR/KES from a USD price:
//! `MedianRates[Cached(OpenErApi, 1 h)].with_min_sources(1).with_max_age(36 h)`; the
//! `Provisioner` asks for `quote(NGN, USD)`, which reads `/v6/latest/NGN`.
//!
//! A `Provisioner` that takes both crypto and Paystack in another fiat currency is given
//! [`RoutedRates`]: crypto pairs to the crypto stack, fiat pairs to the FX stack.
//!
//! All base URLs are configurable (local fakes in tests, mirrors or paid endpoints in
//! production).

mod cache;
pub mod coinbase;
pub mod coingecko;
pub mod fx;
mod http;
pub mod kraken;
mod median;
mod pricer;
mod routed;
mod spread;

pub use cache::CachedRates;
pub use coinbase::Coinbase;
pub use coingecko::CoinGecko;
pub use fx::OpenErApi;
pub use kraken::Kraken;
pub use median::MedianRates;
pub use pricer::Pricer;
pub use routed::RoutedRates;
pub use spread::SpreadRates;

#[cfg(doc)]
use nemordp_core::{Decimal, RateSource, payment::LockedRate};
