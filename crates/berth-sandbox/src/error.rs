//! [`SandboxError`]: why a sandbox could not be prepared or run.

use std::path::PathBuf;

use berth_engine::EngineError;
use berth_spec::SpecError;

/// A sandbox operation failed before the user's command could produce an exit code.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The user's input is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A host path to mount does not exist.
    #[error("{what} {given:?} does not exist (resolved to {resolved}); create it or fix the path, e.g. {example}")]
    MissingPath {
        what: &'static str,
        example: &'static str,
        given: String,
        resolved: PathBuf,
    },
    /// A mount would hand the sandbox the engine's socket.
    #[error("refusing to mount {given:?} into a sandbox: it exposes the Docker socket {socket}, which would give the sandbox control of the host; mount a narrower directory")]
    DockerSocketMount { given: String, socket: PathBuf },
    /// The image is not present and could not be made.
    #[error("image {image} is not available: {reason}")]
    ImageUnavailable { image: String, reason: String },
    /// A host-side file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Talking to a sandbox's agent failed.
    #[error(transparent)]
    Agent(#[from] crate::agent_client::AgentError),
    /// The agent does not answer because the sandbox is not running.
    #[error("sandbox {id} is not running: {state}; start it with `berth start {id}`")]
    AgentDown { id: String, state: String },
    /// The main process given (or the image's) could not be started; the sandbox is removed.
    #[error("the sandbox's main process could not start: {message}. Give a command that exists in the image, e.g. `berth create -- sleep infinity`, or none to run the image's own")]
    MainFailed { message: String },
    /// No sandbox matches.
    #[error("no sandbox {reference:?}: see `berth ps` for the sandboxes on this machine")]
    NoSandbox { reference: String },
    /// Several sandboxes match an id prefix.
    #[error("{reference:?} matches several sandboxes: give more of the id")]
    Ambiguous { reference: String },
    /// A sandbox with that name exists.
    #[error("a sandbox named {name:?} already exists: pick another --name or remove it (`berth rm -f {name}`)")]
    Exists { name: String },
    /// Refusing to remove a running sandbox without force.
    #[error(
        "sandbox {id} is running: stop it first (`berth stop {id}`) or use `berth rm -f {id}`"
    )]
    Running { id: String },
    /// Input that is wrong in a way only known when the sandbox is made (a secret with no
    /// value here, …); the message says what to do.
    #[error("{0}")]
    Input(String),
    /// A host tool berth needs is missing.
    #[error("{tool} is needed to {purpose} but was not found: {remedy}")]
    MissingTool {
        tool: String,
        purpose: &'static str,
        remedy: &'static str,
    },
}

impl SandboxError {
    /// Wraps an I/O error with what berth was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}
