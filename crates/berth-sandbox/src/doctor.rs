//! `berth doctor`: can this machine run berth, and if not, what to fix.
//!
//! Each check reports ok, warn or fail with a remedy. Failing checks mean `berth run` cannot
//! work (or could not enforce its limits), and the CLI exits non-zero.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;

use berth_engine::docker::{DockerEngine, Endpoint};
use berth_engine::Engine;
use berth_spec::DEFAULT_IMAGE;
use serde::Serialize;

use crate::images::{busybox_path, is_static_elf};

/// The oldest Docker Engine API berth is tested against.
pub const MIN_API_VERSION: (u32, u32) = (1, 41);

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth fixing.
    Warn,
    /// berth cannot work (safely) until this is fixed.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            detail: detail.into(),
            remedy: None,
        }
    }

    fn bad(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        remedy: impl Into<String>,
    ) -> Self {
        Self {
            name,
            status,
            detail: detail.into(),
            remedy: Some(remedy.into()),
        }
    }
}

/// Checks the socket file itself: present, a socket, readable and writable by this user.
pub fn socket_check(endpoint: &Endpoint) -> Check {
    const NAME: &str = "engine socket";
    let Some(path) = endpoint.socket_path() else {
        return Check::ok(NAME, format!("{endpoint} (not a unix socket; skipped)"));
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            return Check::bad(
                NAME,
                Status::Fail,
                format!("no socket at {}", path.display()),
                "install and start Docker (`sudo apt-get install docker.io && sudo systemctl start docker`), or point DOCKER_HOST at your engine",
            )
        }
    };
    if !meta.file_type().is_socket() {
        return Check::bad(
            NAME,
            Status::Fail,
            format!("{} is not a socket", path.display()),
            "point DOCKER_HOST at the engine's socket, e.g. unix:///var/run/docker.sock",
        );
    }
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return Check::bad(
            NAME,
            Status::Fail,
            "socket path contains a NUL byte",
            "fix DOCKER_HOST",
        );
    };
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; access(2)
    // only reads it.
    let accessible = unsafe { libc::access(c_path.as_ptr(), libc::R_OK | libc::W_OK) } == 0;
    if !accessible {
        return Check::bad(
            NAME,
            Status::Fail,
            format!("{} is not readable and writable by this user", path.display()),
            "add your user to the docker group (`sudo usermod -aG docker $USER`, then log in again) or run as root",
        );
    }
    Check::ok(NAME, format!("{} is accessible", path.display()))
}

