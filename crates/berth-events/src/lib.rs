//! The coding-agent CLIs' own event streams, mapped to one event model.
//!
//! berth never scrapes transcripts: it reads what the CLI prints on stdout in its headless
//! streaming mode (Claude Code `--output-format stream-json`, Codex `exec --json`, Gemini CLI
//! `--output-format stream-json`), one JSON object per line, and maps each line to zero or
//! more [`Event`]s. Unknown event types become [`Event::Other`] and every event keeps the
//! line it came from (`raw`), so nothing the CLI said is lost; a line that is not JSON becomes
//! [`Event::Malformed`] with its line number and the stream goes on.
//!
//! [`Summary`] folds a stream into what a run's final report needs (result, turns, cost,
//! session id, duration) and [`render`] turns events into text for a human.

mod claude;
mod codex;
mod gemini;
mod render;
mod summary;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use render::render;
pub use summary::Summary;

/// The agent CLIs berth knows how to drive and parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cli {
    /// Anthropic's Claude Code (`claude`).
    #[default]
    Claude,
    /// OpenAI's Codex CLI (`codex`).
    Codex,
    /// Google's Gemini CLI (`gemini`).
    Gemini,
}

impl Cli {
    pub const ALL: [Cli; 3] = [Cli::Claude, Cli::Codex, Cli::Gemini];

    pub fn name(self) -> &'static str {
        match self {
            Cli::Claude => "claude",
            Cli::Codex => "codex",
            Cli::Gemini => "gemini",
        }
    }
}

impl fmt::Display for Cli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An agent CLI name that berth does not know.
#[derive(Debug, thiserror::Error)]
#[error("unknown agent CLI {0:?}: expected one of claude, codex, gemini (e.g. --cli codex)")]
pub struct UnknownCli(pub String);

impl FromStr for Cli {
    type Err = UnknownCli;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cli::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| UnknownCli(s.to_string()))
    }
}

/// How a run ended, as the CLI reported it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Outcome {
    /// The CLI reported success (Claude: subtype `success` and not `is_error`).
    pub success: bool,
    /// The CLI's own name for the outcome (`success`, `error_max_turns`, `turn_failed`, …).
    pub subtype: String,
    /// The final answer, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_turns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Tool calls the CLI's permission mode refused (Claude: the result's
    /// `permission_denials`). The CLI may still call the run a success.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permission_denials: Vec<Denial>,
}

/// A tool call the CLI refused to run because its permission mode did not allow it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Denial {
    pub tool: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Why, when the CLI said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One normalized event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The CLI started (or resumed) a session.
    SessionStarted {
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tools: Vec<String>,
    },
    /// Text from the assistant. `delta` marks a chunk of a longer message (Gemini).
    AssistantText {
        text: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        delta: bool,
    },
    /// The model's visible reasoning or thinking.
    Reasoning { text: String },
    /// The agent asked to run a tool.
    ToolCall {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        name: String,
        input: Value,
    },
    /// A tool's result.
    ToolResult {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        output: String,
        is_error: bool,
    },
    /// Token usage and cost reported by the CLI.
    Usage {
        #[serde(skip_serializing_if = "Option::is_none")]
        input_tokens: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        output_tokens: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// The end of a turn or run.
    Result(Outcome),
    /// The CLI refused a tool call its permission mode does not allow.
    PermissionDenied(Denial),
    /// An error the CLI reported without ending the stream.
    Error { message: String },
    /// A line of a type berth does not map (kept whole in `raw`).
    Other { kind: String },
    /// A line that is not a JSON object.
    Malformed { error: String, text: String },
}

/// An event with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub cli: Cli,
    /// 1-based line number in the CLI's stdout.
    pub line: usize,
    #[serde(flatten)]
    pub event: Event,
    /// The CLI's original line, when it was JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Value>,
}

/// Turns one CLI's stdout, line by line, into events. Keeps the little state a format needs
/// (line numbers; Codex's turn count and last message).
#[derive(Debug, Default)]
pub struct Parser {
    cli: Cli,
    line: usize,
    state: State,
}

#[derive(Debug, Default)]
struct State {
    turns: u64,
    last_text: Option<String>,
    session_id: Option<String>,
    seen_items: std::collections::HashSet<String>,
}

impl Parser {
    pub fn new(cli: Cli) -> Self {
        Self {
            cli,
            ..Self::default()
        }
    }

    /// Parses one line of output (without its newline). Blank lines yield nothing.
    pub fn line(&mut self, text: &str) -> Vec<Record> {
        self.line += 1;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Vec::new();
        }
        let value: Value = match serde_json::from_str(trimmed) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return vec![self.malformed("not a JSON object", trimmed)],
            Err(e) => return vec![self.malformed(&e.to_string(), trimmed)],
        };
        let events = match self.cli {
            Cli::Claude => claude::map(&value),
            Cli::Codex => codex::map(&value, &mut self.state),
            Cli::Gemini => gemini::map(&value, &mut self.state),
        };
        let events = if events.is_empty() {
            vec![Event::Other {
                kind: str_at(&value, "type").unwrap_or("").to_string(),
            }]
        } else {
            events
        };
        events
            .into_iter()
            .map(|event| Record {
                cli: self.cli,
                line: self.line,
                event,
                raw: Some(value.clone()),
            })
            .collect()
    }

    fn malformed(&self, error: &str, text: &str) -> Record {
        Record {
            cli: self.cli,
            line: self.line,
            event: Event::Malformed {
                error: error.to_string(),
                text: text.chars().take(200).collect(),
            },
            raw: None,
        }
    }
}

/// Parses a whole saved stream.
pub fn parse_all(cli: Cli, text: &str) -> Vec<Record> {
    let mut parser = Parser::new(cli);
    text.lines().flat_map(|l| parser.line(l)).collect()
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn string_at(v: &Value, key: &str) -> Option<String> {
    str_at(v, key).map(str::to_string)
}

/// A `usage` event from an object with `input_tokens` and `output_tokens` (all three CLIs
/// name them so).
fn usage_event(tokens: Option<&Value>, cost_usd: Option<f64>) -> Event {
    Event::Usage {
        input_tokens: tokens.and_then(|t| u64_at(t, "input_tokens")),
        output_tokens: tokens.and_then(|t| u64_at(t, "output_tokens")),
        cost_usd,
    }
}

fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Text of a tool result's content: a string, or the text blocks of an array.
fn content_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| str_at(i, "text").or_else(|| i.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}
