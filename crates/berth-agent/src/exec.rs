//! The `Exec` stream: start a process, pump stdin/stdout/stderr, forward resizes and signals,
//! enforce the timeout on the whole process tree, and report exactly one exit after the output.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_protocol::v1::{
    exec_input, exec_output, ExecInput, ExecOutput, ExecStart, Exited, StartFailed, Started,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::background::{Background, Registry as BackgroundRegistry};
use crate::identity::{parse_user, Identity};
use crate::reaper::{Exit, Reaper};
use crate::spawn::{spawn, SpawnSpec, Spawned, EXEC_MARKER};

/// Output chunk size: large enough for throughput, small enough for latency.
const CHUNK: usize = 256 * 1024;
/// After the process exits, how long to wait for output still held open by its descendants.
/// When it is over, what is already in the pipes is still read and sent: only output written
/// later is left behind, never output a busy machine had not yet got round to reading.
const LINGER: Duration = Duration::from_secs(1);
/// At most this many chunks are drained from a pipe once the linger is over (a descendant that
/// keeps writing must not keep the exit from being reported).
const DRAIN_CHUNKS: usize = 16;

/// Everything an exec needs from the agent.
pub struct ExecContext {
    pub identity: Identity,
    pub reaper: Reaper,
    pub next_id: AtomicU64,
    pub background: BackgroundRegistry,
    /// How the main process's start went, with the reason when it failed (for Hello).
    pub main: std::sync::Mutex<(berth_protocol::v1::MainState, String)>,
}

type Out = mpsc::Sender<Result<ExecOutput, Status>>;

async fn send(tx: &Out, output: exec_output::Output) -> bool {
    tx.send(Ok(ExecOutput {
        output: Some(output),
    }))
    .await
    .is_ok()
}

/// Where a process's output goes: the stream that started it, or a background record.
#[derive(Clone)]
pub enum Sink {
    Stream(Out),
    Background(Arc<Background>),
}

impl Sink {
    /// Delivers one event; false when nobody will read further output.
    async fn emit(&self, output: exec_output::Output) -> bool {
        match self {
            Sink::Stream(tx) => send(tx, output).await,
            Sink::Background(bg) => {
                bg.emit(output);
                true
            }
        }
    }
}

/// Serves one `Exec` stream. In the foreground it lasts until the process has exited and been
/// reported; with `detach` it ends after `started` and the process runs on as a background
/// process.
pub async fn run(ctx: Arc<ExecContext>, mut input: Streaming<ExecInput>, tx: Out) {
    let start = match input.message().await {
        Ok(Some(ExecInput {
            input: Some(exec_input::Input::Start(start)),
        })) => start,
        _ => {
            let _ = tx
                .send(Err(Status::invalid_argument(
                    "the first message of an Exec stream must be `start`",
                )))
                .await;
            return;
        }
    };
    let serial = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let spec = match spawn_spec(&ctx.identity, &start, serial) {
        Ok(spec) => spec,
        Err(message) => {
            let _ = tx.send(Err(Status::invalid_argument(message))).await;
            return;
        }
    };
    let tag = if start.detach && start.tag.is_empty() {
        format!("bg-{}", ctx.next_id.fetch_add(1, Ordering::Relaxed))
    } else {
        start.tag.clone()
    };
    if start.detach && ctx.background.busy(&tag) {
        let _ = tx
            .send(Err(Status::already_exists(format!(
                "a background process tagged {tag:?} is still running"
            ))))
            .await;
        return;
    }
    let spawned = match spawn(&ctx.reaper, &spec) {
        Ok(s) => s,
        Err(f) => {
            send(
                &tx,
                exec_output::Output::StartFailed(StartFailed {
                    exit_code: f.exit_code,
                    errno: f.errno,
                    message: f.message,
                }),
            )
            .await;
            return;
        }
    };
    send(
        &tx,
        exec_output::Output::Started(Started {
            pid: u32::try_from(spawned.pid).unwrap_or(0),
            tag: tag.clone(),
        }),
    )
    .await;
    let timeout = (start.timeout_ms > 0).then(|| Duration::from_millis(start.timeout_ms));
    if start.detach {
        let mut spawned = spawned;
        let stdin = spawned.stdin.take().and_then(|fd| {
            set_nonblocking(&fd);
            tokio::net::unix::pipe::Sender::from_file_unchecked(std::fs::File::from(fd)).ok()
        });
        match ctx.background.add(&tag, spawned.pid, start.argv.clone()) {
            Ok(bg) => {
                if let Some(stdin) = stdin {
                    bg.keep_stdin(stdin).await;
                }
                tokio::spawn(supervise(
                    spawned,
                    spec.marker,
                    timeout,
                    Sink::Background(bg),
                    None,
                ));
            }
            Err(message) => {
                kill_tree(spawned.pid, &spec.marker).await;
                let _ = tx.send(Err(Status::already_exists(message))).await;
            }
        }
        return;
    }
    supervise(spawned, spec.marker, timeout, Sink::Stream(tx), Some(input)).await;
}

