//! PID 1 and the gRPC service: reaper, signal forwarding, the main process, and the socket.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use berth_protocol::v1::agent_server::{Agent, AgentServer};
use berth_protocol::v1::{
    exec_output, AttachRequest, DataChunk, Empty, ExecInput, ExecOutput, FileInfo, HelloReply,
    HelloRequest, ListDirReply, ListProcessesReply, ListProcessesRequest, MainState, PathRequest,
    RemoveRequest, RenameRequest, SignalRequest, UploadChunk, WriteStdinRequest,
};
use berth_protocol::{AUTH_HEADER, PROTOCOL, SANDBOX_DIR, SOCKET_NAME, SOCKET_SUBDIR};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::{ReceiverStream, UnixListenerStream};
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::exec::ExecContext;
use crate::identity::Identity;
use crate::reaper::Reaper;
use crate::spawn::{spawn, SpawnSpec};

/// How long processes get between SIGTERM and the agent's exit.
const STOP_GRACE: Duration = Duration::from_secs(5);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

struct Service {
    ctx: Arc<ExecContext>,
}

/// The answer for a tag no background process has.
fn no_such_tag(tag: &str) -> Status {
    Status::not_found(format!(
        "no background process tagged {tag:?}: give the tag of one started in the background (list them to see the tags)"
    ))
}

impl Service {
    /// The running background process tagged `tag`, or why there is none.
    fn running_background(&self, tag: &str) -> Result<Arc<crate::background::Background>, Status> {
        let bg = self
            .ctx
            .background
            .get(tag)
            .ok_or_else(|| no_such_tag(tag))?;
        if !bg.running() {
            return Err(Status::failed_precondition(format!(
                "{tag:?} has already exited"
            )));
        }
        Ok(bg)
    }
}

#[tonic::async_trait]
impl Agent for Service {
    async fn hello(&self, _: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let (main_state, main_failure) = self
            .ctx
            .main
            .lock()
            .map(|m| m.clone())
            .unwrap_or((MainState::MainNone, String::new()));
        Ok(Response::new(HelloReply {
            protocol: PROTOCOL.to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: std::process::id(),
            sandbox_id: self.ctx.identity.sandbox_id.clone(),
            main_state: main_state as i32,
            main_failure,
        }))
    }

    type ExecStream = BoxStream<ExecOutput>;

