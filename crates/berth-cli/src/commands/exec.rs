//! `berth exec`: one process in a sandbox, over the agent's stream.
//!
//! The fast path touches no Docker API at all: the local record names the socket and token.
//! Only when the agent does not answer does berth ask the engine why, to say so clearly.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use berth_engine::docker::DockerEngine;
use berth_protocol::v1::{
    exec_input, exec_output, AttachRequest, ExecInput, ExecOutput, ExecStart, ListProcessesRequest,
    SignalRequest, TerminalSize,
};
use berth_sandbox::agent_client::{self, AgentClient, AgentError};
use berth_sandbox::sandbox::{self, SandboxRecord};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal as on_signal, SignalKind};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::args::{ExecArgs, SignalArgs, TopArgs};

/// Connects to the sandbox's agent, explaining a failure with the container's state.
pub async fn connect(record: &SandboxRecord) -> anyhow::Result<AgentClient> {
    if sandbox::exec_channel_forced() {
        let engine = DockerEngine::connect().await?;
        return Ok(sandbox::connect(&engine, record).await?);
    }
    match agent_client::connect(&record.run_dir, &record.token).await {
        Ok(client) => Ok(client),
        Err(e @ AgentError::Untrusted { .. }) => Err(e.into()),
        Err(_) => {
            let engine = DockerEngine::connect().await?;
            Ok(sandbox::connect(&engine, record).await?)
        }
    }
}

/// Explains a failed RPC: the agent's own error as it put it (no space, no such file, …), or,
/// when the channel itself broke, why (the agent died or the sandbox stopped).
pub async fn explain_failure(record: &SandboxRecord, status: &tonic::Status) -> anyhow::Error {
    if !agent_client::channel_broke(status) {
        return anyhow::anyhow!("{}", status.message());
    }
    if let Ok(engine) = DockerEngine::connect().await {
        if let Err(e) = sandbox::connect(&engine, record).await {
            return e.into();
        }
    }
    anyhow::anyhow!(
        "the sandbox's agent stopped answering: {}",
        status.message()
    )
}

fn terminal_size() -> TerminalSize {
    // SAFETY: an all-zero winsize is valid for TIOCGWINSZ to overwrite.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into a pointer that outlives the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 {
        TerminalSize {
            rows: u32::from(ws.ws_row),
            cols: u32::from(ws.ws_col),
        }
    } else {
        TerminalSize { rows: 24, cols: 80 }
    }
}

/// Puts the local terminal in raw mode until dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enable() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(original) => {
                let mut raw = original.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                Self(Some(original))
            }
            Err(_) => Self(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(original) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                original,
            );
        }
    }
}

fn input(message: exec_input::Input) -> ExecInput {
    ExecInput {
        input: Some(message),
    }
}

