//! Processes in a sandbox as events with byte offsets: one exec to completion, or background
//! processes by a caller-chosen id, re-attached from any offset.
//!
//! Every front end renders these same events (the CLI, SSE, NDJSON), and any of them can
//! resume: an event's offsets say how many bytes of each stream came before it.

use crate::OrExplain;
use std::collections::BTreeMap;
use std::time::Duration;

use berth_engine::Engine;
use berth_protocol::v1::{
    exec_input, exec_output, AttachRequest, ExecInput, ExecStart, ListProcessesRequest,
    ProcessInfo, SignalRequest, TerminalSize, WriteStdinRequest,
};
use berth_sandbox::sandbox::{self, SandboxRecord};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{Service, ServiceError};

/// A process to run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecRequest {
    /// The command and its arguments (no shell; use `["sh", "-c", "…"]` for one).
    pub argv: Vec<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the sandbox's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// End the process group after this many seconds (default: none).
    #[serde(default, rename = "timeout_secs", with = "seconds")]
    #[schema(value_type = Option<u64>)]
    pub timeout: Option<Duration>,
    /// Text written to the process's stdin, then EOF (foreground exec only).
    #[serde(default)]
    pub stdin: Option<String>,
    /// `UID[:GID]` to run as (default: the sandbox's user). Only the local CLI's user, who
    /// owns the sandbox, sets it; it is not part of the API.
    #[serde(skip)]
    pub user: Option<String>,
}

/// A timeout as whole seconds on the wire.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_secs))
    }
}

/// How a client is attached to an interactive process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attachment {
    /// A terminal of `(rows, cols)`; `None`: plain pipes.
    pub tty: Option<(u32, u32)>,
    /// Whether the process's stdin is open to what the client sends (else it reads EOF).
    pub stdin: bool,
}

/// How many bytes of stdout and stderr came before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Offsets {
    pub stdout: u64,
    pub stderr: u64,
}

impl Offsets {
    /// `stdout:stderr`, the form of an SSE event id.
    pub fn id(&self) -> String {
        format!("{}:{}", self.stdout, self.stderr)
    }

    /// Parses [`Offsets::id`]'s form; a single number is a stdout offset.
    pub fn parse(text: &str) -> Option<Self> {
        let (out, err) = text.split_once(':').unwrap_or((text, "0"));
        Some(Self {
            stdout: out.trim().parse().ok()?,
            stderr: err.trim().parse().ok()?,
        })
    }
}

/// One thing that happened to a process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecEvent {
    /// It runs.
    Started { pid: u32, id: String },
    /// Output; `offset` is the stream's byte count before `data`. `data` is UTF-8 text unless
    /// `encoding` is `base64`.
    Stdout {
        offset: u64,
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    Stderr {
        offset: u64,
        data: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        encoding: Option<String>,
    },
    /// It ended: its code (128 + signal when killed; 124 on timeout).
    Exited {
        code: i32,
        signal: i32,
        timed_out: bool,
    },
    /// It never started: 127 not found, 126 not executable.
    StartFailed { exit_code: i32, message: String },
    /// The stream broke before the process ended (the sandbox stopped, the agent died): the
    /// process's outcome is unknown, and this says why. Never followed by `exited`.
    Error { message: String },
}

impl ExecEvent {
    /// True for the last event of a stream.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Exited { .. } | Self::StartFailed { .. } | Self::Error { .. }
        )
    }

    /// The bytes of an output event.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        match self {
            Self::Stdout { data, encoding, .. } | Self::Stderr { data, encoding, .. } => {
                match encoding.as_deref() {
                    Some("base64") => base64::engine::general_purpose::STANDARD.decode(data).ok(),
                    _ => Some(data.clone().into_bytes()),
                }
            }
            _ => None,
        }
    }
}

fn text(data: &[u8]) -> (String, Option<String>) {
    use base64::Engine as _;
    match std::str::from_utf8(data) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(data),
            Some("base64".to_string()),
        ),
    }
}

/// Turns the agent's output into events, counting offsets and skipping what came before
/// `from` (a resumed attach).
struct Converter {
    seen: Offsets,
    from: Offsets,
}

