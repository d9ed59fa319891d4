//! Starting one workload process: its own session and process group, the sandbox user with
//! no capabilities left (bounding set emptied before `setuid`), an OOM score that makes it the
//! kernel's choice over the agent, and pipes or a pseudo-terminal for its stdio.
//!
//! The child is created the way `posix_spawn` does it, with `clone(CLONE_VM | CLONE_VFORK)`:
//! it borrows the agent's address space until `execve`, so nothing is copied. `fork` of the
//! multi-threaded agent costs about a quarter of a millisecond more per exec on a small VM,
//! which is most of berth's lead over `docker exec` at the low end. The price is discipline in
//! the child: it runs on a stack the parent allocated, touches only data the parent prepared,
//! never allocates or takes a lock, and changes its credentials with raw system calls (glibc's
//! `setuid` would try to change every thread of the shared address space: the agent's own).

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow};

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
    fn new(exit_code: i32, errno: i32, message: String) -> Self {
        Self {
            exit_code,
            errno,
            message,
        }
    }

    fn from_io(argv0: &str, e: &std::io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(0);
        let (exit_code, what) = match errno {
            libc::ENOENT => (127, "not found (no such program in the image's PATH)"),
            libc::EACCES | libc::EPERM => (126, "permission denied (not executable by the user)"),
            libc::ENOEXEC => (126, "not an executable format"),
            _ => (126, "cannot start"),
        };
        let message = match errno {
            libc::ENOENT | libc::EACCES | libc::EPERM | libc::ENOEXEC => format!("{argv0}: {what}"),
            _ => format!("{argv0}: {what}: {}", reason(e)),
        };
        Self {
            exit_code,
            errno,
            message,
        }
    }
}

use berth_protocol::io_reason as reason;

/// Where a program is looked for when the environment has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The child's stack: it only makes system calls, so a small one is plenty.
const CHILD_STACK: usize = 64 * 1024;

/// Starts a process as described; the exit is registered with the reaper before it can happen.
pub fn spawn(reaper: &Reaper, spec: &SpawnSpec) -> Result<Spawned, StartFailure> {
    let Some(argv0) = spec.argv.first() else {
        return Err(StartFailure::new(126, libc::EINVAL, "empty command".into()));
    };
    let image = ExecImage::new(spec)?;
    let io_error = |e: nix::Error| StartFailure::from_io(argv0, &std::io::Error::from(e));

    // The child's ends are dropped here once it has exec'd; the parent keeps the others.
    let (child_stdio, parent) = match spec.tty {
        Some((rows, cols)) => {
            let size = nix::pty::Winsize {
                ws_row: rows.max(1),
                ws_col: cols.max(1),
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            let pty = nix::pty::openpty(Some(&size), None).map_err(io_error)?;
            // Never let one workload inherit another's terminal.
            set_cloexec(&pty.master).map_err(io_error)?;
            set_cloexec(&pty.slave).map_err(io_error)?;
            let fd = pty.slave.as_raw_fd();
            (
                ChildStdio {
                    fds: [fd, fd, fd],
                    tty: true,
                    _keep: vec![pty.slave],
                },
                ParentEnds {
                    pty: Some(pty.master),
                    ..ParentEnds::default()
                },
            )
        }
        None => {
            let cloexec = OFlag::O_CLOEXEC;
            let (stdin_child, stdin_parent) = if spec.stdin {
                let (r, w) = nix::unistd::pipe2(cloexec).map_err(io_error)?;
                (r, Some(w))
            } else {
                let null = nix::fcntl::open(
                    "/dev/null",
                    OFlag::O_RDWR | cloexec,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(io_error)?;
                (null, None)
            };
            let (out_r, out_w) = nix::unistd::pipe2(cloexec).map_err(io_error)?;
            let (err_r, err_w) = nix::unistd::pipe2(cloexec).map_err(io_error)?;
            (
                ChildStdio {
                    fds: [
                        stdin_child.as_raw_fd(),
                        out_w.as_raw_fd(),
                        err_w.as_raw_fd(),
                    ],
                    tty: false,
                    _keep: vec![stdin_child, out_w, err_w],
                },
                ParentEnds {
                    stdin: stdin_parent,
                    stdout: Some(out_r),
                    stderr: Some(err_r),
                    pty: None,
                },
            )
        }
    };

    let child = Child {
        image: &image,
        stdio: &child_stdio,
        uid: spec.uid,
        gid: spec.gid,
        failed_at: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // Signals stay blocked in this thread while the child shares it, so no handler of the
    // agent's can run on the child's side; the child clears its mask before exec.
    let mut saved = SigSet::empty();
    let _ = nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut saved),
    );
    let mut lock = reaper.lock();
    // SAFETY: CLONE_VFORK suspends this thread until the child has exec'd or exited, so
    // `child`, `stack` and everything they point to outlive the child's use of them. The
    // child only makes system calls on that prepared data (see `Child::run`).
    let cloned = unsafe {
        nix::sched::clone(
            Box::new(|| child.run()),
            &mut stack,
            CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK,
            Some(libc::SIGCHLD),
        )
    };
    let exit = match cloned {
        Ok(pid) if child.errno.load(Ordering::SeqCst) == 0 => {
            Ok((pid, lock.register(pid.as_raw())))
        }
        Ok(_) => Err(child.failure(argv0, &spec.cwd)),
        Err(e) => Err(io_error(e)),
    };
    drop(lock);
    let _ = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&saved), None);
    drop(child_stdio);
    let (pid, exit) = exit?;
    Ok(Spawned {
        pid: pid.as_raw(),
        exit,
        stdin: parent.stdin,
        stdout: parent.stdout,
        stderr: parent.stderr,
        pty: parent.pty,
    })
}

