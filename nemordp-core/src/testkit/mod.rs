//! Conformance suites for backend implementations, ours and downstream crates'.
//!
//! Each suite is a set of `pub async fn`s over `&dyn Trait` that panic with a message naming
//! the broken rule. Run them from your own tests.

pub mod cloud;
pub mod payment;
pub mod store;
