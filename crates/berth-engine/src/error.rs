//! [`EngineError`]: what went wrong talking to the engine, with enough context to act on.

/// An engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine endpoint string is not usable.
    #[error("unsupported engine address {endpoint:?}: use unix:///path/to/docker.sock or tcp://host:port in DOCKER_HOST")]
    BadEndpoint { endpoint: String },
    /// Nothing answers at the endpoint.
    #[error(
        "Docker daemon not reachable at {endpoint}: {reason}. Is it running? Try `berth doctor`"
    )]
    Unreachable { endpoint: String, reason: String },
    /// The socket exists but this user may not use it.
    #[error("permission denied on {endpoint}: add your user to the docker group (`sudo usermod -aG docker $USER`, then log in again) or run as root")]
    PermissionDenied { endpoint: String },
    /// The image is not present on the engine.
    #[error("image {image} not found")]
    ImageNotFound { image: String },
    /// The container does not exist (any more).
    #[error("container {id} not found")]
    ContainerNotFound { id: String },
    /// The engine refused to start the container's process; the message is the runtime's.
    #[error("could not start the command: {message}")]
    StartFailed { id: String, message: String },
    /// Any other error the engine answered with.
    #[error("{operation} failed: {message} (engine status {status})")]
    Api {
        operation: &'static str,
        status: u16,
        message: String,
    },
    /// A transport or protocol failure in the middle of an operation: the engine went away.
    #[error("{operation} failed: the connection to the Docker engine broke ({message}); check that it runs (`berth doctor`); `berth gc` removes what berth left on it")]
    Transport {
        operation: &'static str,
        message: String,
    },
}

impl EngineError {
    /// True when the error means "the object is gone", which cleanup paths treat as success.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Self::ContainerNotFound { .. }
                | Self::ImageNotFound { .. }
                | Self::Api { status: 404, .. }
        )
    }

    /// True when someone else is already removing the object (another `berth gc`, say): it
    /// is on its way out, and waiting for it to be gone is all that is left to do.
    pub fn is_removal_in_progress(&self) -> bool {
        matches!(self, Self::Api { status: 409, message, .. } if message.contains("already in progress"))
    }
}