/// The parent's ends of the child's stdio.
#[derive(Default)]
struct ParentEnds {
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    pty: Option<OwnedFd>,
}

/// The descriptors the child makes its 0, 1 and 2 (kept open until it has exec'd).
struct ChildStdio {
    fds: [RawFd; 3],
    tty: bool,
    _keep: Vec<OwnedFd>,
}

/// `execve`'s arguments, built before the child exists.
pub struct ExecImage {
    /// Paths to try in order: the program itself if it has a `/`, else each `PATH` entry.
    candidates: Vec<CString>,
    cwd: CString,
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ExecImage {
    /// Checks `spec` and builds the C strings `execve` takes; fails (never panics) on an empty
    /// argv or a NUL byte.
    pub fn new(spec: &SpawnSpec) -> Result<Self, StartFailure> {
        let nul = |what: &str| {
            StartFailure::new(
                126,
                libc::EINVAL,
                format!("{what} contains a NUL byte, which no program can receive"),
            )
        };
        let cstring = |s: String, what: &str| CString::new(s).map_err(|_| nul(what));
        let Some(program) = spec.argv.first() else {
            return Err(StartFailure::new(
                127,
                libc::ENOENT,
                "no program given (the argv is empty): give a command, e.g. [\"ls\", \"-l\"]"
                    .to_string(),
            ));
        };
        let candidates = if program.contains('/') {
            vec![cstring(program.clone(), "the program name")?]
        } else {
            let path = spec.env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
            path.split(':')
                .map(|dir| {
                    let dir = if dir.is_empty() { "." } else { dir };
                    cstring(format!("{dir}/{program}"), "the program name")
                })
                .collect::<Result<_, _>>()?
        };
        let argv: Vec<CString> = spec
            .argv
            .iter()
            .map(|a| cstring(a.clone(), "an argument"))
            .collect::<Result<_, _>>()?;
        let envp: Vec<CString> = spec
            .env
            .iter()
            .filter(|(k, _)| k.as_str() != EXEC_MARKER)
            .map(|(k, v)| cstring(format!("{k}={v}"), "an environment variable"))
            .chain([cstring(
                format!("{EXEC_MARKER}={}", spec.marker),
                "the exec marker",
            )])
            .collect::<Result<_, _>>()?;
        let pointers = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Ok(Self {
            candidates,
            cwd: cstring(spec.cwd.clone(), "the working directory")?,
            argv: pointers(&argv),
            envp: pointers(&envp),
            _argv: argv,
            _envp: envp,
        })
    }
}

/// What the child needs, and where it reports why it could not exec.
struct Child<'a> {
    image: &'a ExecImage,
    stdio: &'a ChildStdio,
    uid: u32,
    gid: u32,
    /// The [`Step`] that failed (shared memory: the parent reads it after the child is gone).
    failed_at: AtomicI32,
    errno: AtomicI32,
}