    async fn exec(
        &self,
        request: Request<Streaming<ExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(crate::exec::run(self.ctx.clone(), request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_processes(
        &self,
        _: Request<ListProcessesRequest>,
    ) -> Result<Response<ListProcessesReply>, Status> {
        Ok(Response::new(ListProcessesReply {
            processes: self.ctx.background.list(),
        }))
    }

    type AttachStream = BoxStream<ExecOutput>;

    async fn attach(
        &self,
        request: Request<AttachRequest>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let AttachRequest { tag, follow_only } = request.into_inner();
        let bg = self
            .ctx
            .background
            .get(&tag)
            .ok_or_else(|| no_such_tag(&tag))?;
        let (replay, live) = bg.attach(follow_only);
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            for event in replay {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            let Some(mut live) = live else { return };
            loop {
                match live.recv().await {
                    Ok(output) => {
                        let last = matches!(output, exec_output::Output::Exited(_));
                        let sent = tx
                            .send(Ok(ExecOutput {
                                output: Some(output),
                            }))
                            .await;
                        if sent.is_err() || last {
                            return;
                        }
                    }
                    // A slow reader skipped some output; keep following.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn write_stdin(
        &self,
        request: Request<WriteStdinRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let bg = self.running_background(&req.tag)?;
        bg.write_stdin(&req.data, req.close)
            .await
            .map_err(Status::failed_precondition)?;
        Ok(Response::new(Empty {}))
    }

    async fn signal(&self, request: Request<SignalRequest>) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let pid = if req.tag.is_empty() {
            i32::try_from(req.pid).map_err(|_| Status::invalid_argument("bad pid"))?
        } else {
            self.running_background(&req.tag)?.pid
        };
        if pid <= 1 {
            return Err(Status::invalid_argument(
                "give a tag or the pid of a process berth started",
            ));
        }
        // SAFETY: kill(2) on a process group by number; no memory is touched.
        let rc = unsafe { libc::kill(-pid, req.signal) };
        if rc != 0 {
            return Err(Status::not_found(format!("no process group {pid}")));
        }
        Ok(Response::new(Empty {}))
    }

    async fn upload(
        &self,
        request: Request<Streaming<UploadChunk>>,
    ) -> Result<Response<Empty>, Status> {
        crate::files::upload(&self.ctx.identity, request.into_inner()).await?;
        Ok(Response::new(Empty {}))
    }

    type DownloadStream = BoxStream<DataChunk>;

    async fn download(
        &self,
        request: Request<PathRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let rx = crate::files::download(&request.into_inner().path)?;
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stat(&self, request: Request<PathRequest>) -> Result<Response<FileInfo>, Status> {
        Ok(Response::new(crate::files::stat(
            &request.into_inner().path,
        )?))
    }

    async fn list_dir(
        &self,
        request: Request<PathRequest>,
    ) -> Result<Response<ListDirReply>, Status> {
        Ok(Response::new(crate::files::list_dir(
            &request.into_inner().path,
        )?))
    }

    async fn make_dir(&self, request: Request<PathRequest>) -> Result<Response<Empty>, Status> {
        crate::files::make_dir(&self.ctx.identity, &request.into_inner().path)?;
        Ok(Response::new(Empty {}))
    }

    async fn remove(&self, request: Request<RemoveRequest>) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        crate::files::remove(&req.path, req.recursive)?;
        Ok(Response::new(Empty {}))
    }

    async fn rename(&self, request: Request<RenameRequest>) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        crate::files::rename(&req.from, &req.to)?;
        Ok(Response::new(Empty {}))
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs PID 1 until SIGTERM/SIGINT; returns the agent's exit code.
pub async fn serve(main_command: Vec<String>) -> Result<u8, String> {
    let identity = Identity::from_env()?;
    identity.claim_owned_dirs();
    let reaper = Reaper::default();
    reaper
        .start()
        .map_err(|e| format!("cannot watch child processes: {e}"))?;

    let dir = Path::new(SANDBOX_DIR).join(SOCKET_SUBDIR);
    let listener = bind(&dir)?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    serve_on(listener, identity, reaper, main_command, shutdown).await?;
    stop_everything().await;
    Ok(0)
}

/// Binds the agent's socket in `dir` (created 0755; the socket 0666: the token decides who is
/// served).
pub fn bind(dir: &Path) -> Result<tokio::net::UnixListener, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot set permissions on {}: {e}", dir.display()))?;
    let socket = dir.join(SOCKET_NAME);
    let _ = std::fs::remove_file(&socket);
    let listener = tokio::net::UnixListener::bind(&socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| format!("cannot set permissions on {}: {e}", socket.display()))?;
    Ok(listener)
}

/// Serves the agent's API on `listener` for `identity` until `shutdown` completes, with the
/// main process (if any) started once the gateway's file (`BERTH_WAIT_FOR`) is there. As in
/// mini-redis, the caller binds and decides when it ends, so a test runs it in-process.
pub async fn serve_on(
    listener: tokio::net::UnixListener,
    identity: Identity,
    reaper: Reaper,
    main_command: Vec<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let ctx = Arc::new(ExecContext {
        identity: identity.clone(),
        reaper: reaper.clone(),
        next_id: AtomicU64::new(1),
        background: crate::background::Registry::default(),
        main: std::sync::Mutex::new((
            if main_command.is_empty() {
                MainState::MainNone
            } else {
                MainState::MainWaiting
            },
            String::new(),
        )),
    });

    if !main_command.is_empty() {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            if let Ok(target) = std::env::var(berth_protocol::WAIT_FOR_ENV) {
                wait_for(&target).await;
            }
            start_main(&ctx, main_command);
        });
    }

    let token = format!("Bearer {}", identity.token);
    let server = AgentServer::new(Service { ctx })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let service = InterceptedService::new(server, move |req: Request<()>| {
        let given = req
            .metadata()
            .get(AUTH_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if same(given, token.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("missing or wrong sandbox token"))
        }
    });
    tonic::transport::Server::builder()
        .initial_stream_window_size(16 << 20)
        .initial_connection_window_size(32 << 20)
        .max_frame_size(1 << 20)
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| format!("serving the socket failed: {e}"))
}

/// Waits until `path` exists (the egress gateway is configured), or the limit passes; the
/// main process then starts either way (without egress, if the gateway never came up).
async fn wait_for(path: &str) {
    let limit = std::time::Duration::from_millis(berth_protocol::WAIT_FOR_LIMIT_MS);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if std::path::Path::new(path).exists() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    eprintln!("berth-agent: {path} did not appear; starting the main process anyway");
}

/// Runs the image's entrypoint and command as the sandbox's main process; its output goes to
/// the container log. Its exit does not end the sandbox.
fn start_main(ctx: &Arc<ExecContext>, argv: Vec<String>) {
    let id = &ctx.identity;
    let spec = SpawnSpec {
        argv: argv.clone(),
        env: id.base_env.clone(),
        cwd: id.workdir.clone(),
        uid: id.uid,
        gid: id.gid,
        tty: None,
        stdin: false,
        marker: "main".to_string(),
    };
    let spawned = spawn(&ctx.reaper, &spec);
    if let Ok(mut main) = ctx.main.lock() {
        *main = match &spawned {
            Ok(_) => (MainState::MainStarted, String::new()),
            Err(f) => (MainState::MainFailed, f.message.clone()),
        };
    }
    match spawned {
        Ok(mut spawned) => {
            for (fd, to_stderr) in [
                (spawned.stdout.take(), false),
                (spawned.stderr.take(), true),
            ] {
                if let Some(fd) = fd {
                    tokio::spawn(crate::exec::copy_to_log(fd, to_stderr));
                }
            }
            tokio::spawn(async move {
                if let Ok(exit) = spawned.exit.await {
                    eprintln!(
                        "berth-agent: main process {argv:?} exited with {}",
                        exit.code()
                    );
                }
            });
        }
        Err(f) => eprintln!("berth-agent: main process could not start: {}", f.message),
    }
}

/// SIGTERM to every process in the sandbox, then SIGKILL after the grace period.
async fn stop_everything() {
    // SAFETY: kill(2) with pid -1 from PID 1 signals every other process in the namespace.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while tokio::time::Instant::now() < deadline {
        let others = std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        e.file_name().to_str().is_some_and(|n| {
                            n.parse::<u32>().is_ok_and(|p| p != std::process::id())
                        })
                    })
                    .count()
            })
            .unwrap_or(0);
        if others == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_protocol::v1::{exec_input, exec_output, ExecInput, ExecStart, HelloRequest};

    /// The agent's server in-process: bound to a temporary socket, served, answered and shut
    /// down by the test, through berth's own client.
    #[tokio::test]
    async fn serves_in_process_until_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let listener = bind(&run.join(SOCKET_SUBDIR)).unwrap();
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let identity = Identity {
            sandbox_id: "in-process".into(),
            token: "t0ken".into(),
            uid,
            gid,
            workdir: "/".into(),
            owned_dirs: Vec::new(),
            base_env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
        };
        let reaper = Reaper::default();
        reaper.start().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(listener, identity, reaper, Vec::new(), async {
            let _ = stopped.await;
        }));

        let mut client = berth_sandbox::agent_client::connect(&run, "t0ken")
            .await
            .unwrap();
        let hello = client.hello(HelloRequest {}).await.unwrap().into_inner();
        assert_eq!(hello.sandbox_id, "in-process");
        let start = ExecInput {
            input: Some(exec_input::Input::Start(ExecStart {
                argv: vec!["echo".into(), "in process".into()],
                ..Default::default()
            })),
        };
        let mut out = client
            .exec(tokio_stream::once(start))
            .await
            .unwrap()
            .into_inner();
        let mut text = Vec::new();
        let mut code = None;
        while let Some(msg) = out.message().await.unwrap() {
            match msg.output {
                Some(exec_output::Output::Stdout(b)) => text.extend_from_slice(&b),
                Some(exec_output::Output::Exited(e)) => code = Some(e.code),
                _ => {}
            }
        }
        assert_eq!((text.as_slice(), code), (&b"in process\n"[..], Some(0)));
        let wrong = berth_sandbox::agent_client::connect(&run, "wrong")
            .await
            .unwrap();
        let mut wrong = wrong;
        assert!(
            wrong.hello(HelloRequest {}).await.is_err(),
            "a wrong token is refused"
        );

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
