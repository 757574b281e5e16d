//! Simulated payments backend.
