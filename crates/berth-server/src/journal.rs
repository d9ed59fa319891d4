//! The audit rows and activity times of API calls, written by one thread of their own so that
//! no request waits on SQLite for them.
//!
//! Rows are written in the order the calls were answered. `GET /v1/audit` flushes first, so
//! it sees every call answered before it. What is lost when the server is SIGKILLed is at most
//! the calls of its last moments (the channel's contents); graceful shutdown drains it.

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

enum Job {
    Call(Call),
    /// A sandbox was used now (a stream attached to it ended).
    Touch(String),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The writer's end for the request path.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Job>,
}

impl Journal {
    /// Starts the writer thread over `db`; it ends when every `Journal` is dropped.
    pub fn start(db: Arc<Db>) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("berth-journal".into())
            .spawn(move || {
                for job in rx {
                    match job {
                        Job::Call(call) => write(&db, &call),
                        Job::Touch(id) => {
                            let _ = db.touch(&id);
                        }
                        Job::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the audit writer: {e}; API calls go unaudited");
        }
        Self { tx }
    }

    /// Queues a call for the log (never blocks the request).
    pub fn record(&self, call: Call) {
        let _ = self.tx.send(Job::Call(call));
    }

    /// Queues "sandbox `id` was used now".
    pub fn touch(&self, id: &str) {
        let _ = self.tx.send(Job::Touch(id.to_string()));
    }

    /// Waits until everything queued so far is written.
    pub async fn flush(&self) {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.tx.send(Job::Flush(done)).is_ok() {
            let _ = written.await;
        }
    }
}

fn write(db: &Db, call: &Call) {
    if let Err(e) = db.audit(
        &call.key,
        &call.action,
        call.sandbox.as_deref(),
        call.status,
        call.outcome,
    ) {
        tracing::warn!("could not write the audit log: {e}");
    }
    if !call.activity {
        return;
    }
    if let Some(s) = &call.sandbox {
        // By id (one indexed update); a name is resolved first.
        if !db.touch(s).unwrap_or(true) {
            if let Ok(record) = berth_sandbox::store::find(db, s) {
                let _ = db.touch(&record.id);
            }
        }
    }
}
