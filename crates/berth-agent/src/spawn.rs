//! Starting one workload process: its own session and process group, the sandbox user with
//! no capabilities left (bounding set emptied before `setuid`), an OOM score that makes it the
//! kernel's choice over the agent, and pipes or a pseudo-terminal for its stdio.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use tokio::sync::oneshot;

use crate::reaper::{Exit, Reaper};

/// Environment variable that marks every process of one exec (inherited by descendants), so a
/// timeout can find those that left the process group and session.
pub const EXEC_MARKER: &str = "BERTH_EXEC_ID";

/// OOM score of every workload process: far above the agent's, so memory exhaustion inside
/// the sandbox kills workloads and leaves the agent answering.
pub const WORKLOAD_OOM_SCORE_ADJ: &[u8] = b"500";

/// What to start.
pub struct SpawnSpec {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// `Some((rows, cols))` for a pseudo-terminal.
    pub tty: Option<(u16, u16)>,
    /// Pipe stdin (otherwise /dev/null).
    pub stdin: bool,
    /// Value of [`EXEC_MARKER`] for this process tree.
    pub marker: String,
}

/// A started process.
pub struct Spawned {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The PTY master (read: output, write: input) in tty mode.
    pub pty: Option<OwnedFd>,
}

/// Why a process could not start.
#[derive(Debug)]
pub struct StartFailure {
    /// 127 not found, 126 otherwise.
    pub exit_code: i32,
    pub errno: i32,
    pub message: String,
}

impl StartFailure {
    fn from_io(argv0: &str, e: &std::io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(0);
        let (exit_code, what) = match errno {
            libc::ENOENT => (127, "not found"),
            libc::EACCES | libc::EPERM => (126, "permission denied"),
            libc::ENOEXEC => (126, "not an executable format"),
            _ => (126, "cannot start"),
        };
        Self {
            exit_code,
            errno,
            message: format!("{argv0}: {what} ({e})"),
        }
    }
}

/// Starts a process as described; the exit is registered with the reaper before it can happen.
pub fn spawn(reaper: &Reaper, spec: &SpawnSpec) -> Result<Spawned, StartFailure> {
    let Some(argv0) = spec.argv.first() else {
        return Err(StartFailure {
            exit_code: 126,
            errno: libc::EINVAL,
            message: "empty command".to_string(),
        });
    };
    if !std::path::Path::new(&spec.cwd).is_dir() {
        return Err(StartFailure {
            exit_code: 126,
            errno: libc::ENOENT,
            message: format!("working directory {} does not exist", spec.cwd),
        });
    }
    let mut cmd = Command::new(argv0);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(&spec.env)
        .env(EXEC_MARKER, &spec.marker)
        .current_dir(&spec.cwd);

    let mut pty_master = None;
    match spec.tty {
        Some((rows, cols)) => {
            let size = nix::pty::Winsize {
                ws_row: rows.max(1),
                ws_col: cols.max(1),
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&size), None)
                .map_err(|e| StartFailure::from_io(argv0, &std::io::Error::from(e)))?;
            let clone = |fd: &OwnedFd| fd.try_clone().map_err(|e| StartFailure::from_io(argv0, &e));
            cmd.stdin(Stdio::from(clone(&pty.slave)?))
                .stdout(Stdio::from(clone(&pty.slave)?))
                .stderr(Stdio::from(pty.slave));
            pty_master = Some(pty.master);
        }
        None => {
            cmd.stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        }
    }

    let (uid, gid, tty) = (spec.uid, spec.gid, spec.tty.is_some());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (setsid, ioctl, open/write/close, prctl, setgroups, setgid, setuid) on values
    // captured by copy; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || child_setup(uid, gid, tty));
    }

    let mut lock = reaper.lock();
    let child = cmd.spawn().map_err(|e| StartFailure::from_io(argv0, &e))?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    let exit = lock.register(pid);
    drop(lock);

    let mut child = child;
    Ok(Spawned {
        pid,
        exit,
        stdin: child.stdin.take().map(OwnedFd::from),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
        pty: pty_master,
    })
    // `child` is dropped without waiting: the reaper owns waitpid.
}

/// Runs in the child between fork and exec.
fn child_setup(uid: u32, gid: u32, tty: bool) -> std::io::Result<()> {
    let check = |rc: libc::c_int| {
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: plain system calls on the child's own process; arguments are valid constants or
    // copies, and the path is a NUL-terminated literal.
    unsafe {
        check(libc::setsid())?;
        if tty {
            check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
        }
        // Workloads are the OOM killer's first choice, never the agent. Raising the score
        // needs no privilege (lowering the agent's would need CAP_SYS_RESOURCE, which some
        // engines cannot grant).
        let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
        if fd >= 0 {
            libc::write(
                fd,
                WORKLOAD_OOM_SCORE_ADJ.as_ptr().cast(),
                WORKLOAD_OOM_SCORE_ADJ.len(),
            );
            libc::close(fd);
        }
        // Empty the bounding set so no capability can come back, even for uid 0.
        for cap in 0..64 {
            // EINVAL: past the last capability this kernel knows.
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                break;
            }
        }
        let groups = [gid];
        check(libc::setgroups(1, groups.as_ptr()))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
    }
    Ok(())
}
