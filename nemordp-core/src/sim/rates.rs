//! Simulated rates backend.
