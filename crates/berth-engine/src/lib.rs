//! The container engine seam.
//!
//! Third stop on berth's data path (CLI → spec → **engine** → container). [`Engine`] is the
//! narrow trait everything above talks to; [`docker::DockerEngine`] implements it over the real
//! Docker Engine API (through bollard), and a later Kubernetes backend or a unit-test fake fits
//! the same seam. The types in [`types`] are engine-neutral: a [`ContainerPlan`] says *what*
//! container to make, each backend decides *how*.

pub mod docker;
mod engine;
mod error;
pub mod types;

pub use engine::{ByteStream, Engine, ExecInput, OutputStream};
pub use error::EngineError;
pub use types::{
    BindMount, BuildEvent, ContainerPlan, ContainerState, ContainerSummary, EngineInfo, ImageInfo,
    NetworkPlan, NetworkSummary, Output, VolumePlan, VolumeSummary,
};
