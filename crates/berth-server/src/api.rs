//! The HTTP API's handlers: each parses, finds the caller's sandbox, calls one operation of
//! the service and renders its result. The OpenAPI document is generated from these.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use berth_sandbox::sandbox::SandboxRecord;
use berth_service::{CreateRequest, ExecEvent, ExecRequest, Offsets, ServiceError};
use berth_spec::{EgressPolicy, HostPattern, Limits, MountSpec, NetworkMode, SandboxSpec};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::IntoParams;

use crate::auth::Auth;
use crate::db::{now_ms, Lifetime, OnTimeout};
use crate::error::{ApiError, ErrorBody, Json, Path, Query};
use crate::model::*;
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;

/// The default lifetime of an API-made sandbox.
const DEFAULT_TIMEOUT_SECS: u64 = 3600;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// A sandbox as the API shows it: the caller's labels only, no token, no secret.
pub fn view(record: &SandboxRecord, life: Option<&Lifetime>, status: Option<String>) -> Sandbox {
    let labels = record
        .labels
        .iter()
        .filter(|(k, _)| !k.starts_with("berth."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Sandbox {
        id: record.id.clone(),
        name: record.name.clone(),
        image: record.image.clone(),
        state: life.map_or("running".into(), |l| l.state.clone()),
        status,
        created: record.created.clone(),
        tenant: record
            .labels
            .get(berth_spec::labels::TENANT)
            .cloned()
            .unwrap_or_default(),
        user: record.user.clone(),
        workdir: record.workdir.clone(),
        labels,
        timeout_at: life.and_then(|l| {
            let deadline = l.deadline_ms?;
            // While paused, the end moves on with the clock standing still.
            Some(rfc3339(match l.paused_ms {
                Some(p) => deadline + (now_ms() - p),
                None => deadline,
            }))
        }),
        idle_timeout: life
            .and_then(|l| l.idle_timeout_ms)
            .map(|ms| (ms / 1000) as u64),
        on_timeout: life.map_or(OnTimeout::Kill, |l| l.on_timeout),
        egress: record.egress.as_ref().map(|e| EgressView {
            allow: e.allow.iter().map(ToString::to_string).collect(),
            secrets: e.secrets.iter().map(|s| s.name.clone()).collect(),
        }),
        agent: crate::agents::agent_of(record).map(String::from),
    }
}

/// Refuses a NUL byte (no C string can carry it) or an empty string where a value is needed.
fn text(field: &str, value: &str, empty_ok: bool) -> ApiResult<()> {
    if value.contains('\0') {
        return Err(ApiError::invalid(format!(
            "{field} contains a NUL byte, which no command, variable or path can hold: remove it"
        )));
    }
    if !empty_ok && value.is_empty() {
        return Err(ApiError::invalid(format!("{field} is empty: give a value")));
    }
    Ok(())
}

/// Checks an argv: a program, then arguments, none with a NUL.
fn check_command(field: &str, argv: &[String], required: bool) -> ApiResult<()> {
    if let Some(first) = argv.first() {
        text(&format!("{field}[0] (the program)"), first, false)?;
    } else if required {
        return Err(ApiError::invalid(format!(
            "{field} is empty: give the command and its arguments, e.g. [\"ls\", \"-l\"]"
        )));
    }
    for a in argv {
        text(field, a, true)?;
    }
    Ok(())
}

fn check_env(env: &BTreeMap<String, String>) -> ApiResult<()> {
    for (k, v) in env {
        text("an env name", k, false)?;
        text(&format!("env {k}"), v, true)?;
    }
    Ok(())
}

/// The spec of a create request: berth's hardened defaults plus what the caller asked for,
/// each value checked. Host paths only under the operator's workspace root.
fn spec_of(body: &CreateSandbox, workspace_root: Option<&PathBuf>) -> ApiResult<SandboxSpec> {
    let bad = |e: berth_spec::SpecError| ApiError::invalid(e.to_string());
    check_command("command", &body.command, false)?;
    check_env(&body.env)?;
    for (k, v) in &body.labels {
        text("a label key", k, false)?;
        text(&format!("label {k}"), v, true)?;
    }
    let mut spec = SandboxSpec::new(body.command.clone());
    if let Some(image) = &body.image {
        if image.trim().is_empty() {
            return Err(ApiError::invalid(
                "image is empty: name one, e.g. \"berth/base\" or \"debian:12\"",
            ));
        }
        spec.image = image.clone();
    }
    let defaults = Limits::default();
    let memory = body.memory.clone();
    let cpus = body.cpus.clone();
    spec.limits = Limits::parse(
        memory.as_deref().unwrap_or("1g"),
        cpus.as_deref().unwrap_or("1"),
        body.pids.unwrap_or(defaults.pids),
        "64m",
    )
    .map_err(bad)?;
    if let Some(n) = &body.network {
        spec.network = NetworkMode::parse(n).map_err(bad)?;
    }
    spec.security.read_only_rootfs = body.read_only;
    for (name, value) in &body.env {
        let var = berth_spec::spec::parse_env(&format!("{name}={value}")).map_err(bad)?;
        spec.env.push(var);
    }
    let mut egress = EgressPolicy::default();
    for h in &body.allow_hosts {
        egress.allow.push(HostPattern::parse(h).map_err(bad)?);
    }
    for s in &body.secrets {
        if s.value.is_empty() {
            return Err(ApiError::invalid(format!(
                "secret {} has an empty value: give its value, e.g. {{\"name\": \"{}\", \"value\": \"…\", \"hosts\": [\"api.example.com\"]}}",
                s.name, s.name
            )));
        }
        let hosts = s
            .hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(bad))
            .collect::<ApiResult<Vec<_>>>()?;
        // The name is checked like the CLI's `--secret NAME@HOST`; the value never goes
        // through a parser that could echo it.
        let mut parsed = berth_spec::SecretSpec::parse(&format!("{}@placeholder.invalid", s.name))
            .map_err(bad)?;
        parsed.hosts = hosts;
        parsed.value = Some(berth_spec::SecretValue::new(s.value.clone()));
        egress.secrets.push(parsed);
    }
    if egress.enabled() && spec.network == NetworkMode::Bridge {
        return Err(bad(berth_spec::SpecError::EgressWithBridge));
    }
    spec.egress = egress;
    if let Some(dir) = &body.workspace {
        let Some(root) = workspace_root else {
            return Err(ServiceError::forbidden(
                "this server mounts no host directories (its operator allowed no workspace root with `berth serve --workspace-root DIR`): leave `workspace` out and upload files instead, e.g. PUT /v1/sandboxes/{id}/files?path=/workspace/main.py",
            )
            .into());
        };
        let resolved = std::fs::canonicalize(dir).map_err(|_| {
            ApiError::invalid(format!(
                "workspace {dir:?} does not exist on the server: give a directory under {}",
                root.display()
            ))
        })?;
        if !resolved.starts_with(root) || !resolved.is_dir() {
            return Err(ServiceError::forbidden(format!(
                "workspace {dir:?} is not a directory under this server's workspace root {}",
                root.display()
            ))
            .into());
        }
        spec.workspace = Some(MountSpec {
            host: resolved.display().to_string(),
            target: "/workspace".to_string(),
            read_only: false,
        });
    }
    // A sandbox's own timeout is the server's to enforce (`timeout`), not a run's.
    spec.timeout = None;
    Ok(spec)
}

/// Creates a sandbox; it answers once its agent does.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", request_body = CreateSandbox,
    responses((status = 201, body = Sandbox), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn create_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Json(body): Json<CreateSandbox>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    if let Some(k) = body
        .labels
        .keys()
        .find(|k| k.starts_with("berth.") || k.is_empty())
    {
        return Err(ApiError::invalid(format!(
            "label {k:?} is reserved or empty: berth.* labels are berth's; use your own prefix, e.g. team=search"
        )));
    }
    check_timeout("timeout", body.timeout)?;
    check_timeout("idle_timeout", body.idle_timeout)?;
    let spec = spec_of(&body, state.workspace_root.as_ref())?;
    let mut labels = body.labels.clone();
    let mut volumes = Vec::new();
    if let Some(agent) = &body.agent {
        volumes.push(crate::agents::prepare_home(&state, &auth.name, agent)?);
        labels.insert(berth_spec::labels::AGENT.to_string(), agent.clone());
    }
    let request = CreateRequest {
        spec,
        name: body.name.clone(),
        labels,
        delivery: None,
        volumes,
    };
    let record = state
        .service
        .create(&auth.caller(), request, &|_| {})
        .await?;
    let timeout = body.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    let now = now_ms();
    let life = Lifetime {
        id: record.id.clone(),
        tenant: auth.name.clone(),
        state: "running".into(),
        reason: None,
        deadline_ms: (timeout > 0).then(|| now + (timeout as i64) * 1000),
        paused_ms: None,
        idle_timeout_ms: body
            .idle_timeout
            .filter(|s| *s > 0)
            .map(|s| s as i64 * 1000),
        on_timeout: body.on_timeout.unwrap_or_default(),
        last_active_ms: now,
    };
    state.db.add_lifetime(&life)?;
    Ok((StatusCode::CREATED, Json(view(&record, Some(&life), None))))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sandboxes with this label, `key=value`.
    pub label: Option<String>,
    /// Only sandboxes in this state: running, paused or stopped.
    pub state: Option<String>,
    /// Only sandboxes of this named agent.
    pub agent: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<String>,
}

/// Lists your sandboxes (an admin key: everyone's), oldest first, in pages.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes", params(ListQuery),
    responses((status = 200, body = SandboxList), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_sandboxes(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<SandboxList>> {
    let label = match &q.label {
        Some(l) => Some(l.split_once('=').ok_or_else(|| {
            ApiError::invalid(format!(
                "label filter {l:?} is not key=value, e.g. team=search"
            ))
        })?),
        None => None,
    };
    if let Some(s) = &q.state {
        if !matches!(s.as_str(), "running" | "paused" | "stopped") {
            return Err(ApiError::invalid(format!(
                "state {s:?} is not one of running, paused, stopped"
            )));
        }
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::invalid(format!(
            "limit {limit} is out of range: give 1 to 1000, e.g. limit=50"
        )));
    }
    let lives: BTreeMap<String, Lifetime> = state
        .db
        .lifetimes()?
        .into_iter()
        .map(|l| (l.id.clone(), l))
        .collect();
    let mut all: Vec<Sandbox> = state
        .service
        .list(&auth.caller())
        .iter()
        .map(|r| view(r, lives.get(&r.id), None))
        .filter(|s| {
            label.is_none_or(|(k, v)| s.labels.get(k).is_some_and(|x| x == v))
                && q.state.as_ref().is_none_or(|st| &s.state == st)
                && q.agent.as_ref().is_none_or(|a| s.agent.as_ref() == Some(a))
        })
        .collect();
    if let Some(after) = &q.after {
        match all.iter().position(|s| &s.id == after) {
            Some(i) => {
                all.drain(..=i);
            }
            None => {
                return Err(ApiError::invalid(format!(
                "after {after:?} names no sandbox of yours: pass the `next` of the previous page"
            )))
            }
        }
    }
    let next = (all.len() > limit).then(|| all[limit - 1].id.clone());
    all.truncate(limit);
    Ok(Json(SandboxList {
        sandboxes: all,
        next,
    }))
}

/// The caller's sandbox and its lifetime row.
fn find(state: &AppState, auth: &Auth, id: &str) -> ApiResult<(SandboxRecord, Option<Lifetime>)> {
    let record = state.service.get(&auth.caller(), id)?;
    let life = state.db.lifetime(&record.id)?;
    Ok((record, life))
}

/// The caller's sandbox, if its agent can answer: a paused sandbox's processes are frozen
/// (a call would hang) and a stopped one has none, so both are a clear 409 instead.
pub fn find_live(
    state: &AppState,
    auth: &Auth,
    id: &str,
) -> ApiResult<(SandboxRecord, Option<Lifetime>)> {
    let (record, life) = find(state, auth, id)?;
    match life.as_ref().map(|l| l.state.as_str()) {
        Some("paused") => Err(ServiceError::conflict(format!(
            "sandbox {} is paused: resume it first (POST /v1/sandboxes/{}/resume)",
            record.id, record.id
        ))
        .into()),
        Some("stopped") => Err(ServiceError::conflict(format!(
            "sandbox {} is stopped: start it first (POST /v1/sandboxes/{}/start)",
            record.id, record.id
        ))
        .into()),
        _ => Ok((record, life)),
    }
}

/// The longest timeout accepted (ten years, in seconds): far beyond any sandbox, and far from
/// overflowing a clock.
const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 24 * 3600;

fn check_timeout(field: &str, secs: Option<u64>) -> ApiResult<()> {
    match secs {
        Some(s) if s > MAX_TIMEOUT_SECS => Err(ApiError::invalid(format!(
            "{field} {s} is too long: give seconds up to {MAX_TIMEOUT_SECS} (ten years), e.g. 3600, or 0 for none"
        ))),
        _ => Ok(()),
    }
}

/// The sandbox as it stands after a change of its lifetime (state, deadline).
fn answer(state: &AppState, record: &SandboxRecord) -> ApiResult<Json<Sandbox>> {
    let life = state.db.lifetime(&record.id)?;
    Ok(Json(view(record, life.as_ref(), None)))
}

/// A sandbox, with what the engine says about it now.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let (record, life) = find(&state, &auth, &id)?;
    let status = state.service.status(&record).await.status;
    Ok(Json(view(&record, life.as_ref(), Some(status))))
}

/// Removes a sandbox (killing it) with everything it made.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let (record, _) = find(&state, &auth, &id)?;
    state.service.remove(&record, true).await?;
    state
        .db
        .set_state(&record.id, "gone", Some("removed through the API"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sets a new timeout, counted from now (extends or shortens it; 0 removes it).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes", request_body = SetTimeout,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn set_timeout(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Json(body): Json<SetTimeout>,
) -> ApiResult<Json<Sandbox>> {
    check_timeout("timeout", Some(body.timeout))?;
    let (record, _) = find(&state, &auth, &id)?;
    let deadline = (body.timeout > 0).then(|| now_ms() + body.timeout as i64 * 1000);
    state.db.set_deadline(&record.id, deadline)?;
    answer(&state, &record)
}

/// Stops a sandbox (SIGTERM, then SIGKILL after the grace); its files stay.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/stop", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body(content = Option<StopSandbox>),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn stop_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    body: bytes::Bytes,
) -> ApiResult<Json<Sandbox>> {
    let (record, life) = find(&state, &auth, &id)?;
    let options: StopSandbox = if body.iter().all(u8::is_ascii_whitespace) {
        StopSandbox::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid(format!(
                "the JSON body is not valid here: {e}; e.g. {{\"grace\": 5}}"
            ))
        })?
    };
    let grace = options.grace.unwrap_or(10).min(300);
    // A paused sandbox cannot take SIGTERM: thaw it first, then stop it.
    if life.as_ref().is_some_and(|l| l.state == "paused") {
        state.service.resume(&record).await?;
        state.db.resume_clock(&record.id, now_ms())?;
    }
    state
        .service
        .stop(&record, std::time::Duration::from_secs(grace))
        .await?;
    state.db.set_state(&record.id, "stopped", None)?;
    answer(&state, &record)
}

