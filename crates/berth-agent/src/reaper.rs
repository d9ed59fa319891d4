//! PID 1's reaper: the only place that calls `waitpid`.
//!
//! Exits are published to whoever registered for a pid. Spawning and reaping take the same
//! lock, and the spawner registers before it lets go, so an exit can never arrive before its
//! subscriber (containerd-shim's rule). Exits nobody registered for — orphaned grandchildren
//! re-parented to PID 1 — are reaped and dropped, so no zombie is ever left.
//!
//! The reaper is one dedicated thread blocked in `waitid`, not a SIGCHLD handler: the kernel
//! wakes it the moment a child exits, with no signal, self-pipe or task hop in between, which
//! is a measurable part of a short exec's round trip. It looks at an exited child without
//! reaping it (`WNOWAIT`), takes the lock, and only then reaps: while the lock is held the pid
//! cannot be reused, so an exit always reaches the subscriber of that very process.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell convention: the exit code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

#[derive(Default)]
pub struct Registry {
    waiters: HashMap<i32, oneshot::Sender<Exit>>,
    /// Set by a spawn; the reaper, finding no children at all, sleeps until it is.
    spawned: bool,
}

#[derive(Default)]
struct Shared {
    registry: Mutex<Registry>,
    children: Condvar,
}

/// Shared handle to the reaper.
#[derive(Clone, Default)]
pub struct Reaper {
    shared: Arc<Shared>,
}

impl Reaper {
    /// Holds the spawn lock: spawn while holding it, then [`Spawning::register`] the pid.
    pub fn lock(&self) -> Spawning<'_> {
        Spawning {
            shared: &self.shared,
            guard: self.shared.lock(),
        }
    }

    /// Starts the reaping thread (call once, from PID 1).
    pub fn start(&self) -> std::io::Result<()> {
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || shared.reap_forever())?;
        Ok(())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reap_forever(&self) {
        loop {
            // Blocks until some child has exited, and leaves it a zombie (its pid reserved).
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            let pid = match waitid(Id::All, flags) {
                Ok(status) => status.pid(),
                Err(Errno::EINTR) => continue,
                Err(_) => {
                    // No children at all: sleep until the next spawn.
                    let mut reg = self.lock();
                    while !reg.spawned {
                        reg = self
                            .children
                            .wait(reg)
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                    }
                    reg.spawned = false;
                    continue;
                }
            };
            let Some(pid) = pid else { continue };
            let mut reg = self.lock();
            let exit = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => Exit::Code(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => Exit::Signal(sig as i32),
                _ => continue,
            };
            if let Some(tx) = reg.waiters.remove(&pid.as_raw()) {
                let _ = tx.send(exit);
            }
        }
    }
}

/// The spawn lock, held while a child is created.
pub struct Spawning<'a> {
    shared: &'a Shared,
    guard: MutexGuard<'a, Registry>,
}

impl Spawning<'_> {
    /// Subscribes to `pid`'s exit; the receiver fires exactly once.
    pub fn register(&mut self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        self.guard.waiters.insert(pid, tx);
        rx
    }
}

impl Drop for Spawning<'_> {
    /// Every spawn attempt may have left a child (even one that failed before exec), so the
    /// reaper is woken if it was sleeping for lack of children.
    fn drop(&mut self) {
        self.guard.spawned = true;
        self.shared.children.notify_one();
    }
}
