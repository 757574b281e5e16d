//! Simulated cloud backend.
