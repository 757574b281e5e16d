//! # nemordp-providers
//!
//! Cloud backends for nemordp, each behind a feature: `vultr` (Windows Server over RDP) and
//! `contabo` (Ubuntu desktop over xrdp). Both implement
//! [`nemordp_core::CloudProvider`]. Without features this crate only re-exports the simulated
//! cloud, [`SimCloud`].
//!
//! | Feature | Provider | Capabilities |
//! |---|---|---|
//! | `vultr` | [`vultr::Vultr`] | password at create (delivered by default), delete, RDP firewall, user data opt-in, pages of 500, 10 req/s |
//! | `contabo` | [`contabo::Contabo`] | password from us (Secrets API), cancel (no delete), user data, pages of 100, 5 req/s |
#![deny(missing_docs)]

pub use nemordp_core::sim::cloud::SimCloud;

#[cfg(feature = "vultr")]
pub mod vultr;

#[cfg(feature = "contabo")]
pub mod contabo;

#[cfg(any(feature = "vultr", feature = "contabo"))]
mod rfc3339;
