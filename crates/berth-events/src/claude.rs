//! Claude Code `--output-format stream-json --verbose`: `system`/`init`, `assistant` (one line
//! per content block; the same message id may repeat), `user` (tool results) and a final
//! `result` per turn.

use serde_json::Value;

use crate::{content_text, str_at, string_at, u64_at, usage_event, Denial, Event, Outcome};

pub(crate) fn map(v: &Value) -> Vec<Event> {
    match str_at(v, "type") {
        Some("system") if str_at(v, "subtype") == Some("init") => vec![Event::SessionStarted {
            session_id: string_at(v, "session_id"),
            model: string_at(v, "model"),
            cwd: string_at(v, "cwd"),
            tools: v
                .get("tools")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        }],
        Some("system") if str_at(v, "subtype") == Some("permission_denied") => {
            vec![Event::PermissionDenied(Denial {
                tool: string_at(v, "tool_name").unwrap_or_default(),
                id: string_at(v, "tool_use_id"),
                message: string_at(v, "message"),
            })]
        }
        Some("system") => vec![Event::Other {
            kind: format!("system.{}", str_at(v, "subtype").unwrap_or("")),
        }],
        Some("assistant") => blocks(v).iter().filter_map(assistant_block).collect(),
        Some("user") => blocks(v).iter().filter_map(user_block).collect(),
        Some("result") => result(v),
        _ => Vec::new(),
    }
}

fn blocks(v: &Value) -> Vec<Value> {
    v.get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn assistant_block(b: &Value) -> Option<Event> {
    match str_at(b, "type")? {
        "text" => Some(Event::AssistantText {
            text: string_at(b, "text")?,
            delta: false,
        }),
        "thinking" => Some(Event::Reasoning {
            text: string_at(b, "thinking")?,
        }),
        "tool_use" | "server_tool_use" => Some(Event::ToolCall {
            id: string_at(b, "id"),
            name: string_at(b, "name").unwrap_or_default(),
            input: b.get("input").cloned().unwrap_or(Value::Null),
        }),
        _ => None,
    }
}

fn user_block(b: &Value) -> Option<Event> {
    (str_at(b, "type")? == "tool_result").then(|| Event::ToolResult {
        id: string_at(b, "tool_use_id"),
        output: content_text(b.get("content")),
        is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
    })
}

fn result(v: &Value) -> Vec<Event> {
    let subtype = string_at(v, "subtype").unwrap_or_default();
    let is_error = v.get("is_error").and_then(Value::as_bool).unwrap_or(false);
    let cost_usd = v.get("total_cost_usd").and_then(Value::as_f64);
    let usage = v.get("usage");
    let mut events = Vec::new();
    if usage.is_some() || cost_usd.is_some() {
        events.push(usage_event(usage, cost_usd));
    }
    let errors = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|e| {
            e.iter()
                .map(|x| x.as_str().map_or_else(|| x.to_string(), String::from))
                .collect()
        })
        .unwrap_or_default();
    events.push(Event::Result(Outcome {
        success: subtype == "success" && !is_error,
        subtype,
        text: string_at(v, "result"),
        num_turns: u64_at(v, "num_turns"),
        cost_usd,
        session_id: string_at(v, "session_id"),
        duration_ms: u64_at(v, "duration_ms"),
        errors,
        permission_denials: v
            .get("permission_denials")
            .and_then(Value::as_array)
            .map(|all| {
                all.iter()
                    .map(|d| Denial {
                        tool: string_at(d, "tool_name").unwrap_or_default(),
                        id: string_at(d, "tool_use_id"),
                        message: None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }));
    events
}