/// The child's steps, in order, for error messages.
#[derive(Clone, Copy)]
#[repr(i32)]
enum Step {
    Stdio = 1,
    Session,
    Terminal,
    Cwd,
    Identity,
    Exec,
}

impl Child<'_> {
    /// Runs in the child: set up and exec; returns only on failure (its exit code).
    fn run(&self) -> isize {
        let (step, errno) = match self.prepare() {
            Ok(()) => (Step::Exec, self.exec()),
            Err(failure) => failure,
        };
        self.errno.store(errno.max(1), Ordering::SeqCst);
        self.failed_at.store(step as i32, Ordering::SeqCst);
        // SAFETY: ends the child at once, without running anything of the parent's.
        unsafe { libc::_exit(127) }
    }

    fn prepare(&self) -> Result<(), (Step, i32)> {
        let check = |step: Step, rc: libc::c_long| {
            if rc < 0 {
                Err((step, errno()))
            } else {
                Ok(())
            }
        };
        // SAFETY: system calls on the child's own process with arguments the parent prepared
        // (valid descriptors, NUL-terminated strings, constants); nothing allocates or locks.
        unsafe {
            reset_signals();
            for (target, &fd) in self.stdio.fds.iter().enumerate() {
                let target = target as RawFd;
                if fd == target {
                    check(Step::Stdio, libc::fcntl(fd, libc::F_SETFD, 0).into())?;
                } else {
                    check(Step::Stdio, libc::dup2(fd, target).into())?;
                }
            }
            check(Step::Session, libc::setsid().into())?;
            if self.stdio.tty {
                check(Step::Terminal, libc::ioctl(0, libc::TIOCSCTTY, 0).into())?;
            }
            check(Step::Cwd, libc::chdir(self.image.cwd.as_ptr()).into())?;
            // Workloads are the OOM killer's first choice, never the agent. Raising the score
            // needs no privilege (lowering the agent's would need CAP_SYS_RESOURCE, which some
            // engines cannot grant).
            let fd = libc::open(
                c"/proc/self/oom_score_adj".as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
            );
            if fd >= 0 {
                libc::write(
                    fd,
                    WORKLOAD_OOM_SCORE_ADJ.as_ptr().cast(),
                    WORKLOAD_OOM_SCORE_ADJ.len(),
                );
                libc::close(fd);
            }
            let groups = [self.gid];
            check(
                Step::Identity,
                libc::syscall(libc::SYS_setgroups, 1, groups.as_ptr()),
            )?;
            check(Step::Identity, libc::syscall(libc::SYS_setgid, self.gid))?;
            check(Step::Identity, libc::syscall(libc::SYS_setuid, self.uid))?;
        }
        Ok(())
    }

    /// Finds the program like `execvp` and execs it; returns the errno that best explains
    /// failure. Candidates are probed with `access` (as the sandbox user, already in place),
    /// which is much cheaper than a failed `execve`.
    fn exec(&self) -> i32 {
        let mut best = libc::ENOENT;
        let last = self.image.candidates.len().saturating_sub(1);
        for (i, path) in self.image.candidates.iter().enumerate() {
            // SAFETY: NUL-terminated path and NULL-terminated pointer arrays owned by the
            // parent, alive until this child execs or exits.
            unsafe {
                // The last candidate is always tried, so its exec error is the one reported.
                if i < last && libc::access(path.as_ptr(), libc::X_OK) < 0 {
                    if errno() == libc::EACCES {
                        best = libc::EACCES;
                    }
                    continue;
                }
                libc::execve(
                    path.as_ptr(),
                    self.image.argv.as_ptr(),
                    self.image.envp.as_ptr(),
                );
            }
            match errno() {
                libc::ENOENT | libc::ENOTDIR => {}
                libc::EACCES => best = libc::EACCES,
                other => return other,
            }
        }
        best
    }

    /// Why the child did not exec, as the parent reports it.
    fn failure(&self, argv0: &str, cwd: &str) -> StartFailure {
        let errno = self.errno.load(Ordering::SeqCst);
        let error = std::io::Error::from_raw_os_error(errno);
        let step = self.failed_at.load(Ordering::SeqCst);
        if step == Step::Exec as i32 {
            return StartFailure::from_io(argv0, &error);
        }
        let what = match step {
            s if s == Step::Stdio as i32 => "setting up stdio".to_string(),
            s if s == Step::Session as i32 => "starting a session".to_string(),
            s if s == Step::Terminal as i32 => "taking the terminal".to_string(),
            s if s == Step::Cwd as i32 => format!("entering working directory {cwd}"),
            _ => "dropping to the sandbox user".to_string(),
        };
        let hint = if step == Step::Cwd as i32 {
            " (give an existing absolute directory, e.g. --cwd /workspace)"
        } else {
            ""
        };
        StartFailure::new(
            126,
            errno,
            format!("{argv0}: cannot start: {what}: {}{hint}", reason(&error)),
        )
    }
}

