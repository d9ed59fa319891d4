//! Integration tests of the `berth` binary against the real local Docker daemon.
//!
//! They build the images they need if missing and remove what they create by label.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod suite;
