//! How each agent CLI is started headless: its argv for a new, resumed or forked session and
//! for a long-lived interactive process. The prompt is always one argv element (or stdin),
//! never part of a shell string, so `$(…)`, backticks and quotes reach the CLI untouched.

use berth_events::Cli;

use crate::RuntimeError;

/// Which session a run continues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionChoice {
    /// A new session with this berth-chosen id (Claude) or the CLI's own (Codex, Gemini).
    New(String),
    /// Continue this session.
    Resume(String),
    /// Branch this session into a new one.
    Fork(String),
}

/// How the prompt reaches the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptDelivery {
    /// As the last argv element.
    Argv,
    /// On stdin, then closed (long prompts, `--prompt-file`).
    Stdin,
}

/// Options every CLI understands in some form.
#[derive(Debug, Clone, Default)]
pub struct CliOptions {
    pub model: Option<String>,
    pub max_turns: Option<u64>,
}

/// argv for a one-shot headless run.
pub fn one_shot(
    cli: Cli,
    session: &SessionChoice,
    options: &CliOptions,
    prompt: &str,
    delivery: &PromptDelivery,
) -> Result<Vec<String>, RuntimeError> {
    let mut argv: Vec<String> = Vec::new();
    let push = |argv: &mut Vec<String>, items: &[&str]| {
        argv.extend(items.iter().map(|s| s.to_string()));
    };
    match cli {
        Cli::Claude => {
            push(
                &mut argv,
                &[
                    "claude",
                    "-p",
                    "--output-format",
                    "stream-json",
                    "--verbose",
                ],
            );
            claude_session(&mut argv, session);
            claude_options(&mut argv, options);
            if *delivery == PromptDelivery::Argv {
                argv.push("--".into());
                argv.push(prompt.to_string());
            }
        }
        Cli::Codex => {
            push(&mut argv, &["codex", "exec"]);
            match session {
                SessionChoice::New(_) => {}
                SessionChoice::Resume(id) => push(&mut argv, &["resume", id]),
                SessionChoice::Fork(_) => return Err(unsupported(cli, "--fork")),
            }
            push(&mut argv, &["--json", "--skip-git-repo-check"]);
            if let Some(model) = &options.model {
                push(&mut argv, &["--model", model]);
            }
            if options.max_turns.is_some() {
                return Err(unsupported(cli, "--max-turns"));
            }
            if *delivery == PromptDelivery::Argv {
                argv.push("--".into());
                argv.push(prompt.to_string());
            } else {
                // `codex exec -` reads the prompt from stdin.
                argv.push("-".into());
            }
        }
        Cli::Gemini => {
            if *delivery == PromptDelivery::Stdin {
                return Err(unsupported(cli, "--prompt-file (the prompt goes in -p)"));
            }
            push(
                &mut argv,
                &["gemini", "-p", prompt, "--output-format", "stream-json"],
            );
            match session {
                SessionChoice::New(_) => {}
                SessionChoice::Resume(id) => push(&mut argv, &["--resume", id]),
                SessionChoice::Fork(_) => return Err(unsupported(cli, "--fork")),
            }
            if let Some(model) = &options.model {
                push(&mut argv, &["--model", model]);
            }
            if options.max_turns.is_some() {
                return Err(unsupported(cli, "--max-turns"));
            }
        }
    }
    Ok(argv)
}

/// argv for one long-running process that reads user turns as JSON lines on stdin.
pub fn interactive(
    cli: Cli,
    session: &SessionChoice,
    options: &CliOptions,
) -> Result<Vec<String>, RuntimeError> {
    if cli != Cli::Claude {
        return Err(unsupported(
            cli,
            "interactive sessions (only Claude Code reads turns as stream-json on stdin)",
        ));
    }
    let mut argv: Vec<String> = [
        "claude",
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    claude_session(&mut argv, session);
    claude_options(&mut argv, options);
    Ok(argv)
}

/// One user turn for an interactive Claude process (a line of `--input-format stream-json`).
pub fn user_turn(text: &str) -> String {
    let mut line = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": [{"type": "text", "text": text}]},
    })
    .to_string();
    line.push('\n');
    line
}

fn claude_session(argv: &mut Vec<String>, session: &SessionChoice) {
    match session {
        SessionChoice::New(id) => argv.extend(["--session-id".into(), id.clone()]),
        SessionChoice::Resume(id) => argv.extend(["--resume".into(), id.clone()]),
        SessionChoice::Fork(id) => {
            argv.extend(["--resume".into(), id.clone(), "--fork-session".into()])
        }
    }
}

fn claude_options(argv: &mut Vec<String>, options: &CliOptions) {
    if let Some(model) = &options.model {
        argv.extend(["--model".into(), model.clone()]);
    }
    if let Some(n) = options.max_turns {
        argv.extend(["--max-turns".into(), n.to_string()]);
    }
}

fn unsupported(cli: Cli, what: &str) -> RuntimeError {
    RuntimeError::Unsupported {
        cli,
        what: what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_one_argv_element_after_the_flags() {
        let prompt = "a $(rm -rf /) `id` \"q\" 'x' --not-a-flag";
        let argv = one_shot(
            Cli::Claude,
            &SessionChoice::New("s1".into()),
            &CliOptions::default(),
            prompt,
            &PromptDelivery::Argv,
        )
        .unwrap();
        assert_eq!(argv.last().unwrap(), prompt);
        assert_eq!(argv[argv.len() - 2], "--");
        assert!(argv.windows(2).any(|w| w == ["--session-id", "s1"]));
    }

    #[test]
    fn fork_resumes_into_a_new_session() {
        let argv = one_shot(
            Cli::Claude,
            &SessionChoice::Fork("old".into()),
            &CliOptions::default(),
            "p",
            &PromptDelivery::Stdin,
        )
        .unwrap();
        assert!(argv.ends_with(&["--resume".into(), "old".into(), "--fork-session".into()]));
        assert!(
            one_shot(
                Cli::Codex,
                &SessionChoice::Fork("old".into()),
                &CliOptions::default(),
                "p",
                &PromptDelivery::Argv
            )
            .is_err(),
            "codex cannot fork"
        );
    }

    #[test]
    fn codex_and_gemini_resume() {
        let codex = one_shot(
            Cli::Codex,
            &SessionChoice::Resume("t1".into()),
            &CliOptions::default(),
            "go",
            &PromptDelivery::Argv,
        )
        .unwrap();
        assert_eq!(codex[..4], ["codex", "exec", "resume", "t1"]);
        let gemini = one_shot(
            Cli::Gemini,
            &SessionChoice::Resume("g1".into()),
            &CliOptions::default(),
            "go",
            &PromptDelivery::Argv,
        )
        .unwrap();
        assert!(gemini.windows(2).any(|w| w == ["--resume", "g1"]));
        assert!(gemini.windows(2).any(|w| w == ["-p", "go"]));
    }

    #[test]
    fn a_user_turn_is_one_json_line() {
        let line = user_turn("two\nlines \"quoted\"");
        assert_eq!(line.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(v["message"]["content"][0]["text"], "two\nlines \"quoted\"");
    }
}
