//! The host paths a sandbox's container mounts: its socket directory and the agent binary.
//!
//! A container can read the source path of every bind mount in `/proc/self/mountinfo`. So
//! these do not live under the caller's state directory (`~/.local/state/berth`, which names
//! the host's user and home) or wherever the agent was built, but under a runtime directory
//! that names nothing of the host's: `/run/berth` for root, `$XDG_RUNTIME_DIR/berth` for a
//! user, or `$BERTH_RUNTIME_DIR`. Without one of those they fall back to the state directory
//! (and the mount table shows it).
//!
//! A runtime directory is emptied when the host reboots; [`prepare`] makes what a stopped
//! sandbox needs again before it starts.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::SandboxError;

/// Where sandboxes' mounted host directories live, if this host has such a place.
pub(crate) fn runtime_dir_from_env() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BERTH_RUNTIME_DIR") {
        return Some(PathBuf::from(dir));
    }
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/run/berth"));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .map(|dir| dir.join("berth"))
}

/// The socket directory of sandbox `id`: in `runtime` (a store's `Store::runtime_dir`), else
/// under `fallback` (the sandbox's directory in the store).
pub fn run_dir(id: &str, runtime: Option<&Path>, fallback: &Path) -> PathBuf {
    match runtime {
        Some(base) => sandbox_dir(base, id).join("run"),
        None => fallback.join("run"),
    }
}

/// Sandbox `id`'s directory in the runtime directory `base`: its socket and CA directories.
pub fn sandbox_dir(base: &Path, id: &str) -> PathBuf {
    base.join("sandboxes").join(id)
}

/// The CA directory (mounted at `egress::CA_DIR`) of the sandbox whose socket directory is
/// `run_dir`: beside it, so it is where the socket directory is and goes with it.
pub fn ca_dir(run_dir: &Path) -> PathBuf {
    run_dir.with_file_name("egress")
}

/// Makes a socket directory (and what is above it) if missing, readable by the sandbox.
pub fn make_run_dir(run_dir: &Path) -> Result<(), SandboxError> {
    std::fs::create_dir_all(run_dir)
        .map_err(|e| SandboxError::io(format!("creating {}", run_dir.display()), e))?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| SandboxError::io(format!("setting permissions on {}", run_dir.display()), e))
}

/// The agent binary as the sandbox mounts it: a copy in `runtime` named by the build's size
/// and time (made once per build, shared by every sandbox), else `agent` itself.
pub fn agent_copy(agent: &Path, runtime: Option<&Path>) -> Result<PathBuf, SandboxError> {
    let Some(base) = runtime else {
        return Ok(agent.to_path_buf());
    };
    let meta = std::fs::metadata(agent)
        .map_err(|e| SandboxError::io(format!("reading {}", agent.display()), e))?;
    let stamp = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let copy = base
        .join("agent")
        .join(format!("berth-agent-{}-{stamp}", meta.len()));
    put_copy(agent, &copy)?;
    Ok(copy)
}

/// Copies `agent` to `copy` unless it is there: written under a temporary name, then renamed,
/// so a sandbox never mounts a half-written binary.
fn put_copy(agent: &Path, copy: &Path) -> Result<(), SandboxError> {
    if copy.is_file() {
        return Ok(());
    }
    // The engine makes a missing bind source into an empty directory: one that took the
    // copy's place (it was deleted while a sandbox started) goes.
    let _ = std::fs::remove_dir(copy);
    let dir = copy.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
    let temp = copy.with_extension(format!("part-{}", std::process::id()));
    let copied = std::fs::copy(agent, &temp)
        .and_then(|_| std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|_| std::fs::rename(&temp, copy));
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        SandboxError::io(format!("copying the agent to {}", copy.display()), e)
    })
}

/// Makes what a stopped sandbox mounts again if a reboot emptied the runtime directory: its
/// socket directory and its copy of the agent (from `agent`, the binary this berth uses).
pub fn prepare(run_dir: &Path, copy: Option<&Path>, agent: &Path) -> Result<(), SandboxError> {
    make_run_dir(run_dir)?;
    if let Some(copy) = copy {
        put_copy(agent, copy)?;
    }
    Ok(())
}

/// Removes sandbox `id`'s directory in `runtime`, if it has one. [`Store::forget`] calls it,
/// so whatever forgets a sandbox removes what its container mounted too.
///
/// [`Store::forget`]: crate::store::Store::forget
pub fn remove(runtime: Option<&Path>, id: &str) {
    if let Some(base) = runtime.filter(|_| crate::store::valid_id(id)) {
        let _ = std::fs::remove_dir_all(sandbox_dir(base, id));
    }
}

/// How old a sandbox's directory with no container must be before [`sweep`] takes it: a
/// create makes the directory a moment before the container.
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// Removes the directories in `runtime` of sandboxes with no container (`staying` names
/// those that have one): what a create killed before its container existed, or a one-shot
/// run's CA directory whose run crashed, left. `berth gc` calls it; it reports nothing (they
/// hold no data, only an empty socket directory or a CA).
pub fn sweep(runtime: &Path, staying: &std::collections::HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(runtime.join("sandboxes")) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > ORPHAN_AGE);
        if old && !staying.contains(&name) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_made_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let agent = dir.path().join("berth-agent");
        std::fs::write(&agent, b"binary").unwrap();
        let copy = dir.path().join("runtime/agent/berth-agent-6-1");
        put_copy(&agent, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"binary");
        assert_eq!(
            std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
            0o755
        );
        std::fs::write(&agent, b"changed").unwrap();
        put_copy(&agent, &copy).unwrap();
        assert_eq!(std::fs::read(&copy).unwrap(), b"binary", "made once");
        let names: Vec<_> = std::fs::read_dir(copy.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }
}