impl Converter {
    fn convert(&mut self, output: exec_output::Output) -> Option<ExecEvent> {
        let clip = |data: Bytes, seen: &mut u64, from: u64| -> Option<(u64, Bytes)> {
            let start = *seen;
            *seen += data.len() as u64;
            if *seen <= from {
                return None;
            }
            let skip = from.saturating_sub(start) as usize;
            Some((start + skip as u64, data.slice(skip..)))
        };
        Some(match output {
            exec_output::Output::Started(s) => ExecEvent::Started {
                pid: s.pid,
                id: s.tag,
            },
            exec_output::Output::Stdout(data) => {
                let (offset, data) = clip(data, &mut self.seen.stdout, self.from.stdout)?;
                let (data, encoding) = text(&data);
                ExecEvent::Stdout {
                    offset,
                    data,
                    encoding,
                }
            }
            exec_output::Output::Stderr(data) => {
                let (offset, data) = clip(data, &mut self.seen.stderr, self.from.stderr)?;
                let (data, encoding) = text(&data);
                ExecEvent::Stderr {
                    offset,
                    data,
                    encoding,
                }
            }
            exec_output::Output::Exited(e) => ExecEvent::Exited {
                code: e.code,
                signal: e.signal,
                timed_out: e.timed_out,
            },
            exec_output::Output::StartFailed(f) => ExecEvent::StartFailed {
                exit_code: f.exit_code,
                message: f.message,
            },
        })
    }
}

/// A process's events, ending with exactly one final event (`exited`, `start_failed` or
/// `error`). Dropping it lets go of the process's stream (a foreground process then ends).
pub type ExecEvents = std::pin::Pin<Box<dyn futures_util::Stream<Item = ExecEvent> + Send>>;

/// What [`events`] carries from one event to the next.
struct Pumped<E, T> {
    stream: tonic::Streaming<berth_protocol::v1::ExecOutput>,
    converter: Converter,
    /// Held while the events are read (the input side, the client).
    _keep: T,
    engine: Arc<E>,
    record: SandboxRecord,
}

/// An agent output stream as events, converted as they are read (by whoever reads them, no
/// task in between), until the final one. A stream that breaks is explained by what happened
/// to the sandbox (its container exited with 137, …), asked of `engine` only then.
fn events<E: Engine, T: Send + 'static>(
    stream: tonic::Streaming<berth_protocol::v1::ExecOutput>,
    from: Offsets,
    keep: T,
    engine: Arc<E>,
    record: &SandboxRecord,
) -> ExecEvents {
    let state = Pumped {
        stream,
        converter: Converter {
            seen: Offsets::default(),
            from,
        },
        _keep: keep,
        engine,
        record: record.clone(),
    };
    Box::pin(futures_util::stream::unfold(
        Some(state),
        |state| async move {
            let mut state = state?;
            loop {
                let broke = match state.stream.message().await {
                    Ok(Some(msg)) => match msg.output.and_then(|o| state.converter.convert(o)) {
                        Some(event) => {
                            let next = (!event.is_final()).then_some(state);
                            return Some((event, next));
                        }
                        None => continue,
                    },
                    Ok(None) => {
                        "the sandbox's agent ended the stream before the process ended".to_string()
                    }
                    Err(status) => format!(
                        "the stream from the sandbox's agent broke ({})",
                        status.message()
                    ),
                };
                let message = match sandbox::recheck(state.engine.as_ref(), &state.record).await {
                    Err(why) => ServiceError::from(why).to_string(),
                    Ok(_) => format!("{broke}; the process's outcome is unknown"),
                };
                return Some((ExecEvent::Error { message }, None));
            }
        },
    ))
}

fn start_message(request: &ExecRequest, detach: bool, tag: &str) -> ExecStart {
    ExecStart {
        argv: request.argv.clone(),
        env: request.env.clone().into_iter().collect(),
        cwd: request.cwd.clone().unwrap_or_default(),
        user: request.user.clone().unwrap_or_default(),
        timeout_ms: request
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        detach,
        tag: tag.to_string(),
        stdin: request.stdin.is_some() || detach,
        ..Default::default()
    }
}

fn input(message: exec_input::Input) -> ExecInput {
    ExecInput {
        input: Some(message),
    }
}

fn check_argv(request: &ExecRequest) -> Result<(), ServiceError> {
    if request.argv.is_empty() || request.argv[0].is_empty() {
        return Err(ServiceError::invalid(
            "argv is empty: give the command and its arguments, e.g. [\"ls\", \"-l\"]",
        ));
    }
    Ok(())
}

/// What a client sends an interactive process while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin(Bytes),
    /// EOF on stdin.
    Close,
    /// The terminal's new size.
    Resize {
        rows: u32,
        cols: u32,
    },
    /// A signal to the process group.
    Signal(i32),
}

/// What starting a background process did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProcessStarted {
    pub id: String,
    pub pid: u32,
    /// False when a process with this id already existed (a retried start): nothing new ran.
    pub created: bool,
}

/// A background process as listed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Process {
    pub id: String,
    pub pid: u32,
    pub argv: Vec<String>,
    pub running: bool,
    /// Its exit code once it ended (128 + signal when killed; 124 on timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Whether it was ended by its timeout, once it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
}

impl From<ProcessInfo> for Process {
    fn from(p: ProcessInfo) -> Self {
        Self {
            id: p.tag,
            pid: p.pid,
            argv: p.argv,
            running: p.running,
            exit_code: p.exited.map(|e| e.code),
            timed_out: p.exited.map(|e| e.timed_out),
        }
    }
}

