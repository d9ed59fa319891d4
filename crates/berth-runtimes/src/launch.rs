//! `berth agent run`: one headless CLI run in a sandbox.
//!
//! 1. Find or make the sandbox: ephemeral (owned by this process, removed at the end, found
//!    by `berth gc` if berth dies) or, with `keep`, the agent's own sandbox (restarted if it
//!    stopped; the oldest beyond `max_containers` removed).
//! 2. Start the CLI through the agent's exec channel: argv only, `HOME` on the agent's home
//!    volume, only the environment the user named, the timeout enforced on the whole tree.
//! 3. Parse its stdout line by line into events as they arrive; keep stderr.
//! 4. Record the session under the agent's name.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

use berth_engine::{Engine, ImageInfo, VolumePlan};
use berth_events::{Cli, Parser, Record, Summary};
use berth_protocol::v1::{exec_input, exec_output, ExecInput, ExecStart};
use berth_sandbox::agent_client::AgentClient;
use berth_sandbox::sandbox::{self, AgentDelivery, CreateOptions, SandboxRecord, VolumeMount};
use berth_sandbox::store::FileStore;
use berth_spec::{labels, SandboxSpec};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::profile::{self, PromptDelivery, SessionChoice};
use crate::settings::{AgentSettings, AGENT_HOME, DEFAULT_AGENT_TIMEOUT};
use crate::store::{self, AgentRecord, AgentStore};
use crate::RuntimeError;

/// Label with a digest of what a kept sandbox was made from; a sandbox is reused only for the
/// same image, workspace, limits, network and credential files.
pub const SPEC_LABEL: &str = "berth.agent.spec";
/// Label with the agent CLI a sandbox serves.
pub const CLI_LABEL: &str = "berth.agent.cli";

/// How this machine makes sandboxes and where it keeps them (resolved by the front end).
#[derive(Debug, Clone)]
pub struct Host {
    pub agent_binary: PathBuf,
    pub engine_socket: Option<PathBuf>,
    pub delivery: AgentDelivery,
    /// The sandbox records.
    pub store: FileStore,
    /// The named agents' records.
    pub agents: AgentStore,
}

/// One run, fully resolved.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub settings: AgentSettings,
    pub name: Option<String>,
    pub prompt: String,
    pub delivery: PromptDelivery,
    pub resume: Option<String>,
    pub fork: bool,
}

