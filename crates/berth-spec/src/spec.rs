//! [`SandboxSpec`]: everything the user asked for, with berth's hardening policy as the defaults.
//!
//! A spec is validated syntax only (sizes, mount strings, env names). Host facts — does the
//! workspace exist, who owns it, where is the engine socket — are checked when the spec is
//! turned into a container plan (`berth-sandbox`).

use std::time::Duration;

use serde::Serialize;

use crate::units::{format_bytes, UnitError};

/// The image `berth run` uses when no `--image` is given; `berth image build` makes it offline.
pub const DEFAULT_IMAGE: &str = "berth/base:latest";
/// Default memory limit (swap is always set equal to it: no swap).
pub const DEFAULT_MEMORY: &str = "1g";
/// Default CPU quota.
pub const DEFAULT_CPUS: &str = "1";
/// Default process limit: a fork bomb stops here.
pub const DEFAULT_PIDS: i64 = 512;
/// Default wall-clock limit of a one-shot run.
pub const DEFAULT_TIMEOUT: &str = "10m";
/// Default size of the writable tmpfs at `/tmp`.
pub const DEFAULT_TMP_SIZE: &str = "256m";
/// Where the workspace is mounted inside the sandbox.
pub const WORKSPACE_DIR: &str = "/workspace";
/// The sandbox's writable scratch directory (a tmpfs).
pub const TMP_DIR: &str = "/tmp";
/// The unprivileged user sandboxes run as unless told otherwise.
pub const SANDBOX_UID: u32 = 1000;
/// The group of [`SANDBOX_UID`].
pub const SANDBOX_GID: u32 = 1000;