/// A valid background process id: what the caller chose, 1–64 of `[A-Za-z0-9_.-]`.
pub fn check_process_id(id: &str) -> Result<(), ServiceError> {
    berth_spec::names::check("process id", id, "build-1").map_err(ServiceError::invalid)
}

impl<E: Engine> Service<E> {
    /// Runs a process to completion; its events end with exactly one final event.
    pub async fn exec(
        &self,
        record: &SandboxRecord,
        request: &ExecRequest,
    ) -> Result<ExecEvents, ServiceError> {
        check_argv(request)?;
        let mut client = self.agent(record).await?;
        let (tx, rx) = mpsc::channel::<ExecInput>(4);
        let _ = tx
            .send(input(exec_input::Input::Start(start_message(
                request, false, "",
            ))))
            .await;
        if let Some(stdin) = &request.stdin {
            let _ = tx
                .send(input(exec_input::Input::Stdin(Bytes::from(stdin.clone()))))
                .await;
            let _ = tx.send(input(exec_input::Input::CloseStdin(true))).await;
        }
        let stream = self
            .answered(record, client.exec(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        // The input side stays open until the output ends (closing it is not a signal).
        Ok(events(
            stream,
            Offsets::default(),
            (tx, client),
            self.engine.clone(),
            record,
        ))
    }

    /// Runs an interactive process: what is sent on the returned sender (stdin when
    /// `attachment.stdin`, resizes, signals) goes to it while it runs; its events end with
    /// exactly one final event. Dropping the sender closes its stdin.
    pub async fn exec_interactive(
        &self,
        record: &SandboxRecord,
        request: &ExecRequest,
        attachment: Attachment,
    ) -> Result<(mpsc::Sender<Input>, ExecEvents), ServiceError> {
        check_argv(request)?;
        let mut client = self.agent(record).await?;
        let mut start = start_message(request, false, "");
        start.stdin = attachment.stdin;
        if let Some((rows, cols)) = attachment.tty {
            start.tty = true;
            start.size = Some(TerminalSize { rows, cols });
        }
        let (tx, rx) = mpsc::channel::<ExecInput>(16);
        let _ = tx.send(input(exec_input::Input::Start(start))).await;
        let stream = self
            .answered(record, client.exec(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let (inputs, mut from_client) = mpsc::channel::<Input>(16);
        let forward = tx.clone();
        tokio::spawn(async move {
            while let Some(i) = from_client.recv().await {
                let message = match i {
                    Input::Stdin(b) => exec_input::Input::Stdin(b),
                    Input::Close => exec_input::Input::CloseStdin(true),
                    Input::Resize { rows, cols } => {
                        exec_input::Input::Resize(TerminalSize { rows, cols })
                    }
                    Input::Signal(n) => exec_input::Input::Signal(n),
                };
                if forward.send(input(message)).await.is_err() {
                    return;
                }
            }
            let _ = forward
                .send(input(exec_input::Input::CloseStdin(true)))
                .await;
        });
        Ok((
            inputs,
            events(
                stream,
                Offsets::default(),
                (tx, client),
                self.engine.clone(),
                record,
            ),
        ))
    }

    /// Starts a background process under the caller's id. Idempotent: when a process with
    /// that id exists, nothing new starts and its pid is returned with `created: false`.
    pub async fn start_process(
        &self,
        record: &SandboxRecord,
        id: &str,
        request: &ExecRequest,
    ) -> Result<ProcessStarted, ServiceError> {
        check_process_id(id)?;
        check_argv(request)?;
        let mut client = self.agent(record).await?;
        if let Some(p) = self.find_process(&mut client, id).await? {
            return Ok(ProcessStarted {
                id: p.id,
                pid: p.pid,
                created: false,
            });
        }
        self.detach(record, request, Some(id)).await
    }

    /// Starts a background process under `id` (or one the agent names, `bg-N`). Unlike
    /// [`Service::start_process`] this always starts one: a running process with that id is
    /// a conflict; a finished one is replaced.
    pub async fn detach(
        &self,
        record: &SandboxRecord,
        request: &ExecRequest,
        id: Option<&str>,
    ) -> Result<ProcessStarted, ServiceError> {
        if let Some(id) = id {
            check_process_id(id)?;
        }
        check_argv(request)?;
        let mut client = self.agent(record).await?;
        let start = input(exec_input::Input::Start(start_message(
            request,
            true,
            id.unwrap_or_default(),
        )));
        let mut stream = self
            .answered(record, client.exec(tokio_stream::once(start)))
            .await?
            .into_inner();
        while let Some(msg) = stream.message().await.or_explain(self, record).await? {
            match msg.output {
                Some(exec_output::Output::Started(s)) => {
                    return Ok(ProcessStarted {
                        id: s.tag,
                        pid: s.pid,
                        created: true,
                    })
                }
                Some(exec_output::Output::StartFailed(f)) => {
                    return Err(ServiceError::invalid(format!(
                        "the process could not start ({}): {}",
                        f.exit_code, f.message
                    )))
                }
                _ => {}
            }
        }
        Err(ServiceError::unavailable(
            "the sandbox's agent ended the stream before the process started",
        ))
    }

    async fn find_process(
        &self,
        client: &mut berth_sandbox::agent_client::AgentClient,
        id: &str,
    ) -> Result<Option<Process>, ServiceError> {
        let list = client
            .list_processes(ListProcessesRequest {})
            .await
            .map_err(ServiceError::from)?
            .into_inner();
        Ok(list
            .processes
            .into_iter()
            .find(|p| p.tag == id)
            .map(Process::from))
    }

    /// The background processes (running, and the last finished ones).
    pub async fn processes(&self, record: &SandboxRecord) -> Result<Vec<Process>, ServiceError> {
        let mut client = self.agent(record).await?;
        let list = self
            .answered(record, client.list_processes(ListProcessesRequest {}))
            .await?
            .into_inner();
        Ok(list.processes.into_iter().map(Process::from).collect())
    }

    /// A background process's events from `from` on: what it wrote since (as far as the
    /// agent keeps: the last 1 MiB), then live, then its exit.
    pub async fn attach(
        &self,
        record: &SandboxRecord,
        id: &str,
        from: Offsets,
    ) -> Result<ExecEvents, ServiceError> {
        self.subscribe(record, id, from, false).await
    }

    /// A background process's events from now on: only what it writes after this call (a
    /// session's reply to the turn written next), then its exit. The events' offsets count
    /// from now, not from the process's start.
    pub async fn follow(
        &self,
        record: &SandboxRecord,
        id: &str,
    ) -> Result<ExecEvents, ServiceError> {
        self.subscribe(record, id, Offsets::default(), true).await
    }

    async fn subscribe(
        &self,
        record: &SandboxRecord,
        id: &str,
        from: Offsets,
        follow_only: bool,
    ) -> Result<ExecEvents, ServiceError> {
        check_process_id(id)?;
        let mut client = self.agent(record).await?;
        let stream = self
            .answered(
                record,
                client.attach(AttachRequest {
                    tag: id.to_string(),
                    follow_only,
                }),
            )
            .await?
            .into_inner();
        Ok(events(stream, from, client, self.engine.clone(), record))
    }

    /// Sends a signal (a number, e.g. 15) to a background process.
    pub async fn signal(
        &self,
        record: &SandboxRecord,
        id: &str,
        signal: i32,
    ) -> Result<(), ServiceError> {
        check_process_id(id)?;
        if !(1..=64).contains(&signal) {
            return Err(ServiceError::invalid(format!(
                "signal {signal} is not valid: give a number from 1 to 64, e.g. 15 (TERM)"
            )));
        }
        let mut client = self.agent(record).await?;
        self.answered(
            record,
            client.signal(SignalRequest {
                tag: id.to_string(),
                pid: 0,
                signal,
            }),
        )
        .await?;
        Ok(())
    }

    /// Writes to a background process's stdin; `close` sends EOF after the data.
    pub async fn write_stdin(
        &self,
        record: &SandboxRecord,
        id: &str,
        data: Bytes,
        close: bool,
    ) -> Result<(), ServiceError> {
        check_process_id(id)?;
        let mut client = self.agent(record).await?;
        self.answered(
            record,
            client.write_stdin(WriteStdinRequest {
                tag: id.to_string(),
                data,
                close,
            }),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_resume_mid_chunk() {
        let mut c = Converter {
            seen: Offsets::default(),
            from: Offsets {
                stdout: 3,
                stderr: 0,
            },
        };
        assert_eq!(
            c.convert(exec_output::Output::Stdout(Bytes::from("ab"))),
            None
        );
        assert_eq!(
            c.convert(exec_output::Output::Stdout(Bytes::from("cdef"))),
            Some(ExecEvent::Stdout {
                offset: 3,
                data: "def".into(),
                encoding: None
            })
        );
        assert_eq!(
            Offsets::parse("6:2"),
            Some(Offsets {
                stdout: 6,
                stderr: 2
            })
        );
        assert_eq!(Offsets::parse("x"), None);
        let bin = c
            .convert(exec_output::Output::Stderr(Bytes::from_static(&[0xff, 0])))
            .unwrap();
        assert_eq!(bin.bytes(), Some(vec![0xff, 0]));
    }

    #[test]
    fn process_ids_are_checked() {
        assert!(check_process_id("build-1").is_ok());
        assert!(check_process_id("").is_err());
        assert!(check_process_id("a/b").is_err());
    }
}
