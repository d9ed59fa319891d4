//! Agent runs through the API: a Claude Code, Codex or Gemini CLI run in one of the caller's
//! sandboxes, its output as berth's normalized events.
//!
//! A run is a background process of the sandbox (id `agent.<run>`), so everything processes
//! have, runs have too: a retried start does not start twice, a run is activity (the idle
//! timeout never ends a working agent), its output outlives the stream that watches it, and
//! it is resumed by line. The CLI's argv comes from `berth-runtimes` (each CLI's headless flags
//! and its mode that acts without asking; the prompt is one argv element, never a shell
//! string), its lines are parsed by `berth-events`. The sandbox is the caller's to prepare: an
//! image with the CLI, and egress to its API host with the key as a secret (`allow_hosts`,
//! `secrets` at create), so the key never enters the sandbox.

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_events::{Cli, Record, Summary};
use berth_runtimes::launch::StreamParser;
use berth_runtimes::profile::{self, CliOptions, PromptDelivery, SessionChoice};
use berth_service::{ExecEvent, ExecRequest, Offsets};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{IntoParams, ToSchema};

use crate::api::find_live;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::AppState;

/// An agent run to start.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartAgentRun {
    /// Your id for the run (1-58 of `[A-Za-z0-9_.-]`): a retried start does not start twice.
    pub id: String,
    /// `claude` (default), `codex` or `gemini`.
    #[serde(default)]
    pub cli: Option<String>,
    /// The prompt, passed to the CLI as one argument. Not with `interactive`, whose turns are
    /// sent to `…/turns`.
    #[serde(default)]
    pub prompt: String,
    /// Start an interactive session instead of a one-shot run: the CLI (Claude Code) stays,
    /// reading turns on its stdin; send each with `POST …/agent-runs/{run}/turns`, end it with
    /// `…/cancel`.
    #[serde(default)]
    pub interactive: bool,
    #[serde(default)]
    pub model: Option<String>,
    /// Maximum agentic turns (Claude).
    #[serde(default)]
    pub max_turns: Option<u64>,
    /// The CLI's own permission mode (default: the one that acts without asking).
    #[serde(default)]
    pub permission_mode: Option<String>,
    /// Extra environment for the CLI (a secret belongs in the sandbox's `secrets`).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default /workspace).
    #[serde(default)]
    pub cwd: Option<String>,
    /// End the CLI's whole process tree after this many seconds (default 1800).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Continue this session of the sandbox's named agent (see `/v1/agents/{name}`); only a
    /// sandbox created with `agent` has sessions to resume.
    #[serde(default)]
    pub resume: Option<String>,
    /// With `resume`: branch into a new session instead of continuing.
    #[serde(default)]
    pub fork: bool,
}

/// A started run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentRun {
    pub id: String,
    pub cli: String,
    pub pid: u32,
    /// False when a run with this id existed (a retried start).
    pub created: bool,
    /// The CLI's session, when berth chose it (a new or resumed Claude session); otherwise the
    /// CLI reports it in its events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// One item of a run's event stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentRunItem {
    /// A normalized event of the CLI (berth's event model: `session_started`,
    /// `assistant_text`, `tool_call`, `tool_result`, `usage`, `result`, `permission_denied`,
    /// `error`, `other`, `malformed`), with its line number and the CLI's raw JSON.
    Event {
        #[schema(value_type = Object)]
        record: Record,
    },
    /// The CLI ended: its exit code and the run's summary.
    Finished {
        exit_code: i32,
        timed_out: bool,
        /// A result event, no error and no denied tool call.
        clean: bool,
        #[schema(value_type = Object)]
        summary: Summary,
    },
    /// An interactive session's turn ended (the CLI's result event): its summary. The
    /// session's CLI is still running, waiting for the next turn.
    TurnEnded {
        /// A result event, no error and no denied tool call.
        clean: bool,
        #[schema(value_type = Object)]
        summary: Summary,
    },
    /// The stream broke before the CLI ended; its outcome is unknown.
    Error { message: String },
}