/// Pumps a started process's output to `sink`, applies input (when there is a stream to read
/// it from), enforces the timeout on the whole tree, and reports exactly one exit, after the
/// output.
async fn supervise(
    mut spawned: Spawned,
    marker: String,
    timeout: Option<Duration>,
    sink: Sink,
    input: Option<Streaming<ExecInput>>,
) {
    let pid = spawned.pid;
    let mut pumps = Vec::new();
    let (end_linger, linger_over) = tokio::sync::watch::channel(false);
    let pty_fd = spawned.pty.as_ref().map(AsRawFd::as_raw_fd);
    let pty_writer = match &spawned.pty {
        Some(master) => master.try_clone().ok(),
        None => None,
    };
    if let Some(master) = spawned.pty.take() {
        pumps.push(tokio::spawn(pump(
            master,
            sink.clone(),
            true,
            true,
            linger_over.clone(),
        )));
    }
    if let Some(out) = spawned.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            sink.clone(),
            true,
            false,
            linger_over.clone(),
        )));
    }
    if let Some(err) = spawned.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            sink.clone(),
            false,
            false,
            linger_over,
        )));
    }
    let stdin_fd = spawned.stdin.take().or(pty_writer);
    let input_task = input.map(|input| tokio::spawn(feed(input, stdin_fd, pty_fd, pid)));

    let mut exit_rx = spawned.exit;
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    // A caller that went away (its CLI killed, its connection cut) takes its process with
    // it: nothing would read the output or learn the exit. Background processes have no
    // caller to lose.
    let caller_gone = async {
        match &sink {
            Sink::Stream(tx) => tx.closed().await,
            Sink::Background(_) => std::future::pending().await,
        }
    };
    let (exit, timed_out) = tokio::select! {
        exit = &mut exit_rx => (exit.unwrap_or(Exit::Signal(libc::SIGKILL)), false),
        () = deadline => {
            kill_tree(pid, &marker).await;
            (exit_rx.await.unwrap_or(Exit::Signal(libc::SIGKILL)), true)
        }
        () = caller_gone => {
            kill_tree(pid, &marker).await;
            (exit_rx.await.unwrap_or(Exit::Signal(libc::SIGKILL)), false)
        }
    };
    if timed_out {
        // Anything that escaped is dead by now; let the pumps reach EOF.
        kill_tree(pid, &marker).await;
    }
    // Descendants may still hold the output open after the process itself exited: wait a
    // moment for them, then take what the pipes already hold and stop.
    let mut pumped = std::pin::pin!(futures_join(pumps));
    if tokio::time::timeout(LINGER, &mut pumped).await.is_err() {
        let _ = end_linger.send(true);
        pumped.await;
    }
    if let Some(task) = input_task {
        task.abort();
    }
    let (code, signal) = match exit {
        Exit::Code(c) => (c, 0),
        Exit::Signal(s) => (128 + s, s),
    };
    sink.emit(exec_output::Output::Exited(Exited {
        code: if timed_out { 124 } else { code },
        signal,
        timed_out,
    }))
    .await;
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

