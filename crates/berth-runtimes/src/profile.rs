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
    /// The CLI's own permission mode; `None`: the mode that acts without asking.
    pub permission_mode: Option<String>,
}

/// Each CLI's permission modes, the one berth picks first. The berth sandbox is the
/// permission boundary, so by default a headless CLI acts without asking (asking would only
/// mean every write is refused, as nobody is there to approve it).
pub fn permission_modes(cli: Cli) -> &'static [&'static str] {
    match cli {
        Cli::Claude => &[
            "bypassPermissions",
            "acceptEdits",
            "default",
            "dontAsk",
            "plan",
            "auto",
        ],
        // `bypass` skips Codex's approvals and its own Landlock/seccomp sandbox, which is
        // redundant inside berth's and often cannot work in a container; the others are its
        // `--sandbox` modes.
        Cli::Codex => &[
            "bypass",
            "read-only",
            "workspace-write",
            "danger-full-access",
        ],
        Cli::Gemini => &["yolo", "auto_edit", "default", "plan"],
    }
}

/// The argv that puts `cli` in `mode` (or its default).
pub fn permission_args(cli: Cli, mode: Option<&str>) -> Result<Vec<String>, RuntimeError> {
    let modes = permission_modes(cli);
    let mode = mode.unwrap_or(modes[0]);
    if !modes.contains(&mode) {
        return Err(RuntimeError::Input(format!(
            "--permission-mode {mode:?} is not a mode of {cli}: expected one of {} (e.g. --permission-mode {})",
            modes.join(", "),
            modes[1]
        )));
    }
    let args: Vec<&str> = match (cli, mode) {
        (Cli::Claude, m) => vec!["--permission-mode", m],
        (Cli::Codex, "bypass") => vec!["--dangerously-bypass-approvals-and-sandbox"],
        (Cli::Codex, m) => vec!["--sandbox", m],
        (Cli::Gemini, m) => vec!["--approval-mode", m],
    };
    Ok(args.into_iter().map(String::from).collect())
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
            claude_options(&mut argv, options)?;
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
            argv.extend(permission_args(cli, options.permission_mode.as_deref())?);
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
            // The workspace is the sandbox's: trusting it is what keeps the mode from being
            // forced back to `default` in an untrusted folder.
            push(&mut argv, &["--skip-trust"]);
            argv.extend(permission_args(cli, options.permission_mode.as_deref())?);
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
    claude_options(&mut argv, options)?;
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

fn claude_options(argv: &mut Vec<String>, options: &CliOptions) -> Result<(), RuntimeError> {
    argv.extend(permission_args(
        Cli::Claude,
        options.permission_mode.as_deref(),
    )?);
    if let Some(model) = &options.model {
        argv.extend(["--model".into(), model.clone()]);
    }
    if let Some(n) = options.max_turns {
        argv.extend(["--max-turns".into(), n.to_string()]);
    }
    Ok(())
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
    fn each_cli_acts_without_asking_unless_told_otherwise() {
        let run = |cli, mode: Option<&str>| {
            let options = CliOptions {
                permission_mode: mode.map(String::from),
                ..CliOptions::default()
            };
            one_shot(
                cli,
                &SessionChoice::New("s".into()),
                &options,
                "p",
                &PromptDelivery::Argv,
            )
        };
        let claude = run(Cli::Claude, None).unwrap();
        assert!(claude
            .windows(2)
            .any(|w| w == ["--permission-mode", "bypassPermissions"]));
        let plan = run(Cli::Claude, Some("plan")).unwrap();
        assert!(plan.windows(2).any(|w| w == ["--permission-mode", "plan"]));
        let codex = run(Cli::Codex, None).unwrap();
        assert!(codex.contains(&"--dangerously-bypass-approvals-and-sandbox".to_string()));
        let ro = run(Cli::Codex, Some("read-only")).unwrap();
        assert!(ro.windows(2).any(|w| w == ["--sandbox", "read-only"]));
        let gemini = run(Cli::Gemini, None).unwrap();
        assert!(gemini.windows(2).any(|w| w == ["--approval-mode", "yolo"]));
        let e = run(Cli::Gemini, Some("bypassPermissions")).unwrap_err();
        assert!(e.to_string().contains("yolo, auto_edit"), "{e}");
        // The prompt stays the last element, after `--`.
        assert_eq!(claude.last().unwrap(), "p");
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
        assert!(argv
            .windows(3)
            .any(|w| w == ["--resume", "old", "--fork-session"]));
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