fn process_id(run: &str) -> Result<String, ApiError> {
    if run.len() > 58 {
        return Err(ApiError::invalid(format!(
            "run id {run:?} is longer than 58 characters: pick a shorter one, e.g. fix-1"
        )));
    }
    let id = format!("agent.{run}");
    berth_service::exec::check_process_id(&id).map_err(|_| {
        ApiError::invalid(format!(
            "run id {run:?} is not valid: use letters, digits, '_', '.' or '-', e.g. fix-1"
        ))
    })?;
    Ok(id)
}

/// Starts an agent CLI run in the sandbox.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/agent-runs", tag = "agents", request_body = StartAgentRun,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 201, body = AgentRun), (status = 200, body = AgentRun), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn start_run(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Json(body): Json<StartAgentRun>,
) -> Result<(StatusCode, Json<AgentRun>), ApiError> {
    let process = process_id(&body.id)?;
    let cli: Cli = body.cli.as_deref().unwrap_or("claude").parse().map_err(
        |e: berth_events::UnknownCli| ApiError::invalid(format!("{e}; e.g. \"claude\"")),
    )?;
    if body.interactive {
        if !body.prompt.is_empty() {
            return Err(ApiError::invalid(
                "an interactive session takes no prompt: start it, then send each turn to POST …/agent-runs/{run}/turns",
            ));
        }
    } else if body.prompt.trim().is_empty() || body.prompt.contains('\0') {
        return Err(ApiError::invalid(
            "the prompt is empty or holds a NUL byte: give the task, e.g. \"fix the failing test\"",
        ));
    }
    if let Some(t) = body.timeout_secs.filter(|t| *t > 7 * 24 * 3600) {
        return Err(ApiError::invalid(format!(
            "timeout_secs {t} is more than a week: give seconds, e.g. 1800"
        )));
    }
    let options = CliOptions {
        model: body.model.clone(),
        max_turns: body.max_turns,
        permission_mode: body.permission_mode.clone(),
    };
    let (record, _) = find_live(&state, &auth, &id)?;
    // A named agent's sessions are its tenant's (an admin's run in it too).
    let agent = crate::agents::agent_of(&record).map(|name| {
        let tenant = record
            .labels
            .get(berth_spec::labels::TENANT)
            .cloned()
            .unwrap_or_default();
        (tenant, name.to_string())
    });
    let known = match &agent {
        Some((tenant, name)) => state.db.agent(tenant, name)?.and_then(|a| a.record),
        None => None,
    };
    if let (Some(known), Some((_, name))) = (&known, &agent) {
        if known.cli != cli {
            return Err(ApiError::invalid(format!(
                "agent {name:?} runs {}, not {cli}: use another agent name, or remove it (DELETE /v1/agents/{name})",
                known.cli
            )));
        }
    }
    if agent.is_none() && body.resume.is_some() {
        return Err(ApiError::invalid(
            "resume needs a named agent's sandbox: create it with \"agent\": \"NAME\", whose home keeps the sessions",
        ));
    }
    let session = berth_runtimes::launch::choose_session(
        cli,
        agent.as_ref().map(|(_, n)| n.as_str()),
        known.as_ref(),
        body.resume.as_deref(),
        body.fork,
    )
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let argv = if body.interactive {
        profile::interactive(cli, &session, &options)
    } else {
        profile::one_shot(cli, &session, &options, &body.prompt, &PromptDelivery::Argv)
    }
    .map_err(|e| ApiError::invalid(e.to_string()))?;
    let session_id = match &session {
        SessionChoice::New(id) | SessionChoice::Resume(id) if !id.is_empty() => Some(id.clone()),
        _ => None,
    };
    let mut env = body.env.clone();
    // A named agent's CLI keeps its sessions in the agent's home volume.
    let home = if agent.is_some() {
        berth_runtimes::settings::AGENT_HOME
    } else {
        "/tmp"
    };
    env.entry("HOME".into()).or_insert_with(|| home.into());
    let request = ExecRequest {
        argv,
        env,
        cwd: Some(body.cwd.clone().unwrap_or_else(|| "/workspace".into())),
        // A session lasts until it is ended (or its sandbox is); a run, 30 minutes at most.
        timeout: body
            .timeout_secs
            .or((!body.interactive).then_some(1800))
            .map(std::time::Duration::from_secs),
        user: None,
        stdin: None,
    };
    let started = state
        .service
        .start_process(&record, &process, &request)
        .await?;
    if let (Some((tenant, name)), true) = (agent, started.created) {
        record_session(&state, &record, &process, tenant, name, cli, &session);
    }
    let status = if started.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(AgentRun {
            id: body.id,
            cli: cli.to_string(),
            pid: started.pid,
            created: started.created,
            session_id,
        }),
    ))
}

