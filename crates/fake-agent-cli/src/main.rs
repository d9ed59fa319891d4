//! A stand-in for the coding-agent CLIs, used only by berth's tests.
//!
//! Installed as `claude`, `codex` and `gemini` in a test image, it accepts the flags berth
//! passes to the real CLIs (and rejects unknown ones, as they do), prints their headless
//! event formats, and keeps per-session history in `$HOME` so that resume and fork can be
//! checked. Words in the prompt steer it:
//!
//! | word | effect |
//! | --- | --- |
//! | `fake:fail` | the turn ends in an error result, exit 1 |
//! | `fake:hang` | sleeps forever after the session starts |
//! | `fake:die` | exits 3 mid-stream, without a result |
//! | `fake:turns=N` | the turn takes N turns (`--max-turns` below N gives `error_max_turns`) |
//! | `fake:write=NAME` | writes the prompt to NAME in the working directory — only in a permission mode that allows writes (Claude `bypassPermissions`/`acceptEdits`/`auto`, Codex `--dangerously-bypass-approvals-and-sandbox` or `--sandbox workspace-write`/`danger-full-access`, Gemini `yolo`/`auto_edit`); otherwise the call is denied as the real CLI denies it headless |
//! | `fake:env=NAME` | says whether the environment variable NAME is set |
//! | `fake:value=NAME` | says what the environment variable NAME holds |
//! | `fake:replay=FILE` | prints `/usr/share/fake-cli/FILE` verbatim |
//! | `fake:garbage` | prints a line that is not JSON before the answer |
//!
//! The answer always contains `echo: <prompt>` with the prompt exactly as received.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

const REPLAY_DIR: &str = "/usr/share/fake-cli";

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or("claude").to_string();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match name.as_str() {
        "codex" => codex(&args),
        "gemini" => gemini(&args),
        _ => claude(&args),
    };
    std::process::exit(code);
}

fn fail(message: &str, code: i32) -> i32 {
    eprintln!("{message}");
    code
}

fn out(v: &Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{v}");
    let _ = stdout.flush();
}

fn new_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("fake-{}", std::process::id()))
}

fn directive<'a>(prompt: &'a str, key: &str) -> Option<&'a str> {
    prompt.split_whitespace().find_map(|w| {
        w.strip_prefix("fake:")
            .and_then(|d| d.strip_prefix(key))
            .map(|rest| rest.strip_prefix('=').unwrap_or(rest))
    })
}

/// Where a session's history lives (one line per turn's prompt), like Claude's own
/// `~/.claude/projects`.
fn history_path(cli: &str, session: &str) -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/nonexistent".into());
    PathBuf::from(home)
        .join(format!(".fake-{cli}"))
        .join("sessions")
        .join(format!("{session}.jsonl"))
}

fn history(cli: &str, session: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(history_path(cli, session)).ok()?;
    Some(text.lines().map(String::from).collect())
}

fn remember(cli: &str, session: &str, prompts: &[String]) -> Result<(), String> {
    let path = history_path(cli, session);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = String::new();
        for p in prompts {
            text.push_str(&json!(p).to_string());
            text.push('\n');
        }
        std::fs::write(&path, text)
    };
    write().map_err(|e| format!("cannot write session state {}: {e}", path.display()))
}

