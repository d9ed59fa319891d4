//! From a [`SandboxSpec`] to a hardened [`ContainerPlan`].
//!
//! This is where berth's security policy is applied to every container it creates: all
//! capabilities dropped, `no-new-privileges`, no swap, CPU and pids limits, a non-root user,
//! `berth.*` labels, and never the engine's socket in a mount. Host facts (paths, owners, the
//! socket's location) come in through [`HostFacts`] so the rules are unit-testable.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_engine::{BindMount, ContainerPlan, NetworkPlan};
use berth_spec::{
    labels, MountSpec, NetworkMode, SandboxSpec, UserSpec, SANDBOX_GID, SANDBOX_UID, TMP_DIR,
    WORKSPACE_DIR,
};

use crate::error::SandboxError;

/// What the plan needs to know about the host. Not the caller's cwd or home: host paths
/// reach a plan absolute, resolved by the front end (the CLI against its user's cwd and
/// `~`; the server under its workspace root).
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The engine's unix socket, if the engine is reached through one.
    pub engine_socket: Option<PathBuf>,
    /// `host:pid:start` of the owning process.
    pub owner: String,
    /// RFC 3339 timestamp for the `created` label.
    pub created: String,
}

impl HostFacts {
    /// Facts about the current process and host.
    pub fn detect(engine_socket: Option<PathBuf>) -> Result<Self, SandboxError> {
        Ok(Self {
            engine_socket,
            owner: crate::owner::current_owner(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        })
    }
}

/// A mount resolved against the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedMount {
    /// Canonical host path.
    pub source: PathBuf,
    /// Owner uid of the host path.
    pub uid: u32,
    /// Owner gid of the host path.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

/// The containers and networks one sandbox needs, plus notes for the user.
#[derive(Debug, Clone)]
pub struct SandboxPlan {
    /// berth's id of the sandbox.
    pub id: String,
    /// The container.
    pub container: ContainerPlan,
    /// A network to create first (`--network isolated`, or the egress network).
    pub network: Option<NetworkPlan>,
    /// The egress gateway to start before the sandbox (`--allow-host`, `--secret`).
    pub egress: Option<crate::egress::EgressPlan>,
    /// Warnings worth showing (e.g. the workspace will not be writable).
    pub warnings: Vec<String>,
}

impl SandboxPlan {
    /// Marks the sandbox's objects as kept on purpose, so `berth gc` leaves them alone
    /// (unless `--all`) after the owning process exits.
    pub fn mark_kept(&mut self) {
        self.label_all(labels::KEEP, "true");
    }

    /// Puts a label on every object of the sandbox — its container, its network, its
    /// gateway — so that they live and die together (owner, keep).
    pub fn label_all(&mut self, key: &str, value: &str) {
        let mut all = vec![&mut self.container.labels];
        all.extend(self.network.as_mut().map(|n| &mut n.labels));
        all.extend(self.egress.as_mut().map(|e| &mut e.gateway.labels));
        for labels in all {
            labels.insert(key.to_string(), value.to_string());
        }
    }
}

/// The labels every berth object of this sandbox carries. Objects of a one-shot run (`owned`)
/// also name the berth process that owns them, so `berth gc` can tell when it is gone;
/// long-lived sandboxes outlive their creator and have no owner.
pub fn object_labels(
    id: &str,
    kind: &str,
    host: &HostFacts,
    owned: bool,
) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::ID.to_string(), id.to_string()),
        (labels::KIND.to_string(), kind.to_string()),
        (labels::CREATED.to_string(), host.created.clone()),
    ]);
    if owned {
        l.insert(labels::OWNER.to_string(), host.owner.clone());
    }
    l
}

/// The MTU of berth's internal networks. Nothing on them reaches beyond their bridge, so no
/// path MTU is at stake, and a large one makes a bulk transfer through the egress gateway
/// far fewer packets on its sandbox-side hop (`berth-bench egress`; figures in BENCHMARKS.md).
/// The most a veth interface takes is 65535; this is the loopback's old value.
pub const INTERNAL_MTU: u32 = 65520;

/// A berth-made network with no route out and no address on the host's side (the
/// sandbox can reach neither the internet nor the host through it).
pub fn internal_network(name: String, id: &str, host: &HostFacts, owned: bool) -> NetworkPlan {
    NetworkPlan {
        name,
        internal: true,
        host_reachable: false,
        mtu: Some(INTERNAL_MTU),
        labels: object_labels(id, labels::KIND_NETWORK, host, owned),
    }
}

