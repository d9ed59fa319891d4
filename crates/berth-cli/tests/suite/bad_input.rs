//! Bad input, as a new user types it: over the CLI, `berth.toml` and the HTTP API. Every case
//! must fail (exit non-zero, or answer 4xx) within a bound, with a message that names the bad
//! value and shows a good example, never a panic or a bare "(os error N)", and leave nothing
//! behind. Each table lists its cases in one place; a failure names every case that broke.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::*;
use super::server::Server;

/// The longest any bad input may take to be refused (a build of berth/base included).
const BOUND: Duration = Duration::from_secs(120);

/// What a helpful message carries besides the bad value: an example, the expected form, or
/// where to look.
const GUIDANCE: &[&str] = &[
    "e.g.",
    "expected",
    "[possible values",
    "Usage:",
    "see `berth ps`",
    "see /v1/openapi.json",
    "give ",
    "start it",
    "pick another",
    "remove it",
    "drop one",
    "drop one",
];

/// Runs `cmd` to its end, or kills it when it outlives [`BOUND`] (then `None`: a hang).
fn bounded(mut cmd: Command, pids: &mut Vec<u32>) -> Option<Output> {
    let child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    pids.push(child.id());
    let started = Instant::now();
    let id = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if started.elapsed() > BOUND {
            kill(id, libc::SIGKILL);
            let _ = waiter.join();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(waiter.join().unwrap())
}

/// Why `text` is not a good refusal of `needle`, if it is not.
fn judge(code: Option<i32>, text: &str, needle: &str) -> Option<String> {
    if code == Some(0) {
        return Some("succeeded".into());
    }
    if code.is_none() {
        return Some("died of a signal".into());
    }
    if text.contains("panicked") || text.contains("RUST_BACKTRACE") {
        return Some("panicked".into());
    }
    if text.contains("(os error") {
        return Some("shows a bare \"(os error N)\"".into());
    }
    if !text.contains(needle) {
        return Some(format!("does not name {needle:?}"));
    }
    if !GUIDANCE.iter().any(|g| text.contains(g)) {
        return Some("gives no example or expected form".into());
    }
    None
}

/// Every berth-made container, network and volume, with its labels and mount sources.
fn berth_objects() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (kind, list, inspect) in [
        (
            "container",
            vec!["ps", "-aq", "--filter", "label=berth.managed"],
            "{{json .Config.Labels}} {{range .Mounts}}{{.Source}} {{end}}",
        ),
        (
            "network",
            vec!["network", "ls", "-q", "--filter", "label=berth.managed"],
            "{{json .Labels}}",
        ),
        (
            "volume",
            vec!["volume", "ls", "-q", "--filter", "label=berth.managed"],
            "{{json .Labels}}",
        ),
    ] {
        let ids = stdout(&docker(&list));
        for id in ids.split_whitespace() {
            let o = docker(&[kind, "inspect", "-f", inspect, id]);
            out.push((format!("{kind} {id}"), stdout(&o)));
        }
    }
    out
}

/// Objects made by one of `pids` (their owner label) or mounting something under `state`.
fn leaked(pids: &[u32], state: &Path) -> Vec<String> {
    let state = state.display().to_string();
    berth_objects()
        .into_iter()
        .filter(|(_, facts)| {
            let by_us = pids.iter().any(|p| facts.contains(&format!(":{p}:")));
            by_us || facts.contains(&state)
        })
        .map(|(what, facts)| format!("{what}: {facts}"))
        .collect()
}