/// What `start` asks to run, as `id`'s process; `serial` makes its exec marker unique.
pub fn spawn_spec(id: &Identity, start: &ExecStart, serial: u64) -> Result<SpawnSpec, String> {
    let (uid, gid) = if start.user.is_empty() {
        (id.uid, id.gid)
    } else {
        parse_user(&start.user)?
    };
    let mut env: BTreeMap<String, String> = id.base_env.clone();
    env.extend(start.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let tty = start.tty.then(|| {
        let size = start.size.unwrap_or_default();
        (
            u16::try_from(size.rows).unwrap_or(24).max(1),
            u16::try_from(size.cols).unwrap_or(80).max(1),
        )
    });
    if tty.is_some() {
        env.entry("TERM".to_string())
            .or_insert_with(|| "xterm".to_string());
    }
    Ok(SpawnSpec {
        argv: start.argv.clone(),
        env,
        cwd: if start.cwd.is_empty() {
            id.workdir.clone()
        } else {
            start.cwd.clone()
        },
        uid,
        gid,
        tty,
        stdin: start.stdin || start.tty,
        marker: format!("{}-{serial}", std::process::id()),
    })
}

/// Copies a pipe or PTY master to the stream until EOF (EIO on a PTY means the slave closed).
async fn pump(
    fd: OwnedFd,
    sink: Sink,
    stdout: bool,
    pty: bool,
    mut linger_over: tokio::sync::watch::Receiver<bool>,
) {
    set_nonblocking(&fd);
    let file = std::fs::File::from(fd);
    let mut reader = match tokio::net::unix::pipe::Receiver::from_file_unchecked(file) {
        Ok(r) => r,
        Err(_) => return,
    };
    let wrap = |data| {
        if stdout {
            exec_output::Output::Stdout(data)
        } else {
            exec_output::Output::Stderr(data)
        }
    };
    // Each chunk is read straight into the buffer that is sent: no copy on the way out.
    let mut buf = bytes::BytesMut::with_capacity(CHUNK);
    loop {
        buf.reserve(CHUNK);
        let read = tokio::select! {
            biased;
            read = reader.read_buf(&mut buf) => read,
            _ = linger_over.wait_for(|over| *over) => break,
        };
        match read {
            Ok(0) => return,
            Ok(_) => {
                if !sink.emit(wrap(buf.split().freeze())).await {
                    return;
                }
            }
            Err(e) if pty && e.raw_os_error() == Some(libc::EIO) => return,
            Err(_) => return,
        }
    }
    // The linger is over: send what the pipe holds now, without waiting for more. Read the
    // descriptor itself: tokio answers "would block" for a pipe whose readiness it has not
    // yet seen, however much the pipe holds.
    for _ in 0..DRAIN_CHUNKS {
        buf.clear();
        buf.resize(CHUNK, 0);
        match nix::unistd::read(&reader, &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buf.truncate(n);
                if !sink.emit(wrap(buf.split().freeze())).await {
                    return;
                }
            }
        }
    }
}

/// Applies the client's input messages: stdin bytes, close, resize, signals.
async fn feed(mut input: Streaming<ExecInput>, stdin: Option<OwnedFd>, pty: Option<i32>, pid: i32) {
    let mut writer = stdin.and_then(|fd| {
        set_nonblocking(&fd);
        tokio::net::unix::pipe::Sender::from_file_unchecked(std::fs::File::from(fd)).ok()
    });
    while let Ok(Some(msg)) = input.message().await {
        match msg.input {
            Some(exec_input::Input::Stdin(data)) => {
                if let Some(w) = writer.as_mut() {
                    if w.write_all(&data).await.is_err() {
                        writer = None;
                    }
                }
            }
            Some(exec_input::Input::CloseStdin(true)) => {
                if pty.is_some() {
                    // A terminal has no half-close: send EOF (Ctrl-D) instead.
                    if let Some(w) = writer.as_mut() {
                        let _ = w.write_all(&[4]).await;
                    }
                } else {
                    writer = None;
                }
            }
            Some(exec_input::Input::Resize(size)) => {
                if let Some(fd) = pty {
                    resize(fd, size.rows, size.cols);
                }
            }
            Some(exec_input::Input::Signal(sig)) => {
                // SAFETY: kill(2) on the process group we created; no memory is touched.
                unsafe {
                    libc::kill(-pid, sig);
                }
            }
            _ => {}
        }
    }
}

