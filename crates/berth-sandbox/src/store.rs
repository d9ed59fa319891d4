//! Where sandbox records live: one [`Store`] trait, two homes.
//!
//! The daemonless CLI keeps each record as a 0600 JSON file in its state directory
//! ([`FileStore`], here); the server keeps them in SQLite (`berth-server`'s store). Every
//! operation that makes, finds or forgets a sandbox goes through the trait, so neither front
//! end knows which one it has. Either way a sandbox's host directory (the agent's socket, the
//! egress CA) is `<state>/sandboxes/<id>`: it is mounted into the container, so it must be a
//! real directory on the host whatever keeps the record.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::error::SandboxError;
use crate::sandbox::SandboxRecord;

/// The records of sandboxes one front end made.
pub trait Store: Send + Sync {
    /// The host directory of a sandbox: its run (socket) and egress directories live in it.
    fn sandbox_dir(&self, id: &str) -> PathBuf;
    /// Where the host directories its sandboxes' containers mount go
    /// ([`crate::host_dirs`]); `None`: under [`Store::sandbox_dir`].
    fn runtime_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Writes (or overwrites) a record.
    fn save(&self, record: &SandboxRecord) -> Result<(), SandboxError>;
    /// Every record, oldest first.
    fn records(&self) -> Vec<SandboxRecord>;
    /// Removes a record and the sandbox's host directories (also the one in
    /// [`Store::runtime_dir`]); true if there was a record.
    fn forget(&self, id: &str) -> bool;
    /// The record with exactly this id (a store with an index answers without reading all).
    fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.records().into_iter().find(|r| r.id == id)
    }
}

/// An id is a hex string; anything else cannot name a record or a directory.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Finds a sandbox by id, name, container name, or unique id prefix.
pub fn find(store: &dyn Store, reference: &str) -> Result<SandboxRecord, SandboxError> {
    find_in(store.records(), reference)
}

/// Finds a sandbox among `all` by id, name, container name, or unique id prefix (a server
/// passes only the caller's, so a prefix never tells of someone else's).
pub fn find_in(all: Vec<SandboxRecord>, reference: &str) -> Result<SandboxRecord, SandboxError> {
    if let Some(r) = all.iter().find(|r| {
        r.id == reference || r.name.as_deref() == Some(reference) || r.container_name == reference
    }) {
        return Ok(r.clone());
    }
    let matches: Vec<&SandboxRecord> = all.iter().filter(|r| r.id.starts_with(reference)).collect();
    match matches.as_slice() {
        [one] if !reference.is_empty() => Ok((*one).clone()),
        [] | [_] => Err(SandboxError::NoSandbox {
            reference: reference.to_string(),
        }),
        _ => Err(SandboxError::Ambiguous {
            reference: reference.to_string(),
        }),
    }
}

/// The daemonless CLI's records: `<state>/sandboxes/<id>/sandbox.json`, mode 0600 (a record
/// holds the agent's token).
/// berth's state directory as the environment names it: `$BERTH_STATE_DIR`,
/// `$XDG_STATE_HOME/berth` or `~/.local/state/berth`.
fn state_dir_from_env() -> PathBuf {
    if let Some(dir) = std::env::var_os("BERTH_STATE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("berth");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/state/berth")
}

#[derive(Debug, Clone)]
pub struct FileStore {
    state: PathBuf,
    runtime: Option<PathBuf>,
}

impl FileStore {
    /// Records under the state directory `state`, mounted directories there too.
    pub fn new(state: impl Into<PathBuf>) -> Self {
        Self {
            state: state.into(),
            runtime: None,
        }
    }

    /// The daemonless CLI's places, as its environment names them — for front ends only (the
    /// libraries are handed a store, never look one up): records under `$BERTH_STATE_DIR`,
    /// `$XDG_STATE_HOME/berth` or `~/.local/state/berth`; mounted directories in this host's
    /// runtime directory (`$BERTH_RUNTIME_DIR`, `/run/berth` for root,
    /// `$XDG_RUNTIME_DIR/berth`; see [`crate::host_dirs`]).
    pub fn from_env() -> Self {
        Self {
            runtime: crate::host_dirs::runtime_dir_from_env(),
            ..Self::new(state_dir_from_env())
        }
    }

    /// Mounted directories in `runtime` rather than under the state directory.
    pub fn with_runtime(mut self, runtime: Option<PathBuf>) -> Self {
        self.runtime = runtime;
        self
    }

    /// The state directory it keeps records in.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.sandbox_dir(id).join("sandbox.json")
    }
}

impl Store for FileStore {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state.join("sandboxes").join(id)
    }

    fn runtime_dir(&self) -> Option<PathBuf> {
        self.runtime.clone()
    }

    fn save(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        use std::io::Write;
        let path = self.record_path(&record.id);
        let json = serde_json::to_vec_pretty(record).map_err(|e| {
            SandboxError::io("encoding the sandbox record", std::io::Error::other(e))
        })?;
        let dir = self.sandbox_dir(&record.id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| SandboxError::io(format!("creating {}", dir.display()), e))?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))?;
        file.write_all(&json)
            .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
    }

    fn records(&self) -> Vec<SandboxRecord> {
        let Ok(entries) = std::fs::read_dir(self.state.join("sandboxes")) else {
            return Vec::new();
        };
        let mut out: Vec<SandboxRecord> = entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("sandbox.json")).ok())
            .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
            .collect();
        out.sort_by(|a, b| a.created.cmp(&b.created));
        out
    }

    fn forget(&self, id: &str) -> bool {
        if !valid_id(id) {
            return false;
        }
        crate::host_dirs::remove(self.runtime.as_deref(), id);
        let dir = self.sandbox_dir(id);
        dir.is_dir() && std::fs::remove_dir_all(&dir).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: Option<&str>, created: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.to_string(),
            name: name.map(str::to_string),
            container_id: format!("c{id}"),
            container_name: format!("berth-{id}"),
            image: "berth/base".to_string(),
            token: "t".to_string(),
            run_dir: PathBuf::from("/nonexistent"),
            user: "1000:1000".to_string(),
            workdir: "/".to_string(),
            created: created.to_string(),
            labels: Default::default(),
            egress: None,
            agent_copy: None,
        }
    }

    #[test]
    fn file_store_saves_finds_and_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        for r in [record("abc1", Some("web"), "2"), record("abd2", None, "1")] {
            std::fs::create_dir_all(store.sandbox_dir(&r.id)).unwrap();
            store.save(&r).unwrap();
        }
        assert_eq!(store.records()[0].id, "abd2", "oldest first");
        assert_eq!(find(&store, "web").unwrap().id, "abc1");
        assert_eq!(find(&store, "abc").unwrap().id, "abc1");
        assert!(matches!(
            find(&store, "ab"),
            Err(SandboxError::Ambiguous { .. })
        ));
        assert!(
            find(&store, "").is_err(),
            "an empty reference names nothing"
        );
        assert!(store.forget("abc1"));
        assert!(!store.forget("../x"));
        assert!(matches!(
            find(&store, "web"),
            Err(SandboxError::NoSandbox { .. })
        ));
    }
}
