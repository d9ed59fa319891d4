//! berth's side of the channel to a sandbox's agent.
//!
//! The agent listens on a unix socket inside the sandbox's host directory. That directory is
//! writable from inside the sandbox, so the path is opened step by step without following
//! symlinks, each step must be owned by root (which the unprivileged workload is not), and the
//! connection goes through the opened file descriptor — so a planted symlink (say, to the
//! host's Docker socket) is refused instead of followed. Every call carries the token.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_protocol::v1::agent_client::AgentClient as Generated;
use berth_protocol::v1::HelloReply;
use berth_protocol::{AUTH_HEADER, SOCKET_NAME, SOCKET_SUBDIR};
use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};

/// Why berth could not talk to an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The socket is not there (the agent is not running, or has not started yet).
    #[error("the sandbox's agent is not listening at {path}: {reason}")]
    NotListening { path: PathBuf, reason: String },
    /// Something other than the agent's socket is at the path.
    #[error(
        "refusing to connect to {path}: {reason}; the sandbox may have tampered with its socket"
    )]
    Untrusted { path: PathBuf, reason: String },
    /// The agent answered with an error.
    #[error("{0}")]
    Call(#[from] tonic::Status),
    /// The connection failed.
    #[error("connecting to the sandbox's agent failed: {0}")]
    Transport(String),
}

/// True when a failed call means the channel itself broke (the agent died, the sandbox stopped,
/// the connection dropped); false when the agent answered with an error of its own (no such
/// file, no space left, …), whose message then says what was wrong.
pub fn channel_broke(status: &tonic::Status) -> bool {
    use tonic::Code;
    // A connection torn mid-frame (the container killed under a stream) surfaces as `Internal`
    // with the transport's error (tonic's, or h2's reset) as its source, not as `Unavailable`.
    // The agent's own answers arrive over the wire and carry no source.
    let transport = std::error::Error::source(status).is_some();
    transport
        || matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        )
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Token(MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert(AUTH_HEADER, self.0.clone());
        Ok(req)
    }
}

/// A connected, authenticated agent client.
pub type AgentClient = Generated<InterceptedService<Channel, Token>>;

fn open_nofollow(dir: Option<&OwnedFd>, name: &Path, directory: bool) -> std::io::Result<OwnedFd> {
    let c_name = CString::new(name.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    if directory {
        flags |= libc::O_DIRECTORY;
    }
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: openat(2) with a valid NUL-terminated name and a directory fd we own (or
    // AT_FDCWD); the returned descriptor is owned by the OwnedFd below.
    let fd = unsafe { libc::openat(dirfd, c_name.as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> std::io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) on a descriptor we own, writing into `st`.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st)
}

/// Opens the agent's socket without following symlinks and checks who made it.
pub fn open_socket(run_dir: &Path) -> Result<OwnedFd, AgentError> {
    let socket_path = run_dir.join(SOCKET_SUBDIR).join(SOCKET_NAME);
    let not_listening = |reason: String| AgentError::NotListening {
        path: socket_path.clone(),
        reason,
    };
    let untrusted = |reason: &str| AgentError::Untrusted {
        path: socket_path.clone(),
        reason: reason.to_string(),
    };
    let dir = open_nofollow(None, run_dir, true).map_err(|e| not_listening(e.to_string()))?;
    let sub = match open_nofollow(Some(&dir), Path::new(SOCKET_SUBDIR), true) {
        Ok(fd) => fd,
        Err(e)
            if e.raw_os_error() == Some(libc::ELOOP) || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            return Err(untrusted("the agent's directory is not a plain directory"));
        }
        Err(e) => return Err(not_listening(e.to_string())),
    };
    if fstat(&sub)
        .map_err(|e| not_listening(e.to_string()))?
        .st_uid
        != 0
    {
        return Err(untrusted("the agent's directory is not owned by root"));
    }
    let sock = match open_nofollow(Some(&sub), Path::new(SOCKET_NAME), false) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(untrusted("the socket is a symbolic link"));
        }
        Err(e) => return Err(not_listening(e.to_string())),
    };
    let st = fstat(&sock).map_err(|e| not_listening(e.to_string()))?;
    // O_PATH|O_NOFOLLOW opens a symlink itself rather than failing.
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return Err(untrusted("the socket is a symbolic link"));
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(untrusted("it is not a socket"));
    }
    if st.st_uid != 0 {
        return Err(untrusted("the socket is not owned by root"));
    }
    Ok(sock)
}

