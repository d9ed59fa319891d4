//! The audit log and activity times of API calls.
//!
//! A call's audit row is written before its answer leaves the server ([`Journal::record`]
//! is synchronous: one indexed insert in WAL mode, no fsync), so an answer a client received
//! is in the log even if the server is SIGKILLed right after. The activity time of its
//! sandbox — which only ever delays an idle timeout — is written by one thread of its own, so
//! no request waits on it; what that thread had not written when the server was SIGKILLed is
//! at most the last moments' activity.

use std::sync::mpsc;
use std::sync::Arc;

use crate::db::Db;

/// One answered API call.
pub struct Call {
    pub key: String,
    pub action: String,
    pub sandbox: Option<String>,
    pub status: u16,
    pub outcome: &'static str,
    /// Whether the call counts as activity of its sandbox.
    pub activity: bool,
}

/// The writer's end for the request path.
#[derive(Clone)]
pub struct Journal {
    db: Arc<Db>,
    /// Sandboxes used just now (an id or a name), for the activity writer.
    used: mpsc::Sender<String>,
}

impl Journal {
    /// Starts the activity writer over `db`; it ends when every `Journal` is dropped.
    pub fn start(db: Arc<Db>) -> Self {
        let (used, rx) = mpsc::channel::<String>();
        let writer = db.clone();
        let spawned = std::thread::Builder::new()
            .name("berth-journal".into())
            .spawn(move || {
                for sandbox in rx {
                    touch(&writer, &sandbox);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the activity writer: {e}; idle timeouts see only attached streams and running processes");
        }
        Self { db, used }
    }

    /// Writes a call's audit row now, and queues its sandbox's activity time.
    pub fn record(&self, call: Call) {
        if let Err(e) = self.db.audit(
            &call.key,
            &call.action,
            call.sandbox.as_deref(),
            call.status,
            call.outcome,
        ) {
            tracing::warn!("could not write the audit log: {e}");
        }
        if let (true, Some(sandbox)) = (call.activity, call.sandbox) {
            let _ = self.used.send(sandbox);
        }
    }

    /// Queues "sandbox `id` was used now".
    pub fn touch(&self, id: &str) {
        let _ = self.used.send(id.to_string());
    }
}

/// A used sandbox's activity time: by id (one indexed update), a name resolved first.
fn touch(db: &Db, sandbox: &str) {
    if !db.touch(sandbox).unwrap_or(true) {
        if let Ok(record) = berth_sandbox::store::find(db, sandbox) {
            let _ = db.touch(&record.id);
        }
    }
}