/// What the caller sees as the run goes.
pub enum Progress<'a> {
    /// The sandbox is ready (made, restarted or reused).
    Sandbox { id: &'a str, reused: bool },
    /// One event from the CLI's stream.
    Event(&'a Record),
    /// Bytes the CLI wrote to stderr.
    Stderr(&'a [u8]),
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub cli: Cli,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub sandbox_id: String,
    /// Whether the sandbox was kept after the run.
    pub kept: bool,
    pub session_id: Option<String>,
    /// The CLI process's exit code (124 when the timeout ended it).
    pub cli_exit_code: Option<i32>,
    pub timed_out: bool,
    pub interrupted: bool,
    pub duration_ms: u64,
    pub summary: Summary,
    /// Things that went wrong around the CLI (it died mid-stream, resumed the wrong session…).
    pub problems: Vec<String>,
    /// Variables named with `--env NAME` that were not set here (so not passed).
    pub missing_env: Vec<String>,
    /// The CLI's home volume (removed with the sandbox unless the agent is named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub home_volume: Option<String>,
    /// A denied tool call makes the run fail (`--fail-on-denial`).
    #[serde(skip)]
    pub fail_on_denial: bool,
}

impl RunReport {
    /// A report for a CLI in sandbox `sandbox_id`, before anything happened.
    pub fn new(cli: Cli, sandbox_id: &str) -> Self {
        Self {
            cli,
            agent: None,
            sandbox_id: sandbox_id.to_string(),
            kept: false,
            session_id: None,
            cli_exit_code: None,
            timed_out: false,
            interrupted: false,
            duration_ms: 0,
            summary: Summary::default(),
            problems: Vec::new(),
            missing_env: Vec::new(),
            home_volume: None,
            fail_on_denial: false,
        }
    }

    /// How many tool calls the CLI's permission mode refused.
    pub fn denials(&self) -> usize {
        self.summary.permission_denials.len()
    }

    /// Succeeded with nothing refused: what "done" means for an unattended agent.
    pub fn clean(&self) -> bool {
        self.success() && self.denials() == 0
    }

    /// Feeds stdout bytes through `parser`, folding and reporting each event; returns whether
    /// a `result` event was among them.
    pub fn take_stdout(
        &mut self,
        parser: &mut StreamParser,
        bytes: &[u8],
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> bool {
        let records = parser.push(bytes);
        self.fold(&records, progress)
    }

    fn fold(
        &mut self,
        records: &[Record],
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> bool {
        let mut result = false;
        for r in records {
            self.summary.add(r);
            progress(Progress::Event(r));
            result |= matches!(r.event, berth_events::Event::Result(_));
        }
        result
    }

    /// The agent succeeded: its result says so, the process exited 0, nothing else went wrong.
    pub fn success(&self) -> bool {
        self.summary.success()
            && self.cli_exit_code == Some(0)
            && !self.timed_out
            && !self.interrupted
            && self.problems.is_empty()
    }

    /// berth's exit code: 0 success, 124 timeout, 130 interrupted, else the CLI's non-zero
    /// code, else 1.
    pub fn exit_code(&self) -> i32 {
        if self.success() {
            i32::from(self.fail_on_denial && self.denials() > 0)
        } else if self.timed_out {
            124
        } else if self.interrupted {
            130
        } else {
            self.cli_exit_code.filter(|c| *c != 0).unwrap_or(1)
        }
    }
}

/// What a kept sandbox was made from: a run with other settings gets a new one.
pub fn fingerprint(settings: &AgentSettings, spec: &SandboxSpec) -> String {
    let egress: Vec<String> = spec
        .egress
        .allowed_hosts()
        .iter()
        .map(|h| h.to_string())
        .chain(spec.egress.secrets.iter().map(|s| s.name.clone()))
        .collect();
    let text = format!(
        "{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{}",
        spec.image,
        spec.workspace,
        spec.volumes,
        spec.limits,
        spec.network,
        spec.security,
        settings.cli(),
        egress.join(",")
    );
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// The name of an agent's home volume.
pub fn home_volume(name: &str) -> String {
    format!("berth-home-{name}")
}

/// Sandboxes berth made for an agent name, oldest first.
pub fn agent_sandboxes(store: &FileStore, name: &str) -> Vec<SandboxRecord> {
    berth_sandbox::store::Store::records(store)
        .into_iter()
        .filter(|r| r.labels.get(labels::AGENT).map(String::as_str) == Some(name))
        .collect()
}

/// A sandbox ready for the CLI.
pub struct Acquired {
    pub record: SandboxRecord,
    /// Made for this run only: remove it (and `volume`) afterwards.
    pub ephemeral: bool,
    pub reused: bool,
    /// An ephemeral home volume to remove with the sandbox.
    pub volume: Option<String>,
}

/// Finds the agent's kept sandbox or makes a sandbox for this run.
pub async fn acquire<E: Engine>(
    engine: &E,
    host: &Host,
    image: &ImageInfo,
    settings: &AgentSettings,
    name: Option<&str>,
    keep: bool,
) -> Result<Acquired, RuntimeError> {
    let spec = settings.sandbox_spec()?;
    let print = fingerprint(settings, &spec);
    // This run's secret values (the front end resolved them; they may have changed since).
    let given = |name: &str| {
        spec.egress
            .secrets
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.value.clone())
    };
    if let (Some(name), true) = (name, keep) {
        for record in agent_sandboxes(&host.store, name).into_iter().rev() {
            if record.labels.get(SPEC_LABEL) != Some(&print) {
                continue;
            }
            match engine.container_inspect(&record.container_id).await {
                Ok(state) => {
                    if state.running {
                        sandbox::wait_ready(engine, &record).await?;
                    } else {
                        sandbox::start(engine, &record, &host.agent_binary, &given).await?;
                    }
                    sandbox::hand_secrets(engine, &record, &given).await?;
                    return Ok(Acquired {
                        record,
                        ephemeral: false,
                        reused: true,
                        volume: None,
                    });
                }
                Err(e) if e.is_not_found() => {
                    let _ = sandbox::remove(engine, &host.store, &record, true).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    let mut volume_labels = BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::KIND.to_string(), labels::KIND_VOLUME.to_string()),
    ]);
    let volume_name = match name {
        Some(name) => {
            volume_labels.insert(labels::AGENT.to_string(), name.to_string());
            home_volume(name)
        }
        None => {
            volume_labels.insert(
                labels::OWNER.to_string(),
                berth_sandbox::owner::current_owner(),
            );
            format!("berth-home-{}", berth_sandbox::owner::new_id())
        }
    };
    let mut container_labels = BTreeMap::from([
        (SPEC_LABEL.to_string(), print),
        (CLI_LABEL.to_string(), settings.cli().name().to_string()),
    ]);
    if let Some(name) = name {
        container_labels.insert(labels::AGENT.to_string(), name.to_string());
    }
    if keep {
        container_labels.insert(labels::KEEP.to_string(), "true".to_string());
    }
    let options = CreateOptions {
        agent: host.agent_binary.clone(),
        name: None,
        delivery: host.delivery,
        labels: container_labels,
        owned: !keep,
        volumes: vec![VolumeMount {
            volume: VolumePlan {
                name: volume_name.clone(),
                labels: volume_labels,
            },
            target: AGENT_HOME.to_string(),
        }],
        idle: true,
    };
    let made = sandbox::create(
        engine,
        &host.store,
        &spec,
        image,
        host.engine_socket.clone(),
        &options,
    )
    .await;
    let record = match made {
        Ok(r) => r,
        Err(e) => {
            if name.is_none() {
                let _ = engine.volume_remove(&volume_name).await;
            }
            return Err(e.into());
        }
    };
    if let (Some(name), true) = (name, keep) {
        prune(
            engine,
            &host.store,
            name,
            settings.max_containers.unwrap_or(1),
            &record.id,
        )
        .await;
    }
    Ok(Acquired {
        record,
        ephemeral: !keep,
        reused: false,
        volume: name.is_none().then_some(volume_name),
    })
}

/// Removes an agent's oldest kept sandboxes beyond `max` (never `current`).
async fn prune<E: Engine>(engine: &E, store: &FileStore, name: &str, max: usize, current: &str) {
    let all: Vec<SandboxRecord> = agent_sandboxes(store, name)
        .into_iter()
        .filter(|r| r.labels.get(labels::KEEP).is_some_and(|v| v == "true"))
        .collect();
    let excess = all.len().saturating_sub(max.max(1));
    for old in all.iter().filter(|r| r.id != current).take(excess) {
        let _ = sandbox::remove(engine, store, old, true).await;
    }
}

/// Removes an ephemeral sandbox and its home volume.
pub async fn release<E: Engine>(engine: &E, host: &Host, acquired: &Acquired) {
    if acquired.ephemeral {
        let _ = sandbox::remove(engine, &host.store, &acquired.record, true).await;
        if let Some(volume) = &acquired.volume {
            let _ = engine.volume_remove(volume).await;
        }
    }
}

/// The environment for the CLI: `HOME` and what the user named. Returns the names that were
/// asked for but are unset here.
pub fn cli_env(settings: &AgentSettings) -> (BTreeMap<String, String>, Vec<String>) {
    let mut env = BTreeMap::from([("HOME".to_string(), AGENT_HOME.to_string())]);
    let mut missing = Vec::new();
    // With the gateway the sandbox holds placeholders (in its configuration) and the values
    // stay here; with `--network bridge` there is no gateway, so the CLI gets the values
    // (berth warns).
    // Values are the front end's to resolve (the CLI: from its user's environment); one it
    // could not is reported missing.
    if !settings.uses_gateway() {
        for secret in &settings.secrets {
            match &secret.value {
                Some(v) => {
                    env.insert(secret.name.clone(), v.expose().to_string());
                }
                None => missing.push(secret.name.clone()),
            }
        }
    }
    let shadowed = settings.shadowed_env();
    for var in &settings.env {
        if shadowed.contains(&var.name.as_str()) {
            continue;
        }
        match &var.value {
            Some(v) => {
                env.insert(var.name.clone(), v.clone());
            }
            None => missing.push(var.name.clone()),
        }
    }
    (env, missing)
}

/// Working directory for the CLI: the workspace when there is one, else its home.
pub fn cli_cwd(settings: &AgentSettings) -> String {
    if settings.workspace.is_some() {
        berth_spec::WORKSPACE_DIR.to_string()
    } else {
        AGENT_HOME.to_string()
    }
}

/// Picks the session for a run and checks that a resumed one belongs to this agent.
pub fn choose_session(
    cli: Cli,
    name: Option<&str>,
    record: Option<&AgentRecord>,
    resume: Option<&str>,
    fork: bool,
) -> Result<SessionChoice, RuntimeError> {
    match resume {
        None if fork => Err(RuntimeError::Input(
            "--fork needs --resume SESSION (e.g. --resume 1d1e46f9-… --fork)".into(),
        )),
        None => Ok(SessionChoice::New(match cli {
            Cli::Claude => uuid::Uuid::new_v4().to_string(),
            // Codex and Gemini choose their own ids; berth records what they report.
            Cli::Codex | Cli::Gemini => String::new(),
        })),
        Some(id) => {
            let Some(name) = name else {
                return Err(RuntimeError::Input(
                    "--resume needs --name: sessions live in a named agent's home (e.g. --name reviewer --resume ID)".into(),
                ));
            };
            let known = record.is_some_and(|r| r.has_session(id));
            if !known {
                let sessions = record
                    .map(|r| {
                        r.sessions
                            .iter()
                            .map(|s| s.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                return Err(RuntimeError::Input(format!(
                    "session {id} does not belong to agent {name:?} (its sessions: {})",
                    if sessions.is_empty() {
                        "none yet"
                    } else {
                        &sessions
                    }
                )));
            }
            Ok(if fork {
                SessionChoice::Fork(id.to_string())
            } else {
                SessionChoice::Resume(id.to_string())
            })
        }
    }
}

/// Runs the CLI once; `interrupt` resolving (Ctrl-C) ends it early.
pub async fn run<E: Engine>(
    engine: &E,
    host: &Host,
    image: &ImageInfo,
    request: &RunRequest,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
    interrupt: impl Future<Output = ()> + Send,
) -> Result<RunReport, RuntimeError> {
    let settings = &request.settings;
    let cli = settings.cli();
    let name = request.name.as_deref();
    if let Some(n) = name {
        store::validate_name(n)?;
    }
    let keep = settings.keep.unwrap_or(false);
    if keep && name.is_none() {
        return Err(RuntimeError::Input(
            "--keep needs --name: a kept sandbox belongs to a named agent (e.g. --name reviewer --keep)".into(),
        ));
    }
    let mut agent_record = match name {
        Some(n) => host.agents.load(n)?,
        None => None,
    };
    if let Some(r) = &agent_record {
        if r.cli != cli {
            return Err(RuntimeError::Input(format!(
                "agent {:?} runs {}, not {cli}: pick another --name, or `berth agent rm {}`",
                r.name, r.cli, r.name
            )));
        }
    }
    let session = choose_session(
        cli,
        name,
        agent_record.as_ref(),
        request.resume.as_deref(),
        request.fork,
    )?;
    let options = settings.cli_options();
    let argv = profile::one_shot(cli, &session, &options, &request.prompt, &request.delivery)?;

    let acquired = acquire(engine, host, image, settings, name, keep).await?;
    progress(Progress::Sandbox {
        id: &acquired.record.id,
        reused: acquired.reused,
    });
    let started = Instant::now();
    let result = drive(
        engine,
        &acquired.record,
        settings,
        request,
        argv,
        progress,
        interrupt,
    )
    .await;
    release(engine, host, &acquired).await;
    let mut report = result?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report.agent = request.name.clone();
    report.kept = !acquired.ephemeral;
    report.home_volume = Some(
        acquired
            .volume
            .clone()
            .unwrap_or_else(|| home_volume(name.unwrap_or_default())),
    );

    match (&session, &report.session_id) {
        (SessionChoice::Resume(asked), Some(got)) if asked != got => report.problems.push(format!(
            "{cli} did not resume session {asked}: it started {got} instead"
        )),
        (SessionChoice::New(asked), Some(got)) if !asked.is_empty() && asked != got => {
            report.problems.push(format!(
                "{cli} used session {got}, not the id berth chose ({asked})"
            ))
        }
        _ => {}
    }
    if let (Some(n), Some(id)) = (name, report.session_id.clone()) {
        let record = agent_record.get_or_insert_with(|| AgentRecord::new(n, cli));
        let parent = match &session {
            SessionChoice::Fork(p) => Some(p.as_str()),
            _ => None,
        };
        record.add_session(&id, parent);
        host.agents.save(record)?;
    }
    Ok(report)
}

/// Starts the CLI, streams its events and waits for its exit.
async fn drive(
    engine: &impl Engine,
    record: &SandboxRecord,
    settings: &AgentSettings,
    request: &RunRequest,
    argv: Vec<String>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
    interrupt: impl Future<Output = ()> + Send,
) -> Result<RunReport, RuntimeError> {
    let cli = settings.cli();
    let (env, missing_env) = cli_env(settings);
    let timeout = settings.timeout.unwrap_or(DEFAULT_AGENT_TIMEOUT);
    let stdin = request.delivery == PromptDelivery::Stdin;
    let start = ExecStart {
        argv,
        env: env.into_iter().collect(),
        cwd: cli_cwd(settings),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        stdin,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel::<ExecInput>(8);
    let send = |input| ExecInput { input: Some(input) };
    let _ = tx.send(send(exec_input::Input::Start(start))).await;
    if stdin {
        let _ = tx
            .send(send(exec_input::Input::Stdin(
                request.prompt.clone().into_bytes().into(),
            )))
            .await;
        let _ = tx.send(send(exec_input::Input::CloseStdin(true))).await;
    }
    let mut client: AgentClient = sandbox::connect(engine, record).await?;
    let mut stream = client.exec(ReceiverStream::new(rx)).await?.into_inner();

    let mut report = RunReport::new(cli, &record.id);
    report.missing_env = missing_env;
    let mut parser = StreamParser::new(cli);
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            () = &mut interrupt, if !interrupted => {
                interrupted = true;
                report.interrupted = true;
                let _ = tx.send(send(exec_input::Input::Signal(libc::SIGTERM))).await;
                continue;
            }
        };
        let Some(msg) = message? else {
            report
                .problems
                .push("the exec stream ended without an exit status".into());
            break;
        };
        match msg.output {
            Some(exec_output::Output::Stdout(b)) => {
                report.take_stdout(&mut parser, &b, progress);
            }
            Some(exec_output::Output::Stderr(b)) => progress(Progress::Stderr(&b)),
            Some(exec_output::Output::StartFailed(f)) => {
                report.cli_exit_code = Some(f.exit_code);
                report.problems.push(format!(
                    "{} could not start in image {}: {} (build an image with the CLI, see images/README.md, or pass --image)",
                    cli,
                    settings.image(),
                    f.message
                ));
                break;
            }
            Some(exec_output::Output::Exited(e)) => {
                report.cli_exit_code = Some(e.code);
                report.timed_out = e.timed_out;
                break;
            }
            _ => {}
        }
    }
    let rest = parser.finish();
    report.fold(&rest, progress);
    report.session_id = report.summary.session_id.clone();
    if report.summary.result.is_none() && !report.timed_out && !report.interrupted {
        if let Some(code) = report.cli_exit_code.filter(|c| *c != 0) {
            report.problems.push(format!(
                "{cli} exited with {code} before reporting a result"
            ));
        }
    }
    Ok(report)
}

/// Splits a byte stream into lines, keeping a partial last line until its newline arrives.
#[derive(Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            out.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        out
    }

    /// What is left without a final newline.
    pub fn finish(&mut self) -> Option<String> {
        (!self.pending.is_empty())
            .then(|| String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())
    }
}

/// A CLI's stdout as events: bytes in any chunking, lines split, each line parsed.
pub struct StreamParser {
    lines: LineSplitter,
    parser: Parser,
}

impl StreamParser {
    pub fn new(cli: Cli) -> Self {
        Self {
            lines: LineSplitter::default(),
            parser: Parser::new(cli),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) -> Vec<Record> {
        let lines = self.lines.push(bytes);
        lines.iter().flat_map(|l| self.parser.line(l)).collect()
    }

    /// Events of a last line that had no newline.
    pub fn finish(&mut self) -> Vec<Record> {
        match self.lines.finish() {
            Some(line) => self.parser.line(&line),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_chunks() {
        let mut s = LineSplitter::default();
        assert!(s.push(b"{\"a\":").is_empty());
        assert_eq!(s.push(b"1}\n{\"b\"\n"), ["{\"a\":1}", "{\"b\""]);
        assert_eq!(s.push(b"tail"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("tail"));
    }

    #[test]
    fn resume_checks_the_owner_of_the_session() {
        let mut r = AgentRecord::new("a", Cli::Claude);
        r.add_session("s1", None);
        assert_eq!(
            choose_session(Cli::Claude, Some("a"), Some(&r), Some("s1"), false).unwrap(),
            SessionChoice::Resume("s1".into())
        );
        assert_eq!(
            choose_session(Cli::Claude, Some("a"), Some(&r), Some("s1"), true).unwrap(),
            SessionChoice::Fork("s1".into())
        );
        assert!(choose_session(Cli::Claude, Some("a"), Some(&r), Some("other"), false).is_err());
        assert!(choose_session(Cli::Claude, None, None, Some("s1"), false).is_err());
        assert!(choose_session(Cli::Claude, Some("a"), None, None, true).is_err());
        match choose_session(Cli::Claude, Some("a"), None, None, false).unwrap() {
            SessionChoice::New(id) => assert_eq!(id.len(), 36),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn exit_codes() {
        let mut r = RunReport::new(Cli::Claude, "sb");
        r.cli_exit_code = Some(0);
        assert_eq!(r.exit_code(), 1, "no result is a failure");
        r.summary.result = Some(berth_events::Outcome {
            success: true,
            ..Default::default()
        });
        assert_eq!(r.exit_code(), 0);
        r.timed_out = true;
        assert_eq!(r.exit_code(), 124);
    }
}
