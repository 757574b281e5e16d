//! # nemordp-payments
//!
//! Payment backends for nemordp, each behind a feature: `paystack` (cards, bank, USSD),
//! `btc` (Esplora), `eth` (JSON-RPC) and `usdt` (ERC-20), plus rate sources. All implement
//! [`nemordp_core::PaymentVerifier`] or [`nemordp_core::RateSource`]. Without features this
//! crate only re-exports the simulated backends.
//!
//! `paystack` is implemented (module `paystack`); `btc`, `eth` and `usdt` are reserved names: their
//! clients land with their issues, and no placeholder type pretends to work before then.
#![deny(missing_docs)]

pub use nemordp_core::sim::{payments::SimPayments, rates::FixedRates};

#[cfg(feature = "paystack")]
#[cfg_attr(docsrs, doc(cfg(feature = "paystack")))]
pub mod paystack;
