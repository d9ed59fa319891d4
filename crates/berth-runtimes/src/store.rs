//! What berth remembers about named agents, in its state directory
//! (`agents/<name>.json`, 0600): which sessions belong to the agent, which came from which,
//! and its interactive session if one is running. Only berth writes these ids, so two agents
//! can never swap sessions.

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use berth_events::Cli;
use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// One session of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionEntry {
    pub id: String,
    pub created: String,
    /// The session it was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<String>,
}

/// A long-running interactive CLI process (`berth agent session start`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interactive {
    pub sandbox_id: String,
    /// Tag of the background process in the sandbox.
    pub tag: String,
    pub session_id: String,
}

/// Everything berth keeps about one named agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    pub cli: Cli,
    #[serde(default)]
    pub sessions: Vec<SessionEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<Interactive>,
}

impl AgentRecord {
    pub fn new(name: &str, cli: Cli) -> Self {
        Self {
            name: name.to_string(),
            cli,
            sessions: Vec::new(),
            interactive: None,
        }
    }

    pub fn has_session(&self, id: &str) -> bool {
        self.sessions.iter().any(|s| s.id == id)
    }

    /// The most recent session.
    pub fn last_session(&self) -> Option<&str> {
        self.sessions.last().map(|s| s.id.as_str())
    }

    /// Records a session (once).
    pub fn add_session(&mut self, id: &str, forked_from: Option<&str>) {
        if !self.has_session(id) {
            self.sessions.push(SessionEntry {
                id: id.to_string(),
                created: chrono::Utc::now().to_rfc3339(),
                forked_from: forked_from.map(String::from),
            });
        }
    }
}

/// Agent names become file and volume names: keep them to a safe alphabet.
pub fn validate_name(name: &str) -> Result<(), RuntimeError> {
    berth_spec::names::check("agent name", name, "--name reviewer").map_err(RuntimeError::Input)
}

/// The agent records in one directory (the front end says which: the CLI's is
/// `<state dir>/agents`).
#[derive(Debug, Clone)]
pub struct AgentStore {
    dir: PathBuf,
}

impl AgentStore {
    /// The records in `<state>/agents`.
    pub fn in_state(state: &std::path::Path) -> Self {
        Self {
            dir: state.join("agents"),
        }
    }

    /// Loads an agent's record, if berth has one.
    pub fn load(&self, name: &str) -> Result<Option<AgentRecord>, RuntimeError> {
        let path = self.dir.join(format!("{name}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RuntimeError::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RuntimeError::State(format!("{}: {e}", path.display()))),
        }
    }

    /// All agent records.
    pub fn list(&self) -> Vec<AgentRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<AgentRecord> = entries
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Saves an agent's record atomically (write, then rename).
    pub fn save(&self, record: &AgentRecord) -> Result<(), RuntimeError> {
        use std::io::Write;
        let dir = &self.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| RuntimeError::State(format!("{}: {e}", dir.display())))?;
        let path = dir.join(format!("{}.json", record.name));
        let tmp = dir.join(format!(".{}.json.{}", record.name, std::process::id()));
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| RuntimeError::State(format!("encoding {}: {e}", path.display())))?;
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&json)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| RuntimeError::State(format!("{}: {e}", path.display())))
    }

    /// Forgets an agent.
    pub fn remove(&self, name: &str) -> Result<(), RuntimeError> {
        let path = self.dir.join(format!("{name}.json"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(RuntimeError::State(format!("{}: {e}", path.display())))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("reviewer-2").is_ok());
        for bad in ["", "-x", "a/b", "a b", "../x"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sessions_are_recorded_once_with_their_parent() {
        let mut r = AgentRecord::new("a", Cli::Claude);
        r.add_session("s1", None);
        r.add_session("s1", None);
        r.add_session("s2", Some("s1"));
        assert_eq!(r.sessions.len(), 2);
        assert_eq!(r.last_session(), Some("s2"));
        assert_eq!(r.sessions[1].forked_from.as_deref(), Some("s1"));
    }
}
