//! Interactive sessions: one long-running CLI process per agent (Claude's
//! `--input-format stream-json`), kept by the sandbox's agent as a tagged background process
//! with its stdin open. `send` subscribes to the process's output first, then writes one user
//! turn, and reads until that turn's `result` event — the end of a turn is the CLI's own
//! event, never a guess. If the process has died, `send` says so and falls back to a one-shot
//! run that resumes the session.

use std::time::Duration;

use berth_engine::{Engine, ImageInfo};
use berth_protocol::v1::{
    exec_input, exec_output, AttachRequest, ExecInput, ExecStart, ListProcessesRequest,
    SignalRequest, WriteStdinRequest,
};
use berth_sandbox::sandbox;
use tokio_stream::StreamExt;

use crate::launch::{self, Host, Progress, RunReport, RunRequest, StreamParser};
use crate::profile::{self, PromptDelivery, SessionChoice};
use crate::settings::AgentSettings;
use crate::store::{self, AgentRecord, AgentStore, Interactive};
use crate::RuntimeError;
use berth_sandbox::store::FileStore;

/// Tag of the interactive CLI process inside the agent's sandbox.
pub const SESSION_TAG: &str = "agent-session";

/// Starts the agent's interactive CLI process in its kept sandbox; returns the session id.
pub async fn start<E: Engine>(
    engine: &E,
    host: &Host,
    image: &ImageInfo,
    settings: &AgentSettings,
    name: &str,
    resume: Option<&str>,
) -> Result<(String, String), RuntimeError> {
    store::validate_name(name)?;
    let cli = settings.cli();
    let mut record = host
        .agents
        .load(name)?
        .unwrap_or_else(|| AgentRecord::new(name, cli));
    if let Some(i) = &record.interactive {
        if running(engine, &host.store, i).await {
            return Err(RuntimeError::Input(format!(
                "agent {name:?} already has a running session ({}); `berth agent session stop {name}` ends it",
                i.session_id
            )));
        }
    }
    let session = launch::choose_session(cli, Some(name), Some(&record), resume, false)?;
    let argv = profile::interactive(cli, &session, &settings.cli_options())?;
    let acquired = launch::acquire(engine, host, image, settings, Some(name), true).await?;
    let (env, _) = launch::cli_env(settings);
    let start = ExecStart {
        argv,
        env: env.into_iter().collect(),
        cwd: launch::cli_cwd(settings),
        detach: true,
        tag: SESSION_TAG.to_string(),
        stdin: true,
        ..Default::default()
    };
    let mut client = sandbox::connect(engine, &acquired.record).await?;
    let request = tokio_stream::once(ExecInput {
        input: Some(exec_input::Input::Start(start)),
    });
    let mut stream = client.exec(request).await?.into_inner();
    match stream.message().await? {
        Some(m) => match m.output {
            Some(exec_output::Output::Started(_)) => {}
            Some(exec_output::Output::StartFailed(f)) => {
                return Err(RuntimeError::Input(format!(
                    "{cli} could not start in image {}: {}",
                    settings.image(),
                    f.message
                )))
            }
            _ => return Err(RuntimeError::Channel("unexpected reply to start".into())),
        },
        None => return Err(RuntimeError::Channel("no reply to start".into())),
    }
    let session_id = match &session {
        SessionChoice::New(id) | SessionChoice::Resume(id) | SessionChoice::Fork(id) => id.clone(),
    };
    record.add_session(&session_id, None);
    record.interactive = Some(Interactive {
        sandbox_id: acquired.record.id.clone(),
        tag: SESSION_TAG.to_string(),
        session_id: session_id.clone(),
    });
    host.agents.save(&record)?;
    Ok((session_id, acquired.record.id))
}

