//! Progress for long work (image builds and pulls) on stderr: a spinner on a terminal,
//! plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use berth_engine::BuildEvent;
use indicatif::{ProgressBar, ProgressStyle};

/// Shows build or pull progress for one piece of long work.
pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Mutex<String>,
}

impl Progress {
    /// Starts showing progress for `what`.
    pub fn start(what: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {wide_msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            Self {
                bar: Some(bar),
                last_line: Mutex::new(String::new()),
            }
        } else {
            eprintln!("berth: {what}…");
            Self {
                bar: None,
                last_line: Mutex::new(String::new()),
            }
        }
    }

    /// Reports one event.
    pub fn event(&self, event: BuildEvent) {
        let line = match event {
            BuildEvent::Log(line) => line,
            BuildEvent::Progress {
                id,
                status,
                current,
                total,
            } => match (current, total) {
                (Some(c), Some(t)) if t > 0 => format!("{id} {status} {}%", c * 100 / t),
                _ => format!("{id} {status}"),
            },
        };
        match &self.bar {
            Some(bar) => bar.set_message(line),
            None => {
                // Without a terminal, print milestones only: build steps and finished layers.
                let milestone = line.starts_with("Step")
                    || line.contains("complete")
                    || line.starts_with(" Digest")
                    || line.starts_with(" Status");
                if let Ok(mut last) = self.last_line.lock() {
                    if *last != line && milestone {
                        eprintln!("  {line}");
                    }
                    *last = line;
                }
            }
        }
    }

    /// Ends the display with a final message.
    pub fn finish(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.finish_with_message(message.to_string()),
            None => eprintln!("berth: {message}"),
        }
    }

    /// Removes the display (on failure).
    pub fn abandon(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
