//! Sandbox lifecycle on top of an [`berth_engine::Engine`].
//!
//! The middle of berth's data path (CLI → spec → engine → container): [`plan`] turns a
//! `SandboxSpec` plus facts about the host into a hardened container plan, [`run`] drives a
//! one-shot run from create to remove, [`gc`] finds what crashed runs left behind, [`images`]
//! builds berth's images offline, and [`doctor`] says whether this machine can run berth.
//! Everything here is generic over the engine, so unit tests use a fake and integration tests
//! the real Docker daemon.

pub mod agent_client;
pub mod doctor;
pub mod egress;
mod error;
pub mod gc;
pub mod host_dirs;
pub mod images;
pub mod owner;
pub mod plan;
pub mod receipt;
pub mod run;
pub mod sandbox;
pub mod sink;
pub mod store;

#[cfg(test)]
mod fake;

pub use berth_protocol::io_reason;
pub use error::SandboxError;
pub use receipt::{Outcome, Receipt, StreamDigest};
pub use run::{run_once, RunOptions};
pub use sink::{CaptureSink, OutputSink, StdioSink};