/// Whether the interactive process is still running.
async fn running<E: Engine>(engine: &E, store: &FileStore, i: &Interactive) -> bool {
    let Ok(record) = sandbox::find(store, &i.sandbox_id) else {
        return false;
    };
    let Ok(mut client) = sandbox::connect(engine, &record).await else {
        return false;
    };
    let Ok(list) = client.list_processes(ListProcessesRequest {}).await else {
        return false;
    };
    list.into_inner()
        .processes
        .iter()
        .any(|p| p.tag == i.tag && p.running)
}

/// How a `send` went.
pub enum SendOutcome {
    /// The live process answered the turn.
    Turn(RunReport),
    /// The process had died: a one-shot resumed run answered instead (the message says why).
    FellBack { why: String, report: RunReport },
}

/// One turn for an agent's session.
#[derive(Debug, Clone)]
pub struct SendRequest<'a> {
    pub name: &'a str,
    pub message: &'a str,
    /// How long to wait for the turn's result; the process is ended after it.
    pub timeout: Duration,
}

/// Sends one user turn to the agent's interactive process and streams the reply until the
/// turn's result (or the timeout, which ends the process).
pub async fn send<E: Engine>(
    engine: &E,
    host: &Host,
    image_for_fallback: impl std::future::Future<Output = Result<ImageInfo, RuntimeError>>,
    settings: &AgentSettings,
    request: SendRequest<'_>,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<SendOutcome, RuntimeError> {
    let SendRequest {
        name,
        message,
        timeout,
    } = request;
    let record = host.agents.load(name)?.ok_or_else(|| {
        RuntimeError::Input(format!(
            "no agent named {name:?}: start one with `berth agent session start --name {name} --workspace .`"
        ))
    })?;
    let Some(interactive) = record.interactive.clone() else {
        return Err(RuntimeError::Input(format!(
            "agent {name:?} has no session: start one with `berth agent session start --name {name}`"
        )));
    };
    match live_turn(
        engine,
        &host.store,
        &record,
        &interactive,
        message,
        timeout,
        progress,
    )
    .await?
    {
        Ok(report) => Ok(SendOutcome::Turn(report)),
        Err(why) => {
            let mut settings = settings.clone();
            settings.cli = Some(record.cli);
            settings.keep = Some(true);
            settings.timeout = Some(timeout);
            let request = RunRequest {
                settings,
                name: Some(name.to_string()),
                prompt: message.to_string(),
                delivery: PromptDelivery::Argv,
                resume: Some(interactive.session_id.clone()),
                fork: false,
            };
            let image = image_for_fallback.await?;
            let report = launch::run(
                engine,
                host,
                &image,
                &request,
                progress,
                std::future::pending(),
            )
            .await?;
            // The session process is gone for good: forget it.
            if let Some(mut r) = host.agents.load(name)? {
                r.interactive = None;
                host.agents.save(&r)?;
            }
            Ok(SendOutcome::FellBack { why, report })
        }
    }
}

