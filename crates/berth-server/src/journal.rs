//! The audit log and activity times of API calls.
//!
//! A call's audit row is written before its answer leaves the server ([`Journal::record`]
//! is synchronous: one indexed insert in WAL mode, no fsync), so an answer a client received
//! is in the log even if the server is SIGKILLed right after. The activity time of its
//! sandbox — which only ever delays an idle timeout — is written by one thread of its own, so
//! no request waits on it; what that thread had not written when the server was SIGKILLed is
//! at most the last moments' activity.
//!
//! That thread writes a sandbox's activity at most once per [`COALESCE`]: a burst of calls
//! (a client running short commands back to back) costs one write, not two per call. A use
//! inside the window is written when the window ends, with the time of the use. While a use is
//! unwritten, the stored time is less than 2 × [`COALESCE`] old — far below the shortest idle
//! timeout (one second) — so no sandbox is ever ended early for it.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{now_ms, Db};

/// The shortest time between two activity writes of one sandbox.
pub const COALESCE: Duration = Duration::from_millis(200);

/// "This sandbox (an id or a name) was used at this time (ms)".
type Used = (String, i64);

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
    /// Sandboxes used just now, for the activity writer.
    used: mpsc::Sender<Used>,
}

impl Journal {
    /// Starts the activity writer over `db`; it ends when every `Journal` is dropped.
    pub fn start(db: Arc<Db>) -> Self {
        let (used, rx) = mpsc::channel::<Used>();
        let writer = db.clone();
        let spawned = std::thread::Builder::new()
            .name("berth-journal".into())
            .spawn(move || write_activity(&writer, &rx));
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
            let _ = self.used.send((sandbox, now_ms()));
        }
    }

    /// Queues "sandbox `id` was used now".
    pub fn touch(&self, id: &str) {
        let _ = self.used.send((id.to_string(), now_ms()));
    }
}

/// One sandbox's coalescing window: when it opened (with a write), and the newest use since.
struct Window {
    opened: Instant,
    pending: Option<i64>,
}

/// The activity writer: a sandbox's use is written at once unless one was written less than
/// [`COALESCE`] ago; then the newest such use is written when that window ends. Everything
/// pending is written when the server stops.
fn write_activity(db: &Db, rx: &mpsc::Receiver<Used>) {
    let mut windows: HashMap<String, Window> = HashMap::new();
    loop {
        let next_end = windows
            .values()
            .filter(|w| w.pending.is_some())
            .map(|w| (w.opened + COALESCE).saturating_duration_since(Instant::now()))
            .min();
        let received = match next_end {
            Some(wait) => rx.recv_timeout(wait),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((sandbox, at)) => match windows.get_mut(&sandbox) {
                Some(w) if w.opened.elapsed() < COALESCE => w.pending = Some(at),
                _ => {
                    touch(db, &sandbox, at);
                    let opened = Instant::now();
                    windows.insert(
                        sandbox,
                        Window {
                            opened,
                            pending: None,
                        },
                    );
                }
            },
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for (sandbox, w) in windows {
                    if let Some(at) = w.pending {
                        touch(db, &sandbox, at);
                    }
                }
                return;
            }
        }
        // Windows that ended: what they held is written (opening the next), empty ones go.
        windows.retain(|sandbox, w| {
            if w.opened.elapsed() < COALESCE {
                return true;
            }
            let Some(at) = w.pending.take() else {
                return false;
            };
            touch(db, sandbox, at);
            w.opened = Instant::now();
            true
        });
    }
}

/// A used sandbox's activity time: by id (one indexed update), a name resolved first.
fn touch(db: &Db, sandbox: &str, at: i64) {
    if !db.touch_at(sandbox, at).unwrap_or(true) {
        if let Ok(record) = berth_sandbox::store::find(db, sandbox) {
            let _ = db.touch_at(&record.id, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_sandbox::store::Store;

    fn sandbox(db: &Db, id: &str) {
        let name = format!("{id}-name");
        db.save(&crate::db::tests::record(id, Some(&name), "alice"))
            .unwrap();
    }

    fn last_active(db: &Db, id: &str) -> i64 {
        db.lifetime(id).unwrap().unwrap().last_active_ms
    }

    #[test]
    fn a_burst_of_uses_ends_with_its_last_use_written() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path(), None, true).unwrap());
        sandbox(&db, "abc");
        sandbox(&db, "def");
        // Later than the records' own creation time (uses never move the time back).
        let t0 = now_ms() + 60_000;
        let (tx, rx) = mpsc::channel::<Used>();
        let writer = db.clone();
        let thread = std::thread::spawn(move || write_activity(&writer, &rx));

        tx.send(("abc".into(), t0 + 1_000)).unwrap();
        tx.send(("abc".into(), t0 + 2_000)).unwrap();
        // A name is resolved to its sandbox.
        tx.send(("def-name".into(), t0 + 5_000)).unwrap();
        // The first use is written at once, the last when the window has ended: both without
        // any further use to push them out.
        let deadline = Instant::now() + Duration::from_secs(10);
        while last_active(&db, "abc") != t0 + 2_000 || last_active(&db, "def") != t0 + 5_000 {
            assert!(
                Instant::now() < deadline,
                "the last use of a burst was never written"
            );
            std::thread::sleep(COALESCE / 4);
        }

        // Written with the time of the use, and never back in time.
        tx.send(("abc".into(), t0 + 1_500)).unwrap();
        tx.send(("abc".into(), t0 + 3_000)).unwrap();
        drop(tx);
        thread.join().unwrap();
        assert_eq!(
            last_active(&db, "abc"),
            t0 + 3_000,
            "what is pending is written at the end"
        );
    }
}
