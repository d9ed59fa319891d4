//! Background processes (`detach`): they outlive the stream that started them, keep their
//! output in a bounded ring buffer, and can be listed, re-attached (buffer replayed, then
//! followed live) and signalled by tag.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use berth_protocol::v1::{exec_output, ExecOutput, Exited, ProcessInfo};
use tokio::sync::broadcast;

/// Output kept per background process for re-attaching.
pub const RING_BYTES: usize = 1 << 20;
/// Finished background processes remembered for `list` and late `attach`.
const FINISHED_KEPT: usize = 64;

/// One background process.
pub struct Background {
    pub tag: String,
    pub pid: i32,
    pub argv: Vec<String>,
    state: Mutex<State>,
    live: broadcast::Sender<exec_output::Output>,
    /// The write end of the process's stdin, when it was started with `stdin`.
    stdin: tokio::sync::Mutex<Option<tokio::net::unix::pipe::Sender>>,
}

struct State {
    ring: VecDeque<exec_output::Output>,
    bytes: usize,
    exited: Option<Exited>,
}

fn size(o: &exec_output::Output) -> usize {
    match o {
        exec_output::Output::Stdout(b) | exec_output::Output::Stderr(b) => b.len(),
        _ => 0,
    }
}

impl Background {
    /// Records one event: kept in the ring (oldest output dropped beyond the bound) and sent
    /// to everyone attached.
    pub fn emit(&self, output: exec_output::Output) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let exec_output::Output::Exited(e) = &output {
            state.exited = Some(*e);
        }
        state.bytes += size(&output);
        state.ring.push_back(output.clone());
        while state.bytes > RING_BYTES {
            match state.ring.pop_front() {
                Some(old) => state.bytes -= size(&old),
                None => break,
            }
        }
        // Sent under the lock, so an attacher sees every event exactly once.
        let _ = self.live.send(output);
    }

    /// Keeps the process's stdin for [`Background::write_stdin`].
    pub async fn keep_stdin(&self, stdin: tokio::net::unix::pipe::Sender) {
        *self.stdin.lock().await = Some(stdin);
    }

    /// Writes to the process's stdin, then closes it if asked.
    pub async fn write_stdin(&self, data: &[u8], close: bool) -> Result<(), String> {
        use tokio::io::AsyncWriteExt;
        let mut stdin = self.stdin.lock().await;
        let Some(pipe) = stdin.as_mut() else {
            return Err(format!(
                "{:?} has no open stdin (start it with stdin, and it must not have closed it)",
                self.tag
            ));
        };
        if !data.is_empty() {
            if let Err(e) = pipe.write_all(data).await {
                *stdin = None;
                return Err(format!("writing to {:?}: {e}", self.tag));
            }
        }
        if close {
            *stdin = None;
        }
        Ok(())
    }

    /// The buffered events (none when `follow_only`) and a subscription to what comes after
    /// them.
    pub fn attach(
        &self,
        follow_only: bool,
    ) -> (
        Vec<ExecOutput>,
        Option<broadcast::Receiver<exec_output::Output>>,
    ) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let replay = state
            .ring
            .iter()
            .filter(|_| !follow_only)
            .map(|o| ExecOutput {
                output: Some(o.clone()),
            })
            .collect();
        let live = state.exited.is_none().then(|| self.live.subscribe());
        (replay, live)
    }

    pub fn info(&self) -> ProcessInfo {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        ProcessInfo {
            pid: u32::try_from(self.pid).unwrap_or(0),
            tag: self.tag.clone(),
            argv: self.argv.clone(),
            running: state.exited.is_none(),
            exited: state.exited,
        }
    }

    pub fn running(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .exited
            .is_none()
    }
}

/// All background processes by tag.
#[derive(Default)]
pub struct Registry {
    by_tag: Mutex<BTreeMap<String, Arc<Background>>>,
}

impl Registry {
    /// Registers a new background process; fails if a running one has the tag.
    pub fn add(&self, tag: &str, pid: i32, argv: Vec<String>) -> Result<Arc<Background>, String> {
        let mut map = self.by_tag.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(tag).is_some_and(|b| b.running()) {
            return Err(format!(
                "a background process tagged {tag:?} is still running"
            ));
        }
        let finished: Vec<String> = map
            .iter()
            .filter(|(_, b)| !b.running())
            .map(|(t, _)| t.clone())
            .collect();
        if finished.len() >= FINISHED_KEPT {
            if let Some(oldest) = finished.first() {
                map.remove(oldest);
            }
        }
        let (live, _) = broadcast::channel(1024);
        let bg = Arc::new(Background {
            tag: tag.to_string(),
            pid,
            argv,
            state: Mutex::new(State {
                ring: VecDeque::new(),
                bytes: 0,
                exited: None,
            }),
            live,
            stdin: tokio::sync::Mutex::new(None),
        });
        map.insert(tag.to_string(), bg.clone());
        Ok(bg)
    }

    /// Whether a running process has the tag.
    pub fn busy(&self, tag: &str) -> bool {
        self.by_tag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .is_some_and(|b| b.running())
    }

    pub fn get(&self, tag: &str) -> Option<Arc<Background>> {
        self.by_tag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .cloned()
    }

    pub fn list(&self) -> Vec<ProcessInfo> {
        self.by_tag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|b| b.info())
            .collect()
    }
}