/// One turn on the live process. `Ok(Err(why))` when there is no live process to talk to.
async fn live_turn<E: Engine>(
    engine: &E,
    store: &FileStore,
    record: &AgentRecord,
    interactive: &Interactive,
    message: &str,
    timeout: Duration,
    progress: &mut (dyn FnMut(Progress<'_>) + Send),
) -> Result<Result<RunReport, String>, RuntimeError> {
    let Ok(sb) = sandbox::find(store, &interactive.sandbox_id) else {
        return Ok(Err(format!(
            "the session's sandbox {} is gone",
            interactive.sandbox_id
        )));
    };
    let mut client = match sandbox::connect(engine, &sb).await {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("the session's sandbox is not answering: {e}"))),
    };
    let processes = client
        .list_processes(ListProcessesRequest {})
        .await?
        .into_inner()
        .processes;
    match processes.iter().find(|p| p.tag == interactive.tag) {
        Some(p) if p.running => {}
        Some(p) => {
            let code = p.exited.map_or(-1, |e| e.code);
            return Ok(Err(format!(
                "the session process of agent {:?} has exited (code {code})",
                record.name
            )));
        }
        None => {
            return Ok(Err(format!(
                "the session process of agent {:?} is not running (the sandbox restarted)",
                record.name
            )))
        }
    }
    // Subscribe before writing, so no byte of the reply can be missed.
    let mut output = client
        .attach(AttachRequest {
            tag: interactive.tag.clone(),
            follow_only: true,
        })
        .await?
        .into_inner();
    client
        .write_stdin(WriteStdinRequest {
            tag: interactive.tag.clone(),
            data: profile::user_turn(message).into_bytes().into(),
            close: false,
        })
        .await?;

    let mut report = RunReport::new(record.cli, &sb.id);
    report.agent = Some(record.name.clone());
    report.kept = true;
    report.session_id = Some(interactive.session_id.clone());
    report.home_volume = Some(launch::home_volume(&record.name));
    let started = std::time::Instant::now();
    let mut parser = StreamParser::new(record.cli);
    let turn = async {
        while let Some(item) = output.next().await {
            match item?.output {
                Some(exec_output::Output::Stdout(b))
                    if report.take_stdout(&mut parser, &b, progress) =>
                {
                    report.cli_exit_code = Some(0);
                    return Ok::<bool, RuntimeError>(true);
                }
                Some(exec_output::Output::Stderr(b)) => progress(Progress::Stderr(&b)),
                Some(exec_output::Output::Exited(e)) => {
                    report.cli_exit_code = Some(e.code);
                    report.problems.push(format!(
                        "the session process exited (code {}) before the turn's result",
                        e.code
                    ));
                    return Ok(false);
                }
                _ => {}
            }
        }
        report
            .problems
            .push("the session's output ended before the turn's result".into());
        Ok(false)
    };
    let finished = tokio::time::timeout(timeout, turn).await;
    if finished.is_err() {
        report.timed_out = true;
        // The timeout ends the agent's whole process tree.
        let _ = client
            .signal(SignalRequest {
                tag: interactive.tag.clone(),
                pid: 0,
                signal: libc::SIGKILL,
            })
            .await;
    } else if let Ok(Err(e)) = finished {
        return Err(e);
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    if let Some(id) = report.summary.session_id.clone() {
        report.session_id = Some(id);
    }
    Ok(Ok(report))
}

/// Ends the agent's interactive process (stdin closed, then SIGTERM) and forgets it.
pub async fn stop<E: Engine>(
    engine: &E,
    store: &FileStore,
    agents: &AgentStore,
    name: &str,
) -> Result<bool, RuntimeError> {
    let Some(mut record) = agents.load(name)? else {
        return Ok(false);
    };
    let Some(i) = record.interactive.take() else {
        return Ok(false);
    };
    if let Ok(sb) = sandbox::find(store, &i.sandbox_id) {
        if let Ok(mut client) = sandbox::connect(engine, &sb).await {
            let _ = client
                .write_stdin(WriteStdinRequest {
                    tag: i.tag.clone(),
                    data: Default::default(),
                    close: true,
                })
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = client
                .signal(SignalRequest {
                    tag: i.tag.clone(),
                    pid: 0,
                    signal: libc::SIGTERM,
                })
                .await;
        }
    }
    agents.save(&record)?;
    Ok(true)
}

/// Removes everything of a named agent: its sandboxes, its home volume and its record.
pub async fn remove_agent<E: Engine>(
    engine: &E,
    store: &FileStore,
    agents: &AgentStore,
    name: &str,
) -> Result<usize, RuntimeError> {
    crate::store::validate_name(name)?;
    let sandboxes = launch::agent_sandboxes(store, name);
    let n = sandboxes.len();
    for sb in sandboxes {
        sandbox::remove(engine, store, &sb, true).await?;
    }
    engine.volume_remove(&launch::home_volume(name)).await?;
    agents.remove(name)?;
    Ok(n)
}