/// tokio's pipe wrappers need non-blocking descriptors.
fn set_nonblocking(fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own; only its status flags change.
    unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Sets a PTY's window size; the foreground process group gets SIGWINCH.
pub fn resize(master: i32, rows: u32, cols: u32) {
    let size = libc::winsize {
        ws_row: u16::try_from(rows).unwrap_or(u16::MAX),
        ws_col: u16::try_from(cols).unwrap_or(u16::MAX),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a valid winsize from a pointer that outlives the call.
    unsafe {
        libc::ioctl(master, libc::TIOCSWINSZ, &size);
    }
}

/// Kills an exec's whole tree: its process group, its session, and every process carrying its
/// marker (those that started their own session or were re-parented to PID 1).
pub async fn kill_tree(pid: i32, marker: &str) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory is touched.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let marker = format!("{EXEC_MARKER}={marker}");
    let _ = tokio::task::spawn_blocking(move || {
        for victim in find_tree(pid, &marker) {
            // SAFETY: as above, for single pids found in /proc.
            unsafe {
                libc::kill(victim, libc::SIGKILL);
            }
        }
    })
    .await;
}

/// Pids in the session of `sid`, or whose environment has `marker`.
fn find_tree(sid: i32, marker: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let path = entry.path();
        let in_session = std::fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_whitespace().nth(3)?.parse::<i32>().ok()
            })
            == Some(sid);
        if in_session || environ_has(&path, marker) {
            found.push(pid);
        }
    }
    found
}

/// Reads /proc/PID/environ as the process's owner (fsuid and fsgid), which the kernel requires
/// of a reader without CAP_SYS_PTRACE.
fn environ_has(proc_dir: &std::path::Path, marker: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(proc_dir) else {
        return false;
    };
    // SAFETY: setfsgid/setfsuid only change this thread's file-system ids; restored below.
    let (old_gid, old_uid) = unsafe { (libc::setfsgid(meta.gid()), libc::setfsuid(meta.uid())) };
    let environ = std::fs::read(proc_dir.join("environ"));
    // SAFETY: restores this thread's previous file-system ids (uid first: it holds the caps).
    unsafe {
        libc::setfsuid(u32::try_from(old_uid).unwrap_or(0));
        libc::setfsgid(u32::try_from(old_gid).unwrap_or(0));
    }
    environ.is_ok_and(|bytes| bytes.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
}

/// Copies the main process's output to the agent's own stdout/stderr (the container log).
pub async fn copy_to_log(fd: OwnedFd, to_stderr: bool) {
    set_nonblocking(&fd);
    let Ok(mut reader) =
        tokio::net::unix::pipe::Receiver::from_file_unchecked(std::fs::File::from(fd))
    else {
        return;
    };
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = reader.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let written = if to_stderr {
            tokio::io::stderr().write_all(&buf[..n]).await
        } else {
            tokio::io::stdout().write_all(&buf[..n]).await
        };
        if written.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Once the linger is over, what a pipe already holds is still sent, and the pump stops
    /// though a descendant holds the pipe open: a busy machine loses no output that was
    /// written before the exit, and never waits forever for more.
    #[tokio::test]
    async fn after_the_linger_the_pipe_is_drained_not_dropped() {
        let (read, write) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&write, b"written before the exit\n").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let (end_linger, linger_over) = tokio::sync::watch::channel(false);
        end_linger.send(true).unwrap();
        tokio::time::timeout(
            Duration::from_secs(10),
            pump(read, Sink::Stream(tx), true, false, linger_over),
        )
        .await
        .expect("the pump stops though the pipe is still open");
        let mut sent = Vec::new();
        while let Ok(Ok(ExecOutput {
            output: Some(exec_output::Output::Stdout(data)),
        })) = rx.try_recv()
        {
            sent.extend_from_slice(&data);
        }
        assert_eq!(sent, b"written before the exit\n");
        drop(write);
    }
}