/// Resolves an absolute host path (symbolic links followed) and checks it exists and is not
/// the engine socket. A relative path or `~` is the front end's to resolve; here it is refused.
pub fn resolve_mount(
    what: &'static str,
    mount: &MountSpec,
    host: &HostFacts,
) -> Result<ResolvedMount, SandboxError> {
    let given = &mount.host;
    if !Path::new(given).is_absolute() {
        return Err(SandboxError::Input(format!(
            "{what} {given:?} is not an absolute path: give the whole path, e.g. /srv/repo"
        )));
    }
    let source = std::fs::canonicalize(given).map_err(|_| SandboxError::MissingPath {
        what,
        example: if what.starts_with("volume") {
            "--volume ./data:/data"
        } else {
            "--workspace ."
        },
        given: given.clone(),
        resolved: PathBuf::from(given),
    })?;
    if let Some(socket) = &host.engine_socket {
        refuse_engine_socket(given, &source, socket)?;
    }
    let meta = std::fs::metadata(&source)
        .map_err(|e| SandboxError::io(format!("reading {}", source.display()), e))?;
    Ok(ResolvedMount {
        source,
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode(),
    })
}

/// Fails when `source` is, or is a directory directly holding, the engine socket or any
/// `docker.sock`.
fn refuse_engine_socket(given: &str, source: &Path, socket: &Path) -> Result<(), SandboxError> {
    let canonical_socket = std::fs::canonicalize(socket).unwrap_or_else(|_| socket.to_path_buf());
    let refuse = |socket: PathBuf| SandboxError::DockerSocketMount {
        given: given.to_string(),
        socket,
    };
    if canonical_socket.starts_with(source) {
        return Err(refuse(canonical_socket));
    }
    if source.file_name().is_some_and(|n| n == "docker.sock") {
        return Err(refuse(source.to_path_buf()));
    }
    let inside = source.join("docker.sock");
    if inside.exists() {
        return Err(refuse(inside));
    }
    Ok(())
}