fn parse_api(version: &str) -> Option<(u32, u32)> {
    let (major, minor) = version.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Runs every check against the engine at `endpoint`.
pub async fn run(endpoint: &Endpoint) -> Vec<Check> {
    let mut checks = vec![socket_check(endpoint)];
    let engine = match tokio::time::timeout(
        std::time::Duration::from_secs(10),
        DockerEngine::connect_to(endpoint.clone()),
    )
    .await
    {
        Ok(Ok(engine)) => engine,
        Ok(Err(e)) => {
            checks.push(Check::bad(
                "engine reachable",
                Status::Fail,
                e.to_string(),
                "start the Docker daemon (`sudo systemctl start docker`) and check DOCKER_HOST",
            ));
            return checks;
        }
        Err(_) => {
            checks.push(Check::bad(
                "engine reachable",
                Status::Fail,
                format!("{endpoint} did not answer within 10s"),
                "restart the Docker daemon (`sudo systemctl restart docker`)",
            ));
            return checks;
        }
    };
    checks.extend(engine_checks(&engine).await);
    checks
}

/// The checks that need a connected engine.
pub async fn engine_checks<E: Engine>(engine: &E) -> Vec<Check> {
    let mut checks = Vec::new();
    let info = match engine.info().await {
        Ok(info) => info,
        Err(e) => {
            checks.push(Check::bad(
                "engine reachable",
                Status::Fail,
                e.to_string(),
                "check the Docker daemon's logs (`journalctl -u docker`)",
            ));
            return checks;
        }
    };
    checks.push(Check::ok(
        "engine reachable",
        format!(
            "Docker {} on {} (kernel {}), {} CPUs",
            info.server_version, info.operating_system, info.kernel_version, info.ncpu
        ),
    ));
    match parse_api(&info.api_version) {
        Some(v) if v >= MIN_API_VERSION => checks.push(Check::ok(
            "API version",
            format!(
                "engine speaks {}, berth uses {}",
                info.api_version, info.client_api_version
            ),
        )),
        _ => checks.push(Check::bad(
            "API version",
            Status::Warn,
            format!(
                "engine API {} is older than {}.{}",
                info.api_version, MIN_API_VERSION.0, MIN_API_VERSION.1
            ),
            "upgrade Docker Engine to 20.10 or newer",
        )),
    }
    let limits = [
        ("memory", info.memory_limit),
        ("swap", info.swap_limit),
        ("cpu quota", info.cpu_cfs_quota),
        ("pids", info.pids_limit),
    ];
    let missing: Vec<&str> = limits
        .iter()
        .filter(|(_, on)| !on)
        .map(|(n, _)| *n)
        .collect();
    if missing.is_empty() {
        checks.push(Check::ok(
            "cgroup limits",
            format!(
                "memory, swap, cpu quota and pids limits are enforceable (cgroup v{})",
                info.cgroup_version
            ),
        ));
    } else {
        checks.push(Check::bad(
            "cgroup limits",
            Status::Fail,
            format!("the engine cannot enforce: {}", missing.join(", ")),
            "enable the missing cgroup controllers (for swap: boot with `swapaccount=1`; prefer cgroup v2 with `systemd.unified_cgroup_hierarchy=1`)",
        ));
    }
    // gVisor is optional: a stronger boundary for `--runtime runsc`, not needed by default.
    if info.runtimes.iter().any(|r| r == "runsc") {
        checks.push(Check::ok(
            "gVisor (runsc)",
            format!(
                "registered (runtimes: {}); use `--runtime runsc` for a user-space kernel",
                info.runtimes.join(", ")
            ),
        ));
    } else {
        checks.push(Check::bad(
            "gVisor (runsc)",
            Status::Warn,
            format!(
                "not registered with the engine (runtimes: {}); optional",
                info.runtimes.join(", ")
            ),
            "for `--runtime runsc`: apt-get install runsc, then add \"runtimes\": {\"runsc\": {\"path\": \"/usr/bin/runsc\", \"runtimeArgs\": [\"--network=none\"]}} to the engine's daemon.json and restart it",
        ));
    }
    match engine.image_inspect(DEFAULT_IMAGE).await {
        Ok(Some(image)) => checks.push(Check::ok(
            "default image",
            format!("{DEFAULT_IMAGE} ({})", short(&image.id)),
        )),
        Ok(None) => checks.push(Check::bad(
            "default image",
            Status::Warn,
            format!("{DEFAULT_IMAGE} is not built yet"),
            "run `berth image build` (berth run also builds it on first use)",
        )),
        Err(e) => checks.push(Check::bad(
            "default image",
            Status::Fail,
            e.to_string(),
            "check the Docker daemon",
        )),
    }
    let busybox = busybox_path();
    match is_static_elf(&busybox) {
        Ok(true) => checks.push(Check::ok(
            "image builder",
            format!("static busybox at {}", busybox.display()),
        )),
        _ => checks.push(Check::bad(
            "image builder",
            Status::Warn,
            format!("no static busybox at {}", busybox.display()),
            "sudo apt-get install busybox-static (needed to build berth/base offline)",
        )),
    }
    for (name, found, remedy) in [
        (
            "sandbox agent",
            crate::sandbox::agent_binary(),
            "run ./setup.sh or scripts/build-agent (needed by berth create and berth agent)",
        ),
        (
            "egress gateway",
            crate::sandbox::gateway_binary(),
            "run ./setup.sh or scripts/build-agent berth-gateway (needed by --allow-host and --secret)",
        ),
    ] {
        checks.push(match found {
            Ok(path) => Check::ok(name, format!("static binary at {}", path.display())),
            Err(_) => Check::bad(name, Status::Warn, "not found".to_string(), remedy),
        });
    }
    checks
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_fails_with_a_remedy() {
        let c = socket_check(&Endpoint::new("unix:///nonexistent/docker.sock"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.remedy.unwrap().contains("systemctl start docker"));
        let c = socket_check(&Endpoint::new("unix:///etc/passwd"));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("not a socket"));
    }

    #[test]
    fn api_versions() {
        assert_eq!(parse_api("1.41"), Some((1, 41)));
        assert!(parse_api("1.9").unwrap() < MIN_API_VERSION);
    }
}
