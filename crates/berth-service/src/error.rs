//! [`ServiceError`]: every operation fails with one of a few kinds, each with one CLI exit code
//! and one HTTP status, so the front ends map failures the same way.

use berth_engine::EngineError;
use berth_sandbox::agent_client::AgentError;
use berth_sandbox::SandboxError;

/// What kind of failure an operation had; decides the exit code and the HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input is wrong (a bad size, an unknown image name form, …).
    Invalid,
    /// No such sandbox, process or file — or it belongs to someone else.
    NotFound,
    /// A name is taken or the object is in the wrong state.
    Conflict,
    /// Policy refuses it (a host mount, the engine socket, an admin-only call).
    Forbidden,
    /// A body or file is larger than allowed.
    TooLarge,
    /// The engine or the sandbox's agent cannot be reached.
    Unavailable,
    /// Something berth did not expect; the message says what.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn http_status(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::NotFound => 404,
            Self::Conflict => 409,
            Self::Forbidden => 403,
            Self::TooLarge => 413,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }

    /// The CLI exit code of this kind: berth itself failed (the workload's own codes are
    /// results, not errors).
    pub fn exit_code(self) -> u8 {
        125
    }

    /// The kind as the API's JSON `code` says it.
    pub fn code(self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

/// An operation failed; the message says what to do and names no CLI flag. Where the way
/// out is another operation, `remedy` names it, and each front end says it in its own terms
/// (`berth start ID` for the CLI; the generic wording, which `Display` adds, for the API).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}{}", remedy.as_ref().map(|r| format!("; {}", r.generic())).unwrap_or_default())]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    pub remedy: Option<Remedy>,
}

/// The operation that gets a caller past an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// Start the (stopped) sandbox.
    Start { id: String },
    /// Resume the (paused) sandbox.
    Resume { id: String },
}

impl Remedy {
    /// The remedy in words that name no front end's verbs.
    pub fn generic(&self) -> String {
        match self {
            Self::Start { .. } => "start it first".to_string(),
            Self::Resume { .. } => "resume it first".to_string(),
        }
    }
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            remedy: None,
        }
    }

    /// The same error, with the operation that gets past it.
    pub fn with_remedy(mut self, remedy: Remedy) -> Self {
        self.remedy = Some(remedy);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

fn engine_kind(e: &EngineError) -> ErrorKind {
    match e {
        EngineError::BadEndpoint { .. }
        | EngineError::Unreachable { .. }
        | EngineError::PermissionDenied { .. }
        | EngineError::Transport { .. } => ErrorKind::Unavailable,
        EngineError::ImageNotFound { .. } | EngineError::ContainerNotFound { .. } => {
            ErrorKind::NotFound
        }
        EngineError::StartFailed { .. } => ErrorKind::Invalid,
        EngineError::Api { status, .. } => match status {
            400 => ErrorKind::Invalid,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            _ => ErrorKind::Unavailable,
        },
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        Self::new(engine_kind(&e), e.to_string())
    }
}

impl From<tonic::Status> for ServiceError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let kind = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
            Code::NotFound => ErrorKind::NotFound,
            // The agent's "not in that state" (a process that already exited, a stdin already
            // closed): the request was fine, the moment was not.
            Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => ErrorKind::Conflict,
            Code::PermissionDenied | Code::Unauthenticated => ErrorKind::Forbidden,
            Code::ResourceExhausted => ErrorKind::TooLarge,
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Internal,
        };
        Self::new(kind, status.message().to_string())
    }
}

impl From<AgentError> for ServiceError {
    fn from(e: AgentError) -> Self {
        match e {
            AgentError::Call(status) => status.into(),
            AgentError::Untrusted { .. } => Self::forbidden(e.to_string()),
            other => Self::unavailable(other.to_string()),
        }
    }
}

impl From<SandboxError> for ServiceError {
    fn from(e: SandboxError) -> Self {
        // The library's messages for these name CLI verbs; say it without them.
        match &e {
            SandboxError::NoSandbox { reference } => {
                return Self::not_found(format!(
                    "no sandbox {reference:?}: give the id or name of one of yours"
                ))
            }
            SandboxError::Exists { name } => {
                return Self::conflict(format!(
                    "a sandbox named {name:?} already exists: pick another name, or remove that one"
                ))
            }
            SandboxError::Running { id } => {
                return Self::conflict(format!(
                    "sandbox {id} is running: stop it first, or remove it with force"
                ))
            }
            // The sandbox is in the wrong state for the call (the engine is fine).
            SandboxError::AgentDown { id, state } => {
                return Self::conflict(format!("sandbox {id} is not running: {state}"))
                    .with_remedy(Remedy::Start { id: id.clone() })
            }
            SandboxError::MainFailed { message } => {
                return Self::invalid(format!(
                    "the sandbox's main process could not start: {message}; give a command that exists in the image (e.g. [\"sleep\", \"infinity\"]), or none to run the image's own"
                ))
            }
            _ => {}
        }
        let kind = match &e {
            SandboxError::Spec(_)
            | SandboxError::Input(_)
            | SandboxError::MissingPath { .. }
            | SandboxError::MainFailed { .. } => ErrorKind::Invalid,
            SandboxError::Engine(engine) => engine_kind(engine),
            SandboxError::DockerSocketMount { .. } => ErrorKind::Forbidden,
            SandboxError::ImageUnavailable { .. } => ErrorKind::NotFound,
            SandboxError::Agent(AgentError::Call(status)) => {
                return status.clone().into();
            }
            SandboxError::Agent(AgentError::Untrusted { .. }) => ErrorKind::Forbidden,
            SandboxError::Agent(_) | SandboxError::AgentDown { .. } => ErrorKind::Unavailable,
            SandboxError::NoSandbox { .. } => ErrorKind::NotFound,
            SandboxError::Ambiguous { .. } => ErrorKind::Invalid,
            SandboxError::Exists { .. } | SandboxError::Running { .. } => ErrorKind::Conflict,
            SandboxError::Io { .. } | SandboxError::MissingTool { .. } => ErrorKind::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_one_status() {
        let e: ServiceError = SandboxError::NoSandbox {
            reference: "x".into(),
        }
        .into();
        assert_eq!(e.kind.http_status(), 404);
        let e: ServiceError = SandboxError::Exists { name: "x".into() }.into();
        assert_eq!(e.kind.http_status(), 409);
        let e: ServiceError = tonic::Status::not_found("no such file").into();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::NotFound, "no such file")
        );
        let e: ServiceError = EngineError::Unreachable {
            endpoint: "unix:///x".into(),
            reason: "gone".into(),
        }
        .into();
        assert_eq!(e.kind.http_status(), 503);
        assert_eq!(e.kind.exit_code(), 125);
    }
}
