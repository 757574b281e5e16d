//! # nemordp-core
//!
//! Domain types, backend traits, simulated backends and the conformance test kit of
//! [nemordp](https://example.invalid/nemordp): a library that takes a customer's order for a
//! remote-desktop machine from payment to a running, reachable Windows or Ubuntu desktop with
//! its credentials and a ready `.rdp` file.
//!
//! - Money that cannot lose precision: [`money`].
//! - Plans, orders and payments with explicit state machines: [`plan`], [`order`], [`payment`].
//! - The extension points, small object-safe async traits usable as `Arc<dyn …>`:
//!   [`CloudProvider`], [`PaymentVerifier`], [`RateSource`], [`Notifier`], [`Store`].
//! - In-process backends that need no keys and no network: [`sim`].
//! - With the `testkit` feature, conformance suites any backend can run: `testkit`.
//!
//! One error type, [`Error`], with an [`ErrorKind`] and [`Error::is_retryable`].
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod bootstrap;
pub mod clock;
pub mod cloud;
pub mod error;
pub mod fraud;
pub mod ids;
pub mod money;
pub mod notify;
pub mod order;
pub mod password;
pub mod payment;
pub mod plan;
pub mod provisioner;
pub mod rates;
pub mod rdp;
pub mod seal;
pub mod sim;
pub mod store;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp, TokioClock};
pub use cloud::{CloudProvider, CloudProviderExt};
pub use error::{Error, ErrorKind, Result};
pub use ids::{InstanceId, JobId, NotificationId, OrderId, PaymentId, PlanId};
pub use money::{Asset, Currency, Money, Rate, Rounding};
pub use notify::Notifier;
pub use payment::PaymentVerifier;
pub use rates::RateSource;
pub use store::{Record, RecordWrite, Store, StoreExt};

// Re-exported so hosts and backend crates use the same versions.
pub use async_trait::async_trait;
pub use ruint::aliases::U256;
pub use rust_decimal::Decimal;
pub use secrecy;

#[cfg(test)]
mod forwarding {
    //! `Arc<dyn …>`, `Box<dyn …>` and `&dyn …` satisfy the traits themselves, so hosts can pass
    //! any of them where a generic backend is expected.
    use std::sync::Arc;

    use super::*;

    fn is_cloud<T: CloudProvider>() {}
    fn is_verifier<T: PaymentVerifier>() {}
    fn is_rates<T: RateSource>() {}
    fn is_notifier<T: Notifier>() {}
    fn is_store<T: Store>() {}
    fn is_probe<T: rdp::RdpProbe>() {}

    #[test]
    fn dyn_forwarding_compiles() {
        is_cloud::<Arc<dyn CloudProvider>>();
        is_cloud::<Box<dyn CloudProvider>>();
        is_cloud::<&'static dyn CloudProvider>();
        is_verifier::<Arc<dyn PaymentVerifier>>();
        is_verifier::<Box<dyn PaymentVerifier>>();
        is_rates::<Arc<dyn RateSource>>();
        is_rates::<Box<dyn RateSource>>();
        is_notifier::<Arc<dyn Notifier>>();
        is_notifier::<Box<dyn Notifier>>();
        is_store::<Arc<dyn Store>>();
        is_store::<Box<dyn Store>>();
        is_probe::<Arc<dyn rdp::RdpProbe>>();
    }
}
