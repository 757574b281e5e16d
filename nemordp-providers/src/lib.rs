//! # nemordp-providers
//!
//! Cloud backends for nemordp, each behind a feature: `vultr` (Windows Server over RDP) and
//! `contabo` (Ubuntu desktop over xrdp). Both implement
//! [`nemordp_core::CloudProvider`]. Without features this crate only re-exports the simulated
//! cloud, [`SimCloud`].
//!
//! The `vultr` and `contabo` features are reserved names today: the clients land with their
//! issues, and no placeholder type pretends to work before then.
#![deny(missing_docs)]

pub use nemordp_core::sim::cloud::SimCloud;