/// Starts a stopped sandbox. A secret's value is gone once its gateway stopped: create the
/// sandbox again to hand one over.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/start", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn start_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let (record, life) = find(&state, &auth, &id)?;
    if life
        .as_ref()
        .and_then(|l| l.deadline_ms)
        .is_some_and(|d| d <= now_ms())
    {
        return Err(ServiceError::conflict(format!(
            "sandbox {}'s timeout has passed: set a new one first (POST /v1/sandboxes/{}/timeout)",
            record.id, record.id
        ))
        .into());
    }
    state.service.start(&record).await?;
    state.db.set_state(&record.id, "running", None)?;
    state.db.touch(&record.id)?;
    answer(&state, &record)
}

/// Freezes every process of a sandbox; its timeout stops counting.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn pause_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let (record, _) = find(&state, &auth, &id)?;
    state.service.pause(&record).await?;
    state.db.pause_clock(&record.id, now_ms())?;
    answer(&state, &record)
}

/// Thaws a paused sandbox; its timeout counts again from where it stood.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Sandbox), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn resume_sandbox(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> ApiResult<Json<Sandbox>> {
    let (record, _) = find(&state, &auth, &id)?;
    state.service.resume(&record).await?;
    state.db.resume_clock(&record.id, now_ms())?;
    answer(&state, &record)
}

