//! Agent runtimes: Claude Code (and Codex, Gemini CLI) inside berth sandboxes.
//!
//! The data path of `berth agent run`: settings (flags over `berth.toml`, [`config`]) become a
//! hardened sandbox ([`settings`]) — ephemeral, or kept per agent name — with a per-agent
//! home volume; the CLI starts through berth's exec channel with the prompt as one argv
//! element ([`profile`]); its own event stream on stdout is parsed line by line into
//! normalized events (`berth-events`); the session it used is recorded under the agent's
//! name ([`store`]). [`session`] keeps one CLI process alive and feeds it turns.

pub mod config;
pub mod launch;
pub mod profile;
pub mod session;
pub mod settings;
pub mod store;

use berth_events::Cli;

/// Why an agent run could not be carried out (an agent that ran and failed is not an error:
/// it is a report that says so).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The user's input is invalid; the message says what a good one looks like.
    #[error("{0}")]
    Input(String),
    #[error("{cli} does not support {what}")]
    Unsupported { cli: Cli, what: String },
    #[error(transparent)]
    Spec(#[from] berth_spec::SpecError),
    #[error(transparent)]
    Sandbox(#[from] berth_sandbox::SandboxError),
    #[error(transparent)]
    Engine(#[from] berth_engine::EngineError),
    #[error("the sandbox's agent stopped answering: {0}")]
    Channel(String),
    /// The agent answered with an error of its own; the message says what was wrong.
    #[error("{0}")]
    Agent(String),
    /// berth's own state files.
    #[error("berth state: {0}")]
    State(String),
}

impl From<tonic::Status> for RuntimeError {
    fn from(s: tonic::Status) -> Self {
        if berth_sandbox::agent_client::channel_broke(&s) {
            RuntimeError::Channel(s.message().to_string())
        } else {
            RuntimeError::Agent(s.message().to_string())
        }
    }
}

impl From<berth_sandbox::agent_client::AgentError> for RuntimeError {
    fn from(e: berth_sandbox::agent_client::AgentError) -> Self {
        match e {
            berth_sandbox::agent_client::AgentError::Call(status) => status.into(),
            other => RuntimeError::Channel(other.to_string()),
        }
    }
}

#[cfg(test)]
mod error_tests {
    use super::RuntimeError;

    #[test]
    fn the_agents_own_errors_are_not_reported_as_a_broken_channel() {
        let refused: RuntimeError = tonic::Status::not_found("no such file /x").into();
        assert_eq!(refused.to_string(), "no such file /x");
        let broken: RuntimeError = tonic::Status::unavailable("connection reset").into();
        assert_eq!(
            broken.to_string(),
            "the sandbox's agent stopped answering: connection reset"
        );
    }
}
