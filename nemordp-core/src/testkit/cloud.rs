//! Conformance suite for cloud backends.
