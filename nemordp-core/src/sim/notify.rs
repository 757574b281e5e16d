//! Simulated notify backend.
