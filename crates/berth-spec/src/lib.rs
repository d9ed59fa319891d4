//! What a berth sandbox *is*, before any engine is involved.
//!
//! This crate is the second stop on berth's data path (CLI → **spec** → engine → container):
//! the CLI parses the user's flags into a [`SandboxSpec`], whose defaults are the hardening
//! policy (non-root, no capabilities, no-new-privileges, limits, no network). Nothing here
//! talks to Docker or touches the file system, so every rule is unit-testable.

pub mod egress;
pub mod labels;
pub mod names;
pub mod spec;
pub mod units;

pub use egress::{EgressPolicy, HostPattern, SecretSpec, SecretValue};
pub use spec::{
    check_image, parse_env, EnvVar, Limits, MountSpec, NetworkMode, SandboxSpec, Security,
    SpecError, UserSpec, DEFAULT_CPUS, DEFAULT_IMAGE, DEFAULT_MEMORY, DEFAULT_PIDS,
    DEFAULT_TIMEOUT, DEFAULT_TMP_SIZE, SANDBOX_GID, SANDBOX_UID, TMP_DIR, WORKSPACE_DIR,
};
pub use units::{format_bytes, parse_cpus, parse_duration, parse_size, UnitError};
