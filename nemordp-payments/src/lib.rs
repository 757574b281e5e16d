//! # nemordp-payments
//!
//! Payment backends for nemordp, each behind a feature: `paystack` (cards, bank, USSD),
//! `btc` (Esplora), `eth` (JSON-RPC) and `usdt` (ERC-20), plus rate sources. All implement
//! [`nemordp_core::PaymentVerifier`] or [`nemordp_core::RateSource`]. Without features this
//! crate only re-exports the simulated backends.
//!
//! Modules: `paystack`, `btc`, `evm` (features `eth` and `usdt`: one block watcher over
//! Ethereum JSON-RPC serves both) and `rates` (rate sources, cache, median, spread, routing).
#![deny(missing_docs)]

#[cfg(feature = "btc")]
pub mod btc;
#[cfg(feature = "evm")]
pub mod evm;
#[cfg(feature = "rates")]
pub mod rates;

pub use nemordp_core::sim::{payments::SimPayments, rates::FixedRates};

#[cfg(feature = "paystack")]
#[cfg_attr(docsrs, doc(cfg(feature = "paystack")))]
pub mod paystack;
