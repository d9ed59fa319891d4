//! What a run's final report needs, folded from its events.

use serde::Serialize;

use crate::{Denial, Event, Outcome, Record};

/// The end of a run as berth reports it: the CLI's own result (when it got that far) and
/// counts berth kept along the way.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    /// The last `result` event, if any.
    pub result: Option<Outcome>,
    /// Session id from the session start or the result.
    pub session_id: Option<String>,
    pub tool_calls: u64,
    /// Lines that were not JSON, by line number.
    pub malformed_lines: Vec<usize>,
    pub errors: Vec<String>,
    /// Tool calls the CLI's permission mode refused, each once (by tool call id), whether
    /// reported as they happened or only in the result.
    pub permission_denials: Vec<Denial>,
}

impl Summary {
    pub fn add(&mut self, record: &Record) {
        match &record.event {
            Event::SessionStarted {
                session_id: Some(id),
                ..
            } => self.session_id = Some(id.clone()),
            Event::ToolCall { .. } => self.tool_calls += 1,
            Event::Malformed { .. } => self.malformed_lines.push(record.line),
            Event::Error { message } => self.errors.push(message.clone()),
            Event::PermissionDenied(d) => self.deny(d),
            Event::Result(outcome) => {
                if let Some(id) = &outcome.session_id {
                    self.session_id = Some(id.clone());
                }
                for d in &outcome.permission_denials {
                    self.deny(d);
                }
                self.result = Some(outcome.clone());
            }
            _ => {}
        }
    }

    fn deny(&mut self, denial: &Denial) {
        let seen = denial.id.is_some() && self.permission_denials.iter().any(|d| d.id == denial.id);
        if !seen {
            self.permission_denials.push(denial.clone());
        }
    }

    /// Whether the agent succeeded: a result that says so. No result (the CLI died or was
    /// cut off mid-stream) or an error subtype such as `error_max_turns` is a failure.
    pub fn success(&self) -> bool {
        self.result.as_ref().is_some_and(|r| r.success)
    }
}

impl<'a> FromIterator<&'a Record> for Summary {
    fn from_iter<I: IntoIterator<Item = &'a Record>>(iter: I) -> Self {
        let mut s = Summary::default();
        for r in iter {
            s.add(r);
        }
        s
    }
}