/// Builds the container plan for a one-shot or long-lived sandbox.
pub fn plan_sandbox(
    spec: &SandboxSpec,
    id: &str,
    kind: &str,
    host: &HostFacts,
) -> Result<SandboxPlan, SandboxError> {
    if spec.command.is_empty() && kind == labels::KIND_RUN {
        return Err(berth_spec::SpecError::NoCommand.into());
    }
    let mut warnings = Vec::new();
    let owned = kind == labels::KIND_RUN;
    let labels = object_labels(id, kind, host, owned);

    let mut binds = Vec::new();
    let mut workspace_owner = None;
    if let Some(ws) = &spec.workspace {
        let resolved = resolve_mount("workspace directory", ws, host)?;
        if !resolved.source.is_dir() {
            return Err(SandboxError::Input(format!(
                "workspace {:?} is not a directory (it resolves to {}): give a directory, e.g. --workspace .",
                ws.host,
                resolved.source.display()
            )));
        }
        workspace_owner = Some(resolved.clone());
        binds.push(BindMount {
            source: resolved.source.display().to_string(),
            target: WORKSPACE_DIR.to_string(),
            read_only: ws.read_only,
        });
    }
    for volume in &spec.volumes {
        let resolved = resolve_mount("volume source", volume, host)?;
        binds.push(BindMount {
            source: resolved.source.display().to_string(),
            target: volume.target.clone(),
            read_only: volume.read_only,
        });
    }

    let user = match &spec.user {
        UserSpec::Root => "0:0".to_string(),
        UserSpec::Explicit(u) => u.clone(),
        UserSpec::Auto => match &workspace_owner {
            Some(ws) if ws.uid != 0 => format!("{}:{}", ws.uid, ws.gid),
            _ => format!("{SANDBOX_UID}:{SANDBOX_GID}"),
        },
    };
    if let (Some(ws), Some(mount)) = (&workspace_owner, &spec.workspace) {
        let world_writable = ws.mode & 0o002 != 0;
        if !mount.read_only && spec.user == UserSpec::Auto && ws.uid == 0 && !world_writable {
            warnings.push(format!(
                "the workspace {} is owned by root, so the sandbox user {user} cannot write to it; \
                 chown it to a normal user (files the sandbox writes then belong to that user), \
                 or pass --user root to write as root",
                ws.source.display()
            ));
        }
    }

    let mut env = vec![format!("HOME={TMP_DIR}")];
    for var in &spec.env {
        // `--env NAME` is resolved by the front end (the CLI, from its user's environment);
        // a name it found no value for is not passed.
        let Some(value) = var.value.clone() else {
            continue;
        };
        env.retain(|e| e.split('=').next() != Some(var.name.as_str()));
        env.push(format!("{}={value}", var.name));
    }

    let (network, network_plan) = match spec.network {
        NetworkMode::None => ("none".to_string(), None),
        NetworkMode::Bridge => ("bridge".to_string(), None),
        NetworkMode::Isolated => {
            let name = format!("berth-net-{id}");
            (name.clone(), Some(internal_network(name, id, host, owned)))
        }
    };

    let workdir = spec
        .workdir
        .clone()
        .or_else(|| spec.workspace.as_ref().map(|_| WORKSPACE_DIR.to_string()));
    let memory = i64::try_from(spec.limits.memory_bytes).unwrap_or(i64::MAX);
    let container = ContainerPlan {
        name: format!("berth-{kind}-{id}"),
        image: spec.image.clone(),
        entrypoint: None,
        cmd: spec.command.clone(),
        user,
        workdir,
        env,
        labels,
        memory_bytes: memory,
        memory_swap_bytes: memory,
        nano_cpus: i64::try_from(spec.limits.nano_cpus).unwrap_or(i64::MAX),
        pids_limit: spec.limits.pids,
        cap_drop: vec!["ALL".to_string()],
        cap_add: spec.security.cap_add.clone(),
        security_opt: if spec.security.no_new_privileges {
            vec!["no-new-privileges".to_string()]
        } else {
            Vec::new()
        },
        read_only_rootfs: spec.security.read_only_rootfs,
        tmpfs: BTreeMap::from([(
            TMP_DIR.to_string(),
            format!(
                "rw,exec,nosuid,nodev,mode=1777,size={}",
                spec.limits.tmp_bytes
            ),
        )]),
        binds,
        network,
        open_stdin: false,
        tty: false,
        stop_timeout: Some(2),
        oom_score_adj: None,
        dns: Vec::new(),
        dns_options: Vec::new(),
        runtime: spec.security.runtime.clone(),
    };
    let mut container = container;
    let (network_plan, egress) = if spec.egress.enabled() {
        let (net, egress) =
            crate::egress::plan(&spec.egress, spec.network, id, host, owned, &mut container)?;
        (Some(net), Some(egress))
    } else {
        (network_plan, None)
    };
    Ok(SandboxPlan {
        id: id.to_string(),
        container,
        network: network_plan,
        egress,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_spec::{parse_env, MountSpec};
    use std::os::unix::fs::PermissionsExt;

    fn host(_dir: &Path, socket: Option<PathBuf>) -> HostFacts {
        HostFacts {
            engine_socket: socket,
            owner: "h:1:2".into(),
            created: "2026-01-01T00:00:00.000Z".into(),
        }
    }

    #[test]
    fn every_default_is_hardened() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SandboxSpec::new(vec!["true".into()]);
        let plan = plan_sandbox(&spec, "abc", "run", &host(dir.path(), None)).unwrap();
        let c = &plan.container;
        assert_eq!(c.user, "1000:1000");
        assert_eq!(c.cap_drop, ["ALL"]);
        assert!(c.cap_add.is_empty());
        assert_eq!(c.security_opt, ["no-new-privileges"]);
        assert_eq!(c.memory_bytes, c.memory_swap_bytes);
        assert_eq!(c.network, "none");
        assert!(plan.network.is_none());
        assert_eq!(c.labels[labels::MANAGED], "true");
        assert_eq!(c.labels[labels::ID], "abc");
        assert_eq!(c.labels[labels::KIND], "run");
        assert_eq!(c.labels[labels::OWNER], "h:1:2");
        assert!(c.tmpfs["/tmp"].contains("size=268435456"));
        assert_eq!(c.env, ["HOME=/tmp"]);
        assert!(c.binds.is_empty());
    }

    #[test]
    fn only_one_shot_runs_have_an_owner_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SandboxSpec::new(vec![]);
        spec.network = NetworkMode::Isolated;
        let plan =
            plan_sandbox(&spec, "s1", labels::KIND_SANDBOX, &host(dir.path(), None)).unwrap();
        assert!(!plan.container.labels.contains_key(labels::OWNER));
        assert!(!plan.network.unwrap().labels.contains_key(labels::OWNER));
        spec.command = vec!["true".into()];
        let plan = plan_sandbox(&spec, "r1", labels::KIND_RUN, &host(dir.path(), None)).unwrap();
        assert_eq!(plan.network.unwrap().labels[labels::OWNER], "h:1:2");
    }

    #[test]
    fn workspace_owner_becomes_the_user_and_root_owner_warns() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        std::fs::create_dir(&ws).unwrap();
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.workspace = Some(MountSpec::parse_workspace(ws.to_str().unwrap()).unwrap());
        let meta = std::fs::metadata(&ws).unwrap();
        let plan = plan_sandbox(&spec, "abc", "run", &host(dir.path(), None)).unwrap();
        assert_eq!(plan.container.workdir.as_deref(), Some("/workspace"));
        assert_eq!(plan.container.binds[0].target, "/workspace");
        if meta.uid() == 0 {
            assert_eq!(plan.container.user, "1000:1000");
            assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
            std::fs::set_permissions(&ws, std::fs::Permissions::from_mode(0o777)).unwrap();
            let plan = plan_sandbox(&spec, "abc", "run", &host(dir.path(), None)).unwrap();
            assert!(plan.warnings.is_empty());
        } else {
            assert_eq!(
                plan.container.user,
                format!("{}:{}", meta.uid(), meta.gid())
            );
            assert!(plan.warnings.is_empty());
        }
        spec.user = UserSpec::Root;
        let plan = plan_sandbox(&spec, "abc", "run", &host(dir.path(), None)).unwrap();
        assert_eq!(plan.container.user, "0:0");
    }

    #[test]
    fn missing_paths_and_the_docker_socket_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        let socket = run_dir.join("docker.sock");
        std::fs::write(&socket, b"").unwrap();
        let h = host(dir.path(), Some(socket.clone()));
        let mut spec = SandboxSpec::new(vec!["true".into()]);

        let d = dir.path().display();
        let nope = format!("{d}/nope");
        spec.workspace = Some(MountSpec::parse_workspace(&nope).unwrap());
        let e = plan_sandbox(&spec, "a", "run", &h).unwrap_err();
        assert!(matches!(e, SandboxError::MissingPath { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!("{nope:?} does not exist")),
            "{e}"
        );
        // Relative paths and `~` are the front end's to resolve.
        spec.workspace = Some(MountSpec::parse_workspace("./nope").unwrap());
        let e = plan_sandbox(&spec, "a", "run", &h).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");

        spec.workspace = None;
        for bad in [
            format!("{d}/run/docker.sock:/var/run/docker.sock"),
            format!("{d}/run:/hostrun"),
            "/:/host:ro".to_string(),
        ] {
            let mut s = spec.clone();
            s.volumes = vec![MountSpec::parse_volume(&bad).unwrap()];
            let e = plan_sandbox(&s, "a", "run", &h).unwrap_err();
            assert!(
                matches!(e, SandboxError::DockerSocketMount { .. }),
                "{bad}: {e}"
            );
        }
        let mut s = spec.clone();
        s.volumes = vec![MountSpec::parse_volume(&format!("{d}/run:/r:ro")).unwrap()];
        std::fs::remove_file(&socket).unwrap();
        // With the socket elsewhere and no docker.sock inside, the directory is fine.
        let h2 = host(dir.path(), Some(PathBuf::from("/nonexistent/docker.sock")));
        assert!(plan_sandbox(&s, "a", "run", &h2).is_ok());
    }

    #[test]
    fn env_only_what_is_named_and_isolated_network() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = SandboxSpec::new(vec!["true".into()]);
        spec.env = vec![
            parse_env("A=1").unwrap(),
            parse_env("HOME=/h").unwrap(),
            parse_env("BERTH_TEST_SURELY_UNSET_VAR").unwrap(),
        ];
        spec.network = NetworkMode::Isolated;
        let plan = plan_sandbox(&spec, "xyz", "run", &host(dir.path(), None)).unwrap();
        assert_eq!(plan.container.env, ["A=1", "HOME=/h"]);
        let net = plan.network.unwrap();
        assert!(net.internal);
        assert!(!net.host_reachable);
        assert_eq!(net.name, "berth-net-xyz");
        assert_eq!(plan.container.network, "berth-net-xyz");
        assert_eq!(net.labels[labels::KIND], labels::KIND_NETWORK);
    }
}
