//! `berth agent …` end to end against the real daemon, with the fake agent CLI
//! (`crates/fake-agent-cli`) installed as claude/codex/gemini in a test image.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

use super::common::*;

pub const IMAGE: &str = "berth/fake-agent:test";

/// Builds the fake CLI statically and an image with it (once per test binary).
pub fn ensure_fake_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    ensure_base_image();
    ensure_agent();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/build-agent"))
        .arg("fake-agent-cli")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the fake CLI: {}",
        stderr(&out)
    );
    let binary = stdout(&out).trim().to_string();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, ctx.path().join("fake-agent-cli")).unwrap();
    std::fs::create_dir(ctx.path().join("transcripts")).unwrap();
    for entry in std::fs::read_dir(root.join("fixtures/agent-transcripts")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            ctx.path()
                .join("transcripts")
                .join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM berth/base:latest\n\
         COPY fake-agent-cli /usr/local/bin/claude\n\
         COPY fake-agent-cli /usr/local/bin/codex\n\
         COPY fake-agent-cli /usr/local/bin/gemini\n\
         COPY transcripts/ /usr/share/fake-cli/\n\
         LABEL berth.managed=true berth.kind=image\n",
    )
    .unwrap();
    docker_build(ctx.path(), IMAGE);
    *built = true;
}

/// A named agent, removed (sandboxes, home volume, record) when dropped.
struct Agent {
    name: String,
}

impl Agent {
    fn new(tag: &str) -> Self {
        Self {
            name: format!("t-{tag}-{}", std::process::id()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = berth().args(["agent", "rm", &self.name]).output();
    }
}

/// `berth agent run --json --image IMAGE ARGS`, returning (events, summary, output).
fn agent_json(args: &[&str]) -> (Vec<Value>, Value, Output) {
    agent_json_with(berth(), args)
}

/// `berth agent run --json` with the fake CLI's image, through `cmd` (a local or a remote
/// berth): its events, its summary line and the whole output.
pub(super) fn agent_json_with(
    mut cmd: std::process::Command,
    args: &[&str],
) -> (Vec<Value>, Value, Output) {
    ensure_fake_image();
    let out = cmd
        .args(["agent", "run", "--json", "--image", IMAGE])
        .args(args)
        .output()
        .unwrap();
    let mut lines: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nstderr: {}", stderr(&out)))
        })
        .collect();
    let summary = lines
        .pop()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(&out)));
    assert_eq!(summary["type"], "summary", "{summary}");
    (lines, summary, out)
}

