//! Ctrl-C, SIGTERM and SIGHUP as one future, registered at start-up so a signal that arrives
//! early is not lost: berth then removes what it made instead of dying with it.

use berth_sandbox::run::Interrupt;
use tokio::signal::unix::{signal, SignalKind};

/// Resolves at the first SIGINT, SIGTERM or SIGHUP.
pub fn interrupted() -> std::io::Result<impl std::future::Future<Output = Interrupt>> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => Interrupt { name: "SIGINT", number: libc::SIGINT },
            _ = term.recv() => Interrupt { name: "SIGTERM", number: libc::SIGTERM },
            _ = hup.recv() => Interrupt { name: "SIGHUP", number: libc::SIGHUP },
        }
    })
}
