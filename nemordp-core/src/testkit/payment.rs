//! Conformance suite for payment backends.
