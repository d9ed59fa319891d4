//! Gemini CLI `--output-format stream-json`: `init`, `message` (user and assistant chunks,
//! `delta` when streamed), `tool_use`, `tool_result`, `error` and a final `result` with
//! aggregated `stats`.

use serde_json::Value;

use crate::{str_at, string_at, u64_at, usage_event, Event, Outcome, State};

pub(crate) fn map(v: &Value, state: &mut State) -> Vec<Event> {
    match str_at(v, "type") {
        Some("init") => {
            state.session_id = string_at(v, "session_id").or_else(|| string_at(v, "sessionId"));
            vec![Event::SessionStarted {
                session_id: state.session_id.clone(),
                model: string_at(v, "model"),
                cwd: None,
                tools: Vec::new(),
            }]
        }
        Some("message") if str_at(v, "role") == Some("assistant") => {
            let text = string_at(v, "content").unwrap_or_default();
            let delta = v.get("delta").and_then(Value::as_bool).unwrap_or(false);
            if delta {
                state
                    .last_text
                    .get_or_insert_with(String::new)
                    .push_str(&text);
            } else {
                state.last_text = Some(text.clone());
            }
            vec![Event::AssistantText { text, delta }]
        }
        Some("message") => {
            // A user message starts a new turn; its text is the prompt, kept in `raw`.
            state.turns += 1;
            state.last_text = None;
            vec![Event::Other {
                kind: "message.user".to_string(),
            }]
        }
        Some("tool_use") => vec![Event::ToolCall {
            id: string_at(v, "tool_id"),
            name: string_at(v, "tool_name").unwrap_or_default(),
            input: v.get("parameters").cloned().unwrap_or(Value::Null),
        }],
        Some("tool_result") => vec![Event::ToolResult {
            id: string_at(v, "tool_id"),
            output: string_at(v, "output")
                .or_else(|| v.get("error").and_then(|e| string_at(e, "message")))
                .unwrap_or_default(),
            is_error: str_at(v, "status") == Some("error"),
        }],
        Some("error") => vec![Event::Error {
            message: string_at(v, "message").unwrap_or_default(),
        }],
        Some("result") => {
            let stats = v.get("stats");
            let success = str_at(v, "status") == Some("success");
            let errors = v
                .get("error")
                .and_then(|e| string_at(e, "message"))
                .into_iter()
                .collect();
            vec![
                usage_event(stats, None),
                Event::Result(Outcome {
                    success,
                    subtype: string_at(v, "status").unwrap_or_default(),
                    text: state.last_text.clone(),
                    num_turns: Some(state.turns.max(1)),
                    session_id: state.session_id.clone(),
                    duration_ms: stats.and_then(|s| u64_at(s, "duration_ms")),
                    errors,
                    cost_usd: None,
                    permission_denials: Vec::new(),
                }),
            ]
        }
        _ => Vec::new(),
    }
}
