//! # nemordp-payments
//!
//! Payment backends for nemordp, each behind a feature: `paystack` (cards, bank, USSD),
//! `btc` (Esplora), `eth` (JSON-RPC) and `usdt` (ERC-20), plus rate sources. All implement
//! [`nemordp_core::PaymentVerifier`] or [`nemordp_core::RateSource`]. Without features this
//! crate only re-exports the simulated backends.
//!
//! Implemented: `paystack` (module `paystack`), `btc`, `eth` and `usdt` (in [`evm`]: one block
//! watcher over Ethereum JSON-RPC serves both), `rates`. Features not listed as implemented are
//! reserved: no placeholder type pretends to work.
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