/// Whether the client asked for server-sent events.
pub fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Renders events as SSE (ids are offsets, for `Last-Event-ID`; keep-alives every 10 s) or
/// NDJSON (one event per line, with a keep-alive blank line every 10 s of quiet).
fn render(
    events: impl Stream<Item = ExecEvent> + Send + 'static,
    sse: bool,
    guard: crate::Activity,
) -> Response {
    let mut offsets = Offsets::default();
    if sse {
        let stream = events.map(move |event| {
            let _ = &guard;
            match &event {
                ExecEvent::Stdout { offset, .. } => {
                    offsets.stdout = offset + event.bytes().map_or(0, |b| b.len() as u64)
                }
                ExecEvent::Stderr { offset, .. } => {
                    offsets.stderr = offset + event.bytes().map_or(0, |b| b.len() as u64)
                }
                _ => {}
            }
            let kind = match &event {
                ExecEvent::Started { .. } => "started",
                ExecEvent::Stdout { .. } => "stdout",
                ExecEvent::Stderr { .. } => "stderr",
                ExecEvent::Exited { .. } => "exited",
                ExecEvent::StartFailed { .. } => "start_failed",
                ExecEvent::Error { .. } => "error",
            };
            let data = serde_json::to_string(&event).unwrap_or_default();
            Ok::<_, Infallible>(Event::default().event(kind).id(offsets.id()).data(data))
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(10)))
            .into_response();
    }
    // Lines straight from the events, in the connection's own task (no hop through another
    // task on the way out); a quiet command gets an empty line every 10 s.
    let lines = futures_util::stream::unfold(
        (Box::pin(events), guard),
        |(mut events, guard)| async move {
            let line = match tokio::time::timeout(KEEP_ALIVE, events.next()).await {
                Ok(Some(event)) => {
                    let mut line = serde_json::to_vec(&event).unwrap_or_default();
                    line.push(b'\n');
                    bytes::Bytes::from(line)
                }
                Ok(None) => return None,
                Err(_) => bytes::Bytes::from_static(b"\n"),
            };
            Some((Ok::<_, Infallible>(line), (events, guard)))
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// How long a quiet stream goes without a keep-alive.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a command to completion, streaming its events: `started`, `stdout`/`stderr` (with
/// byte offsets), then exactly one of `exited`, `start_failed` or `error` (the stream broke:
/// the outcome is unknown). NDJSON by default; SSE with `Accept: text/event-stream`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "processes", request_body = ExecRequest,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, description = "The process's events", content((ExecEvent = "application/x-ndjson"), (ExecEvent = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn exec(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<ExecRequest>,
) -> ApiResult<Response> {
    check_command("argv", &body.argv, true)?;
    check_env(&body.env)?;
    text("cwd", body.cwd.as_deref().unwrap_or(""), true)?;
    text("stdin", body.stdin.as_deref().unwrap_or(""), true)?;
    let (record, _) = find_live(&state, &auth, &id)?;
    let guard = state.activity(&record.id);
    let started = Instant::now();
    let rx = state.service.exec(&record, &body).await?;
    let metrics = state.metrics.clone();
    let events = rx.map(move |event| {
        if event.is_final() {
            metrics.observe_exec(started.elapsed());
        }
        event
    });
    Ok(render(events, wants_sse(&headers), guard))
}

/// Starts a background process under your id; a retried start with the same id answers
/// 200 with the existing process instead of starting another.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", tag = "processes", request_body = StartProcess,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 201, body = berth_service::exec::ProcessStarted), (status = 200, body = berth_service::exec::ProcessStarted),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn start_process(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Json(body): Json<StartProcess>,
) -> ApiResult<(StatusCode, Json<berth_service::exec::ProcessStarted>)> {
    check_command("argv", &body.argv, true)?;
    check_env(&body.env)?;
    text("cwd", body.cwd.as_deref().unwrap_or(""), true)?;
    let (record, _) = find_live(&state, &auth, &id)?;
    let request = ExecRequest {
        argv: body.argv,
        env: body.env,
        cwd: body.cwd,
        timeout: body.timeout_secs.map(std::time::Duration::from_secs),
        stdin: None,
        user: None,
    };
    let started = state
        .service
        .start_process(&record, &body.id, &request)
        .await?;
    let status = if started.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(started)))
}