/// What one turn did, before it is printed in a CLI's format.
struct Turn {
    text: String,
    tools: Vec<(String, Value, String)>,
    outcome: Result<u64, (&'static str, String)>,
}

/// The message the real Claude Code gives when a headless write needs approval.
const NEEDS_APPROVAL: &str = "needs approval: the fake CLI's permission mode does not allow writes";

/// Runs one turn's directives. `Err(code)` means the process must end now (die); hang never
/// returns. Without `writes`, a write is denied (its result starts with "denied:").
fn turn(prompt: &str, earlier: usize, max_turns: Option<u64>, writes: bool) -> Result<Turn, i32> {
    if directive(prompt, "hang").is_some() {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    if directive(prompt, "garbage").is_some() {
        println!("this line is not JSON {{");
    }
    let mut tools = Vec::new();
    let mut text = format!("echo: {prompt}\nhistory: {earlier} earlier turns");
    let vars = prompt
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("fake:env="));
    for var in vars {
        let state = if std::env::var_os(var).is_some() {
            "set"
        } else {
            "unset"
        };
        text.push_str(&format!("\nenv {var}={state}"));
    }
    for var in prompt
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("fake:value="))
    {
        let value = std::env::var(var).unwrap_or_default();
        text.push_str(&format!("\nvalue {var}={value}"));
    }
    if let Some(name) = directive(prompt, "write") {
        let result = if writes {
            std::fs::write(name, prompt)
                .map(|()| format!("wrote {name}"))
                .unwrap_or_else(|e| format!("error writing {name}: {e}"))
        } else {
            format!("denied: writing {name} {NEEDS_APPROVAL}")
        };
        tools.push((
            "Write".to_string(),
            json!({"file_path": name, "content": prompt}),
            result,
        ));
    }
    let turns: u64 = directive(prompt, "turns")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let outcome = if directive(prompt, "fail").is_some() {
        Err((
            "error_during_execution",
            "the fake CLI was told to fail".into(),
        ))
    } else if max_turns.is_some_and(|m| turns > m) {
        Err(("error_max_turns", format!("reached max turns ({turns})")))
    } else {
        Ok(turns)
    };
    if directive(prompt, "die").is_some() {
        out(
            &json!({"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"about to die"}]}}),
        );
        return Err(3);
    }
    Ok(Turn {
        text,
        tools,
        outcome,
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn replay(prompt: &str) -> Option<i32> {
    let file = directive(prompt, "replay")?;
    let path = PathBuf::from(REPLAY_DIR).join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            print!("{text}");
            let _ = std::io::stdout().flush();
            Some(0)
        }
        Err(e) => Some(fail(&format!("cannot replay {}: {e}", path.display()), 1)),
    }
}

// ---------------------------------------------------------------------------------------
// Claude Code

#[derive(Default)]
struct ClaudeArgs {
    print: bool,
    output_format: Option<String>,
    input_format: Option<String>,
    verbose: bool,
    session_id: Option<String>,
    resume: Option<String>,
    fork: bool,
    model: Option<String>,
    max_turns: Option<u64>,
    permission_mode: Option<String>,
    prompt: Option<String>,
}

fn parse_claude(args: &[String]) -> Result<ClaudeArgs, String> {
    let mut a = ClaudeArgs::default();
    let mut it = args.iter();
    let value = |it: &mut std::slice::Iter<String>, flag: &str| {
        it.next()
            .cloned()
            .ok_or_else(|| format!("error: option '{flag}' argument missing"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-p" | "--print" => a.print = true,
            "--verbose" => a.verbose = true,
            "--fork-session" => a.fork = true,
            "--dangerously-skip-permissions" => {
                a.permission_mode = Some("bypassPermissions".into())
            }
            "--output-format" => a.output_format = Some(value(&mut it, arg)?),
            "--input-format" => a.input_format = Some(value(&mut it, arg)?),
            "--session-id" => a.session_id = Some(value(&mut it, arg)?),
            "--resume" | "-r" => a.resume = Some(value(&mut it, arg)?),
            "--model" => a.model = Some(value(&mut it, arg)?),
            "--permission-mode" => {
                let mode = value(&mut it, arg)?;
                let known = [
                    "acceptEdits",
                    "bypassPermissions",
                    "default",
                    "dontAsk",
                    "plan",
                    "auto",
                ];
                if !known.contains(&mode.as_str()) {
                    return Err(format!("error: option '--permission-mode <mode>' argument '{mode}' is invalid. Allowed choices are {}.", known.join(", ")));
                }
                a.permission_mode = Some(mode);
            }
            "--append-system-prompt" | "--allowedTools" => {
                value(&mut it, arg)?;
            }
            "--max-turns" => {
                let v = value(&mut it, arg)?;
                a.max_turns = Some(v.parse().map_err(|_| format!("bad --max-turns {v}"))?);
            }
            "--" => {
                a.prompt = Some(it.cloned().collect::<Vec<_>>().join(" "));
                break;
            }
            flag if flag.starts_with('-') => return Err(format!("error: unknown option '{flag}'")),
            text => a.prompt = Some(text.to_string()),
        }
    }
    if a.output_format.as_deref() == Some("stream-json") && a.print && !a.verbose {
        return Err(
            "Error: When using --print, --output-format=stream-json requires --verbose".into(),
        );
    }
    Ok(a)
}

fn claude(args: &[String]) -> i32 {
    let a = match parse_claude(args) {
        Ok(a) => a,
        Err(e) => return fail(&e, 1),
    };
    if !a.print || a.output_format.as_deref() != Some("stream-json") {
        return fail("the fake CLI only speaks -p --output-format stream-json", 1);
    }
    if a.permission_mode.as_deref() == Some("bypassPermissions") && running_as_root() {
        return fail(
            "--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons",
            1,
        );
    }
    let (session, mut prompts) = match (&a.resume, a.fork, &a.session_id) {
        (Some(id), fork, _) => {
            let Some(h) = history("claude", id) else {
                return fail(&format!("No conversation found with session ID: {id}"), 1);
            };
            let new = if fork {
                a.session_id.clone().unwrap_or_else(new_id)
            } else {
                id.clone()
            };
            (new, h)
        }
        (None, _, Some(id)) => {
            if history("claude", id).is_some() {
                return fail(&format!("Error: Session ID {id} is already in use."), 1);
            }
            (id.clone(), Vec::new())
        }
        (None, _, None) => (new_id(), Vec::new()),
    };
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let model = a.model.clone().unwrap_or_else(|| "fake-model".into());
    let init = json!({"type":"system","subtype":"init","cwd":cwd,"session_id":session,
        "tools":["Bash","Read","Write"],"mcp_servers":[],"model":model,
        "permissionMode":a.permission_mode.as_deref().unwrap_or("default"),"claude_code_version":"0.0.0-fake"});
    // Claude keeps its state in $HOME and fails at once when it cannot write there.
    if let Err(e) = remember("claude", &session, &prompts) {
        return fail(&e, 1);
    }

    if a.input_format.as_deref() == Some("stream-json") {
        out(&init);
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let prompt = match user_text(&line) {
                Some(p) => p,
                None => return fail(&format!("bad input line: {line}"), 1),
            };
            let code = claude_turn(&a, &session, &model, &prompt, &mut prompts);
            if code != 0 && code != 1 {
                return code;
            }
        }
        return 0;
    }

    let prompt = match a.prompt.clone() {
        Some(p) => p,
        None => {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut s);
            s
        }
    };
    if let Some(code) = replay(&prompt) {
        return code;
    }
    out(&init);
    claude_turn(&a, &session, &model, &prompt, &mut prompts)
}

/// The text of one `--input-format stream-json` user message.
fn user_text(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    let content = v.get("message")?.get("content")?;
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn claude_turn(
    a: &ClaudeArgs,
    session: &str,
    model: &str,
    prompt: &str,
    prompts: &mut Vec<String>,
) -> i32 {
    let started = Instant::now();
    let writes = matches!(
        a.permission_mode.as_deref(),
        Some("bypassPermissions" | "acceptEdits" | "auto")
    );
    let t = match turn(prompt, prompts.len(), a.max_turns, writes) {
        Ok(t) => t,
        Err(code) => return code,
    };
    prompts.push(prompt.to_string());
    if let Err(e) = remember("claude", session, prompts) {
        return fail(&e, 1);
    }
    let msg_id = format!("msg_fake_{}", prompts.len());
    let mut denials = Vec::new();
    for (i, (name, input, result)) in t.tools.iter().enumerate() {
        let tool_id = format!("toolu_fake_{i}");
        out(
            &json!({"type":"assistant","message":{"id":msg_id,"type":"message","role":"assistant","model":model,
            "content":[{"type":"tool_use","id":tool_id,"name":name,"input":input}]},"session_id":session}),
        );
        if result.starts_with("denied:") {
            // As Claude Code 2.1.332 reports it headless: an event, then an error result.
            out(
                &json!({"type":"system","subtype":"permission_denied","tool_name":name,"tool_use_id":tool_id,"message":result,"session_id":session}),
            );
            denials.push(json!({"tool_name":name,"tool_use_id":tool_id,"tool_input":input}));
        }
        out(
            &json!({"type":"user","message":{"role":"user","content":[{"tool_use_id":tool_id,"type":"tool_result","content":result,"is_error":result.starts_with("error") || result.starts_with("denied")}]},"session_id":session}),
        );
    }
    out(
        &json!({"type":"assistant","message":{"id":msg_id,"type":"message","role":"assistant","model":model,
        "content":[{"type":"text","text":t.text}],"usage":{"input_tokens":10,"output_tokens":5}},"session_id":session}),
    );
    let duration = u64::try_from(started.elapsed().as_millis()).unwrap_or(0);
    let usage = json!({"input_tokens":10,"output_tokens":5});
    match t.outcome {
        Ok(turns) => {
            out(
                &json!({"type":"result","subtype":"success","is_error":false,"duration_ms":duration,
                "num_turns":turns,"result":t.text,"session_id":session,"total_cost_usd":0.0123,"usage":usage,
                "permission_denials":denials}),
            );
            0
        }
        Err((subtype, message)) => {
            out(
                &json!({"type":"result","subtype":subtype,"is_error":true,"duration_ms":duration,
                "num_turns":1,"session_id":session,"total_cost_usd":0.0123,"usage":usage,"errors":[message]}),
            );
            1
        }
    }
}

// ---------------------------------------------------------------------------------------
// Codex: `codex exec --json [flags] PROMPT` and `codex exec resume ID --json [flags] PROMPT`.

fn codex(args: &[String]) -> i32 {
    let mut it = args.iter().peekable();
    if it.next().map(String::as_str) != Some("exec") {
        return fail("the fake codex only supports `codex exec`", 2);
    }
    let mut resume = None;
    if it.peek().map(|s| s.as_str()) == Some("resume") {
        it.next();
        resume = it.next().cloned();
    }
    let (mut json_mode, mut prompt, mut writes) = (false, None, false);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => json_mode = true,
            "--skip-git-repo-check" => {}
            "--dangerously-bypass-approvals-and-sandbox" | "--full-auto" => writes = true,
            "--sandbox" | "-s" => {
                let mode = it.next().cloned().unwrap_or_default();
                match mode.as_str() {
                    "workspace-write" | "danger-full-access" => writes = true,
                    "read-only" => writes = false,
                    other => {
                        return fail(
                            &format!(
                                "error: invalid value '{other}' for '--sandbox <SANDBOX_MODE>'"
                            ),
                            2,
                        )
                    }
                }
            }
            "--model" | "-m" | "-C" | "--cd" => {
                it.next();
            }
            "--" => prompt = Some(it.by_ref().cloned().collect::<Vec<_>>().join(" ")),
            f if f.starts_with('-') => {
                return fail(&format!("error: unexpected argument '{f}'"), 2)
            }
            p => prompt = Some(p.to_string()),
        }
    }
    if !json_mode {
        return fail("the fake codex only speaks --json", 2);
    }
    let prompt = prompt.unwrap_or_default();
    // Like the real CLI, an unknown resume id silently starts a new thread.
    let (thread, mut prompts) = match resume
        .as_deref()
        .and_then(|id| Some((id, history("codex", id)?)))
    {
        Some((id, h)) => (id.to_string(), h),
        None => (new_id(), Vec::new()),
    };
    out(&json!({"type":"thread.started","thread_id":thread}));
    out(&json!({"type":"turn.started"}));
    let t = match turn(&prompt, prompts.len(), None, writes) {
        Ok(t) => t,
        Err(code) => return code,
    };
    prompts.push(prompt.clone());
    if let Err(e) = remember("codex", &thread, &prompts) {
        return fail(&e, 1);
    }
    for (i, (_, input, result)) in t.tools.iter().enumerate() {
        out(
            &json!({"type":"item.completed","item":{"id":format!("item_t{i}"),"type":"file_change",
            "changes":[{"path":input["file_path"],"kind":"add"}],"status": if result.starts_with("error") || result.starts_with("denied") {"failed"} else {"completed"}}}),
        );
    }
    out(
        &json!({"type":"item.completed","item":{"id":"item_0","type":"agent_message","text":t.text}}),
    );
    match t.outcome {
        Ok(_) => {
            out(
                &json!({"type":"turn.completed","usage":{"input_tokens":10,"cached_input_tokens":0,"output_tokens":5}}),
            );
            0
        }
        Err((_, message)) => {
            out(&json!({"type":"turn.failed","error":{"message":message}}));
            1
        }
    }
}

// ---------------------------------------------------------------------------------------
// Gemini: `gemini -p PROMPT --output-format stream-json [--model M] [--resume ID] [--yolo]`.

fn gemini(args: &[String]) -> i32 {
    let (mut prompt, mut format, mut resume, mut writes) = (None, None, None, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-p" | "--prompt" => prompt = it.next().cloned(),
            "--approval-mode" => {
                let mode = it.next().cloned().unwrap_or_default();
                match mode.as_str() {
                    "yolo" | "auto_edit" => writes = true,
                    "default" | "plan" => writes = false,
                    other => {
                        return fail(
                            &format!("Invalid values: Argument: approval-mode, Given: \"{other}\""),
                            42,
                        )
                    }
                }
            }
            "--output-format" | "-o" => format = it.next().cloned(),
            "--resume" | "-r" => resume = it.next().cloned(),
            "--model" | "-m" => {
                it.next();
            }
            "--yolo" | "-y" => writes = true,
            "--skip-trust" => {}
            f => return fail(&format!("Unknown argument: {f}"), 42),
        }
    }
    if format.as_deref() != Some("stream-json") {
        return fail(
            "the fake gemini only speaks --output-format stream-json",
            42,
        );
    }
    let Some(prompt) = prompt else {
        return fail("No input provided via -p", 42);
    };
    let (session, mut prompts) = match resume {
        Some(id) => match history("gemini", &id) {
            Some(h) => (id, h),
            None => return fail(&format!("Invalid session identifier \"{id}\""), 42),
        },
        None => (new_id(), Vec::new()),
    };
    out(&json!({"type":"init","session_id":session,"model":"fake-gemini"}));
    out(&json!({"type":"message","role":"user","content":prompt}));
    let t = match turn(&prompt, prompts.len(), None, writes) {
        Ok(t) => t,
        Err(code) => return code,
    };
    prompts.push(prompt.clone());
    if let Err(e) = remember("gemini", &session, &prompts) {
        return fail(&e, 1);
    }
    for (i, (name, input, result)) in t.tools.iter().enumerate() {
        out(
            &json!({"type":"tool_use","tool_name":name,"tool_id":format!("t{i}"),"parameters":input}),
        );
        out(
            &json!({"type":"tool_result","tool_id":format!("t{i}"),"status": if result.starts_with("denied") {"error"} else {"success"},"output":result}),
        );
    }
    out(&json!({"type":"message","role":"assistant","content":t.text,"delta":true}));
    let stats = json!({"total_tokens":15,"input_tokens":10,"output_tokens":5,"duration_ms":1,"tool_calls":t.tools.len()});
    match t.outcome {
        Ok(_) => {
            out(&json!({"type":"result","status":"success","stats":stats}));
            0
        }
        Err((_, message)) => {
            out(
                &json!({"type":"result","status":"error","error":{"type":"FatalError","message":message},"stats":stats}),
            );
            1
        }
    }
}
