//! Events as text for a human watching a run in a terminal.

use serde_json::Value;

use crate::{Event, Record};

const MAX_TOOL_OUTPUT: usize = 400;

/// One event as display text (possibly several lines, ending in a newline), or `None` for
/// events a human need not see (unknown types, usage that the final summary repeats).
pub fn render(record: &Record) -> Option<String> {
    let text = match &record.event {
        Event::SessionStarted {
            session_id, model, ..
        } => format!(
            "● session {}{}\n",
            session_id.as_deref().unwrap_or("(unknown)"),
            model
                .as_deref()
                .map(|m| format!(" · model {m}"))
                .unwrap_or_default()
        ),
        Event::AssistantText { text, delta: true } => text.clone(),
        Event::AssistantText { text, .. } => format!("{text}\n"),
        Event::Reasoning { text } => format!("  (thinking) {}\n", first_line(text)),
        Event::ToolCall { name, input, .. } => format!("→ {name} {}\n", brief(input)),
        Event::ToolResult {
            output, is_error, ..
        } => {
            let mark = if *is_error { "✗" } else { "←" };
            format!("{mark} {}\n", indent(&truncate(output, MAX_TOOL_OUTPUT)))
        }
        Event::Error { message } => format!("! {message}\n"),
        Event::PermissionDenied(d) => format!(
            "✗ denied: {}{}\n",
            d.tool,
            d.message
                .as_deref()
                .map(|m| format!(" — {m}"))
                .unwrap_or_default()
        ),
        Event::Malformed { error, .. } => {
            format!("! line {}: not a JSON event ({error})\n", record.line)
        }
        Event::Result(_) | Event::Usage { .. } | Event::Other { .. } => return None,
    };
    Some(text)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn brief(input: &Value) -> String {
    let s = match input {
        Value::Object(map) => map
            .get("command")
            .or_else(|| map.get("file_path"))
            .or_else(|| map.get("path"))
            .or_else(|| map.get("pattern"))
            .and_then(Value::as_str)
            .map_or_else(|| input.to_string(), String::from),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    truncate(&s, 160)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}… ({} bytes)", s.len())
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n  ")
}