/// Connects to the agent of the sandbox whose host directory is `run_dir`.
pub async fn connect(run_dir: &Path, token: &str) -> Result<AgentClient, AgentError> {
    let sock = open_socket(run_dir)?;
    // Connect through the descriptor we checked, not through the path again.
    let via_fd = PathBuf::from(format!("/proc/self/fd/{}", sock.as_raw_fd()));
    let stream = tokio::net::UnixStream::connect(&via_fd)
        .await
        .map_err(|e| AgentError::NotListening {
            path: run_dir.join(SOCKET_SUBDIR).join(SOCKET_NAME),
            reason: e.to_string(),
        })?;
    drop(sock);
    over(stream, token).await
}

/// Connects through `docker exec <sandbox> /.berth-agent dial-stdio`: the same protocol and
/// token over the exec's stdin and (strictly demultiplexed) stdout, for engines that cannot
/// carry a unix socket across a bind mount.
pub async fn connect_via_exec<E: berth_engine::Engine>(
    engine: &E,
    container_id: &str,
    token: &str,
) -> Result<AgentClient, AgentError> {
    use futures_util::StreamExt;
    let argv = [
        berth_protocol::AGENT_PATH.to_string(),
        "dial-stdio".to_string(),
    ];
    let (output, input) = engine
        .container_exec_attached(container_id, &argv)
        .await
        .map_err(|e| AgentError::Transport(e.to_string()))?;
    // stdout carries the protocol; the proxy's own complaints on stderr are logged.
    let bytes = output.filter_map(|item| {
        std::future::ready(match item {
            Ok(berth_engine::Output::Stdout(b)) => Some(Ok(b)),
            Ok(berth_engine::Output::Stderr(b)) => {
                tracing::warn!("agent channel: {}", String::from_utf8_lossy(&b).trim());
                None
            }
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        })
    });
    let reader = tokio_util::io::StreamReader::new(bytes);
    over(tokio::io::join(reader, input), token).await
}

/// Runs the authenticated gRPC client over an established byte stream.
async fn over<IO>(io: IO, token: &str) -> Result<AgentClient, AgentError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let mut stream = Some(io);
    let channel = Endpoint::from_static("http://agent.invalid")
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .connect_timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let stream = stream.take();
            async move {
                stream
                    .map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the agent connection was already used"))
            }
        }))
        .await
        .map_err(|e| AgentError::Transport(e.to_string()))?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| AgentError::Transport("the sandbox token is not valid ASCII".to_string()))?;
    Ok(Generated::with_interceptor(channel, Token(value))
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20))
}

/// Says hello: the sandbox is ready when this succeeds.
pub async fn hello(client: &mut AgentClient) -> Result<HelloReply, AgentError> {
    Ok(client
        .hello(berth_protocol::v1::HelloRequest {})
        .await?
        .into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_torn_under_a_call_is_a_broken_channel_an_answer_is_not() {
        // The agent's own answer: it came over the wire, so it has no source.
        assert!(!channel_broke(&tonic::Status::internal("disk full")));
        // What tonic makes of a connection reset mid-stream: Internal, "transport error", with
        // the transport's error as its source.
        let mut torn = tonic::Status::internal("transport error");
        torn.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset",
        )));
        assert!(channel_broke(&torn));
        assert!(channel_broke(&tonic::Status::unavailable("gone")));
    }
}
