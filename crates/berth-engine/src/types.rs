//! Engine-neutral descriptions of what berth asks an engine for and what it reports back.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Serialize;

/// A fully resolved container: every hardening decision is already made.
///
/// Built by `berth-sandbox` from a `SandboxSpec`; a backend only translates it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ContainerPlan {
    /// Container name (unique per engine).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Overrides the image's entrypoint when set.
    pub entrypoint: Option<Vec<String>>,
    /// Arguments (the command).
    pub cmd: Vec<String>,
    /// `uid[:gid]` or user name.
    pub user: String,
    /// Working directory inside the container.
    pub workdir: Option<String>,
    /// `NAME=VALUE` entries.
    pub env: Vec<String>,
    /// Labels (always includes the `berth.*` set).
    pub labels: BTreeMap<String, String>,
    /// Memory limit in bytes.
    pub memory_bytes: i64,
    /// Memory plus swap in bytes; equal to `memory_bytes` means no swap.
    pub memory_swap_bytes: i64,
    /// CPU quota in billionths of a CPU.
    pub nano_cpus: i64,
    /// Process limit.
    pub pids_limit: i64,
    /// Capabilities to drop (`ALL` for all).
    pub cap_drop: Vec<String>,
    /// Capabilities added back.
    pub cap_add: Vec<String>,
    /// Security options such as `no-new-privileges`.
    pub security_opt: Vec<String>,
    /// Read-only root file system.
    pub read_only_rootfs: bool,
    /// tmpfs mounts: path → mount options.
    pub tmpfs: BTreeMap<String, String>,
    /// Bind mounts.
    pub binds: Vec<BindMount>,
    /// `none`, `bridge`, or the name of a network berth created.
    pub network: String,
    /// Keep stdin open and attachable.
    pub open_stdin: bool,
    /// Allocate a TTY.
    pub tty: bool,
    /// Seconds the engine waits after the stop signal before killing.
    pub stop_timeout: Option<i64>,
    /// OOM-killer preference of the container's first process (-1000..1000; lower survives).
    pub oom_score_adj: Option<i64>,
    /// DNS servers the engine's resolver forwards to (empty: the engine's default).
    pub dns: Vec<String>,
    /// resolv.conf options (`timeout:1`, …).
    pub dns_options: Vec<String>,
    /// The OCI runtime (`runsc`, …); `None`: the engine's default.
    pub runtime: Option<String>,
}

/// A host path bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindMount {
    /// Absolute host path.
    pub source: String,
    /// Absolute container path.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// A network berth creates for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkPlan {
    /// Network name.
    pub name: String,
    /// `true`: no route to the outside (Docker's `--internal`).
    pub internal: bool,
    /// `false`: the host itself is unreachable too (no host-side address on the network), so a
    /// sandbox cannot reach services listening on the host's interfaces.
    pub host_reachable: bool,
    /// The MTU of the bridge and of every container's interface on it; `None`: the engine's
    /// default (its own interface's, typically 1500).
    pub mtu: Option<u32>,
    /// Labels (always includes the `berth.*` set).
    pub labels: BTreeMap<String, String>,
}

/// A chunk of a container's output, stdout and stderr kept apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes written to stdout.
    Stdout(Bytes),
    /// Bytes written to stderr.
    Stderr(Bytes),
}

/// What inspecting a container says about its state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ContainerState {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// `created`, `running`, `exited`, …
    pub status: String,
    /// Still running.
    pub running: bool,
    /// Exit code once exited.
    pub exit_code: Option<i64>,
    /// The kernel OOM killer fired in the container's cgroup.
    pub oom_killed: bool,
    /// The engine's error for this container (e.g. why it could not start).
    pub error: Option<String>,
    /// RFC 3339 start time.
    pub started_at: Option<String>,
    /// RFC 3339 end time.
    pub finished_at: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Image reference the container was created from.
    pub image: String,
    /// Its IPv4 address on each network it is attached to (network name → address).
    pub ip_addresses: BTreeMap<String, String>,
}

/// One row of a container listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ContainerSummary {
    /// Engine id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// `created`, `running`, `exited`, …
    pub state: String,
    /// Human status, e.g. `Exited (0) 3 seconds ago`.
    pub status: String,
    /// Image reference.
    pub image: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// One row of a network listing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NetworkSummary {
    /// Engine id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// What berth needs to know about an image.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ImageInfo {
    /// Content-addressed image id (`sha256:…`).
    pub id: String,
    /// Registry digests (`repo@sha256:…`), empty for locally built images.
    pub repo_digests: Vec<String>,
    /// The image's configured user, if any.
    pub user: Option<String>,
    /// The image's entrypoint.
    pub entrypoint: Vec<String>,
    /// The image's default command.
    pub cmd: Vec<String>,
    /// The image's working directory, if set.
    pub workdir: Option<String>,
    /// Size in bytes.
    pub size: Option<i64>,
}

impl ImageInfo {
    /// The most specific digest available: the registry digest if pulled, else the image id.
    pub fn digest(&self) -> &str {
        self.repo_digests
            .first()
            .and_then(|d| d.split_once('@').map(|(_, digest)| digest))
            .unwrap_or(&self.id)
    }
}

/// Facts about the engine, for `berth doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct EngineInfo {
    /// Engine version, e.g. `20.10.24`.
    pub server_version: String,
    /// API version the engine speaks at most.
    pub api_version: String,
    /// API version negotiated for this client.
    pub client_api_version: String,
    /// Operating system of the engine host.
    pub operating_system: String,
    /// Kernel version.
    pub kernel_version: String,
    /// `1` or `2`.
    pub cgroup_version: String,
    /// Memory limits are enforced.
    pub memory_limit: bool,
    /// Swap limits are enforced (needed for "no swap").
    pub swap_limit: bool,
    /// CPU quota is enforced.
    pub cpu_cfs_quota: bool,
    /// Pids limits are enforced.
    pub pids_limit: bool,
    /// CPUs on the engine host.
    pub ncpu: i64,
    /// Memory of the engine host in bytes.
    pub mem_total: i64,
    /// The OCI runtimes registered with the engine (`runc`, `runsc`, …).
    pub runtimes: Vec<String>,
}

/// Progress of an image build or pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A line of build output (`Step 2/5 : COPY …`).
    Log(String),
    /// Pull progress of one layer.
    Progress {
        /// Layer id.
        id: String,
        /// Status text (`Downloading`, `Pull complete`).
        status: String,
        /// Bytes done, when known.
        current: Option<i64>,
        /// Bytes in total, when known.
        total: Option<i64>,
    },
}

/// A named volume to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumePlan {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A volume as listed by the engine.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSummary {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}