/// Invalid user input in a spec; each message names the value and shows a good example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A size, CPU or duration value did not parse.
    #[error("{flag}: {source}")]
    Unit {
        flag: &'static str,
        #[source]
        source: UnitError,
    },
    /// A `--volume` string is malformed.
    #[error("invalid volume {value:?}: {reason}; expected HOST_PATH:SANDBOX_PATH[:ro|rw], e.g. ./data:/data:ro")]
    Volume { value: String, reason: &'static str },
    /// A `--workspace` string is malformed.
    #[error("invalid workspace {value:?}: {reason}; expected DIR or DIR:ro, e.g. --workspace . or --workspace ./repo:ro")]
    Workspace { value: String, reason: &'static str },
    /// An `--env` string is malformed.
    #[error("invalid environment variable {value:?}: {reason}; expected NAME=VALUE or NAME (taken from your environment), e.g. --env RUST_LOG=debug")]
    Env { value: String, reason: &'static str },
    /// A `--user` string is malformed.
    #[error("invalid user {value:?}: expected auto, root, UID or UID:GID, e.g. --user 1000:1000")]
    User { value: String },
    /// A `--network` string is unknown.
    #[error("invalid network {value:?}: expected none (default, no network at all), isolated (a private network with no egress) or bridge (egress to the internet)")]
    Network { value: String },
    /// A `--cap-add` string is not a capability name.
    #[error("invalid capability {value:?}: not a Linux capability (see capabilities(7)); expected a name such as NET_BIND_SERVICE or CAP_CHOWN, e.g. --cap-add NET_BIND_SERVICE")]
    Capability { value: String },
    /// The pids limit is not positive.
    #[error("invalid --pids-limit {value}: expected a positive number of processes, e.g. 512")]
    Pids { value: i64 },
    /// A size limit of zero, which Docker would take as "no limit".
    #[error("invalid {flag} {value:?}: a limit of 0 would mean no limit at all, and berth always sets one; give a size, e.g. {flag} 2g (Docker reads 0 as unlimited; berth does not)")]
    ZeroLimit { flag: &'static str, value: String },
    /// An `--allow-host` string is not a host pattern.
    #[error("invalid --allow-host {value:?}: {reason}; expected a host name, *.domain or host:port, e.g. --allow-host pypi.org --allow-host '*.github.com'")]
    AllowHost { value: String, reason: &'static str },
    /// A `--secret` string is malformed (its value is never shown).
    #[error("invalid --secret {value:?}: {reason}; expected NAME[=VALUE][@HOST[,HOST…]], e.g. --secret GITHUB_TOKEN@api.github.com (the value comes from your environment when omitted)")]
    Secret { value: String, reason: &'static str },
    /// An `--image` string is not an image reference.
    #[error("invalid image {value:?}: {reason}; expected NAME[:TAG][@DIGEST], e.g. --image berth/base or --image debian:bookworm-slim")]
    Image { value: String, reason: &'static str },
    /// An egress policy with open networking.
    #[error("--allow-host (and, outside `berth agent`, --secret) puts the sandbox behind berth's egress gateway, which --network bridge (open egress) would bypass: drop one of them")]
    EgressWithBridge,
    /// No command was given.
    #[error("no command given: put the command after `--`, e.g. berth run -- echo hello")]
    NoCommand,
}

/// Which user the sandbox's processes run as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "mode", content = "value")]
pub enum UserSpec {
    /// The workspace owner's uid:gid when that is not root, otherwise 1000:1000.
    Auto,
    /// uid 0 — only when the user asks for it explicitly.
    Root,
    /// An explicit non-root `uid[:gid]` or user name.
    Explicit(String),
}

impl UserSpec {
    /// Parses `auto`, `root`, `UID`, `UID:GID` or a user name.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        let err = || SpecError::User {
            value: value.to_string(),
        };
        match value {
            "auto" => return Ok(Self::Auto),
            "root" | "0" | "0:0" | "root:root" => return Ok(Self::Root),
            _ => {}
        }
        let (user, group) = match value.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (value, None),
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !valid(user) || group.is_some_and(|g| !valid(g)) {
            return Err(err());
        }
        if user == "0" || user == "root" {
            return Ok(Self::Root);
        }
        Ok(Self::Explicit(value.to_string()))
    }
}

/// How the sandbox reaches the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Only a loopback interface (the default).
    None,
    /// A private network berth creates for this sandbox, with no route out; removed afterwards.
    Isolated,
    /// Docker's default bridge: egress to wherever the host can reach.
    Bridge,
}

impl NetworkMode {
    /// Parses `none`, `isolated` or `bridge`.
    pub fn parse(value: &str) -> Result<Self, SpecError> {
        match value {
            "none" => Ok(Self::None),
            "isolated" => Ok(Self::Isolated),
            "bridge" => Ok(Self::Bridge),
            _ => Err(SpecError::Network {
                value: value.to_string(),
            }),
        }
    }
}

/// Resource limits; all are always set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Memory in bytes; swap is set to the same value, so the sandbox cannot swap.
    pub memory_bytes: u64,
    /// CPU quota in billionths of a CPU.
    pub nano_cpus: u64,
    /// Maximum number of processes and threads.
    pub pids: i64,
    /// Size of the `/tmp` tmpfs in bytes (it counts against the memory limit).
    pub tmp_bytes: u64,
}

impl Limits {
    /// Parses the user's limit strings, naming the flag on error.
    pub fn parse(memory: &str, cpus: &str, pids: i64, tmp_size: &str) -> Result<Self, SpecError> {
        let memory_bytes = crate::units::parse_size(memory).map_err(|source| SpecError::Unit {
            flag: "--memory",
            source,
        })?;
        let nano_cpus = crate::units::parse_cpus(cpus).map_err(|source| SpecError::Unit {
            flag: "--cpus",
            source,
        })?;
        let tmp_bytes = crate::units::parse_size(tmp_size).map_err(|source| SpecError::Unit {
            flag: "--tmp-size",
            source,
        })?;
        // Docker takes a memory limit of 0 as "unlimited": refuse it rather than silently
        // hand out a sandbox without the limit the user believes it has.
        for (flag, value, bytes) in [
            ("--memory", memory, memory_bytes),
            ("--tmp-size", tmp_size, tmp_bytes),
        ] {
            if bytes == 0 {
                return Err(SpecError::ZeroLimit {
                    flag,
                    value: value.to_string(),
                });
            }
        }
        if pids <= 0 {
            return Err(SpecError::Pids { value: pids });
        }
        Ok(Self {
            memory_bytes,
            nano_cpus,
            pids,
            tmp_bytes,
        })
    }

    /// The memory limit as a human reads it, e.g. `1GiB`.
    pub fn memory_display(&self) -> String {
        format_bytes(self.memory_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 1 << 30,
            nano_cpus: 1_000_000_000,
            pids: DEFAULT_PIDS,
            tmp_bytes: 256 << 20,
        }
    }
}

/// Kernel-level hardening; the defaults are the strictest that still run ordinary programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Security {
    /// Capabilities added back after dropping all (normally empty).
    pub cap_add: Vec<String>,
    /// `no-new-privileges`: setuid binaries cannot raise privileges.
    pub no_new_privileges: bool,
    /// Mount the root file system read-only (only `/tmp` and mounts are writable).
    pub read_only_rootfs: bool,
    /// The OCI runtime registered with the engine to run the sandbox (`runsc`: gVisor, a
    /// user-space kernel between the workload and the host's); `None`: the engine's default.
    pub runtime: Option<String>,
}

impl Default for Security {
    fn default() -> Self {
        Self {
            cap_add: Vec::new(),
            no_new_privileges: true,
            read_only_rootfs: false,
            runtime: None,
        }
    }
}

/// Every Linux capability (capabilities(7)), without the `CAP_` prefix.
const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

impl Security {
    /// Validates and normalises a capability name (`chown` → `CHOWN`, `CAP_CHOWN` → `CHOWN`).
    pub fn parse_capability(value: &str) -> Result<String, SpecError> {
        let upper = value.trim().to_ascii_uppercase();
        let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
        if !CAPABILITIES.contains(&name) {
            return Err(SpecError::Capability {
                value: value.to_string(),
            });
        }
        Ok(name.to_string())
    }
}

/// A host directory to bind into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    /// Host path as the user typed it (resolved against the current directory later).
    pub host: String,
    /// Absolute path inside the sandbox.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

impl MountSpec {
    /// Parses `--workspace DIR[:ro|:rw]`; the target is always [`WORKSPACE_DIR`].
    pub fn parse_workspace(value: &str) -> Result<Self, SpecError> {
        let err = |reason| SpecError::Workspace {
            value: value.to_string(),
            reason,
        };
        let (host, read_only) = match value.rsplit_once(':') {
            Some((host, "ro")) => (host, true),
            Some((host, "rw")) => (host, false),
            Some((_, _)) => return Err(err("the only options are :ro and :rw")),
            None => (value, false),
        };
        if host.is_empty() {
            return Err(err("the directory is empty"));
        }
        Ok(Self {
            host: host.to_string(),
            target: WORKSPACE_DIR.to_string(),
            read_only,
        })
    }

    /// Parses `--volume HOST:TARGET[:ro|:rw]` (host directories and files only).
    pub fn parse_volume(value: &str) -> Result<Self, SpecError> {
        let err = |reason| SpecError::Volume {
            value: value.to_string(),
            reason,
        };
        let parts: Vec<&str> = value.split(':').collect();
        let (host, target, read_only) = match parts.as_slice() {
            [host, target] => (*host, *target, false),
            [host, target, "ro"] => (*host, *target, true),
            [host, target, "rw"] => (*host, *target, false),
            [_, _, _] => return Err(err("the only options are ro and rw")),
            _ => {
                return Err(err(
                    "it needs a host path and a sandbox path separated by ':'",
                ))
            }
        };
        if host.is_empty() || target.is_empty() {
            return Err(err("a path is empty"));
        }
        if !(host.starts_with('/') || host.starts_with('.') || host.starts_with('~')) {
            return Err(err(
                "named volumes are not supported; give a host path (absolute, or starting with ./)",
            ));
        }
        if !target.starts_with('/') {
            return Err(err("the sandbox path must be absolute"));
        }
        if target == "/" {
            return Err(err("the sandbox path cannot be /"));
        }
        Ok(Self {
            host: host.to_string(),
            target: target.to_string(),
            read_only,
        })
    }
}

/// One environment variable for the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Value; `None` means "take it from the caller's environment" (skipped when unset there).
    pub value: Option<String>,
}