pub async fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let record = sandbox::find(&berth_sandbox::store::FileStore::local(), &args.sandbox)?;
    let mut client = connect(&record).await?;
    if let Some(tag) = &args.attach {
        let stream = match client
            .attach(AttachRequest {
                tag: tag.clone(),
                follow_only: false,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(status) if status.code() == tonic::Code::NotFound => bail!("{}", status.message()),
            Err(status) => return Err(explain_failure(&record, &status).await),
        };
        return render(stream, &record, &args, None).await;
    }
    let tty = args.tty && std::io::stdin().is_terminal();
    let env = args
        .env
        .iter()
        .filter_map(|v| match &v.value {
            Some(value) => Some((v.name.clone(), value.clone())),
            None => std::env::var(&v.name)
                .ok()
                .map(|value| (v.name.clone(), value)),
        })
        .collect();
    let start = ExecStart {
        argv: args.command.clone(),
        env,
        cwd: args.cwd.clone().unwrap_or_default(),
        user: args.user.clone().unwrap_or_default(),
        timeout_ms: u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX),
        tty: args.tty,
        size: Some(terminal_size()),
        detach: args.detach,
        tag: args.tag.clone().unwrap_or_default(),
        stdin: args.interactive,
    };

    let (tx, rx) = mpsc::channel::<ExecInput>(16);
    tx.send(input(exec_input::Input::Start(start))).await?;
    let _raw = (tty && !args.detach).then(RawMode::enable);

    if args.interactive {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(input(exec_input::Input::CloseStdin(true))).await;
                        break;
                    }
                    Ok(n) => {
                        if tx
                            .send(input(exec_input::Input::Stdin(buf[..n].to_vec().into())))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
    }
    if args.tty {
        let tx = tx.clone();
        if let Ok(mut winch) = on_signal(SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if tx
                        .send(input(exec_input::Input::Resize(terminal_size())))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    }
    // Ctrl-C and SIGTERM go to the remote process group (in a TTY, Ctrl-C is just a byte).
    for (kind, number) in [
        (SignalKind::interrupt(), libc::SIGINT),
        (SignalKind::terminate(), libc::SIGTERM),
    ] {
        let tx = tx.clone();
        if let Ok(mut sig) = on_signal(kind) {
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    if tx
                        .send(input(exec_input::Input::Signal(number)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    }
    drop(tx);

    let output = match client.exec(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(explain_failure(&record, &status).await),
    };
    render(output, &record, &args, _raw).await
}

/// Writes a process's output as it arrives and returns its exit code.
async fn render(
    mut output: tonic::Streaming<ExecOutput>,
    record: &SandboxRecord,
    args: &ExecArgs,
    raw: Option<RawMode>,
) -> anyhow::Result<ExitCode> {
    loop {
        let message = match output.message().await {
            Ok(Some(m)) => m,
            Ok(None) => {
                let status = tonic::Status::unavailable("the stream ended without an exit status");
                return Err(explain_failure(record, &status).await);
            }
            Err(status) if status.code() == tonic::Code::AlreadyExists => {
                bail!("{}", status.message())
            }
            Err(status) => return Err(explain_failure(record, &status).await),
        };
        match message.output {
            Some(exec_output::Output::Stdout(data)) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&data)?;
                out.flush()?;
            }
            Some(exec_output::Output::Stderr(data)) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&data)?;
                err.flush()?;
            }
            Some(exec_output::Output::StartFailed(f)) => {
                drop(raw);
                eprintln!("berth: {}", f.message);
                return Ok(ExitCode::from(u8::try_from(f.exit_code).unwrap_or(126)));
            }
            Some(exec_output::Output::Exited(exit)) => {
                drop(raw);
                if exit.timed_out {
                    eprintln!("berth: timed out; the command's process tree was killed (exit 124)");
                }
                return Ok(ExitCode::from(u8::try_from(exit.code & 0xff).unwrap_or(1)));
            }
            Some(exec_output::Output::Started(started)) if args.detach => {
                println!("{}", started.tag);
                return Ok(ExitCode::SUCCESS);
            }
            Some(exec_output::Output::Started(_)) | None => {}
        }
    }
}

/// `berth top`: the sandbox's background processes.
pub async fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    let record = sandbox::find(&berth_sandbox::store::FileStore::local(), &args.sandbox)?;
    let mut client = connect(&record).await?;
    let list = match client.list_processes(ListProcessesRequest {}).await {
        Ok(r) => r.into_inner().processes,
        Err(status) => return Err(explain_failure(&record, &status).await),
    };
    if args.json {
        let rows: Vec<_> = list
            .iter()
            .map(|p| {
                serde_json::json!({
                    "tag": p.tag, "pid": p.pid, "command": p.argv, "running": p.running,
                    "exit_code": p.exited.map(|e| e.code), "timed_out": p.exited.map(|e| e.timed_out),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{:<16} {:>7} {:<14} COMMAND", "TAG", "PID", "STATUS");
        for p in list {
            let status = match p.exited {
                None => "running".to_string(),
                Some(e) => format!("exited {}", e.code),
            };
            println!(
                "{:<16} {:>7} {:<14} {}",
                p.tag,
                p.pid,
                status,
                p.argv.join(" ")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth signal`: a signal to a background process's group.
pub async fn signal(args: SignalArgs) -> anyhow::Result<ExitCode> {
    let record = sandbox::find(&berth_sandbox::store::FileStore::local(), &args.sandbox)?;
    let mut client = connect(&record).await?;
    let request = SignalRequest {
        tag: args.tag.clone(),
        pid: 0,
        signal: args.signal,
    };
    match client.signal(request).await {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::FailedPrecondition
            ) =>
        {
            bail!("{}", status.message())
        }
        Err(status) => Err(explain_failure(&record, &status).await),
    }
}
