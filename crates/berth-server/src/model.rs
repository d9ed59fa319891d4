//! The API's request and response bodies (their schemas are in the OpenAPI document).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::db::OnTimeout;

/// A secret for the egress gateway: write-only, never returned, logged or stored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretInput {
    /// The variable the sandbox sees (holding a placeholder), e.g. `GITHUB_TOKEN`.
    pub name: String,
    /// The value, added by the gateway to requests for `hosts` only.
    pub value: String,
    /// Hosts whose requests get the value, e.g. `["api.github.com"]`.
    pub hosts: Vec<String>,
}

/// What to make. Everything left out is berth's hardened default: non-root, no
/// capabilities, 1 GiB, 1 CPU, 512 processes, no network.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Image (default `berth/base`, built offline; others must be on the engine).
    #[serde(default)]
    pub image: Option<String>,
    /// A name unique on this server: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
    #[serde(default)]
    pub name: Option<String>,
    /// The main process (default: the image's; berth's agent runs it and stays PID 1).
    #[serde(default)]
    pub command: Vec<String>,
    /// Memory limit, e.g. `512m` (default `1g`).
    #[serde(default)]
    pub memory: Option<String>,
    /// CPUs, e.g. `0.5` (default `1`).
    #[serde(default)]
    pub cpus: Option<String>,
    /// Maximum processes (default 512).
    #[serde(default)]
    pub pids: Option<i64>,
    /// `none` (default), `isolated` or `bridge` (open egress).
    #[serde(default)]
    pub network: Option<String>,
    /// Hosts reachable through the egress gateway, e.g. `pypi.org`, `*.github.com`.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<SecretInput>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Your labels (keys starting with `berth.` are berth's).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A host directory mounted at /workspace: only under the server's `--workspace-root`.
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    /// Seconds until the server ends it (default 3600; `0`: no timeout).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Seconds without activity until the server ends it (default: none). Running
    /// processes started through berth and attached streams count as activity.
    #[serde(default)]
    pub idle_timeout: Option<u64>,
    /// What ending it means: `kill` (default), `stop` or `pause`.
    #[serde(default)]
    pub on_timeout: Option<OnTimeout>,
    /// A named agent of yours (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`) this sandbox serves: its home
    /// volume (the CLI's sessions, kept across sandboxes) is mounted at the CLI's home, and
    /// its agent runs may resume the agent's sessions. Made on first use; see `/v1/agents`.
    #[serde(default)]
    pub agent: Option<String>,
}

/// The egress policy as anyone may see it: hosts and secret names, never values.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EgressView {
    pub allow: Vec<String>,
    pub secrets: Vec<String>,
}

/// A sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Sandbox {
    pub id: String,
    pub name: Option<String>,
    pub image: String,
    /// `running`, `paused`, `stopped` (what the server enforces).
    pub state: String,
    /// What the engine says, e.g. `running` or `its container exited with 137 (…)`; only
    /// on a single sandbox's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub created: String,
    pub tenant: String,
    pub user: String,
    pub workdir: String,
    pub labels: BTreeMap<String, String>,
    /// When the server ends it (RFC 3339), if it has a timeout; while paused, this moves.
    pub timeout_at: Option<String>,
    pub idle_timeout: Option<u64>,
    pub on_timeout: OnTimeout,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressView>,
    /// The named agent it serves, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// A page of sandboxes.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SandboxList {
    pub sandboxes: Vec<Sandbox>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A new timeout, counted from now.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// Seconds from now (`0`: no timeout).
    pub timeout: u64,
}

/// Stop options.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopSandbox {
    /// Seconds between SIGTERM and SIGKILL (default 10).
    #[serde(default)]
    pub grace: Option<u64>,
}

/// A background process to start under your id.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartProcess {
    /// Your id for it (1-64 of `[A-Za-z0-9_.-]`): a retried start with the same id does not
    /// start it twice.
    pub id: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// A signal for a process.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalProcess {
    /// A signal number, e.g. 15 (TERM) or 9 (KILL).
    #[schema(minimum = 1, maximum = 64)]
    pub signal: i32,
}

/// A move inside the sandbox.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MovePath {
    pub from: String,
    pub to: String,
}

/// What an upload wrote.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
}

/// The server and its engine are up.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub engine: String,
}