/// Parses `NAME=VALUE` or `NAME`.
pub fn parse_env(value: &str) -> Result<EnvVar, SpecError> {
    let err = |reason| SpecError::Env {
        value: value.to_string(),
        reason,
    };
    let (name, val) = match value.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (value, None),
    };
    if name.is_empty() {
        return Err(err("the name is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(err("the name contains whitespace"));
    }
    Ok(EnvVar {
        name: name.to_string(),
        value: val,
    })
}

/// Everything needed to create one sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxSpec {
    /// Image reference.
    pub image: String,
    /// argv of the sandbox's main process (no shell is added).
    pub command: Vec<String>,
    /// Who the processes run as.
    pub user: UserSpec,
    /// Resource limits.
    pub limits: Limits,
    /// Kernel hardening.
    pub security: Security,
    /// Network access.
    pub network: NetworkMode,
    /// The workspace mounted at `/workspace`.
    pub workspace: Option<MountSpec>,
    /// Extra bind mounts.
    pub volumes: Vec<MountSpec>,
    /// Environment variables (nothing from the host unless named).
    pub env: Vec<EnvVar>,
    /// Working directory; defaults to `/workspace` when a workspace is mounted.
    pub workdir: Option<String>,
    /// Wall-clock limit; `None` disables it.
    pub timeout: Option<Duration>,
    /// Egress by domain through berth's gateway (empty: none, and `network` decides).
    pub egress: crate::EgressPolicy,
}

