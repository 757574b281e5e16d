//! Simulated store backend.