/// The background processes: running, and the last ones that ended.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "processes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 200, body = Vec<berth_service::exec::Process>), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_processes(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<berth_service::exec::Process>>> {
    let (record, _) = find_live(&state, &auth, &id)?;
    Ok(Json(state.service.processes(&record).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutputQuery {
    /// Resume after these offsets, `stdout:stderr` (an SSE client sends `Last-Event-ID`).
    pub offset: Option<String>,
}

/// A background process's output from an offset: what it wrote since (the agent keeps the
/// last 1 MiB), then live, then its exit.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/output", tag = "processes",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = String, Path, description = "Your process id"), OutputQuery),
    responses((status = 200, description = "The process's events", content((ExecEvent = "application/x-ndjson"), (ExecEvent = "text/event-stream"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn process_output(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<OutputQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (record, _) = find_live(&state, &auth, &id)?;
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(q.offset);
    let from = match given {
        Some(text) => Offsets::parse(&text).ok_or_else(|| {
            ApiError::invalid(format!(
                "offset {text:?} is not stdout:stderr byte counts, e.g. 1024:0"
            ))
        })?,
        None => Offsets::default(),
    };
    let guard = state.activity(&record.id);
    let rx = state.service.attach(&record, &pid, from).await?;
    Ok(render(rx, wants_sse(&headers), guard))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StdinQuery {
    /// Send EOF after the body.
    pub close: Option<bool>,
}

/// Writes the body to a background process's stdin (`close=true`: then EOF).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", tag = "processes",
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = String, Path, description = "Your process id"), StdinQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn process_stdin(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((id, pid)): Path<(String, String)>,
    Query(q): Query<StdinQuery>,
    body: bytes::Bytes,
) -> ApiResult<StatusCode> {
    let (record, _) = find_live(&state, &auth, &id)?;
    state
        .service
        .write_stdin(&record, &pid, body, q.close.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Sends a signal to a background process.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", tag = "processes", request_body = SignalProcess,
    params(("id" = String, Path, description = "Sandbox id or name"), ("pid" = String, Path, description = "Your process id")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn process_signal(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path((id, pid)): Path<(String, String)>,
    Json(body): Json<SignalProcess>,
) -> ApiResult<StatusCode> {
    let (record, _) = find_live(&state, &auth, &id)?;
    state.service.signal(&record, &pid, body.signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// An absolute path inside the sandbox.
    pub path: String,
    /// For removal: a directory with everything in it.
    pub recursive: Option<bool>,
    /// For a written file: its permission bits in octal, e.g. 755 (default 644).
    pub mode: Option<String>,
}

fn byte_stream(rx: berth_service::files::ByteReceiver) -> Body {
    // An error mid-file ends the body abruptly: a client sees a short read, never a
    // silently truncated "success" (the length was announced).
    Body::from_stream(ReceiverStream::new(rx).map(|chunk| chunk.map_err(std::io::Error::other)))
}

/// A file's bytes, streamed.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 200, description = "The file's bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn read_file(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (record, _) = find_live(&state, &auth, &id)?;
    let (size, rx) = state.service.read_file(&record, &q.path).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, size)
        .body(byte_stream(rx))
        .map_err(|e| ServiceError::internal(e.to_string()).into())
}

fn body_stream(body: Body) -> impl Stream<Item = Result<bytes::Bytes, ServiceError>> + Send {
    body.into_data_stream().map(|chunk| {
        chunk.map_err(|e| ServiceError::invalid(format!("reading the request body failed: {e}")))
    })
}

fn too_large(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > limit => Err(ServiceError::new(
            berth_service::ErrorKind::TooLarge,
            format!("the body is {n} bytes, more than this server's limit of {limit}: split it, or ask the operator for a larger --max-upload"),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Writes a file from the body, streamed. It replaces the old one only once complete.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Written), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn write_file(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Written>)> {
    let (record, _) = find_live(&state, &auth, &id)?;
    too_large(&headers, state.max_upload)?;
    let mode = match &q.mode {
        Some(m) => u32::from_str_radix(m, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                ApiError::invalid(format!("mode {m:?} is not octal permission bits, e.g. 644"))
            })?,
        None => 0o644,
    };
    let bytes = state
        .service
        .write_file(
            &record,
            &q.path,
            berth_service::files::NewFile { mode, mtime: None },
            body_stream(body),
            state.max_upload,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Written {
            path: q.path,
            bytes,
        }),
    ))
}

/// Removes a file, or a directory with `recursive=true`.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn remove_file(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<StatusCode> {
    let (record, _) = find_live(&state, &auth, &id)?;
    state
        .service
        .remove_path(&record, &q.path, q.recursive.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A directory's entries.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 200, body = Vec<berth_service::files::FileEntry>), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn list_dir(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<Vec<berth_service::files::FileEntry>>> {
    let (record, _) = find_live(&state, &auth, &id)?;
    Ok(Json(state.service.list_dir(&record, &q.path).await?))
}

/// A path's kind, size, mode, owner and time.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 200, body = berth_service::files::FileEntry), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn stat(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Json<berth_service::files::FileEntry>> {
    let (record, _) = find_live(&state, &auth, &id)?;
    Ok(Json(state.service.stat(&record, &q.path).await?))
}

/// Makes a directory (and its parents).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn mkdir(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<StatusCode> {
    let (record, _) = find_live(&state, &auth, &id)?;
    state.service.mkdir(&record, &q.path).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Moves (renames) a path.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files", request_body = MovePath,
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn move_path(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Json(body): Json<MovePath>,
) -> ApiResult<StatusCode> {
    let (record, _) = find_live(&state, &auth, &id)?;
    state.service.rename(&record, &body.from, &body.to).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A tar archive of a path, streamed.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/archive", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses((status = 200, description = "A tar archive", body = Vec<u8>, content_type = "application/x-tar"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn read_archive(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let (record, _) = find_live(&state, &auth, &id)?;
    let _ = state.service.stat(&record, &q.path).await?;
    let rx = state.service.read_archive(&record, &q.path).await?;
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(byte_stream(rx))
        .map_err(|e| ServiceError::internal(e.to_string()).into())
}

/// Unpacks a tar archive (the body) into a directory.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/archive", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 201, body = Written), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn write_archive(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Written>)> {
    let (record, _) = find_live(&state, &auth, &id)?;
    too_large(&headers, state.max_upload)?;
    let bytes = state
        .service
        .write_archive(&record, &q.path, body_stream(body), state.max_upload)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Written {
            path: q.path,
            bytes,
        }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Keep streaming new output.
    pub follow: Option<bool>,
}

/// The main process's output (stdout and stderr, as the engine keeps them), streamed.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/logs", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name"), LogsQuery),
    responses((status = 200, description = "The log", body = String, content_type = "text/plain"), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let (record, _) = find(&state, &auth, &id)?;
    let follow = q.follow.unwrap_or(false);
    let guard = follow.then(|| state.activity(&record.id));
    let stream = state.service.logs(&record, follow).await?;
    let body = stream.map(move |item| {
        let _ = &guard;
        item.map(|o| match o {
            berth_engine::Output::Stdout(b) | berth_engine::Output::Stderr(b) => b,
        })
        .map_err(std::io::Error::other)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(body))
        .map_err(|e| ServiceError::internal(e.to_string()).into())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries after this id.
    pub after: Option<i64>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The audit log: every API call and every action of the server's own (admin keys only).
#[utoipa::path(get, path = "/v1/audit", tag = "server", params(AuditQuery),
    responses((status = 200, body = Vec<crate::db::AuditEntry>), (status = 403, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<crate::db::AuditEntry>>> {
    if !auth.admin {
        return Err(ServiceError::forbidden("the audit log is for admin keys only").into());
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit {limit} is out of range: give 1 to 1000, e.g. limit=50"
        )));
    }
    // Every call answered before this one is in the log: its row was written before its
    // answer left.
    Ok(Json(state.db.audit_entries(q.after.unwrap_or(0), limit)?))
}

/// The server answers and its engine does.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, body = Health), (status = 503, body = ErrorBody)))]
pub async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    use berth_engine::Engine;
    let info = state
        .service
        .engine()
        .info()
        .await
        .map_err(ServiceError::from)?;
    Ok(Json(Health {
        status: "ok".into(),
        engine: info.server_version,
    }))
}
