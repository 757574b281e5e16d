//! # nemordp-payments
//!
//! Payment backends for nemordp, each behind a feature: `paystack` (cards, bank, USSD),
//! `btc` (Esplora), `eth` (JSON-RPC) and `usdt` (ERC-20), plus rate sources. All implement
//! [`nemordp_core::PaymentVerifier`] or [`nemordp_core::RateSource`]. Without features this
//! crate only re-exports the simulated backends.
//!
//! `eth` and `usdt` live in [`evm`]: one block watcher over Ethereum JSON-RPC serves both.
#![deny(missing_docs)]

#[cfg(feature = "evm")]
pub mod evm;

pub use nemordp_core::sim::{payments::SimPayments, rates::FixedRates};
