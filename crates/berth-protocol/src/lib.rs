//! The wire protocol between berth and `berth-agent`, its in-sandbox PID 1.
//!
//! Both ends depend on this crate and nothing else of each other. The schema is
//! `proto/berth_agent.proto` (read it: it documents every message); its version is
//! [`PROTOCOL`]. Generated code is in [`v1`].

pub mod chunks;

/// The protocol version both ends must speak.
pub const PROTOCOL: &str = "berth.agent.v1";

/// Metadata key that carries the sandbox token (`Bearer <token>`).
pub const AUTH_HEADER: &str = "authorization";

/// Path inside the sandbox where the host's per-sandbox directory is mounted.
pub const SANDBOX_DIR: &str = "/.berth";
/// Directory the agent creates (root-owned) under [`SANDBOX_DIR`] for its socket.
pub const SOCKET_SUBDIR: &str = "agent";
/// The agent's socket file name inside [`SOCKET_SUBDIR`].
pub const SOCKET_NAME: &str = "agent.sock";
/// Environment variable that hands the token to the agent (never passed on to processes).
pub const TOKEN_ENV: &str = "BERTH_AGENT_TOKEN";
/// Environment variable with the sandbox id.
pub const SANDBOX_ID_ENV: &str = "BERTH_SANDBOX_ID";
/// Environment variable with the default `uid:gid` for processes.
pub const USER_ENV: &str = "BERTH_SANDBOX_USER";
/// Environment variable with the default working directory for processes.
pub const WORKDIR_ENV: &str = "BERTH_SANDBOX_WORKDIR";
/// Environment variable with `:`-separated directories (fresh volume mount points such as an
/// agent CLI's home) that the agent gives to the sandbox user at start when root owns them.
pub const OWNED_DIRS_ENV: &str = "BERTH_OWNED_DIRS";
/// Environment variable with a file the agent waits for (at most [`WAIT_FOR_LIMIT_MS`])
/// before it starts the main process: the egress gateway's CA, written once the gateway —
/// started at the same time as the sandbox — is configured, so the main process never
/// finds the gateway missing.
pub const WAIT_FOR_ENV: &str = "BERTH_WAIT_FOR";
/// How long the agent waits for [`WAIT_FOR_ENV`].
pub const WAIT_FOR_LIMIT_MS: u64 = 15_000;
/// Where the agent binary is mounted inside the sandbox.
pub const AGENT_PATH: &str = "/.berth-agent";

/// Generated messages, client and server for `berth.agent.v1`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod v1 {
    tonic::include_proto!("berth.agent.v1");
}

/// An I/O error's reason as a person reads it ("No such file or directory"), without the
/// "(os error 2)" that means nothing to them. Both ends use it: the agent in its answers,
/// berth in its messages.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.split_once(" (os error ") {
        Some((reason, _)) => reason.to_string(),
        None => text,
    }
}
