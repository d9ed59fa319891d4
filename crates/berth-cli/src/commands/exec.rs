//! `berth exec`, `berth top` and `berth signal`: processes in a sandbox, through the service
//! layer's process operations (the same ones the server's routes call).
//!
//! The fast path touches no Docker API at all: the local record names the socket and token,
//! and the engine is connected lazily — only when the agent does not answer does berth ask
//! the engine why, to say so clearly.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::bail;
use berth_service::exec::{Attachment, Input};
use berth_service::{ExecEvent, ExecRequest, Offsets};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal as on_signal, SignalKind};

use crate::args::{ExecArgs, SignalArgs, TopArgs};

/// The local terminal's `(rows, cols)`; 24 × 80 when it has none.
pub(crate) fn terminal_size() -> (u32, u32) {
    // SAFETY: an all-zero winsize is valid for TIOCGWINSZ to overwrite.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into a pointer that outlives the call.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_row > 0 {
        (u32::from(ws.ws_row), u32::from(ws.ws_col))
    } else {
        (24, 80)
    }
}

/// Puts the local terminal in raw mode until dropped.
pub(crate) struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    pub(crate) fn enable() -> Self {
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

pub async fn run(args: ExecArgs) -> anyhow::Result<ExitCode> {
    let (service, record) = super::open(&args.sandbox)?;
    if let Some(tag) = &args.attach {
        let events = service.attach(&record, tag, Offsets::default()).await?;
        return render(events, None).await;
    }
    let env: BTreeMap<String, String> = args
        .env
        .iter()
        .filter_map(|v| match &v.value {
            Some(value) => Some((v.name.clone(), value.clone())),
            None => std::env::var(&v.name)
                .ok()
                .map(|value| (v.name.clone(), value)),
        })
        .collect();
    let request = ExecRequest {
        argv: args.command.clone(),
        env,
        cwd: args.cwd.clone(),
        timeout: (!args.timeout.is_zero()).then_some(args.timeout),
        stdin: None,
        user: args.user.clone(),
    };
    if args.detach {
        let started = service
            .detach(&record, &request, args.tag.as_deref())
            .await?;
        println!("{}", started.id);
        return Ok(ExitCode::SUCCESS);
    }
    let attachment = Attachment {
        tty: args.tty.then(terminal_size),
        stdin: args.interactive,
    };
    let (inputs, events) = service
        .exec_interactive(&record, &request, attachment)
        .await?;
    let raw = (args.tty && std::io::stdin().is_terminal()).then(RawMode::enable);

    forward_terminal(&inputs, args.interactive, args.tty);
    render(events, raw).await
}

/// What the user does at this end goes to the process as [`Input`]s: stdin (with `-i`; EOF
/// closes it), the terminal's size (with `-t`, on every SIGWINCH), and Ctrl-C and SIGTERM
/// (to its process group; in a terminal, Ctrl-C is just a byte). Local and remote alike.
pub(crate) fn forward_terminal(
    inputs: &tokio::sync::mpsc::Sender<Input>,
    interactive: bool,
    tty: bool,
) {
    if interactive {
        let tx = inputs.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Input::Close).await;
                        break;
                    }
                    Ok(n) => {
                        let data = bytes::Bytes::copy_from_slice(&buf[..n]);
                        if tx.send(Input::Stdin(data)).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    if tty {
        let tx = inputs.clone();
        if let Ok(mut winch) = on_signal(SignalKind::window_change()) {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    let (rows, cols) = terminal_size();
                    if tx.send(Input::Resize { rows, cols }).await.is_err() {
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
        let tx = inputs.clone();
        if let Ok(mut sig) = on_signal(kind) {
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    if tx.send(Input::Signal(number)).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// Writes a process's output as it arrives and returns its exit code.
async fn render(
    mut events: berth_service::exec::ExecEvents,
    raw: Option<RawMode>,
) -> anyhow::Result<ExitCode> {
    while let Some(event) = events.next().await {
        match event {
            ExecEvent::Stdout { .. } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&event.bytes().unwrap_or_default())?;
                out.flush()?;
            }
            ExecEvent::Stderr { .. } => {
                let mut err = std::io::stderr().lock();
                err.write_all(&event.bytes().unwrap_or_default())?;
                err.flush()?;
            }
            ExecEvent::StartFailed { exit_code, message } => {
                drop(raw);
                eprintln!("berth: {message}");
                return Ok(ExitCode::from(u8::try_from(exit_code).unwrap_or(126)));
            }
            ExecEvent::Exited {
                code, timed_out, ..
            } => {
                drop(raw);
                if timed_out {
                    eprintln!("berth: timed out; the command's process tree was killed (exit 124)");
                }
                return Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)));
            }
            ExecEvent::Error { message } => {
                drop(raw);
                bail!("{message}")
            }
            ExecEvent::Started { .. } => {}
        }
    }
    bail!("the stream from the sandbox's agent ended without an exit status")
}

/// `berth top`: the sandbox's background processes.
pub async fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    let (service, record) = super::open(&args.sandbox)?;
    print_processes(&service.processes(&record).await?, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `berth top`'s output, local or remote: the processes as JSON, or a table.
pub fn print_processes(list: &[berth_service::exec::Process], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        let rows: Vec<_> = list
            .iter()
            .map(|p| {
                serde_json::json!({
                    "tag": p.id, "pid": p.pid, "command": p.argv, "running": p.running,
                    "exit_code": p.exit_code, "timed_out": p.timed_out,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("{:<16} {:>7} {:<14} COMMAND", "TAG", "PID", "STATUS");
    for p in list {
        let status = match p.exit_code {
            None => "running".to_string(),
            Some(code) => format!("exited {code}"),
        };
        println!(
            "{:<16} {:>7} {:<14} {}",
            p.id,
            p.pid,
            status,
            p.argv.join(" ")
        );
    }
    Ok(())
}

/// `berth signal`: a signal to a background process's group.
pub async fn signal(args: SignalArgs) -> anyhow::Result<ExitCode> {
    let (service, record) = super::open(&args.sandbox)?;
    service.signal(&record, &args.tag, args.signal).await?;
    Ok(ExitCode::SUCCESS)
}
