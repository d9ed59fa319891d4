//! Who the agent is serving: the sandbox id, token, default user, working directory and the
//! base environment for processes — read once from the agent's own environment, which berth
//! sets at container creation. The token never reaches a child process.

use std::collections::BTreeMap;

use berth_protocol::{
    OWNED_DIRS_ENV, SANDBOX_ID_ENV, TOKEN_ENV, USER_ENV, WAIT_FOR_ENV, WORKDIR_ENV,
};

/// The sandbox's identity and defaults.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sandbox_id: String,
    pub token: String,
    pub uid: u32,
    pub gid: u32,
    pub workdir: String,
    /// Directories handed to the sandbox user at start (see [`OWNED_DIRS_ENV`]).
    pub owned_dirs: Vec<String>,
    /// Environment every process starts from (the image's ENV and the user's --env).
    pub base_env: BTreeMap<String, String>,
}

impl Identity {
    /// Reads the identity and removes the berth-only variables from the process environment.
    pub fn from_env() -> Result<Self, String> {
        let token = std::env::var(TOKEN_ENV)
            .map_err(|_| format!("{TOKEN_ENV} is not set: the agent must be started by berth"))?;
        let (uid, gid) = parse_user(&std::env::var(USER_ENV).unwrap_or_else(|_| "0:0".into()))?;
        let identity = Self {
            sandbox_id: std::env::var(SANDBOX_ID_ENV).unwrap_or_default(),
            token,
            uid,
            gid,
            workdir: std::env::var(WORKDIR_ENV).unwrap_or_else(|_| "/".into()),
            owned_dirs: std::env::var(OWNED_DIRS_ENV)
                .map(|v| {
                    v.split(':')
                        .filter(|d| !d.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            base_env: std::env::vars()
                .filter(|(k, _)| {
                    ![
                        TOKEN_ENV,
                        SANDBOX_ID_ENV,
                        USER_ENV,
                        WORKDIR_ENV,
                        OWNED_DIRS_ENV,
                        WAIT_FOR_ENV,
                    ]
                    .contains(&k.as_str())
                })
                .collect(),
        };
        Ok(identity)
    }

    /// Gives each owned directory that root still owns (a fresh volume) to the sandbox user,
    /// so a CLI's home is writable whatever the image had at that path.
    pub fn claim_owned_dirs(&self) {
        use std::os::unix::fs::MetadataExt;
        for dir in &self.owned_dirs {
            let Ok(meta) = std::fs::symlink_metadata(dir) else {
                continue;
            };
            if meta.is_dir() && meta.uid() == 0 && self.uid != 0 {
                let _ = std::os::unix::fs::lchown(dir, Some(self.uid), Some(self.gid));
            }
        }
    }
}

/// Parses `uid[:gid]` (numeric only: the agent runs in images without /etc/passwd).
pub fn parse_user(value: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!("invalid user {value:?}: expected UID or UID:GID (each below 2^32), e.g. --user 1000:1000")
    };
    let (u, g) = match value.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (value, None),
    };
    let uid: u32 = u.parse().map_err(|_| bad())?;
    let gid: u32 = match g {
        Some(g) => g.parse().map_err(|_| bad())?,
        None => uid,
    };
    Ok((uid, gid))
}
