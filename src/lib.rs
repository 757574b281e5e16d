#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub use nemordp_core::*;

/// Cloud provider backends (`vultr`, `contabo` features).
pub use nemordp_providers as providers;

/// Payment backends and rate sources (`paystack`, `btc`, `eth`, `usdt` features).
pub use nemordp_payments as payments;

/// Store backends (`sqlite`, `postgres` features; `MemoryStore` always).
pub use nemordp_store as stores;

/// Notifications: the core types plus the `smtp` and `webhook` notifiers (features of the
/// same names).
pub use nemordp_notify as notify;
