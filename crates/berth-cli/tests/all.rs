//! Integration tests of the `berth` binary against the real local Docker daemon.
//!
//! They build the images they need if missing and remove what they create by label.
mod suite;