pub(super) fn texts(events: &[Value]) -> String {
    events
        .iter()
        .filter(|e| e["type"] == "assistant_text")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn volumes_named(prefix: &str) -> Vec<String> {
    stdout(&docker(&["volume", "ls", "-q"]))
        .lines()
        .filter(|v| v.starts_with(prefix))
        .map(String::from)
        .collect()
}

#[test]
fn a_prompt_with_shell_characters_arrives_intact_and_an_ephemeral_run_leaves_nothing() {
    let ws = dir_owned_by(1000, 1000);
    let prompt = "fix it: $(rm -rf /) `id` \"double\" 'single' \\back $HOME; echo hi | cat fake:write=out.txt";
    let (events, summary, out) = agent_json(&[
        "--workspace",
        ws.path().to_str().unwrap(),
        "--prompt",
        prompt,
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        texts(&events).contains(&format!("echo: {prompt}\n")),
        "{events:?}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("out.txt")).unwrap(),
        prompt
    );
    assert_eq!(summary["success"], true);
    assert_eq!(summary["summary"]["result"]["subtype"], "success");
    assert_eq!(summary["summary"]["result"]["num_turns"], 1);
    assert!(summary["summary"]["result"]["cost_usd"].as_f64().unwrap() > 0.0);
    assert!(summary["duration_ms"].is_u64());
    // berth chose the session id and the CLI used it.
    let session = summary["session_id"].as_str().unwrap();
    assert_eq!(session.len(), 36);
    assert!(summary["problems"].as_array().unwrap().is_empty());
    // Events carry their source line and the CLI's raw JSON.
    assert_eq!(events[0]["type"], "session_started");
    assert_eq!(events[0]["line"], 1);
    assert_eq!(events[0]["raw"]["session_id"], session);
    // Nothing left behind.
    let id = summary["sandbox_id"].as_str().unwrap();
    assert_eq!(summary["kept"], false);
    assert!(containers_with(&format!("berth.id={id}")).is_empty());
    let home = summary["home_volume"].as_str().unwrap();
    assert!(home.starts_with("berth-home-"), "{home}");
    assert!(volumes_named(home).is_empty(), "{home} was left behind");
}

#[test]
fn a_read_only_workspace_is_read_only_and_a_read_only_root_still_has_a_writable_home() {
    let ws = dir_owned_by(1000, 1000);
    let mount = format!("{}:ro", ws.path().display());
    let (events, _, out) = agent_json(&[
        "--workspace",
        &mount,
        "--read-only",
        "--prompt",
        "review fake:write=nope.txt",
    ]);
    // The CLI itself kept its state in $HOME (it fails at once if it cannot): success.
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let result = events
        .iter()
        .find(|e| e["type"] == "tool_result")
        .expect("a tool result");
    assert_eq!(result["is_error"], true, "{result}");
    assert!(
        result["output"]
            .as_str()
            .unwrap()
            .contains("Read-only file system"),
        "{result}"
    );
    assert!(!ws.path().join("nope.txt").exists());
}

#[test]
fn credentials_are_absent_unless_named() {
    ensure_fake_image();
    let run = |extra: &[&str]| {
        let out = berth()
            .args(["agent", "run", "--json", "--image", IMAGE])
            .args(extra)
            .args([
                "--prompt",
                "fake:env=BERTH_TEST_SECRET fake:env=PATH_OF_HOST",
            ])
            .env("BERTH_TEST_SECRET", "s3cret")
            .env("PATH_OF_HOST", "x")
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        stdout(&out)
    };
    let without = run(&[]);
    assert!(without.contains("env BERTH_TEST_SECRET=unset"), "{without}");
    assert!(without.contains("env PATH_OF_HOST=unset"));
    assert!(!without.contains("s3cret"));
    let with = run(&["--env", "BERTH_TEST_SECRET"]);
    assert!(with.contains("env BERTH_TEST_SECRET=set"), "{with}");
    assert!(
        with.contains("env PATH_OF_HOST=unset"),
        "only what is named passes"
    );
}

#[test]
fn named_sessions_resume_and_fork_in_a_kept_sandbox() {
    let agent = Agent::new("sess");
    let other = Agent::new("sess-other");
    let ws = dir_owned_by(1000, 1000);
    let w = ws.path().to_str().unwrap();
    let n = agent.name.as_str();
    let (_, first, out) = agent_json(&["--name", n, "--keep", "--workspace", w, "--prompt", "one"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s1 = first["session_id"].as_str().unwrap().to_string();
    let sandbox = first["sandbox_id"].as_str().unwrap().to_string();
    assert_eq!(first["kept"], true);

    // Another agent running at the same time gets its own session.
    let (_, theirs, _) = agent_json(&["--name", &other.name, "--prompt", "mine"]);
    assert_ne!(theirs["session_id"], first["session_id"]);

    let (events, resumed, out) = agent_json(&[
        "--name",
        n,
        "--keep",
        "--workspace",
        w,
        "--resume",
        &s1,
        "--prompt",
        "two",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(resumed["session_id"], s1.as_str());
    assert_eq!(
        resumed["sandbox_id"],
        sandbox.as_str(),
        "the kept sandbox is reused"
    );
    assert!(texts(&events).contains("history: 1 earlier turns"));

    let (events, forked, out) = agent_json(&[
        "--name",
        n,
        "--keep",
        "--workspace",
        w,
        "--resume",
        &s1,
        "--fork",
        "--prompt",
        "three",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s2 = forked["session_id"].as_str().unwrap();
    assert_ne!(s2, s1);
    assert!(texts(&events).contains("history: 2 earlier turns"));

    // berth recorded which session belongs to which agent, and where the fork came from.
    let ls: Value = serde_json::from_str(&stdout(
        &berth().args(["agent", "ls", "--json"]).output().unwrap(),
    ))
    .unwrap();
    let me = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == n)
        .unwrap();
    let sessions = me["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions[1]["forked_from"], s1.as_str());

    // A session of another agent cannot be resumed under this name.
    let out = berth()
        .args(["agent", "run", "--image", IMAGE, "--name", n, "--resume"])
        .arg(theirs["session_id"].as_str().unwrap())
        .args(["--prompt", "steal"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 125);
    assert!(
        stderr(&out).contains("does not belong to agent"),
        "{}",
        stderr(&out)
    );

    // Removing the agent removes its sandbox and home volume.
    drop(agent);
    assert!(containers_with(&format!("berth.id={sandbox}")).is_empty());
    assert!(volumes_named(&format!("berth-home-t-sess-{}", std::process::id())).is_empty());
}

#[test]
fn a_stopped_kept_sandbox_is_restarted_and_max_containers_removes_the_oldest() {
    let agent = Agent::new("keep");
    let a = dir_owned_by(1000, 1000);
    let b = dir_owned_by(1000, 1000);
    let n = agent.name.as_str();
    let run = |ws: &Path| {
        let (_, s, out) = agent_json(&[
            "--name",
            n,
            "--keep",
            "--max-containers",
            "1",
            "--workspace",
            ws.to_str().unwrap(),
            "--prompt",
            "hi",
        ]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        s["sandbox_id"].as_str().unwrap().to_string()
    };
    let first = run(a.path());
    let out = berth().args(["stop", &first]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(run(a.path()), first, "restarted, not replaced");
    // A different workspace needs a new sandbox; the limit of one removes the old one.
    let second = run(b.path());
    assert_ne!(second, first);
    assert!(containers_with(&format!("berth.id={first}")).is_empty());
    assert_eq!(containers_with(&format!("berth.id={second}")).len(), 1);
}

#[test]
fn a_timeout_ends_the_agents_whole_process_tree() {
    let agent = Agent::new("hang");
    let (_, summary, out) = agent_json(&[
        "--name",
        &agent.name,
        "--keep",
        "--timeout",
        "2s",
        "--prompt",
        "think fake:hang",
    ]);
    assert_eq!(code(&out), 124, "{}", stderr(&out));
    assert_eq!(summary["timed_out"], true);
    let id = summary["sandbox_id"].as_str().unwrap();
    let ps = berth()
        .args(["exec", id, "--", "ps", "-o", "comm"])
        .output()
        .unwrap();
    assert!(!stdout(&ps).contains("claude"), "{}", stdout(&ps));
}

#[test]
fn failures_are_failures_and_malformed_lines_do_not_stop_the_run() {
    let (_, s, out) = agent_json(&["--prompt", "fake:fail"]);
    assert_eq!(code(&out), 1);
    assert_eq!(s["summary"]["result"]["subtype"], "error_during_execution");
    assert_eq!(s["success"], false);

    let (_, s, out) = agent_json(&["--max-turns", "1", "--prompt", "fake:turns=3"]);
    assert_eq!(code(&out), 1);
    assert_eq!(s["summary"]["result"]["subtype"], "error_max_turns");

    let (_, s, out) = agent_json(&["--prompt", "fake:die"]);
    assert_eq!(code(&out), 3, "the CLI's own exit code");
    assert!(s["summary"]["result"].is_null());
    assert!(
        stderr(&out).contains("before reporting a result"),
        "{}",
        stderr(&out)
    );

    let (events, s, out) = agent_json(&["--prompt", "fake:garbage"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let bad = events.iter().find(|e| e["type"] == "malformed").unwrap();
    assert_eq!(bad["line"], 2);
    assert_eq!(s["summary"]["malformed_lines"], serde_json::json!([2]));

    // A transcript of a real Claude Code run, replayed by the fake CLI.
    let (events, s, out) = agent_json(&[
        "--prompt",
        "fake:replay=claude-streamjson-tooluse-ls-v1.0.x.jsonl",
    ]);
    assert_eq!(
        code(&out),
        1,
        "the replayed session id is not the one berth chose"
    );
    assert!(
        stderr(&out).contains("not the id berth chose"),
        "{}",
        stderr(&out)
    );
    assert_eq!(s["summary"]["tool_calls"], 1);
    assert!(events
        .iter()
        .any(|e| e["type"] == "tool_call" && e["name"] == "LS"));
}

#[test]
fn codex_and_gemini_run_and_resume() {
    let agent = Agent::new("codex");
    let n = agent.name.as_str();
    let (events, first, out) = agent_json(&["--cli", "codex", "--name", n, "--prompt", "a"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(texts(&events).contains("echo: a"));
    let thread = first["session_id"].as_str().unwrap();
    let (events, again, out) = agent_json(&[
        "--cli", "codex", "--name", n, "--resume", thread, "--prompt", "b",
    ]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(again["session_id"], thread);
    assert!(texts(&events).contains("history: 1 earlier turns"));

    let (events, s, out) = agent_json(&["--cli", "gemini", "--prompt", "g $(x)"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(texts(&events).contains("echo: g $(x)"));
    assert_eq!(s["summary"]["result"]["success"], true);
}

#[test]
fn berth_toml_names_agents_and_bad_config_names_file_line_and_key() {
    ensure_fake_image();
    let agent = Agent::new("cfg");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[agents.{}]\ncli = \"codex\"\nimage = \"{IMAGE}\"\nmemory = \"512m\"\ntimeout = \"1m\"\n",
            agent.name
        ),
    )
    .unwrap();
    let out = berth()
        .args(["agent", "run", "--json", "--config"])
        .arg(&config)
        .args(["--name", &agent.name, "--prompt", "from config"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["cli"], "codex");

    std::fs::write(&config, "[agents.x]\ncli = \"claude\"\nmemory = \"lots\"\n").unwrap();
    let out = berth()
        .args(["agent", "run", "--config"])
        .arg(&config)
        .args(["--name", "x", "--prompt", "p"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 125);
    let err = stderr(&out);
    assert!(err.contains("berth.toml:3: agents.x.memory"), "{err}");
}

#[test]
fn an_interactive_session_answers_turn_by_turn_and_falls_back_when_its_process_died() {
    ensure_fake_image();
    let agent = Agent::new("pair");
    let n = agent.name.as_str();
    let out = berth()
        .args([
            "agent", "session", "start", "--image", IMAGE, "--name", n, "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let started: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let session = started["session_id"].as_str().unwrap().to_string();
    let sandbox = started["sandbox_id"].as_str().unwrap().to_string();

    let send = |msg: &str, extra: &[&str]| {
        berth()
            .args(["agent", "send"])
            .args(extra)
            .args([n, msg])
            .output()
            .unwrap()
    };
    let one = send("what does `main.rs` do? $(x)", &[]);
    assert_eq!(code(&one), 0, "{}", stderr(&one));
    assert!(stdout(&one).contains("echo: what does `main.rs` do? $(x)"));
    assert!(stdout(&one).contains("history: 0 earlier turns"));
    let two = send("now add a test", &["--json"]);
    assert_eq!(code(&two), 0, "{}", stderr(&two));
    let lines: Vec<Value> = stdout(&two)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["session_id"], session.as_str());
    assert!(lines.iter().any(|e| e["type"] == "assistant_text"
        && e["text"]
            .as_str()
            .unwrap()
            .contains("history: 1 earlier turns")));
    // Exactly one turn's result per send: the reply ended at its own result event.
    assert_eq!(lines.iter().filter(|e| e["type"] == "result").count(), 1);

    // The process dies: the next send says so and resumes the session in a one-shot run.
    let out = berth()
        .args(["signal", "-s", "KILL", &sandbox, "agent-session"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let three = send("and the docs", &[]);
    assert_eq!(code(&three), 0, "{}", stderr(&three));
    assert!(stderr(&three).contains("has exited"), "{}", stderr(&three));
    assert!(
        stdout(&three).contains("history: 2 earlier turns"),
        "{}",
        stdout(&three)
    );
}

#[test]
fn a_send_that_hangs_hits_its_timeout() {
    ensure_fake_image();
    let agent = Agent::new("slow");
    let n = agent.name.as_str();
    let out = berth()
        .args(["agent", "session", "start", "--image", IMAGE, "--name", n])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let out = berth()
        .args(["agent", "send", "--timeout", "2s", n, "fake:hang"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 124, "{}", stderr(&out));
}

#[test]
fn events_renders_and_normalizes_saved_streams() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../fixtures/agent-transcripts/claude-streamjson-tooluse-bash-v2.1.3.assembled.jsonl",
    );
    let out = berth()
        .args(["agent", "events", "--cli", "claude", "--json"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let kinds: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "session_started",
            "tool_call",
            "tool_result",
            "usage",
            "result"
        ]
    );
    let human = berth()
        .args(["agent", "events", "--cli", "claude"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert!(
        stdout(&human).contains("→ Bash ls -la"),
        "{}",
        stdout(&human)
    );
    let bad = berth()
        .args(["agent", "events", "--cli", "cursor"])
        .arg(&fixture)
        .output()
        .unwrap();
    assert_eq!(code(&bad), 125);
    assert!(stderr(&bad).contains("expected one of claude, codex, gemini"));
}

#[test]
fn ctrl_c_and_sigkill_leave_nothing_that_gc_would_not_find() {
    ensure_fake_image();
    let home_of = |container: &str| {
        let out = docker(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}}{{end}}{{end}}",
            container,
        ]);
        let name = stdout(&out).trim().to_string();
        assert!(name.starts_with("berth-home-"), "{name}");
        name
    };
    // Ctrl-C: berth ends the CLI and removes the sandbox and its home volume itself.
    let child = berth()
        .args(["agent", "run", "--image", IMAGE, "--prompt", "fake:hang"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let container = running_container_of(child.id());
    let home = home_of(&container);
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", stderr(&out));
    assert!(docker(&["inspect", &container]).status.code() != Some(0));
    assert!(volumes_named(&home).is_empty(), "{home} was left behind");

    // SIGKILL: berth cannot clean up, but gc finds the sandbox and the volume by their owner.
    let child = berth()
        .args(["agent", "run", "--image", IMAGE, "--prompt", "fake:hang"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = child;
    let container = running_container_of(child.id());
    let home = home_of(&container);
    let id = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"berth.id\"}}",
        &container,
    ]);
    let id = stdout(&id).trim().to_string();
    assert!(!id.is_empty());
    let _gc = gc_lock();
    kill(child.id(), libc::SIGKILL);
    let _ = child.wait();
    let out = berth().args(["gc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let items: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let kinds: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["removed"] == true)
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"container") && kinds.contains(&"volume") && kinds.contains(&"record"),
        "{items}"
    );
    // Its local record went with it: `berth ps` no longer lists it.
    let ps = berth().args(["ps", "-q"]).output().unwrap();
    assert!(!stdout(&ps).lines().any(|l| l == id), "{}", stdout(&ps));
    assert!(docker(&["inspect", &container]).status.code() != Some(0));
    assert!(volumes_named(&home).is_empty(), "{home} was left behind");
}

#[test]
fn by_default_each_cli_acts_without_asking_and_denials_are_never_a_clean_success() {
    // Default mode: the write happens, nothing is denied.
    for cli in ["claude", "codex", "gemini"] {
        let ws = dir_owned_by(1000, 1000);
        let (_, summary, out) = agent_json(&[
            "--cli",
            cli,
            "--workspace",
            ws.path().to_str().unwrap(),
            "--prompt",
            "do it fake:write=out.txt",
        ]);
        assert_eq!(code(&out), 0, "{cli}: {}", stderr(&out));
        assert!(ws.path().join("out.txt").exists(), "{cli} could not write");
        assert_eq!(summary["permission_denied"], 0, "{cli}: {summary}");
        assert_eq!(summary["clean"], true, "{cli}: {summary}");
    }
    // The CLI's own modes stay reachable: a mode that asks means a denial, headless.
    let ws = dir_owned_by(1000, 1000);
    let args = |extra: &'static [&'static str]| {
        let mut a = vec![
            "--workspace".to_string(),
            ws.path().display().to_string(),
            "--permission-mode".to_string(),
            "default".to_string(),
            "--prompt".to_string(),
            "do it fake:write=out.txt".to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let plain = args(&[]);
    let refs: Vec<&str> = plain.iter().map(String::as_str).collect();
    let (events, summary, out) = agent_json(&refs);
    assert!(!ws.path().join("out.txt").exists(), "the write was denied");
    assert_eq!(code(&out), 0, "a denial alone exits 0: {}", stderr(&out));
    assert!(events
        .iter()
        .any(|e| e["type"] == "permission_denied" && e["tool"] == "Write"));
    assert_eq!(summary["permission_denied"], 1, "{summary}");
    assert_eq!(summary["summary"]["permission_denials"][0]["tool"], "Write");
    assert_eq!(summary["success"], true, "the CLI said success");
    assert_eq!(summary["clean"], false, "but the run was not clean");
    let strict = args(&["--fail-on-denial"]);
    let refs: Vec<&str> = strict.iter().map(String::as_str).collect();
    let (_, summary, out) = agent_json(&refs);
    assert_eq!(code(&out), 1, "--fail-on-denial: {summary}");
    assert_eq!(summary["exit_code"], 1);
    // Rendered for a human: the denial and a summary that says it was not clean.
    ensure_fake_image();
    let out = berth()
        .args(["agent", "run", "--image", IMAGE, "--workspace"])
        .arg(ws.path())
        .args([
            "--permission-mode",
            "default",
            "--prompt",
            "fake:write=x.txt",
        ])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("✗ denied: Write"), "{}", stdout(&out));
    assert!(stderr(&out).contains("not cleanly"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("denied 1 tool call"),
        "{}",
        stderr(&out)
    );
    // Codex's and Gemini's modes pass through too.
    for (cli, mode) in [("codex", "read-only"), ("gemini", "default")] {
        let (_, _, out) = agent_json(&[
            "--cli",
            cli,
            "--workspace",
            ws.path().to_str().unwrap(),
            "--permission-mode",
            mode,
            "--prompt",
            "fake:write=y.txt",
        ]);
        assert_eq!(code(&out), 0, "{cli}: {}", stderr(&out));
        assert!(
            !ws.path().join("y.txt").exists(),
            "{cli} {mode} must not write"
        );
    }
    // A mode the CLI does not have is refused before anything is made.
    let out = berth()
        .args(["agent", "run", "--image", IMAGE, "--cli", "gemini"])
        .args(["--permission-mode", "bypassPermissions", "--prompt", "x"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("yolo, auto_edit, default, plan"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_agent_with_a_secret_sees_only_a_placeholder_and_gets_the_gateway() {
    ensure_fake_image();
    ensure_gateway();
    let real = "sk-ant-test-real-key-31337";
    let out = berth()
        .args(["agent", "run", "--json", "--image", IMAGE])
        .args(["--secret", &format!("ANTHROPIC_API_KEY={real}")])
        .args(["-e", "ANTHROPIC_API_KEY"])
        .args([
            "--prompt",
            "fake:value=ANTHROPIC_API_KEY fake:value=HTTPS_PROXY",
        ])
        .env("ANTHROPIC_API_KEY", real)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains(real), "the key reached the CLI: {text}");
    assert!(
        text.contains("value ANTHROPIC_API_KEY=berth-placeholder-anthropic_api_key-"),
        "{text}"
    );
    assert!(
        text.contains("value HTTPS_PROXY=http://berth-gw-"),
        "{text}"
    );
    assert!(
        stderr(&out).contains("-e ANTHROPIC_API_KEY ignored"),
        "{}",
        stderr(&out)
    );
    // A kept agent's sandbox is reused with its gateway, which gets this run's values.
    let agent = Agent::new("secret");
    let mut seen = Vec::new();
    for value in ["first-value", "second-value"] {
        let out = berth()
            .args([
                "agent",
                "run",
                "--json",
                "--image",
                IMAGE,
                "--name",
                &agent.name,
                "--keep",
            ])
            .args(["--secret", &format!("ANTHROPIC_API_KEY={value}")])
            .args(["--prompt", "fake:value=ANTHROPIC_API_KEY"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(!stdout(&out).contains(value));
        let summary: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
        seen.push(summary["sandbox_id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen[0], seen[1], "the kept sandbox was not reused");
    let gateway = format!("berth-gw-{}", seen[0]);
    let running = stdout(&docker(&["inspect", "-f", "{{.State.Running}}", &gateway]));
    assert_eq!(running.trim(), "true");
    drop(agent);
    assert!(
        docker(&["inspect", &gateway]).status.code() != Some(0),
        "agent rm left the gateway"
    );

    // With --network bridge there is no gateway: berth says the key is inside.
    let out = berth()
        .args(["agent", "run", "--image", IMAGE, "--network", "bridge"])
        .args([
            "--secret",
            "ANTHROPIC_API_KEY",
            "--prompt",
            "fake:env=ANTHROPIC_API_KEY",
        ])
        .env("ANTHROPIC_API_KEY", real)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("will be inside the sandbox"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("env ANTHROPIC_API_KEY=set"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_sigkilled_agent_run_with_a_secret_leaves_only_what_gc_removes() {
    ensure_fake_image();
    ensure_gateway();
    let mut child = Running(
        berth()
            .args([
                "agent",
                "run",
                "--image",
                IMAGE,
                "--secret",
                "ANTHROPIC_API_KEY=k",
            ])
            .args(["--prompt", "fake:hang"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let container = running_container_of(child.0.id());
    let id = berth_id_of(&container);
    // The sandbox, its gateway and its network: all carry the run's owner.
    let label = format!("berth.id={id}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while containers_with(&label).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no gateway appeared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let owner_of = |object: &str, format: &str| stdout(&docker(&["inspect", "-f", format, object]));
    let networks = networks_with(&label);
    assert_eq!(networks.len(), 1, "{networks:?}");
    let owners: Vec<String> = containers_with(&label)
        .iter()
        .map(|c| owner_of(c, "{{index .Config.Labels \"berth.owner\"}}"))
        .chain(
            networks
                .iter()
                .map(|n| owner_of(n, "{{index .Labels \"berth.owner\"}}")),
        )
        .collect();
    for owner in &owners {
        assert!(owner.contains(&format!(":{}:", child.0.id())), "{owners:?}");
    }
    let _gc = gc_lock();
    kill(child.0.id(), libc::SIGKILL);
    let _ = child.0.wait();
    let out = berth().args(["gc"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(containers_with(&label).is_empty(), "a container was left");
    assert!(networks_with(&label).is_empty(), "a network was left");
}
