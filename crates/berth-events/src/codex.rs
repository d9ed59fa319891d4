//! Codex `exec --json`: `thread.started`, `turn.started`, `item.started`/`updated`/`completed`
//! (agent_message, reasoning, command_execution, file_change, mcp_tool_call, web_search,
//! todo_list, error), then `turn.completed` (with usage) or `turn.failed`.

use serde_json::Value;

use crate::{str_at, string_at, usage_event, Event, Outcome, State};

pub(crate) fn map(v: &Value, state: &mut State) -> Vec<Event> {
    match str_at(v, "type") {
        Some("thread.started") => {
            state.session_id = string_at(v, "thread_id");
            vec![Event::SessionStarted {
                session_id: state.session_id.clone(),
                model: None,
                cwd: None,
                tools: Vec::new(),
            }]
        }
        Some("turn.started") => {
            state.turns += 1;
            vec![Event::Other {
                kind: "turn.started".to_string(),
            }]
        }
        Some(kind @ ("item.started" | "item.completed")) => match v.get("item") {
            Some(item) => item_event(item, kind == "item.completed", state),
            None => Vec::new(),
        },
        Some("turn.completed") => {
            vec![
                usage_event(v.get("usage"), None),
                Event::Result(Outcome {
                    success: true,
                    subtype: "success".to_string(),
                    text: state.last_text.clone(),
                    num_turns: Some(state.turns.max(1)),
                    session_id: state.session_id.clone(),
                    ..Outcome::default()
                }),
            ]
        }
        Some("turn.failed") => {
            let message = v
                .get("error")
                .and_then(|e| string_at(e, "message"))
                .unwrap_or_else(|| "turn failed".to_string());
            vec![Event::Result(Outcome {
                success: false,
                subtype: "turn_failed".to_string(),
                num_turns: Some(state.turns.max(1)),
                session_id: state.session_id.clone(),
                errors: vec![message],
                ..Outcome::default()
            })]
        }
        Some("error") => vec![Event::Error {
            message: string_at(v, "message").unwrap_or_default(),
        }],
        _ => Vec::new(),
    }
}

fn item_event(item: &Value, completed: bool, state: &mut State) -> Vec<Event> {
    let id = string_at(item, "id");
    let kind = str_at(item, "type").unwrap_or("");
    match (kind, completed) {
        ("agent_message", true) => {
            let text = string_at(item, "text").unwrap_or_default();
            state.last_text = Some(text.clone());
            vec![Event::AssistantText { text, delta: false }]
        }
        ("reasoning", true) => vec![Event::Reasoning {
            text: string_at(item, "text").unwrap_or_default(),
        }],
        ("error", true) => vec![Event::Error {
            message: string_at(item, "message").unwrap_or_default(),
        }],
        ("command_execution" | "file_change" | "mcp_tool_call" | "web_search", _) => {
            let mut events = Vec::new();
            let first_sight = id
                .as_ref()
                .is_none_or(|i| state.seen_items.insert(i.clone()));
            if first_sight {
                events.push(Event::ToolCall {
                    id: id.clone(),
                    name: tool_name(item, kind),
                    input: tool_input(item, kind),
                });
            }
            if completed {
                let failed = str_at(item, "status") == Some("failed")
                    || item
                        .get("exit_code")
                        .and_then(Value::as_i64)
                        .is_some_and(|c| c != 0);
                events.push(Event::ToolResult {
                    id,
                    output: tool_output(item, kind),
                    is_error: failed,
                });
            }
            events
        }
        _ => Vec::new(),
    }
}

fn tool_name(item: &Value, kind: &str) -> String {
    match kind {
        "mcp_tool_call" => format!(
            "{}/{}",
            str_at(item, "server").unwrap_or(""),
            str_at(item, "tool").unwrap_or("")
        ),
        other => other.to_string(),
    }
}

fn tool_input(item: &Value, kind: &str) -> Value {
    let pick = |k: &str| item.get(k).cloned().unwrap_or(Value::Null);
    match kind {
        "command_execution" => serde_json::json!({ "command": pick("command") }),
        "file_change" => serde_json::json!({ "changes": pick("changes") }),
        "web_search" => serde_json::json!({ "query": pick("query") }),
        _ => pick("arguments"),
    }
}

fn tool_output(item: &Value, kind: &str) -> String {
    match kind {
        "command_execution" => string_at(item, "aggregated_output").unwrap_or_default(),
        "file_change" => item
            .get("changes")
            .and_then(Value::as_array)
            .map(|c| {
                c.iter()
                    .map(|ch| {
                        format!(
                            "{} {}",
                            str_at(ch, "kind").unwrap_or("?"),
                            str_at(ch, "path").unwrap_or("?")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        _ => item
            .get("result")
            .map(|r| r.as_str().map_or_else(|| r.to_string(), String::from))
            .unwrap_or_default(),
    }
}
