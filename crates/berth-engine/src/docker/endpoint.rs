//! Where the engine is: `DOCKER_HOST` or the default socket.

use std::path::{Path, PathBuf};

/// The default engine socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// An engine address, as `DOCKER_HOST` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    uri: String,
}

impl Endpoint {
    /// `DOCKER_HOST` if set and non-empty, else `unix:///var/run/docker.sock`.
    pub fn from_env() -> Self {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => Self::new(host.trim()),
            _ => Self::new(&format!("unix://{DEFAULT_SOCKET}")),
        }
    }

    /// An endpoint from a URI (`unix:///…`, `tcp://host:port`).
    pub fn new(uri: &str) -> Self {
        Self {
            uri: uri.to_string(),
        }
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The socket path for `unix://` endpoints.
    pub fn socket_path(&self) -> Option<PathBuf> {
        self.uri
            .strip_prefix("unix://")
            .map(|p| Path::new(p).to_path_buf())
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_only_for_unix() {
        assert_eq!(
            Endpoint::new("unix:///run/docker.sock").socket_path(),
            Some(PathBuf::from("/run/docker.sock"))
        );
        assert_eq!(Endpoint::new("tcp://127.0.0.1:2375").socket_path(), None);
    }
}