/// Records the session a named agent's run works in, whoever watches the run. One berth
/// chose (Claude's new or resumed session) is recorded at once; otherwise (a fork, Codex's and
/// Gemini's own ids) the CLI reports it in its first events, so a task reads the run's output
/// until it does.
fn record_session(
    state: &AppState,
    record: &berth_sandbox::sandbox::SandboxRecord,
    process: &str,
    tenant: String,
    name: String,
    cli: Cli,
    session: &SessionChoice,
) {
    let parent = match session {
        SessionChoice::Fork(p) => Some(p.clone()),
        _ => None,
    };
    // Claude's new session is known now: recorded at once, so a resume right after works
    // even before the CLI printed anything.
    if let SessionChoice::New(id) | SessionChoice::Resume(id) = session {
        if !id.is_empty() {
            let _ = state.db.add_agent_session(&tenant, &name, cli, id, None);
            return;
        }
    }
    let (state, record, process) = (state.clone(), record.clone(), process.to_string());
    tokio::spawn(async move {
        let mut reported = None;
        if let Ok(mut rx) = state
            .service
            .attach(&record, &process, Offsets::default())
            .await
        {
            let mut parser = StreamParser::new(cli);
            let mut summary = Summary::default();
            while let Some(event) = rx.next().await {
                let records = match &event {
                    ExecEvent::Stdout { .. } => parser.push(&event.bytes().unwrap_or_default()),
                    ExecEvent::Exited { .. } => parser.finish(),
                    ExecEvent::StartFailed { .. } | ExecEvent::Error { .. } => break,
                    _ => Vec::new(),
                };
                for r in &records {
                    summary.add(r);
                }
                if summary.session_id.is_some() || matches!(event, ExecEvent::Exited { .. }) {
                    reported = summary.session_id;
                    break;
                }
            }
        }
        // A CLI that reported no session still ran for this agent: its CLI is recorded.
        let _ = state.db.add_agent_session(
            &tenant,
            &name,
            cli,
            reported.as_deref().unwrap_or_default(),
            parent.as_deref(),
        );
    });
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `claude` (default), `codex` or `gemini`: the CLI the run is (its output's format).
    pub cli: Option<String>,
    /// Only events after this line of the CLI's output (SSE: `Last-Event-ID`).
    pub after: Option<usize>,
}

/// A run's normalized events: what it did so far (as far as the agent keeps: the last 1 MiB
/// of output), then live, then `finished` with the summary.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/agent-runs/{run}/events", tag = "agents",
    params(("id" = String, Path, description = "Sandbox id or name"), ("run" = String, Path, description = "Your run id"), EventsQuery),
    responses((status = 200, description = "The run's events", content((AgentRunItem = "application/x-ndjson"), (AgentRunItem = "text/event-stream"))),
        (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((id, run)): Path<(String, String)>,
    Query(q): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let process = process_id(&run)?;
    let cli: Cli =
        q.cli
            .as_deref()
            .unwrap_or("claude")
            .parse()
            .map_err(|e: berth_events::UnknownCli| {
                ApiError::invalid(format!("{e}; e.g. cli=claude"))
            })?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or(q.after)
        .unwrap_or(0);
    let (record, _) = find_live(&state, &auth, &id)?;
    let guard = state.activity(&record.id);
    let rx = state
        .service
        .attach(&record, &process, Offsets::default())
        .await?;
    let mut parser = StreamParser::new(cli);
    let mut summary = Summary::default();
    let items = rx.flat_map(move |event| {
        let _ = &guard;
        let mut out: Vec<(usize, AgentRunItem)> = Vec::new();
        let mut records = Vec::new();
        match &event {
            ExecEvent::Stdout { .. } => records = parser.push(&event.bytes().unwrap_or_default()),
            ExecEvent::Exited {
                code, timed_out, ..
            } => {
                records = parser.finish();
                for r in &records {
                    summary.add(r);
                }
                let mut items: Vec<(usize, AgentRunItem)> = records
                    .drain(..)
                    .filter(|r| r.line > after)
                    .map(|r| (r.line, AgentRunItem::Event { record: r }))
                    .collect();
                items.push((
                    usize::MAX,
                    AgentRunItem::Finished {
                        exit_code: *code,
                        timed_out: *timed_out,
                        clean: *code == 0 && clean(&summary),
                        summary: summary.clone(),
                    },
                ));
                return futures_util::stream::iter(items);
            }
            ExecEvent::StartFailed { message, .. } | ExecEvent::Error { message } => {
                out.push((
                    usize::MAX,
                    AgentRunItem::Error {
                        message: message.clone(),
                    },
                ));
            }
            _ => {}
        }
        for r in records {
            summary.add(&r);
            if r.line > after {
                out.push((r.line, AgentRunItem::Event { record: r }));
            }
        }
        futures_util::stream::iter(out)
    });
    Ok(respond(items, &headers))
}

/// What `clean` says: the CLI reported a result, no error and no denied tool call.
fn clean(summary: &Summary) -> bool {
    summary.success() && summary.permission_denials.is_empty()
}

/// A stream of run items as SSE (each event's id its line) or NDJSON.
fn respond(
    items: impl futures_util::Stream<Item = (usize, AgentRunItem)> + Send + 'static,
    headers: &HeaderMap,
) -> Response {
    if crate::api::wants_sse(headers) {
        let stream = items.map(|(line, item)| {
            let data = serde_json::to_string(&item).unwrap_or_default();
            let mut event = Event::default().event("agent").data(data);
            if line != usize::MAX {
                event = event.id(line.to_string());
            }
            Ok::<_, Infallible>(event)
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(10)))
            .into_response();
    }
    let body = items.map(|(_, item)| {
        let mut line = serde_json::to_vec(&item).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(bytes::Bytes::from(line))
    });
    Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "application/x-ndjson")
        .body(axum::body::Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// One turn of an interactive session.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentTurn {
    /// The user's message.
    pub message: String,
    /// `claude` (default): the session's CLI.
    #[serde(default)]
    pub cli: Option<String>,
    /// End the session's CLI if the turn has not ended after this many seconds (default 600).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// Sends one turn to an interactive session (a run started with `interactive`) and streams
/// the reply's normalized events until the turn's own result (`turn_ended`; the CLI waits
/// for the next turn), or `finished` if the CLI ended first. One turn at a time per session:
/// another while one is in progress is a 409. A turn that outlives `timeout_secs` ends the
/// session's CLI (`finished` with `timed_out`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/agent-runs/{run}/turns", tag = "agents", request_body = AgentTurn,
    params(("id" = String, Path, description = "Sandbox id or name"), ("run" = String, Path, description = "The session's run id")),
    responses((status = 200, description = "The turn's events", content((AgentRunItem = "application/x-ndjson"), (AgentRunItem = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn turn(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((id, run)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<AgentTurn>,
) -> Result<Response, ApiError> {
    let process = process_id(&run)?;
    let cli: Cli = body.cli.as_deref().unwrap_or("claude").parse().map_err(
        |e: berth_events::UnknownCli| ApiError::invalid(format!("{e}; e.g. \"claude\"")),
    )?;
    if body.message.trim().is_empty() || body.message.contains('\0') {
        return Err(ApiError::invalid(
            "the message is empty or holds a NUL byte: give the turn, e.g. \"now add a test\"",
        ));
    }
    let limit = body.timeout_secs.unwrap_or(600);
    if !(1..=7 * 24 * 3600).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "timeout_secs {limit} is not between 1 and a week: give seconds, e.g. 600"
        )));
    }
    let (record, _) = find_live(&state, &auth, &id)?;
    let processes = state.service.processes(&record).await?;
    match processes.iter().find(|p| p.id == process) {
        None => {
            return Err(ApiError::not_found(format!(
                "sandbox {} has no agent run {run:?}: start a session with POST /v1/sandboxes/{id}/agent-runs and \"interactive\": true",
                record.id
            )))
        }
        Some(p) if !p.running => {
            return Err(ApiError::conflict(format!(
                "the session {run:?} has ended (exit code {}): start another, resuming its session",
                p.exit_code.unwrap_or(-1)
            )))
        }
        Some(_) => {}
    }
    let Some(turn_guard) = state.turn(&record.id, &process) else {
        return Err(ApiError::conflict(format!(
            "a turn of session {run:?} is in progress: wait for its end (one turn at a time)"
        )));
    };
    let activity = state.activity(&record.id);
    // Subscribe before writing, so no byte of the reply can be missed.
    let mut rx = state.service.follow(&record, &process).await?;
    let line = bytes::Bytes::from(profile::user_turn(&body.message));
    state
        .service
        .write_stdin(&record, &process, line, false)
        .await?;
    let (tx, items) = tokio::sync::mpsc::channel::<(usize, AgentRunItem)>(64);
    tokio::spawn(async move {
        let _guards = (turn_guard, activity);
        let mut parser = StreamParser::new(cli);
        let mut summary = Summary::default();
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(limit));
        tokio::pin!(deadline);
        let mut timed_out = false;
        loop {
            let event = tokio::select! {
                event = rx.next() => event,
                () = &mut deadline, if !timed_out => {
                    // The CLI's whole process tree ends; its exit follows.
                    timed_out = true;
                    let _ = state.service.signal(&record, &process, 9).await;
                    continue;
                }
            };
            let records = match &event {
                Some(ExecEvent::Stdout { .. }) => parser.push(
                    &event
                        .as_ref()
                        .and_then(ExecEvent::bytes)
                        .unwrap_or_default(),
                ),
                Some(ExecEvent::Exited { code, .. }) => {
                    let mut items = Vec::new();
                    for r in parser.finish() {
                        summary.add(&r);
                        items.push((r.line, AgentRunItem::Event { record: r }));
                    }
                    items.push((
                        usize::MAX,
                        AgentRunItem::Finished {
                            exit_code: *code,
                            timed_out,
                            clean: false,
                            summary: summary.clone(),
                        },
                    ));
                    for item in items {
                        let _ = tx.send(item).await;
                    }
                    return;
                }
                Some(ExecEvent::StartFailed { message, .. } | ExecEvent::Error { message }) => {
                    let message = message.clone();
                    let _ = tx.send((usize::MAX, AgentRunItem::Error { message })).await;
                    return;
                }
                None => {
                    let message = "the session's output ended before the turn did".to_string();
                    let _ = tx.send((usize::MAX, AgentRunItem::Error { message })).await;
                    return;
                }
                Some(_) => Vec::new(),
            };
            for r in records {
                summary.add(&r);
                let ended = matches!(r.event, berth_events::Event::Result(_));
                if tx
                    .send((r.line, AgentRunItem::Event { record: r }))
                    .await
                    .is_err()
                {
                    return;
                }
                if ended {
                    let ended = AgentRunItem::TurnEnded {
                        clean: clean(&summary),
                        summary: summary.clone(),
                    };
                    let _ = tx.send((usize::MAX, ended)).await;
                    return;
                }
            }
        }
    });
    Ok(respond(ReceiverStream::new(items), &headers))
}

/// Cancels a run or ends a session: its stdin closed (EOF ends a CLI reading turns), then
/// SIGTERM to the CLI's process group (its `finished` event follows). A run that has already
/// ended is cancelled already: 204 again.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/agent-runs/{run}/cancel", tag = "agents",
    params(("id" = String, Path, description = "Sandbox id or name"), ("run" = String, Path, description = "Your run id")),
    responses((status = 204), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((id, run)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let process = process_id(&run)?;
    let (record, _) = find_live(&state, &auth, &id)?;
    let ended = |e: &berth_service::ServiceError| e.kind == berth_service::ErrorKind::Conflict;
    match state
        .service
        .write_stdin(&record, &process, bytes::Bytes::new(), true)
        .await
    {
        Err(e) if ended(&e) => return Ok(StatusCode::NO_CONTENT),
        other => other?,
    }
    // The run was there a moment ago: one that is gone now (its CLI ended on the EOF, its
    // process group with it) has ended, as asked.
    match state.service.signal(&record, &process, 15).await {
        Err(e) if !ended(&e) && e.kind != berth_service::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}
