//! A process attached over a WebSocket (`GET /v1/sandboxes/{id}/pty`): a terminal, or with
//! `"tty": false` plain stdin, stdout and stderr.
//!
//! The client's first message is a text frame with the process to run (`PtyStart`); then
//! binary frames are stdin (keystrokes) and text frames are controls (`{"resize": {"rows": R,
//! "cols": C}}`, `{"signal": N}`, `{"close_stdin": true}`). The server sends the output as
//! binary frames — a terminal's as it is; without one, each frame's first byte says which
//! stream the rest is (1 stdout, 2 stderr) — and ends with one text frame, the final event
//! (`exited`, `start_failed` or `error`), then closes. A client that goes away hangs the
//! process up (SIGHUP), as closing a terminal does.

use std::collections::BTreeMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::Extension;
use berth_sandbox::sandbox::SandboxRecord;
use berth_service::exec::Input;
use berth_service::{ExecEvent, ExecRequest};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::find_live;
use crate::auth::Auth;
use crate::error::{ApiError, ErrorBody, Path};
use crate::{Activity, AppState};

/// The process a terminal runs (the WebSocket's first message).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PtyStart {
    /// Default `["sh"]`.
    #[serde(default)]
    pub argv: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// The terminal's size (default 24 × 80).
    #[serde(default)]
    pub rows: Option<u32>,
    #[serde(default)]
    pub cols: Option<u32>,
    /// A terminal (default), or `false`: plain stdin, stdout and stderr.
    #[serde(default)]
    pub tty: Option<bool>,
    /// End the process's whole tree after this many seconds (exit code 124).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    #[serde(default)]
    resize: Option<Size>,
    #[serde(default)]
    signal: Option<i32>,
    #[serde(default)]
    close_stdin: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct Size {
    rows: u32,
    cols: u32,
}

/// Attaches a terminal: upgrade to a WebSocket, then see the module's protocol.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/pty", tag = "processes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses((status = 101, description = "Switching to the WebSocket terminal protocol"), (status = 400, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn pty(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| {
        ApiError::invalid(format!(
            "this endpoint is a WebSocket: connect with a WebSocket client (ws://…/v1/sandboxes/ID/pty) ({})",
            e.body_text()
        ))
    })?;
    let (record, _) = find_live(&state, &auth, &id)?;
    let guard = state.activity(&record.id);
    Ok(ws.on_upgrade(move |socket| session(state, record, socket, guard)))
}

fn final_frame(event: &ExecEvent) -> Message {
    Message::Text(serde_json::to_string(event).unwrap_or_default().into())
}

async fn session(state: AppState, record: SandboxRecord, socket: WebSocket, _guard: Activity) {
    let (mut to_client, mut from_client) = socket.split();
    let fail = |message: String| final_frame(&ExecEvent::Error { message });
    let start = match from_client.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str::<PtyStart>(&text)
            .map_err(|e| format!("the first message must be the process to run, e.g. {{\"argv\": [\"sh\"], \"rows\": 24, \"cols\": 80}}: {e}")),
        _ => Err("the first message must be a text frame with the process to run, e.g. {\"argv\": [\"sh\"]}".to_string()),
    };
    let start = match start {
        Ok(s) => s,
        Err(message) => {
            let _ = to_client.send(fail(message)).await;
            return;
        }
    };
    let request = ExecRequest {
        argv: if start.argv.is_empty() {
            vec!["sh".into()]
        } else {
            start.argv
        },
        env: start.env,
        cwd: start.cwd,
        timeout: start
            .timeout_secs
            .filter(|t| *t > 0)
            .map(std::time::Duration::from_secs),
        stdin: None,
        user: None,
    };
    let size = (
        start.rows.unwrap_or(24).clamp(1, 1000),
        start.cols.unwrap_or(80).clamp(1, 1000),
    );
    let tty = start.tty.unwrap_or(true);
    let (inputs, mut events) = match state
        .service
        .exec_interactive(
            &record,
            &request,
            berth_service::exec::Attachment {
                tty: tty.then_some(size),
                stdin: true,
            },
        )
        .await
    {
        Ok(pair) => pair,
        Err(e) => {
            let _ = to_client.send(fail(e.to_string())).await;
            return;
        }
    };
    let keys = inputs.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = from_client.next().await {
            let input = match message {
                Message::Binary(b) => Input::Stdin(b),
                Message::Text(t) => match serde_json::from_str::<Control>(&t) {
                    Ok(Control {
                        resize: Some(Size { rows, cols }),
                        ..
                    }) => Input::Resize {
                        rows: rows.clamp(1, 1000),
                        cols: cols.clamp(1, 1000),
                    },
                    Ok(Control {
                        signal: Some(n), ..
                    }) if (1..=64).contains(&n) => Input::Signal(n),
                    Ok(Control {
                        close_stdin: Some(true),
                        ..
                    }) => Input::Close,
                    _ => continue,
                },
                Message::Close(_) => break,
                _ => continue,
            };
            if keys.send(input).await.is_err() {
                return;
            }
        }
        // The client went away: hang up, as a closed terminal does.
        let _ = keys.send(Input::Signal(SIGHUP)).await;
    });
    while let Some(event) = events.next().await {
        let frame = match &event {
            ExecEvent::Stdout { .. } | ExecEvent::Stderr { .. } if tty => {
                Message::Binary(event.bytes().unwrap_or_default().into())
            }
            ExecEvent::Stdout { .. } | ExecEvent::Stderr { .. } => {
                let stream = if matches!(event, ExecEvent::Stdout { .. }) {
                    STDOUT
                } else {
                    STDERR
                };
                let data = event.bytes().unwrap_or_default();
                let mut frame = Vec::with_capacity(data.len() + 1);
                frame.push(stream);
                frame.extend_from_slice(&data);
                Message::Binary(frame.into())
            }
            ExecEvent::Started { .. } => continue,
            _ => final_frame(&event),
        };
        let last = event.is_final();
        if to_client.send(frame).await.is_err() {
            break;
        }
        if last {
            let _ = to_client.send(Message::Close(None)).await;
            break;
        }
    }
    drop(inputs);
    reader.abort();
}

/// SIGHUP's number on Linux.
const SIGHUP: i32 = 1;
/// Without a terminal, the first byte of an output frame: which stream the rest is.
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
