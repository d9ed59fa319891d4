//! PID 1's reaper: the only place that calls `waitpid`.
//!
//! Exits are published to whoever registered for a pid. Spawning and reaping take the same
//! lock, and the spawner registers before it lets go, so an exit can never arrive before its
//! subscriber (containerd-shim's rule). Exits nobody registered for — orphaned grandchildren
//! re-parented to PID 1 — are reaped and dropped, so no zombie is ever left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
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
}

/// Shared handle to the reaper.
#[derive(Clone, Default)]
pub struct Reaper {
    registry: Arc<Mutex<Registry>>,
}

impl Reaper {
    /// Holds the spawn lock: spawn while holding it, then [`Spawning::register`] the pid.
    pub fn lock(&self) -> Spawning<'_> {
        Spawning {
            guard: self
                .registry
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }

    /// Starts the reaping task (call once, from PID 1).
    pub fn start(&self) -> std::io::Result<()> {
        let mut sigchld = signal(SignalKind::child())?;
        let registry = self.registry.clone();
        tokio::spawn(async move {
            loop {
                reap_all(&registry);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(())
    }
}

/// The spawn lock, held while a child is created.
pub struct Spawning<'a> {
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

fn reap_all(registry: &Mutex<Registry>) {
    let mut reg = registry.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let exit = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
            Ok(WaitStatus::StillAlive) | Err(_) => break,
            Ok(_) => continue,
        };
        if let Some(tx) = reg.waiters.remove(&exit.0.as_raw()) {
            let _ = tx.send(exit.1);
        }
    }
}