/// The calling thread's errno (in the child: the child's, as it has the parent's TLS but the
/// parent is suspended).
fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Gives the child default signal dispositions for everything the agent handles or ignores,
/// then an empty mask: a workload starts as if from a clean `execve`. The agent only handles
/// standard signals (1–31), so real-time ones need no look.
///
/// # Safety
/// Only for the cloned child before exec: it changes the calling process's signal state.
unsafe fn reset_signals() {
    // SAFETY: sigaction/rt_sigprocmask on the child's own (unshared) signal table.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for sig in 1..32 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(sig, &default, std::ptr::null_mut());
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty,
            std::ptr::null_mut::<libc::sigset_t>(),
            std::mem::size_of::<libc::c_ulong>(),
        );
    }
}

fn set_cloexec(fd: &OwnedFd) -> nix::Result<libc::c_int> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
}

/// Empties the agent's capability bounding set, once at start, before any other thread
/// exists (the set is per thread): every process it starts
/// inherits the empty set, so no capability can come back through a setuid or file-capability
/// binary, even for uid 0. The agent keeps the capabilities it already holds (it still needs
/// them to change users and to own uploaded files).
pub fn empty_bounding_set() -> Result<(), String> {
    for cap in 0..64 {
        // SAFETY: prctl on the agent's own credentials, constant arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } < 0 {
            match errno() {
                // Past the last capability this kernel knows: done.
                libc::EINVAL => return Ok(()),
                e => {
                    return Err(format!(
                        "cannot empty the capability bounding set: {}",
                        std::io::Error::from_raw_os_error(e)
                    ))
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str], env: &[(&str, &str)]) -> SpawnSpec {
        SpawnSpec {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: "/".into(),
            uid: 1000,
            gid: 1000,
            tty: None,
            stdin: false,
            marker: "m-1".into(),
        }
    }

    fn strings(v: &[CString]) -> Vec<&str> {
        v.iter().map(|c| c.to_str().unwrap()).collect()
    }

    #[test]
    fn a_bare_name_is_looked_up_in_the_processes_path() {
        let image = ExecImage::new(&spec(&["tool", "x"], &[("PATH", "/a::/b")])).unwrap();
        assert_eq!(strings(&image.candidates), ["/a/tool", "./tool", "/b/tool"]);
        let image = ExecImage::new(&spec(&["./tool"], &[("PATH", "/a")])).unwrap();
        assert_eq!(strings(&image.candidates), ["./tool"]);
        let image = ExecImage::new(&spec(&["tool"], &[])).unwrap();
        assert_eq!(image.candidates.len(), DEFAULT_PATH.split(':').count());
    }

    #[test]
    fn argv_and_env_are_null_terminated_and_carry_the_marker_once() {
        let image = ExecImage::new(&spec(
            &["sh", "-c", "true"],
            &[("A", "1"), (EXEC_MARKER, "forged")],
        ))
        .unwrap();
        assert_eq!(image.argv.len(), 4);
        assert!(image.argv[3].is_null());
        assert_eq!(strings(&image._envp), ["A=1", "BERTH_EXEC_ID=m-1"]);
        assert!(image.envp.last().unwrap().is_null());
    }

    #[test]
    fn a_nul_byte_is_a_start_failure_not_a_panic() {
        let failure = ExecImage::new(&spec(&["echo", "a\0b"], &[])).err().unwrap();
        assert_eq!((failure.exit_code, failure.errno), (126, libc::EINVAL));
        assert!(failure.message.contains("NUL"), "{}", failure.message);
    }

    #[test]
    fn an_empty_argv_is_a_start_failure_not_a_panic() {
        let failure = ExecImage::new(&spec(&[], &[])).err().unwrap();
        assert_eq!(failure.exit_code, 127);
        assert!(
            failure.message.contains("argv is empty"),
            "{}",
            failure.message
        );
    }
}
