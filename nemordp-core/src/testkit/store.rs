//! Conformance suite for store backends.