impl SandboxSpec {
    /// A spec with every default of the hardening policy, running `command` in [`DEFAULT_IMAGE`].
    pub fn new(command: Vec<String>) -> Self {
        Self {
            image: DEFAULT_IMAGE.to_string(),
            command,
            user: UserSpec::Auto,
            limits: Limits::default(),
            security: Security::default(),
            network: NetworkMode::None,
            workspace: None,
            volumes: Vec::new(),
            env: Vec::new(),
            workdir: None,
            timeout: Some(Duration::from_secs(600)),
            egress: crate::EgressPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_hardening_policy() {
        let spec = SandboxSpec::new(vec!["true".into()]);
        assert_eq!(spec.user, UserSpec::Auto);
        assert!(spec.security.cap_add.is_empty());
        assert!(spec.security.no_new_privileges);
        assert_eq!(spec.network, NetworkMode::None);
        assert_eq!(spec.limits.pids, DEFAULT_PIDS);
        assert_eq!(
            spec.limits,
            Limits::parse(DEFAULT_MEMORY, DEFAULT_CPUS, DEFAULT_PIDS, DEFAULT_TMP_SIZE).unwrap()
        );
        assert_eq!(
            spec.timeout,
            Some(crate::parse_duration(DEFAULT_TIMEOUT).unwrap())
        );
    }

    #[test]
    fn a_zero_memory_limit_is_refused_not_unlimited() {
        for memory in ["0", "0m", "0g"] {
            let e = Limits::parse(memory, "1", 10, "64m").unwrap_err();
            assert!(
                matches!(
                    e,
                    SpecError::ZeroLimit {
                        flag: "--memory",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains("--memory 2g"), "{e}");
        }
        let e = Limits::parse("1g", "1", 10, "0").unwrap_err();
        assert!(
            matches!(
                e,
                SpecError::ZeroLimit {
                    flag: "--tmp-size",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn users() {
        assert_eq!(UserSpec::parse("auto"), Ok(UserSpec::Auto));
        assert_eq!(UserSpec::parse("root"), Ok(UserSpec::Root));
        assert_eq!(UserSpec::parse("0:0"), Ok(UserSpec::Root));
        assert_eq!(UserSpec::parse("0:5"), Ok(UserSpec::Root));
        assert_eq!(
            UserSpec::parse("1000:1000"),
            Ok(UserSpec::Explicit("1000:1000".into()))
        );
        assert!(UserSpec::parse("a b").is_err());
        assert!(UserSpec::parse("1000:").is_err());
    }

    #[test]
    fn workspace_and_volumes() {
        let w = MountSpec::parse_workspace(".:ro").unwrap();
        assert_eq!(
            (w.host.as_str(), w.target.as_str(), w.read_only),
            (".", WORKSPACE_DIR, true)
        );
        assert!(!MountSpec::parse_workspace("./repo").unwrap().read_only);
        assert!(MountSpec::parse_workspace("./repo:xx").is_err());
        let v = MountSpec::parse_volume("/data:/data:ro").unwrap();
        assert!(v.read_only);
        for bad in [
            "/data",
            "/a:b",
            "/a:/",
            "named:/data",
            "/a:/b:rx",
            "/a:/b:ro:x",
            ":/b",
        ] {
            let e = MountSpec::parse_volume(bad).expect_err(bad);
            assert!(e.to_string().contains("./data:/data:ro"), "{e}");
        }
    }

    #[test]
    fn env_and_caps_and_network() {
        assert_eq!(
            parse_env("A=1=2").unwrap(),
            EnvVar {
                name: "A".into(),
                value: Some("1=2".into())
            }
        );
        assert_eq!(parse_env("A").unwrap().value, None);
        assert!(parse_env("=x").is_err());
        assert_eq!(Security::parse_capability("cap_chown").unwrap(), "CHOWN");
        assert!(Security::parse_capability("bad cap").is_err());
        assert_eq!(NetworkMode::parse("isolated"), Ok(NetworkMode::Isolated));
        assert!(NetworkMode::parse("host").is_err());
        assert!(Limits::parse("1g", "1", 0, "1m").is_err());
        let e = Limits::parse("1x", "1", 5, "1m").unwrap_err();
        assert!(
            e.to_string().starts_with("--memory: invalid size \"1x\""),
            "{e}"
        );
    }
}

/// Checks an image reference against Docker's grammar (`[DOMAIN[:PORT]/]PATH[:TAG][@DIGEST]`,
/// path components lower-case), so a typo is named here instead of answered by the engine
/// with a bare status.
pub fn check_image(value: &str) -> Result<(), SpecError> {
    let err = |reason| SpecError::Image {
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(err("it is empty"));
    }
    if value.len() > 255 {
        return Err(err("it is longer than 255 characters"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("it holds a space or a control character"));
    }
    let (rest, digest) = match value.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (value, None),
    };
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algorithm, hex)| {
            !algorithm.is_empty()
                && algorithm.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || b == b'+' || b == b'.' || b == b'_' || b == b'-'
                })
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !ok {
            return Err(err("the digest after '@' is not ALGORITHM:HEX (sha256:…)"));
        }
    }
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(tag) = tag {
        let mut bytes = tag.bytes();
        let ok = tag.len() <= 128
            && bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            return Err(err(
                "the tag after ':' must be 1-128 letters, digits, '_', '.' or '-'",
            ));
        }
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 {
        let first = components[0];
        let domain = first.contains('.') || first.contains(':') || first == "localhost";
        if domain {
            let (host, port) = match first.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (first, None),
            };
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            let port_ok =
                port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
            if !host_ok || !port_ok {
                return Err(err("the registry before the first '/' is not HOST[:PORT]"));
            }
            components.remove(0);
        }
    }
    for component in components {
        let ok = !component.is_empty()
            && component.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && component.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if !ok {
            return Err(err(
                "each part of the name must be lower-case letters and digits, joined by '.', '_' or '-'",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod image_tests {
    use super::check_image;

    #[test]
    fn references_follow_dockers_grammar() {
        for good in [
            "berth/base",
            "debian:bookworm-slim",
            "localhost:5000/team/app:v1.2",
            "registry.example.com/a/b",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "a_b__c:latest",
        ] {
            assert!(check_image(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "Berth/Base",
            "a b",
            "a:",
            "a:-x",
            "/a",
            "a/",
            "a//b",
            "a@sha256:xyz",
            "a@",
            "-a",
            "a:b:c",
            "a\n",
        ] {
            let e = check_image(bad).unwrap_err().to_string();
            assert!(e.contains("e.g. --image berth/base"), "{bad}: {e}");
        }
    }
}
