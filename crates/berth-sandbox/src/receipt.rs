//! [`Receipt`]: the machine-readable record of one run (`berth run --json` / `--receipt`).

use serde::Serialize;
use sha2::{Digest, Sha256};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The command ran and exited (with any code).
    Exited,
    /// The command could not be started (not found → 127, not executable → 126).
    StartFailed,
    /// berth killed it at the deadline (124).
    TimedOut,
    /// The kernel killed it for exceeding the memory limit (137).
    OomKilled,
    /// berth was interrupted (Ctrl-C / SIGTERM) and removed the sandbox (128 + signal).
    Interrupted,
}

/// Size and SHA-256 of one output stream, computed as it flows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamDigest {
    /// Bytes seen.
    pub bytes: u64,
    /// Hex SHA-256 of exactly those bytes.
    pub sha256: String,
}

/// Incremental hasher behind a [`StreamDigest`].
#[derive(Default, Clone)]
pub struct StreamHasher {
    bytes: u64,
    hasher: Sha256,
}

impl StreamHasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.hasher.update(data);
    }

    /// The final digest.
    pub fn finish(self) -> StreamDigest {
        StreamDigest {
            bytes: self.bytes,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

/// Limits as applied to the container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppliedLimits {
    /// Memory limit in bytes.
    pub memory_bytes: i64,
    /// Memory + swap in bytes (equal to memory: no swap).
    pub memory_swap_bytes: i64,
    /// CPUs (e.g. 1.5).
    pub cpus: f64,
    /// Process limit.
    pub pids: i64,
    /// Wall-clock limit in seconds (null: none).
    pub timeout_seconds: Option<f64>,
}

/// Security settings as applied to the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedSecurity {
    /// `uid:gid` the command ran as.
    pub user: String,
    /// Capabilities dropped.
    pub cap_drop: Vec<String>,
    /// Capabilities added back.
    pub cap_add: Vec<String>,
    /// `no-new-privileges` was set.
    pub no_new_privileges: bool,
    /// Root file system was read-only.
    pub read_only_rootfs: bool,
    /// The OCI runtime asked for (`runsc` for gVisor); `null`: the engine's default.
    pub runtime: Option<String>,
    /// `none`, `bridge` or the isolated network's name.
    pub network: String,
    /// Bind mounts as `host:target:mode`.
    pub mounts: Vec<String>,
}

/// Everything a script needs to know about one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Receipt {
    /// berth's sandbox id.
    pub id: String,
    /// The engine's container id.
    pub container_id: String,
    /// The container's name.
    pub container_name: String,
    /// Image reference.
    pub image: String,
    /// Image digest (registry digest, or the content-addressed image id).
    pub image_digest: String,
    /// The command's argv.
    pub command: Vec<String>,
    /// Limits applied.
    pub limits: AppliedLimits,
    /// Security settings applied.
    pub security: AppliedSecurity,
    /// RFC 3339 time berth started the run.
    pub started_at: String,
    /// RFC 3339 time the run ended.
    pub finished_at: String,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// berth's exit code (the command's own, or 124/125/126/127/137/130/143).
    pub exit_code: i32,
    /// How the run ended.
    pub outcome: Outcome,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Killed for exceeding the memory limit.
    pub oom_killed: bool,
    /// The signal that interrupted berth, if any.
    pub interrupted_by: Option<String>,
    /// Why the command could not start, if it could not.
    pub error: Option<String>,
    /// stdout size and hash.
    pub stdout: StreamDigest,
    /// stderr size and hash.
    pub stderr: StreamDigest,
    /// The container was kept (`--keep`).
    pub kept: bool,
    /// The command's stdout as text, when captured (`--json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdout_text: Option<String>,
    /// The command's stderr as text, when captured (`--json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_text: Option<String>,
    /// Captured text was cut at the capture limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub output_truncated: bool,
    /// The egress policy and what the gateway counted (`--allow-host`, `--secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressReport>,
}

/// A sandbox's egress as a receipt or `berth inspect` shows it: the record (gateway,
/// network, allowed hosts, each secret's name, placeholder and hosts — never a value) and
/// the gateway's counts (absent when the gateway was gone).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EgressReport {
    #[serde(flatten)]
    pub policy: crate::egress::EgressRecord,
    pub stats: Option<berth_spec::egress::GatewayStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_real_sha256() {
        let mut h = StreamHasher::default();
        h.update(b"hel");
        h.update(b"lo\n");
        let d = h.finish();
        assert_eq!(d.bytes, 6);
        // sha256 of "hello\n"
        assert_eq!(
            d.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
    }
}