#[test]
fn the_cli_refuses_bad_input_clearly_and_leaves_nothing() {
    ensure_base_image();
    ensure_agent();
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let file = file.display().to_string();
    let cmd = |args: &[&str]| {
        let mut c = berth();
        c.env("BERTH_STATE_DIR", state.path())
            .env_remove("BERTH_SERVER")
            .current_dir(work.path())
            .args(args);
        c
    };
    let made = cmd(&["create", "--name", "target"]).output().unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let sb = stdout(&made).trim().to_string();
    let sb_path = format!("{sb}:relative");
    let missing_dest = work.path().join("no/such/dir/x").display().to_string();

    // (arguments, what the message must name)
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // Flags and their values, before anything runs.
        (
            vec!["run", "--no-such-flag", "--", "true"],
            "--no-such-flag",
        ),
        (vec!["create", "--no-such-flag", "X"], "--no-such-flag"),
        (
            vec!["run", "--image", "", "--", "true"],
            "invalid image \"\"",
        ),
        (
            vec!["run", "--image", "UPPER/case", "--", "true"],
            "UPPER/case",
        ),
        (vec!["run", "--image", "a b", "--", "true"], "\"a b\""),
        (vec!["run", "--image", "a:", "--", "true"], "\"a:\""),
        (vec!["run", "--memory", "lots", "--", "true"], "lots"),
        (vec!["run", "--memory", "0", "--", "true"], "\"0\""),
        (vec!["run", "--cpus", "0", "--", "true"], "\"0\""),
        (vec!["run", "--cpus", "many", "--", "true"], "many"),
        (
            vec!["run", "--pids-limit", "0", "--", "true"],
            "--pids-limit 0",
        ),
        (vec!["run", "--timeout", "5x", "--", "true"], "5x"),
        (vec!["run", "--timeout", "-5s", "--", "true"], "-5s"),
        (vec!["run", "--memory", "-1g", "--", "true"], "-1g"),
        (vec!["run", "--pids-limit", "-5", "--", "true"], "-5"),
        (vec!["run", "--tmp-size", "0", "--", "true"], "--tmp-size"),
        (
            vec!["run", "--network", "internet", "--", "true"],
            "internet",
        ),
        (vec!["run", "--user", "bob:x:y", "--", "true"], "bob:x:y"),
        (vec!["run", "--user", "", "--", "true"], "invalid user \"\""),
        (vec!["run", "--env", "=x", "--", "true"], "=x"),
        (vec!["run", "--env", "A B=1", "--", "true"], "A B=1"),
        (vec!["run", "--volume", "/nope", "--", "true"], "/nope"),
        (vec!["run", "--volume", "/nope:/x", "--", "true"], "/nope"),
        (
            vec!["run", "--volume", "/tmp:relative", "--", "true"],
            "/tmp:relative",
        ),
        (
            vec!["run", "--volume", "/var/run/docker.sock:/s", "--", "true"],
            "docker.sock",
        ),
        (vec!["run", "--workspace", "/nope", "--", "true"], "/nope"),
        (
            vec!["run", "--workspace", &file, "--", "true"],
            "is not a directory",
        ),
        (vec!["run", "--workspace", ".:rx", "--", "true"], ".:rx"),
        (
            vec!["run", "--cap-add", "SYS_NOPE", "--", "true"],
            "SYS_NOPE",
        ),
        (
            vec!["run", "--allow-host", "http://x", "--", "true"],
            "http://x",
        ),
        (vec!["run", "--allow-host", "*", "--", "true"], "\"*\""),
        (
            vec!["run", "--secret", "bad name", "--", "true"],
            "bad name",
        ),
        (vec!["run", "--secret", "A@", "--", "true"], "A@"),
        (
            vec![
                "run",
                "--network",
                "bridge",
                "--allow-host",
                "pypi.org",
                "--",
                "true",
            ],
            "--network bridge",
        ),
        (
            vec!["run", "--json", "--capture-limit", "10q", "--", "true"],
            "10q",
        ),
        (vec!["run"], "<COMMAND>"),
        (vec!["create", "--name", "a/b c"], "a/b c"),
        (vec!["create", "--name", ""], "name \"\""),
        (vec!["create", "--name", "target"], "target"),
        (vec!["create", "--agent-delivery", "carrier"], "carrier"),
        (vec!["create", "--", "nosuchcmd"], "nosuchcmd"),
        (vec!["stop", "--time", "x", "target"], "\"x\""),
        // Sandboxes that are not there.
        (vec!["exec", "nosuch", "--", "true"], "nosuch"),
        (vec!["inspect", "nosuch"], "nosuch"),
        (vec!["rm", "nosuch"], "nosuch"),
        (vec!["stop", "nosuch"], "nosuch"),
        (vec!["start", "nosuch"], "nosuch"),
        (vec!["logs", "nosuch"], "nosuch"),
        (vec!["top", "nosuch"], "nosuch"),
        (vec!["fs", "ls", "nosuch", "/"], "nosuch"),
        (vec!["cp", "nosuch:/x", "./y"], "nosuch"),
        // A real sandbox, asked the wrong thing.
        (
            vec!["exec", &sb, "--cwd", "relative", "--", "true"],
            "relative",
        ),
        (
            vec!["exec", &sb, "--cwd", "/nonexistent", "--", "true"],
            "/nonexistent",
        ),
        (
            vec!["exec", &sb, "--user", "bad:x:y", "--", "true"],
            "bad:x:y",
        ),
        (
            vec!["exec", &sb, "--user", "99999999999", "--", "true"],
            "99999999999",
        ),
        (vec!["exec", &sb, "--timeout", "5x", "--", "true"], "5x"),
        (
            vec!["exec", &sb, "-d", "--tag", "bad tag", "--", "true"],
            "bad tag",
        ),
        (vec!["exec", &sb, "--attach", "nosuchtag"], "nosuchtag"),
        (vec!["signal", &sb, "nosuchtag"], "nosuchtag"),
        (vec!["fs", "ls", &sb, "relative"], "relative"),
        (vec!["fs", "ls", &sb, "/nonexistent"], "/nonexistent"),
        (vec!["fs", "rm", &sb, "/.berth"], "/.berth"),
        (vec!["fs", "mv", &sb, "/nonexistent", "/b"], "/nonexistent"),
        (vec!["cp", &file, &sb_path], "SANDBOX:/ABSOLUTE/PATH"),
        (vec!["cp", "/nonexistent", "target:/tmp/"], "/nonexistent"),
        (vec!["cp", "target:/nonexistent", "./out"], "/nonexistent"),
        (
            vec!["cp", "target:/etc/passwd", &missing_dest],
            "no/such/dir",
        ),
        (vec!["cp", "a", "b"], "SANDBOX:/ABSOLUTE/PATH"),
        // Agents, images and the server's own verbs.
        (
            vec!["agent", "run", "--cli", "vim", "--prompt", "hi"],
            "vim",
        ),
        (
            vec!["agent", "run", "--prompt-file", "/nope.md"],
            "/nope.md",
        ),
        (
            vec!["agent", "run", "--name", "bad name", "--prompt", "hi"],
            "bad name",
        ),
        (
            vec!["agent", "run", "--image", "", "--prompt", "hi"],
            "invalid image \"\"",
        ),
        (vec!["agent", "events", "--cli", "nope"], "nope"),
        (vec!["serve", "--max-upload", "0x"], "0x"),
        (vec!["serve", "--threads", "0"], "--threads"),
        (vec!["--server", "ftp://x", "ps"], "ftp://x"),
    ];
    assert!(cases.len() >= 50, "{} CLI cases", cases.len());

    let mut pids = Vec::new();
    let mut failures = Vec::new();
    for (args, needle) in &cases {
        let Some(out) = bounded(cmd(args), &mut pids) else {
            failures.push(format!("berth {args:?}: still running after {BOUND:?}"));
            continue;
        };
        let text = format!("{}{}", stderr(&out), stdout(&out));
        if let Some(why) = judge(out.status.code(), &text, needle) {
            failures.push(format!("berth {args:?}: {why}:\n{text}"));
        }
    }
    // The one sandbox the test made is still whole; nothing else is left.
    let still = cmd(&["exec", "target", "--", "true"]).output().unwrap();
    assert!(
        still.status.success(),
        "the sandbox broke: {}",
        stderr(&still)
    );
    let rm = cmd(&["rm", "-f", "target"]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    let left = leaked(&pids, state.path());
    assert!(left.is_empty(), "bad input left objects behind: {left:#?}");
    let records = std::fs::read_dir(state.path().join("sandboxes"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(records, 0, "bad input left records behind");
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn berth_toml_mistakes_name_the_file_line_and_value() {
    ensure_base_image();
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    // (the table under [agents.a], what the message must name)
    let cases: &[(&str, &str)] = &[
        ("cli = \"vim\"", "vim"),
        ("memory = \"lots\"", "lots"),
        ("memory = 5", "5"),
        ("cpus = \"x\"", "\"x\""),
        ("pids = 0", "agents.a.pids"),
        ("network = \"internet\"", "internet"),
        ("env = [\"=x\"]", "=x"),
        ("timeout = \"5x\"", "5x"),
        ("max_containers = 0", "agents.a.max_containers"),
        ("max_turns = -1", "agents.a.max_turns"),
        ("secrets = [\"bad name\"]", "bad name"),
        ("allow_hosts = [\"http://x\"]", "http://x"),
        ("cli = \"claude\"\npermission_mode = \"yolo\"", "yolo"),
        ("unknown = 1", "unknown"),
        ("image = \"\"", "invalid image \"\""),
        ("image = \"Not/Valid\"", "Not/Valid"),
        ("credentials = [\"/nope\"]", "/nope"),
        ("image = \"berth/base\"\nworkspace = \"/nope\"", "/nope"),
        ("workspace = \".:rx\"", ".:rx"),
    ];
    let mut pids = Vec::new();
    let mut failures = Vec::new();
    let mut run = |toml: String, needle: &str| {
        std::fs::write(dir.path().join("berth.toml"), &toml).unwrap();
        let mut c = berth();
        c.env("BERTH_STATE_DIR", state.path())
            .env_remove("BERTH_SERVER")
            .current_dir(dir.path())
            .args(["agent", "run", "--name", "a", "--prompt", "hi"]);
        match bounded(c, &mut pids) {
            None => failures.push(format!("{toml}: still running after {BOUND:?}")),
            Some(out) => {
                let text = stderr(&out);
                if let Some(why) = judge(out.status.code(), &text, needle) {
                    failures.push(format!("{toml}: {why}:\n{text}"));
                } else if !needle.starts_with('/') && !text.contains("berth.toml") {
                    failures.push(format!("{toml}: does not name the file:\n{text}"));
                }
            }
        }
    };
    for (body, needle) in cases {
        run(format!("[agents.a]\n{body}\n"), needle);
    }
    run("[agents.a\n".into(), "berth.toml:1");
    run(
        "[agents.\"bad name\"]\ncli = \"claude\"\n".into(),
        "bad name",
    );
    let left = leaked(&pids, state.path());
    assert!(left.is_empty(), "bad config left objects behind: {left:#?}");
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

#[test]
fn the_http_api_answers_bad_input_with_4xx_and_leaves_nothing() {
    let server = Server::init();
    let admin = server.admin.clone();
    let create = "/v1/sandboxes";
    // (method, path, body, expected status, what the message must name)
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        ("POST", create, Some(json!({"image": ""})), 400, "image"),
        (
            "POST",
            create,
            Some(json!({"image": "Not/Valid"})),
            400,
            "Not/Valid",
        ),
        ("POST", create, Some(json!({"name": "a/b c"})), 400, "a/b c"),
        ("POST", create, Some(json!({"memory": "lots"})), 400, "lots"),
        ("POST", create, Some(json!({"memory": "0"})), 400, "\"0\""),
        ("POST", create, Some(json!({"cpus": "x"})), 400, "\"x\""),
        ("POST", create, Some(json!({"pids": 0})), 400, "0"),
        (
            "POST",
            create,
            Some(json!({"network": "internet"})),
            400,
            "internet",
        ),
        (
            "POST",
            create,
            Some(json!({"allow_hosts": ["http://x"]})),
            400,
            "http://x",
        ),
        (
            "POST",
            create,
            Some(json!({"secrets": [{"name": "bad name", "value": "v", "hosts": ["x.example"]}]})),
            400,
            "bad name",
        ),
        (
            "POST",
            create,
            Some(json!({"secrets": [{"name": "A"}]})),
            400,
            "value",
        ),
        (
            "POST",
            create,
            Some(json!({"env": {"A B": "1"}})),
            400,
            "A B",
        ),
        (
            "POST",
            create,
            Some(json!({"labels": {"berth.x": "1"}})),
            400,
            "berth.x",
        ),
        (
            "POST",
            create,
            Some(json!({"workspace": "/etc"})),
            403,
            "workspace",
        ),
        ("POST", create, Some(json!({"timeout": -1})), 400, "-1"),
        (
            "POST",
            create,
            Some(json!({"on_timeout": "explode"})),
            400,
            "explode",
        ),
        (
            "POST",
            create,
            Some(json!({"command": ["nosuchcmd"]})),
            400,
            "nosuchcmd",
        ),
        ("POST", create, Some(json!({"bogus": 1})), 400, "bogus"),
        (
            "POST",
            create,
            Some(json!({"command": ["a\u{0}b"]})),
            400,
            "NUL",
        ),
        ("GET", "/v1/sandboxes/nosuch", None, 404, "nosuch"),
        ("DELETE", "/v1/sandboxes/nosuch", None, 404, "nosuch"),
        (
            "POST",
            "/v1/sandboxes/nosuch/exec",
            Some(json!({"argv": ["true"]})),
            404,
            "nosuch",
        ),
        ("GET", "/v1/sandboxes?limit=abc", None, 400, "limit"),
        ("GET", "/v1/audit?limit=-1", None, 400, "-1"),
        ("PATCH", create, Some(json!({})), 405, "PATCH"),
        ("GET", "/v1/nope", None, 404, "endpoint"),
    ];
    let mut failures = Vec::new();
    for (method, path, body, want, needle) in &cases {
        let started = Instant::now();
        let (status, answer) = server.call(method, path, &admin, body.clone());
        let message = answer["message"].as_str().unwrap_or_default().to_string();
        let text = format!("{status} {answer}");
        if started.elapsed() > BOUND {
            failures.push(format!("{method} {path}: took {:?}", started.elapsed()));
        } else if status != *want {
            failures.push(format!(
                "{method} {path} {body:?}: {status}, not {want}: {answer}"
            ));
        } else if answer["code"].as_str().is_none() || message.is_empty() {
            failures.push(format!("{method} {path}: no error body: {text}"));
        } else if let Some(why) = judge(Some(1), &message, needle) {
            failures.push(format!("{method} {path} {body:?}: {why}: {text}"));
        }
    }
    // A raw body that is not JSON, and JSON without its content type.
    for (content_type, raw, needle) in [
        ("application/json", "{not json", "JSON"),
        ("text/plain", "{}", "Content-Type"),
    ] {
        let r = ureq::post(&format!("{}{create}", server.url))
            .set("Authorization", &format!("Bearer {admin}"))
            .set("Content-Type", content_type)
            .send_string(raw);
        match r {
            Err(ureq::Error::Status(400, resp)) => {
                let body: Value = resp.into_json().unwrap();
                if let Some(why) = judge(Some(1), body["message"].as_str().unwrap_or(""), needle) {
                    failures.push(format!("{raw:?} as {content_type}: {why}: {body}"));
                }
            }
            other => failures.push(format!("{raw:?} as {content_type}: {other:?}")),
        }
    }
    let (status, list) = server.call("GET", "/v1/sandboxes", &admin, None);
    assert_eq!(status, 200);
    assert_eq!(list["sandboxes"], json!([]), "bad input left a record");
    let left = containers_with(&format!("berth.server={}", server.server_id));
    assert!(left.is_empty(), "bad input left containers: {left:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}
