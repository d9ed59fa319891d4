//! `berth serve` end to end: the real server binary on an ephemeral port, the real daemon, a
//! real HTTP client. Every endpoint, two tenants, lifetimes, SIGKILL and restart, and the
//! CLI's remote mode.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::common::*;

/// A running `berth serve` with its own state directory and keys.
pub(super) struct Server {
    child: Child,
    pub(super) url: String,
    state: PathBuf,
    pub(super) admin: String,
    pub(super) server_id: String,
    _dir: Option<tempfile::TempDir>,
}

fn server_cmd(state: &Path) -> std::process::Command {
    let mut cmd = berth();
    cmd.env("BERTH_STATE_DIR", state).env_remove("BERTH_SERVER");
    cmd
}

fn key(state: &Path, name: &str, admin: bool) -> String {
    let mut cmd = server_cmd(state);
    cmd.args(["server", "key", "create", "--name", name]);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "key create: {}", stderr(&out));
    let key = stdout(&out).trim().to_string();
    assert!(
        key.starts_with("berth_") && !key.contains('\n'),
        "only the key on stdout: {key:?}"
    );
    key
}

impl Server {
    pub(super) fn init() -> Self {
        ensure_base_image();
        ensure_agent();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        let out = server_cmd(&state)
            .args(["server", "init"])
            .output()
            .unwrap();
        assert!(out.status.success(), "server init: {}", stderr(&out));
        let admin = stdout(&out).trim().to_string();
        let again = server_cmd(&state)
            .args(["server", "init"])
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(125), "a second init is refused");
        let mut server = Self::start(&state, admin, Vec::new());
        server._dir = Some(dir);
        server
    }

    fn start(state: &Path, admin: String, extra: Vec<String>) -> Self {
        let mut child = server_cmd(state)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut url = String::new();
        let mut server_id = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("berth: server ") {
                server_id = rest.split(' ').next().unwrap().to_string();
            }
            if let Some(u) = line.strip_prefix("berth: listening on ") {
                url = u.to_string();
                break;
            }
        }
        assert!(
            url.starts_with("http://"),
            "the server did not say where it listens"
        );
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url,
            state: state.to_path_buf(),
            admin,
            server_id,
            _dir: None,
        }
    }

    fn req(&self, method: &str, path: &str, key: &str) -> ureq::Request {
        ureq::request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {key}"))
    }

    /// (status, JSON body) of a call.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let r = self.req(method, path, key);
        let result = match body {
            Some(b) => r.send_json(b),
            None => r.call(),
        };
        match result {
            Ok(resp) => {
                let status = resp.status();
                let text = resp.into_string().unwrap();
                (
                    status,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(ureq::Error::Status(status, resp)) => {
                let body: Value = resp.into_json().unwrap_or(Value::Null);
                (status, body)
            }
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    fn create(&self, key: &str, body: Value) -> String {
        let (status, sandbox) = self.call("POST", "/v1/sandboxes", key, Some(body));
        assert_eq!(status, 201, "create: {sandbox}");
        sandbox["id"].as_str().unwrap().to_string()
    }

    /// The events of an exec (NDJSON).
    fn exec(&self, key: &str, id: &str, argv: &[&str]) -> Vec<Value> {
        let resp = self
            .req("POST", &format!("/v1/sandboxes/{id}/exec"), key)
            .send_json(json!({ "argv": argv }))
            .unwrap();
        assert_eq!(resp.header("content-type"), Some("application/x-ndjson"));
        ndjson(resp.into_reader())
    }

    fn kill(&mut self) {
        kill(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Removes whatever this server made (a safety net: tests remove their own).
    fn sweep(&self) {
        let ids = containers_with(&format!("berth.server={}", self.server_id));
        remove_containers(&ids);
        for n in networks_with(&format!("berth.server={}", self.server_id)) {
            let _ = docker(&["network", "rm", &n]);
        }
        for v in volumes_with(&format!("berth.server={}", self.server_id)) {
            let _ = docker(&["volume", "rm", "-f", &v]);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.child.id(), libc::SIGTERM);
            let _ = self.child.wait();
        }
        if self._dir.is_some() {
            self.sweep();
        }
    }
}

fn ndjson(reader: impl Read) -> Vec<Value> {
    BufReader::new(reader)
        .lines()
        .map(|l| l.unwrap())
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

fn text_of(events: &[Value], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .map(|e| e["data"].as_str().unwrap())
        .collect()
}

fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn server_api_tenants_exec_processes_and_files() {
    // Its first sandbox has an egress policy (so a gateway).
    ensure_gateway();
    let server = Server::init();
    let alice = key(&server.state, "alice", false);
    let bob = key(&server.state, "bob", false);
    let dup = server_cmd(&server.state)
        .args(["server", "key", "create", "--name", "alice"])
        .output()
        .unwrap();
    assert_eq!(dup.status.code(), Some(125), "a taken key name is refused");

    // No key, a wrong key.
    let (s, body) = server.call("GET", "/v1/sandboxes", "", None);
    assert_eq!(s, 401);
    assert_eq!(body["code"], "unauthorized");
    assert!(!body["request_id"].as_str().unwrap().is_empty());
    assert_eq!(
        server.call("GET", "/v1/sandboxes", "berth_nope", None).0,
        401
    );
    let (s, health) = server.call("GET", "/healthz", "", None);
    assert_eq!((s, health["status"].as_str()), (200, Some("ok")));

    // Create; the body names only the caller's labels and no secret value.
    let id = server.create(
        &alice,
        json!({"labels": {"team": "search"}, "memory": "256m", "allow_hosts": ["example.com"],
               "secrets": [{"name": "API_TOKEN", "value": "s3cr3t-value", "hosts": ["example.com"]}]}),
    );
    let (s, mine) = server.call("GET", &format!("/v1/sandboxes/{id}"), &alice, None);
    assert_eq!(s, 200);
    assert_eq!(mine["status"], "running");
    assert_eq!(mine["tenant"], "alice");
    assert_eq!(mine["egress"]["secrets"], json!(["API_TOKEN"]));
    assert!(
        !mine.to_string().contains("s3cr3t-value"),
        "secrets are write-only"
    );
    let inspect = docker(&["inspect", &format!("berth-sandbox-{id}")]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    assert!(!stdout(&inspect).contains("s3cr3t-value"));
    for gateway in containers_with(&format!("berth.id={id}")) {
        assert!(!stdout(&docker(&["inspect", &gateway])).contains("s3cr3t-value"));
    }

    // Tenancy: bob sees nothing of alice's, not even by prefix; the admin sees all.
    let (_, list) = server.call("GET", "/v1/sandboxes", &bob, None);
    assert_eq!(list["sandboxes"], json!([]));
    for (method, path) in [
        ("GET", format!("/v1/sandboxes/{id}")),
        ("GET", format!("/v1/sandboxes/{}", &id[..4])),
        ("DELETE", format!("/v1/sandboxes/{id}")),
        ("POST", format!("/v1/sandboxes/{id}/stop")),
        ("GET", format!("/v1/sandboxes/{id}/files/list?path=/")),
    ] {
        let (s, body) = server.call(method, &path, &bob, None);
        assert_eq!(s, 404, "{method} {path} as bob: {body}");
    }
    let (_, list) = server.call("GET", "/v1/sandboxes?label=team=search", &alice, None);
    assert_eq!(list["sandboxes"][0]["id"], id.as_str());
    let (_, list) = server.call("GET", "/v1/sandboxes?label=team=other", &alice, None);
    assert_eq!(list["sandboxes"], json!([]));
    let (_, list) = server.call("GET", "/v1/sandboxes", &server.admin, None);
    assert!(list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["id"] == id.as_str()));

    // Exec: NDJSON by default, offsets per stream, one final event.
    let events = server.exec(
        &alice,
        &id,
        &[
            "sh",
            "-c",
            "printf hi; printf err >&2; printf there; exit 3",
        ],
    );
    assert_eq!(events[0]["type"], "started");
    assert_eq!(text_of(&events, "stdout"), "hithere");
    assert_eq!(text_of(&events, "stderr"), "err");
    let last = events.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["code"].as_i64()),
        (Some("exited"), Some(3))
    );
    let events = server.exec(&alice, &id, &["no-such-command"]);
    assert_eq!(events.last().unwrap()["type"], "start_failed");
    assert_eq!(events.last().unwrap()["exit_code"], 127);
    // The sandbox sees the placeholder, never the value.
    let events = server.exec(&alice, &id, &["sh", "-c", "echo $API_TOKEN"]);
    let seen = text_of(&events, "stdout");
    assert!(
        !seen.contains("s3cr3t-value") && !seen.trim().is_empty(),
        "{seen}"
    );
    // SSE, with offsets as event ids.
    let resp = server
        .req("POST", &format!("/v1/sandboxes/{id}/exec"), &alice)
        .set("Accept", "text/event-stream")
        .send_json(json!({"argv": ["echo", "sse"], "stdin": null}))
        .unwrap();
    assert!(resp
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.into_string().unwrap();
    assert!(
        text.contains("event: stdout")
            && text.contains("id: 4:0")
            && text.contains("event: exited"),
        "{text}"
    );
    // stdin.
    let resp = server
        .req("POST", &format!("/v1/sandboxes/{id}/exec"), &alice)
        .send_json(json!({"argv": ["wc", "-c"], "stdin": "12345"}))
        .unwrap();
    assert_eq!(text_of(&ndjson(resp.into_reader()), "stdout").trim(), "5");

    // Background processes: a client-chosen id, idempotent start, output by offset.
    let body = json!({"id": "counter", "argv": ["sh", "-c", "for i in 1 2 3; do echo line$i; done; read x; echo got$x"]});
    let (s, first) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        &alice,
        Some(body.clone()),
    );
    assert_eq!(s, 201, "{first}");
    let (s, again) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        &alice,
        Some(body),
    );
    assert_eq!(s, 200, "a retried start answers the existing process");
    assert_eq!(again["pid"], first["pid"]);
    assert_eq!(again["created"], false);
    let (_, list) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/processes"),
        &alice,
        None,
    );
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "counter" && p["running"] == true));
    let resp = server
        .req(
            "POST",
            &format!("/v1/sandboxes/{id}/processes/counter/stdin?close=true"),
            &alice,
        )
        .send_bytes(b"X\n")
        .unwrap();
    assert_eq!(resp.status(), 204);
    let events = ndjson(
        server
            .req(
                "GET",
                &format!("/v1/sandboxes/{id}/processes/counter/output"),
                &alice,
            )
            .call()
            .unwrap()
            .into_reader(),
    );
    assert_eq!(text_of(&events, "stdout"), "line1\nline2\nline3\ngotX\n");
    assert_eq!(events.last().unwrap()["type"], "exited");
    // Resume from a byte offset (query, or SSE's Last-Event-ID).
    let events = ndjson(
        server
            .req(
                "GET",
                &format!("/v1/sandboxes/{id}/processes/counter/output?offset=8"),
                &alice,
            )
            .call()
            .unwrap()
            .into_reader(),
    );
    assert_eq!(text_of(&events, "stdout"), "ne2\nline3\ngotX\n");
    assert_eq!(
        events.iter().find(|e| e["type"] == "stdout").unwrap()["offset"],
        8
    );
    let text = server
        .req(
            "GET",
            &format!("/v1/sandboxes/{id}/processes/counter/output"),
            &alice,
        )
        .set("Accept", "text/event-stream")
        .set("Last-Event-ID", "18:0")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(text.contains("gotX") && !text.contains("line3"), "{text}");
    // Signal a sleeper.
    let (s, _) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        &alice,
        Some(json!({"id": "sleeper", "argv": ["sleep", "300"]})),
    );
    assert_eq!(s, 201);
    let (s, _) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/processes/sleeper/signal"),
        &alice,
        Some(json!({"signal": 9})),
    );
    assert_eq!(s, 204);
    let events = ndjson(
        server
            .req(
                "GET",
                &format!("/v1/sandboxes/{id}/processes/sleeper/output"),
                &alice,
            )
            .call()
            .unwrap()
            .into_reader(),
    );
    assert_eq!(events.last().unwrap()["signal"], 9);

    // Files: streamed put/get, list, stat, mkdir, move, remove, tar both ways, limits.
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let resp = server
        .req(
            "PUT",
            &format!("/v1/sandboxes/{id}/files?path=/tmp/blob&mode=600"),
            &alice,
        )
        .send_bytes(&content)
        .unwrap();
    assert_eq!(resp.status(), 201);
    let mut got = Vec::new();
    let resp = server
        .req(
            "GET",
            &format!("/v1/sandboxes/{id}/files?path=/tmp/blob"),
            &alice,
        )
        .call()
        .unwrap();
    assert_eq!(resp.header("content-length"), Some("3000000"));
    resp.into_reader().read_to_end(&mut got).unwrap();
    assert!(got == content, "the file comes back byte for byte");
    let (_, st) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files/stat?path=/tmp/blob"),
        &alice,
        None,
    );
    assert_eq!(
        (
            st["kind"].as_str(),
            st["size"].as_u64(),
            st["mode"].as_u64()
        ),
        (Some("file"), Some(3_000_000), Some(0o600))
    );
    assert_eq!(
        server
            .call(
                "POST",
                &format!("/v1/sandboxes/{id}/files/mkdir?path=/tmp/a/b"),
                &alice,
                None
            )
            .0,
        204
    );
    assert_eq!(
        server
            .call(
                "POST",
                &format!("/v1/sandboxes/{id}/files/move"),
                &alice,
                Some(json!({"from": "/tmp/blob", "to": "/tmp/a/b/blob"}))
            )
            .0,
        204
    );
    let (_, entries) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files/list?path=/tmp/a/b"),
        &alice,
        None,
    );
    assert_eq!(entries[0]["name"], "blob");
    let mut tarball = Vec::new();
    server
        .req(
            "GET",
            &format!("/v1/sandboxes/{id}/archive?path=/tmp/a"),
            &alice,
        )
        .call()
        .unwrap()
        .into_reader()
        .read_to_end(&mut tarball)
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&tarball[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("a/b/blob")), "{names:?}");
    let resp = server
        .req(
            "PUT",
            &format!("/v1/sandboxes/{id}/archive?path=/tmp/copy"),
            &alice,
        )
        .set("Content-Type", "application/x-tar")
        .send_bytes(&tarball)
        .unwrap();
    assert_eq!(resp.status(), 201);
    let (s, _) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files/stat?path=/tmp/copy/a/b/blob"),
        &alice,
        None,
    );
    assert_eq!(s, 200);
    assert_eq!(
        server
            .call(
                "DELETE",
                &format!("/v1/sandboxes/{id}/files?path=/tmp/copy&recursive=true"),
                &alice,
                None
            )
            .0,
        204
    );
    let (s, body) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files/stat?path=/tmp/copy"),
        &alice,
        None,
    );
    assert_eq!(s, 404, "{body}");
    let (s, body) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files?path=/.berth/x"),
        &alice,
        None,
    );
    assert!(
        s == 403 || s == 404 || s == 400,
        "the agent's directory is refused: {s} {body}"
    );
    let (s, body) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files?path=relative"),
        &alice,
        None,
    );
    assert_eq!(s, 400);
    assert!(body["message"].as_str().unwrap().contains("e.g."), "{body}");

    // Bad input: a clear 4xx naming the value, with a good example.
    for (body, needle) in [
        (json!({"memory": "lots"}), "lots"),
        (json!({"memory": "0"}), "0"),
        (json!({"network": "wifi"}), "wifi"),
        (json!({"name": "a/b c"}), "a/b c"),
        (json!({"image": ""}), "image"),
        (json!({"labels": {"berth.id": "x"}}), "berth.id"),
        (json!({"allow_hosts": ["exa mple.com"]}), "exa mple.com"),
        (json!({"no_such_field": 1}), "no_such_field"),
        (json!({"workspace": "/"}), "workspace root"),
    ] {
        let (s, err) = server.call("POST", "/v1/sandboxes", &alice, Some(body.clone()));
        assert!(s == 400 || s == 403, "{body} -> {s} {err}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{body} -> {err}"
        );
    }
    let (s, err) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        &alice,
        Some(json!({"argv": []})),
    );
    assert_eq!(s, 400, "{err}");
    let (s, _) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        &alice,
        Some(json!({"id": "a/b", "argv": ["true"]})),
    );
    assert_eq!(s, 400);
    let (s, _) = server.call("GET", "/v1/sandboxes?limit=0", &alice, None);
    assert_eq!(s, 400);
    let (s, _) = server.call("GET", "/v1/nothing-here", &alice, None);
    assert_eq!(s, 404);

    // Lifecycle verbs.
    let (s, paused) = server.call("POST", &format!("/v1/sandboxes/{id}/pause"), &alice, None);
    assert_eq!(
        (s, paused["state"].as_str()),
        (200, Some("paused")),
        "{paused}"
    );
    let (s, _) = server.call("POST", &format!("/v1/sandboxes/{id}/start"), &alice, None);
    assert_eq!(s, 409, "a paused sandbox is resumed, not started");
    let (s, resumed) = server.call("POST", &format!("/v1/sandboxes/{id}/resume"), &alice, None);
    assert_eq!((s, resumed["state"].as_str()), (200, Some("running")));
    let (s, stopped) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/stop"),
        &alice,
        Some(json!({"grace": 1})),
    );
    assert_eq!((s, stopped["state"].as_str()), (200, Some("stopped")));
    let (s, started) = server.call("POST", &format!("/v1/sandboxes/{id}/start"), &alice, None);
    assert_eq!(
        (s, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    let events = server.exec(&alice, &id, &["true"]);
    assert_eq!(
        events.last().unwrap()["code"],
        0,
        "it runs again after start"
    );
    let (s, t) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/timeout"),
        &alice,
        Some(json!({"timeout": 7200})),
    );
    assert_eq!(s, 200);
    assert!(t["timeout_at"].is_string());
    let logs = server
        .req("GET", &format!("/v1/sandboxes/{id}/logs"), &alice)
        .call()
        .unwrap();
    assert_eq!(logs.status(), 200);

    // Audit (admin only) and metrics.
    let (s, _) = server.call("GET", "/v1/audit", &alice, None);
    assert_eq!(s, 403);
    let (s, audit) = server.call("GET", "/v1/audit?limit=1000", &server.admin, None);
    assert_eq!(s, 200);
    let audit = audit.as_array().unwrap();
    assert!(audit
        .iter()
        .any(|a| a["key"] == "alice" && a["action"] == "POST /v1/sandboxes" && a["status"] == 201));
    assert!(audit
        .iter()
        .any(|a| a["key"] == "bob" && a["sandbox"] == id.as_str() && a["status"] == 404));
    assert!(!serde_json::to_string(audit)
        .unwrap()
        .contains("s3cr3t-value"));
    let metrics = ureq::get(&format!("{}/metrics", server.url))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("berth_sandboxes{state=\"running\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/sandboxes/{id}/exec\",status=\"200\""));
    assert!(metrics.contains("berth_exec_duration_seconds_count"));
    let doc: Value = ureq::get(&format!("{}/v1/openapi.json", server.url))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(doc["paths"]["/v1/sandboxes/{id}/exec"]["post"].is_object());

    // Remove: everything the sandbox made is gone.
    let (s, _) = server.call("DELETE", &format!("/v1/sandboxes/{id}"), &alice, None);
    assert_eq!(s, 204);
    assert_eq!(
        server
            .call("GET", &format!("/v1/sandboxes/{id}"), &alice, None)
            .0,
        404
    );
    assert!(containers_with(&format!("berth.id={id}")).is_empty());
    assert!(networks_with(&format!("berth.id={id}")).is_empty());
    assert!(!server.state.join("sandboxes").join(&id).exists());
}

#[test]
fn server_enforces_timeouts_idle_and_pause() {
    let server = Server::init();
    let alice = key(&server.state, "alice", false);
    let short = server.create(&alice, json!({"timeout": 2}));
    let busy = server.create(&alice, json!({"idle_timeout": 2, "timeout": 0}));
    let idle = server.create(
        &alice,
        json!({"idle_timeout": 2, "timeout": 0, "on_timeout": "stop"}),
    );
    let paused = server.create(&alice, json!({"timeout": 3, "on_timeout": "pause"}));
    // A running process started through berth keeps `busy` from being idle.
    let (s, _) = server.call(
        "POST",
        &format!("/v1/sandboxes/{busy}/processes"),
        &alice,
        Some(json!({"id": "agent", "argv": ["sleep", "60"]})),
    );
    assert_eq!(s, 201);
    // Pausing `paused` right away stops its clock.
    let (_, before) = server.call(
        "POST",
        &format!("/v1/sandboxes/{paused}/pause"),
        &alice,
        None,
    );

    wait_until("the timeout kills", Duration::from_secs(20), || {
        server
            .call("GET", &format!("/v1/sandboxes/{short}"), &alice, None)
            .0
            == 404
    });
    assert!(
        containers_with(&format!("berth.id={short}")).is_empty(),
        "killed means removed"
    );
    wait_until("idleness stops", Duration::from_secs(20), || {
        server
            .call("GET", &format!("/v1/sandboxes/{idle}"), &alice, None)
            .1["state"]
            == "stopped"
    });
    std::thread::sleep(Duration::from_secs(3));
    let (_, b) = server.call("GET", &format!("/v1/sandboxes/{busy}"), &alice, None);
    assert_eq!(
        b["state"], "running",
        "a sandbox with a running process is not idle"
    );
    let (_, p) = server.call("GET", &format!("/v1/sandboxes/{paused}"), &alice, None);
    assert_eq!(p["state"], "paused");
    assert_ne!(
        p["timeout_at"], before["timeout_at"],
        "a paused sandbox's end moves with the clock stopped"
    );
    // Resumed, its remaining 3 s run out and it is paused by on_timeout.
    server.call(
        "POST",
        &format!("/v1/sandboxes/{paused}/resume"),
        &alice,
        None,
    );
    wait_until("the timeout pauses", Duration::from_secs(20), || {
        server
            .call("GET", &format!("/v1/sandboxes/{paused}"), &alice, None)
            .1["state"]
            == "paused"
    });
    let (_, audit) = server.call("GET", "/v1/audit?limit=1000", &server.admin, None);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["key"] == "server")
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"lifecycle kill")
            && actions.contains(&"lifecycle stop")
            && actions.contains(&"lifecycle pause"),
        "{actions:?}"
    );
    for id in [&busy, &idle, &paused] {
        assert_eq!(
            server
                .call("DELETE", &format!("/v1/sandboxes/{id}"), &alice, None)
                .0,
            204
        );
    }
}

#[test]
fn server_survives_sigkill_and_reconciles() {
    let mut server = Server::init();
    let alice = key(&server.state, "alice", false);
    let id = server.create(&alice, json!({"timeout": 600}));
    let doomed = server.create(&alice, json!({"timeout": 600}));
    let (s, _) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/processes"),
        &alice,
        Some(json!({"id": "ticker", "argv": ["sh", "-c", "for i in $(seq 1 6); do echo tick$i; sleep 0.5; done"]})),
    );
    assert_eq!(s, 201);
    // A CLI sandbox on the same engine and state directory: the server never touches it.
    let cli = server_cmd(&server.state).args(["create"]).output().unwrap();
    assert!(cli.status.success(), "{}", stderr(&cli));
    let cli_id = stdout(&cli).trim().to_string();

    // Kill the server mid-stream, then make trouble while it is down: a sandbox vanishes,
    // an orphan with this server's label appears.
    let stream = server
        .req(
            "GET",
            &format!("/v1/sandboxes/{id}/processes/ticker/output"),
            &alice,
        )
        .call()
        .unwrap();
    let mut reader = BufReader::new(stream.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    server.kill();
    docker(&["rm", "-f", &format!("berth-sandbox-{doomed}")]);
    let orphan = docker(&[
        "run",
        "-d",
        "--label",
        "berth.managed=true",
        "--label",
        &format!("berth.server={}", server.server_id),
        "--label",
        "berth.id=0rphan0000",
        BASE,
        "sleep",
        "300",
    ]);
    assert!(orphan.status.success(), "{}", stderr(&orphan));
    let orphan = stdout(&orphan).trim().to_string();

    let admin = server.admin.clone();
    let state = server.state.clone();
    let server2 = Server::start(&state, admin.clone(), Vec::new());
    assert_eq!(server2.server_id, server.server_id);
    // The call answered just before the SIGKILL is in the audit log.
    let (_, audit) = server2.call("GET", "/v1/audit?limit=1000", &admin, None);
    assert!(
        audit.as_array().unwrap().iter().any(|e| e["key"] == "alice"
            && e["action"] == "GET /v1/sandboxes/{id}/processes/{pid}/output"
            && e["status"] == 200),
        "{audit}"
    );
    let (s, sb) = server2.call("GET", &format!("/v1/sandboxes/{id}"), &alice, None);
    assert_eq!(
        (s, sb["state"].as_str()),
        (200, Some("running")),
        "adopted: {sb}"
    );
    assert_eq!(
        server2
            .call("GET", &format!("/v1/sandboxes/{doomed}"), &alice, None)
            .0,
        404
    );
    wait_until("the orphan is collected", Duration::from_secs(5), || {
        !stdout(&docker(&["ps", "-aq", "--no-trunc"])).contains(&orphan)
    });
    // The output resumes exactly where the client was.
    let first: Value = serde_json::from_str(&first).unwrap();
    let resume_at =
        first["offset"].as_u64().unwrap() + first["data"].as_str().unwrap().len() as u64;
    assert_eq!((first["data"].as_str(), resume_at), (Some("tick1\n"), 6));
    let events = ndjson(
        server2
            .req(
                "GET",
                &format!("/v1/sandboxes/{id}/processes/ticker/output?offset={resume_at}"),
                &alice,
            )
            .call()
            .unwrap()
            .into_reader(),
    );
    assert_eq!(
        text_of(&events, "stdout"),
        "tick2\ntick3\ntick4\ntick5\ntick6\n"
    );
    // Its timer still fires after the restart.
    let (s, _) = server2.call(
        "POST",
        &format!("/v1/sandboxes/{id}/timeout"),
        &alice,
        Some(json!({"timeout": 1})),
    );
    assert_eq!(s, 200);
    wait_until("the adopted timer fires", Duration::from_secs(20), || {
        server2
            .call("GET", &format!("/v1/sandboxes/{id}"), &alice, None)
            .0
            == 404
    });
    // The CLI's sandbox is untouched, and the CLI's gc leaves the server's alone.
    let ps = server_cmd(&state)
        .args(["inspect", &cli_id])
        .output()
        .unwrap();
    assert!(stdout(&ps).contains("\"running\""), "{}", stdout(&ps));
    let rm = server_cmd(&state)
        .args(["rm", "-f", &cli_id])
        .output()
        .unwrap();
    assert!(rm.status.success());
    let other = server2.create(&alice, json!({}));
    let gc = server_cmd(&state)
        .args(["gc", "--all", "--json"])
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        !stdout(&gc).contains(&other),
        "the CLI's gc never collects a server's sandbox"
    );
    assert_eq!(
        server2
            .call("GET", &format!("/v1/sandboxes/{other}"), &alice, None)
            .1["status"],
        "running"
    );

    assert_eq!(
        server2
            .call("DELETE", &format!("/v1/sandboxes/{other}"), &alice, None)
            .0,
        204
    );
}

/// `berth` in remote mode: through the server at `url` with `key`, and with a state directory
/// that cannot exist, so nothing local is ever used.
fn remote_berth(url: &str, key: &str) -> std::process::Command {
    let mut cmd = berth();
    cmd.env("BERTH_SERVER", url).env("BERTH_API_KEY", key).env(
        "BERTH_STATE_DIR",
        "/nonexistent/remote-mode-uses-no-local-state",
    );
    cmd
}

#[test]
fn cli_remote_mode_goes_through_the_server() {
    let server = Server::init();
    let alice = key(&server.state, "alice", false);
    let remote = |args: &[&str]| {
        let mut cmd = remote_berth(&server.url, &alice);
        cmd.args(args);
        cmd
    };
    let out = remote(&["create", "--memory", "256m", "-e", "GREETING=hello"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let out = remote(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo $GREETING; echo oops >&2; exit 7",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "the command's own exit code");
    assert_eq!(stdout(&out), "hello\n");
    assert_eq!(stderr(&out), "oops\n");
    let out = remote(&["exec", &id, "--", "no-such-command"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    // -i streams stdin as bytes over the server's WebSocket, the streams stay apart; -t runs
    // in a terminal there.
    let payload: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut child = remote(&[
        "exec",
        "-i",
        &id,
        "--",
        "sh",
        "-c",
        "sha256sum; echo err >&2; exit 5",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&payload).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!(
            "{}  -\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&payload))
        )
    );
    assert_eq!(stderr(&out), "err\n");
    let out = remote(&[
        "exec",
        "-t",
        &id,
        "--",
        "sh",
        "-c",
        "tty; stty size; exit 3",
    ])
    .stdin(Stdio::null())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("/dev/pts/") && stdout(&out).contains("24 80"),
        "{}",
        stdout(&out)
    );
    // Pause and unpause through the server: a paused sandbox's calls are refused, not hung.
    let out = remote(&["pause", &id]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["exec", &id, "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("paused"), "{}", stderr(&out));
    let out = remote(&["unpause", &id]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["exec", &id, "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "payload\n").unwrap();
    std::fs::create_dir(dir.path().join("tree")).unwrap();
    std::fs::write(dir.path().join("tree/leaf"), "leaf\n").unwrap();
    let src = dir.path().join("in.txt");
    let out = remote(&["cp", src.to_str().unwrap(), &format!("{id}:/tmp/")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let tree = dir.path().join("tree");
    let out = remote(&["cp", tree.to_str().unwrap(), &format!("{id}:/tmp/")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["exec", &id, "--", "cat", "/tmp/in.txt", "/tmp/tree/leaf"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "payload\nleaf\n");
    let back = dir.path().join("back.txt");
    let out = remote(&["cp", &format!("{id}:/tmp/in.txt"), back.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "payload\n");
    let back_tree = dir.path().join("back-tree");
    let out = remote(&[
        "cp",
        &format!("{id}:/tmp/tree"),
        back_tree.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(back_tree.join("leaf")).unwrap(),
        "leaf\n"
    );

    // fs, exec -d, top and signal through the server, printed as locally.
    let out = remote(&["fs", "mkdir", &id, "/tmp/made/deep"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["fs", "mv", &id, "/tmp/in.txt", "/tmp/made/moved.txt"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["fs", "ls", "--json", &id, "/tmp/made"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["deep", "moved.txt"]);
    let out = remote(&["fs", "stat", &id, "/tmp/made/moved.txt"])
        .output()
        .unwrap();
    assert!(
        stdout(&out).starts_with("file") && stdout(&out).contains("moved.txt"),
        "{}",
        stdout(&out)
    );
    let out = remote(&["fs", "rm", &id, "/tmp/made"]).output().unwrap();
    assert!(!out.status.success(), "a directory needs -r");
    let out = remote(&["fs", "rm", "-r", &id, "/tmp/made"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["fs", "stat", &id, "/tmp/made"]).output().unwrap();
    assert!(!out.status.success(), "removed");
    let out = remote(&["exec", "-d", "--tag", "napper", &id, "--", "sleep", "300"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remote(&["top", "--json", &id]).output().unwrap();
    let top: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(top[0]["tag"], "napper");
    assert_eq!(top[0]["running"], true);
    let out = remote(&["signal", "-s", "KILL", &id, "napper"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = remote(&["top", &id]).output().unwrap();
        if stdout(&out).contains("exited 137") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stdout(&out));
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = remote(&["ps", "--json"]).output().unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["id"], id.as_str());
    let out = remote(&["ps", "-q"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), id);
    let out = remote(&["rm", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "running: not without -f");
    let out = remote(&["rm", "-f", &id]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), id);
    let out = remote(&["exec", &id, "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    // `berth run` through the server: output and exit code as locally, 124 on timeout, and
    // the sandbox made for it is gone after.
    let out = remote(&[
        "run",
        "-e",
        "WHO=remote",
        "--",
        "sh",
        "-c",
        "echo hi $WHO; exit 3",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi remote\n");
    let out = remote(&["run", "--timeout", "1s", "--", "sleep", "30"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    let out = remote(&["run", "--json", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("berth create"), "{}", stderr(&out));
    let out = remote(&["ps", "-q"]).output().unwrap();
    assert_eq!(stdout(&out).trim(), "", "run removes what it made");
    // Ctrl-C: 130, and the sandbox made for the run is removed.
    let running = remote(&["run", "--", "sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the run's sandbox is up", Duration::from_secs(30), || {
        !stdout(&remote(&["ps", "-q"]).output().unwrap())
            .trim()
            .is_empty()
    });
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(running.id() as i32, libc::SIGINT) };
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let out = remote(&["ps", "-q"]).output().unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "",
        "an interrupted run removes what it made"
    );
    // `berth agent run` through the server: the same events, summary and exit codes.
    super::agent::ensure_fake_image();
    let image = super::agent::IMAGE;
    let out = remote(&[
        "agent",
        "run",
        "--image",
        image,
        "--prompt",
        "fix it fake:turns=2",
    ])
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stderr(&out).contains("in sandbox"), "{}", stderr(&out));
    let out = remote(&[
        "agent",
        "run",
        "--json",
        "--image",
        image,
        "--permission-mode",
        "plan",
        "--fail-on-denial",
        "--prompt",
        "review fake:write=nope.txt",
    ])
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a denial with --fail-on-denial: {}",
        stderr(&out)
    );
    let summary: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["clean"], false);
    assert!(
        summary["permission_denied"].as_u64().unwrap() >= 1,
        "{summary}"
    );
    let out = remote(&["agent", "run", "--keep", "--prompt", "p"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("--keep needs --name"),
        "{}",
        stderr(&out)
    );
    let out = remote(&["gc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("act on this machine"),
        "{}",
        stderr(&out)
    );
    let out = berth()
        .env("BERTH_SERVER", &server.url)
        .env_remove("BERTH_API_KEY")
        .args(["ps"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("BERTH_API_KEY"));
    assert!(containers_with(&format!("berth.server={}", server.server_id)).is_empty());
}

fn volumes_with(label: &str) -> Vec<String> {
    stdout(&docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("label={label}"),
    ]))
    .lines()
    .map(String::from)
    .collect()
}

/// Named agents through a server, as `berth agent run --name` is locally: the agent's home
/// outlives its sandboxes, so a later run resumes (or forks) its session; `--keep` reuses its
/// sandbox; its sessions are its tenant's (another tenant's agent of the same name is another
/// agent); `berth agent rm` removes its sandboxes and home; a restart collects a home whose
/// agent the server does not know.
#[test]
fn cli_remote_named_agents_resume_keep_and_belong_to_their_tenant() {
    let mut server = Server::init();
    let alice = key(&server.state, "alice", false);
    let bob = key(&server.state, "bob", false);
    let (url, server_id) = (server.url.clone(), server.server_id.clone());
    let remote = |key: &str| remote_berth(&url, key);
    let run = |key: &str, args: &[&str]| super::agent::agent_json_with(remote(key), args);
    let homes = |tenant: &str| {
        volumes_with(&format!("berth.server={server_id}"))
            .into_iter()
            .filter(|v| {
                stdout(&docker(&[
                    "volume",
                    "inspect",
                    "-f",
                    "{{index .Labels \"berth.tenant\"}}",
                    v,
                ]))
                .trim()
                    == tenant
            })
            .collect::<Vec<_>>()
    };

    // Named, not kept: the sandbox goes after the run, the agent's home stays.
    let (_, first, out) = run(&alice, &["--name", "fixer", "--prompt", "one"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        (first["agent"].as_str(), first["kept"].as_bool()),
        (Some("fixer"), Some(false))
    );
    let s1 = first["session_id"].as_str().unwrap().to_string();
    let gone = first["sandbox_id"].as_str().unwrap();
    assert!(containers_with(&format!("berth.id={gone}")).is_empty());
    assert_eq!(homes("alice").len(), 1, "the agent's home stays");

    // A new sandbox, kept, resumes the session from the home.
    let (events, second, out) = run(
        &alice,
        &[
            "--name", "fixer", "--keep", "--resume", &s1, "--prompt", "two",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(second["session_id"], s1.as_str());
    assert_eq!(second["kept"], true);
    assert!(super::agent::texts(&events).contains("history: 1 earlier turns"));
    let kept = second["sandbox_id"].as_str().unwrap().to_string();

    // The kept sandbox is reused, also after it was stopped; a fork branches off.
    let (s, _) = server.call("POST", &format!("/v1/sandboxes/{kept}/stop"), &alice, None);
    assert_eq!(s, 200);
    let (events, third, out) = run(
        &alice,
        &[
            "--name", "fixer", "--keep", "--resume", &s1, "--fork", "--prompt", "three",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        third["sandbox_id"],
        kept.as_str(),
        "the kept sandbox is reused"
    );
    let s2 = third["session_id"].as_str().unwrap().to_string();
    assert_ne!(s2, s1);
    assert!(super::agent::texts(&events).contains("history: 2 earlier turns"));

    // The server recorded both sessions, and where the fork came from.
    let ls = || -> Value {
        let out = remote(&alice)
            .args(["agent", "ls", "--json"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    wait_until(
        "the fork's session is recorded",
        Duration::from_secs(10),
        || ls()[0]["sessions"].as_array().is_some_and(|s| s.len() == 2),
    );
    let agents = ls();
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");
    assert_eq!(agents[0]["name"], "fixer");
    assert_eq!(agents[0]["cli"], "claude");
    assert_eq!(agents[0]["sessions"][1]["id"], s2.as_str());
    assert_eq!(agents[0]["sessions"][1]["forked_from"], s1.as_str());
    assert_eq!(agents[0]["sandboxes"], json!([kept]));

    // Bob's "fixer" is another agent: alice's session is not his to resume, nor her sandbox
    // his to reuse.
    let out = remote(&bob)
        .args([
            "agent",
            "run",
            "--image",
            super::agent::IMAGE,
            "--name",
            "fixer",
            "--resume",
            &s1,
        ])
        .args(["--prompt", "steal"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("does not belong to agent"),
        "{}",
        stderr(&out)
    );
    let (_, theirs, out) = run(&bob, &["--name", "fixer", "--keep", "--prompt", "mine"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(theirs["sandbox_id"], kept.as_str());
    assert_eq!(homes("bob").len(), 1, "bob's agent has its own home");

    // Removing alice's agent removes her kept sandbox and her home, not bob's.
    let out = remote(&alice)
        .args(["agent", "rm", "fixer"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("1 sandbox(es)"), "{}", stderr(&out));
    assert!(containers_with(&format!("berth.id={kept}")).is_empty());
    assert!(homes("alice").is_empty());
    assert_eq!(homes("bob").len(), 1);
    let (s, _) = server.call("GET", "/v1/agents/fixer", &alice, None);
    assert_eq!(s, 404);

    // A home whose agent the server does not know (its row gone with a crash) is collected
    // when the server starts.
    let ghost = docker(&[
        "volume",
        "create",
        "--label",
        "berth.managed=true",
        "--label",
        &format!("berth.server={}", server.server_id),
        "--label",
        "berth.kind=volume",
        "--label",
        "berth.tenant=alice",
        "--label",
        "berth.agent=ghost",
        "berth-home-ghost-test",
    ]);
    assert!(ghost.status.success(), "{}", stderr(&ghost));
    server.kill();
    let server2 = Server::start(&server.state, server.admin.clone(), Vec::new());
    wait_until(
        "the unknown home is collected",
        Duration::from_secs(10),
        || {
            !volumes_with(&format!("berth.server={}", server2.server_id))
                .iter()
                .any(|v| v == "berth-home-ghost-test")
        },
    );
    assert_eq!(homes("bob").len(), 1, "a known agent's home stays");
    let out = berth()
        .env("BERTH_SERVER", &server2.url)
        .env("BERTH_API_KEY", &bob)
        .args(["agent", "rm", "fixer"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(volumes_with(&format!("berth.server={}", server2.server_id)).is_empty());
    assert!(containers_with(&format!("berth.server={}", server2.server_id)).is_empty());
}

/// schemathesis, pinned, in its own virtualenv under target/test-cache; `None` when PyPI is
/// unreachable.
fn schemathesis() -> Option<PathBuf> {
    const VERSION: &str = "schemathesis==4.32.5";
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-cache/schemathesis");
    let st = venv.join("bin/st");
    let stamp = venv.join(VERSION);
    if st.exists() && stamp.exists() {
        return Some(st);
    }
    let made = std::process::Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    assert!(made.status.success(), "python3 -m venv: {}", stderr(&made));
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "-q", VERSION])
        .output()
        .unwrap();
    if !pip.status.success() {
        eprintln!(
            "SKIPPED: the schemathesis run needs PyPI to install {VERSION}: {}",
            stderr(&pip)
        );
        return None;
    }
    std::fs::write(&stamp, "").unwrap();
    Some(st)
}

/// schemathesis against `/v1/openapi.json`, bounded in time: no 5xx, and every status, content
/// type and body as the document says. Its stateful phase follows the document's links, so it
/// creates real sandboxes and calls the endpoints on them; the server's sweep removes them.
#[test]
fn server_openapi_holds_under_schemathesis() {
    let Some(st) = schemathesis() else { return };
    let server = Server::init();
    let out = std::process::Command::new(&st)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", server.url))
        .args(["-H", &format!("Authorization: Bearer {}", server.admin)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-time",
            "60",
            "--workers",
            "2",
            // A stop answers once the sandbox's processes are gone: up to its grace period
            // (10 s by default) when one ignores SIGTERM, which is schemathesis's own default
            // request timeout.
            "--request-timeout",
            "30",
            // Followed logs stream until the sandbox stops (a read timeout, not a failure),
            // and schemathesis cannot make a tar body; both are covered above.
            "--exclude-path",
            "/v1/sandboxes/{id}/logs",
            "--exclude-path",
            "/v1/sandboxes/{id}/archive",
            "--seed",
            "20261201",
        ])
        .env("NO_COLOR", "1")
        .current_dir(&server.state)
        .output()
        .unwrap();
    let report = stdout(&out);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}\n{}",
        stderr(&out)
    );
    assert!(report.contains("passed"), "{report}");
    server.sweep();
    assert!(containers_with(&format!("berth.server={}", server.server_id)).is_empty());
}

#[test]
fn server_agent_runs_stream_normalized_events() {
    super::agent::ensure_fake_image();
    let server = Server::init();
    let alice = key(&server.state, "alice", false);
    let id = server.create(
        &alice,
        json!({"image": super::agent::IMAGE, "idle_timeout": 1, "timeout": 0}),
    );
    let start =
        json!({"id": "fix-1", "prompt": "fix it: $(id) `x` fake:write=out.txt fake:turns=2"});
    let path = format!("/v1/sandboxes/{id}/agent-runs");
    let (s, run) = server.call("POST", &path, &alice, Some(start.clone()));
    assert_eq!(s, 201, "{run}");
    assert_eq!(run["cli"], "claude");
    let (s, again) = server.call("POST", &path, &alice, Some(start));
    assert_eq!(
        (s, &again["pid"]),
        (200, &run["pid"]),
        "a retried start runs nothing new"
    );
    let items = ndjson(
        server
            .req("GET", &format!("{path}/fix-1/events"), &alice)
            .call()
            .unwrap()
            .into_reader(),
    );
    let kinds: Vec<&str> = items
        .iter()
        .filter(|i| i["kind"] == "event")
        .map(|i| i["record"]["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"session_started")
            && kinds.contains(&"tool_call")
            && kinds.contains(&"result"),
        "{kinds:?}"
    );
    let done = items.last().unwrap();
    assert_eq!(
        (
            done["kind"].as_str(),
            done["exit_code"].as_i64(),
            done["clean"].as_bool()
        ),
        (Some("finished"), Some(0), Some(true)),
        "{done}"
    );
    // The CLI acted (bypassPermissions by default): the file is in the workspace, with the
    // prompt intact (one argv element, never a shell string).
    let mut written = String::new();
    server
        .req(
            "GET",
            &format!("/v1/sandboxes/{id}/files?path=/workspace/out.txt"),
            &alice,
        )
        .call()
        .unwrap()
        .into_reader()
        .read_to_string(&mut written)
        .unwrap();
    assert!(written.contains("$(id) `x`"), "{written}");
    // Resume after a line (SSE, Last-Event-ID): nothing at or before it again.
    let text = server
        .req("GET", &format!("{path}/fix-1/events"), &alice)
        .set("Accept", "text/event-stream")
        .set("Last-Event-ID", "2")
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        !text.contains("id: 1\n") && !text.contains("id: 2\n") && text.contains("id: 3\n"),
        "{text}"
    );
    assert!(text.contains("\"kind\":\"finished\""));

    // The CLI's own permission mode: a denied write is counted and is not clean.
    let (s, _) = server.call("POST", &path, &alice, Some(json!({"id": "review", "prompt": "review fake:write=nope.txt", "permission_mode": "plan"})));
    assert_eq!(s, 201);
    let items = ndjson(
        server
            .req("GET", &format!("{path}/review/events"), &alice)
            .call()
            .unwrap()
            .into_reader(),
    );
    let done = items.last().unwrap();
    assert_eq!(done["clean"], false, "{done}");
    assert!(
        !done["summary"]["permission_denials"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{done}"
    );
    let (s, _) = server.call(
        "GET",
        &format!("/v1/sandboxes/{id}/files/stat?path=/workspace/nope.txt"),
        &alice,
        None,
    );
    assert_eq!(s, 404);

    // A hanging run is activity (the 1 s idle timeout does not end it) until it is cancelled.
    let (s, _) = server.call(
        "POST",
        &path,
        &alice,
        Some(json!({"id": "hang", "prompt": "wait fake:hang"})),
    );
    assert_eq!(s, 201);
    std::thread::sleep(Duration::from_secs(4));
    let (_, sb) = server.call("GET", &format!("/v1/sandboxes/{id}"), &alice, None);
    assert_eq!(sb["state"], "running", "a running agent is not idle");
    let (s, _) = server.call("POST", &format!("{path}/hang/cancel"), &alice, None);
    assert_eq!(s, 204);
    let items = ndjson(
        server
            .req("GET", &format!("{path}/hang/events"), &alice)
            .call()
            .unwrap()
            .into_reader(),
    );
    let done = items.last().unwrap();
    assert_eq!(
        (done["kind"].as_str(), done["clean"].as_bool()),
        (Some("finished"), Some(false)),
        "{done}"
    );
    // Bad input.
    for (body, needle) in [
        (json!({"id": "x", "prompt": "p", "cli": "cursor"}), "cursor"),
        (json!({"id": "a/b", "prompt": "p"}), "a/b"),
        (json!({"id": "x", "prompt": "  "}), "prompt"),
        (
            json!({"id": "x", "prompt": "p", "permission_mode": "yolo-ish"}),
            "yolo-ish",
        ),
    ] {
        let (s, err) = server.call("POST", &path, &alice, Some(body.clone()));
        assert_eq!(s, 400, "{body} -> {err}");
        assert!(
            err["message"].as_str().unwrap().contains(needle),
            "{body} -> {err}"
        );
    }
    // Once nothing runs, the idle timeout ends it.
    wait_until("idle after the runs", Duration::from_secs(20), || {
        server
            .call("GET", &format!("/v1/sandboxes/{id}"), &alice, None)
            .0
            == 404
    });
}

#[test]
fn server_pty_over_websocket() {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let server = Server::init();
    let alice = key(&server.state, "alice", false);
    let bob = key(&server.state, "bob", false);
    let id = server.create(&alice, json!({}));
    let url = format!(
        "{}/v1/sandboxes/{id}/pty",
        server.url.replace("http://", "ws://")
    );
    let connect = |key: &str| {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Authorization", format!("Bearer {key}").parse().unwrap());
        tungstenite::connect(request).map_err(|e| e.to_string())
    };
    assert!(connect(&bob).is_err(), "another tenant cannot attach");
    let (mut ws, _) = connect(&alice).unwrap();
    ws.send(Message::text(
        r#"{"argv": ["sh"], "rows": 30, "cols": 100}"#,
    ))
    .unwrap();
    ws.send(Message::binary(b"stty size; tty\n".to_vec()))
        .unwrap();
    let mut output = Vec::new();
    let wait_for = |ws: &mut tungstenite::WebSocket<_>, needle: &str, output: &mut Vec<u8>| {
        while !String::from_utf8_lossy(output).contains(needle) {
            match ws.read().unwrap() {
                Message::Binary(b) => output.extend_from_slice(&b),
                Message::Text(t) => panic!("ended early: {t}"),
                _ => {}
            }
        }
    };
    wait_for(&mut ws, "/dev/pts/", &mut output);
    assert!(
        String::from_utf8_lossy(&output).contains("30 100"),
        "{}",
        String::from_utf8_lossy(&output)
    );
    ws.send(Message::text(r#"{"resize": {"rows": 50, "cols": 132}}"#))
        .unwrap();
    ws.send(Message::binary(b"stty size; exit 3\n".to_vec()))
        .unwrap();
    let mut last = None;
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => output.extend_from_slice(&b),
            Ok(Message::Text(t)) => last = Some(serde_json::from_str::<Value>(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => break,
            _ => {}
        }
    }
    assert!(
        String::from_utf8_lossy(&output).contains("50 132"),
        "{}",
        String::from_utf8_lossy(&output)
    );
    let last = last.expect("a final event");
    assert_eq!(
        (last["type"].as_str(), last["code"].as_i64()),
        (Some("exited"), Some(3)),
        "{last}"
    );
    // A bad first message is answered, not hung on.
    let (mut ws, _) = connect(&alice).unwrap();
    ws.send(Message::text("not json")).unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => assert!(t.contains("first message"), "{t}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        server
            .call("DELETE", &format!("/v1/sandboxes/{id}"), &alice, None)
            .0,
        204
    );
}

#[test]
fn server_mounts_only_under_its_workspace_root() {
    ensure_base_image();
    ensure_agent();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = server_cmd(&state)
        .args(["server", "init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let admin = stdout(&out).trim().to_string();
    let root = dir_owned_by(1000, 1000);
    let project = root.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::os::unix::fs::chown(&project, Some(1000), Some(1000)).unwrap();
    std::fs::write(project.join("hello.txt"), "from the host\n").unwrap();
    let outside = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &state,
        admin.clone(),
        vec!["--workspace-root".into(), root.path().display().to_string()],
    );
    server._dir = Some(dir);
    let id = server.create(&admin, json!({"workspace": project.display().to_string()}));
    let events = server.exec(&admin, &id, &["cat", "/workspace/hello.txt"]);
    assert_eq!(text_of(&events, "stdout"), "from the host\n");
    for (path, why) in [
        (outside.path().display().to_string(), "outside the root"),
        (
            format!("{}/../", root.path().display()),
            "up out of the root",
        ),
        ("/var/run/docker.sock".to_string(), "the engine socket"),
    ] {
        let (s, err) = server.call(
            "POST",
            "/v1/sandboxes",
            &admin,
            Some(json!({"workspace": path})),
        );
        assert!(s == 403 || s == 400, "{why}: {s} {err}");
    }
    assert_eq!(
        server
            .call("DELETE", &format!("/v1/sandboxes/{id}"), &admin, None)
            .0,
        204
    );
}

/// The exit code of an exec through `server` (`None`: it did not start).
fn exit_code(server: &Server, key: &str, id: &str, argv: &[&str]) -> Option<i64> {
    let events = server.exec(key, id, argv);
    let last = events.last()?;
    (last["type"] == "exited")
        .then(|| last["code"].as_i64())
        .flatten()
}

/// Whether every container made by the server `server_id` is a sandbox `server` lists.
fn only_listed_sandboxes_left(server: &Server, admin: &str, server_id: &str) -> bool {
    let (_, list) = server.call("GET", "/v1/sandboxes", admin, None);
    let known: Vec<String> = list["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    containers_with(&format!("berth.server={server_id}"))
        .iter()
        .all(|c| known.iter().any(|k| berth_id_of(c) == *k))
}

/// Whether an upload's temporary file (`.berth-upload-…`) is in `dir` of sandbox `id`.
fn partial_upload_in(server: &Server, key: &str, id: &str, dir: &str) -> bool {
    server.exec(key, id, &["ls", "-a", dir]).iter().any(|e| {
        e["data"]
            .as_str()
            .is_some_and(|d| d.contains(".berth-upload-"))
    })
}

/// A request body that sends some bytes, then never ends (the server is killed under it).
struct Endless {
    sent: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= 4 << 20 {
            std::thread::sleep(Duration::from_millis(100));
        }
        let n = buf.len().min(64 << 10);
        buf[..n].fill(b'x');
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn server_sigkilled_mid_create_exec_and_upload_leaves_nothing_unknown() {
    let mut server = Server::init();
    let alice = key(&server.state, "alice", false);
    let id = server.create(&alice, json!({"timeout": 600}));
    let put = |server: &Server, body: &str| {
        server
            .req(
                "PUT",
                &format!("/v1/sandboxes/{id}/files?path=/home/berth/data"),
                &alice,
            )
            .send_string(body)
            .map(|r| r.status())
            .ok()
    };
    assert_eq!(put(&server, "the old content\n"), Some(201));

    // In flight when the server dies: an exec, an upload and a create.
    let exec = server
        .req("POST", &format!("/v1/sandboxes/{id}/exec"), &alice)
        .send_json(json!({"argv": ["sh", "-c", "echo $$ > /tmp/pid; exec sleep 300"]}))
        .unwrap();
    let mut exec_reader = BufReader::new(exec.into_reader());
    let mut started = String::new();
    exec_reader.read_line(&mut started).unwrap();
    wait_until("the exec runs", Duration::from_secs(20), || {
        exit_code(&server, &alice, &id, &["test", "-s", "/tmp/pid"]) == Some(0)
    });
    let upload = {
        let request = server.req(
            "PUT",
            &format!("/v1/sandboxes/{id}/files?path=/home/berth/data"),
            &alice,
        );
        std::thread::spawn(move || request.send(Endless { sent: 0 }).map(|r| r.status()).ok())
    };
    wait_until("the upload is under way", Duration::from_secs(20), || {
        partial_upload_in(&server, &alice, &id, "/home/berth")
    });
    let create = {
        let request = server.req("POST", "/v1/sandboxes", &alice);
        std::thread::spawn(move || {
            request
                .send_json(json!({"timeout": 600}))
                .map(|r| r.status())
                .ok()
        })
    };
    std::thread::sleep(Duration::from_millis(60));
    server.kill();
    // No caller is told the upload worked.
    assert!(
        upload.join().unwrap().is_none(),
        "a cut upload claimed success"
    );
    let _ = create.join().unwrap();

    let server2 = Server::start(&server.state, server.admin.clone(), Vec::new());
    // The exec's caller went with the server: its process is ended.
    wait_until("the orphaned exec ended", Duration::from_secs(30), || {
        exit_code(
            &server2,
            &alice,
            &id,
            &["sh", "-c", "kill -0 $(cat /tmp/pid)"],
        ) == Some(1)
    });
    // The old file is whole and the partial one is gone.
    let events = server2.exec(&alice, &id, &["cat", "/home/berth/data"]);
    assert_eq!(text_of(&events, "stdout"), "the old content\n");
    wait_until(
        "the partial upload is removed",
        Duration::from_secs(30),
        || !partial_upload_in(&server2, &alice, &id, "/home/berth"),
    );
    // Every container of this server is a sandbox it lists, or the reconcile collects it.
    wait_until(
        "only known sandboxes are left",
        Duration::from_secs(30),
        || only_listed_sandboxes_left(&server2, &server2.admin, &server.server_id),
    );
    for sandbox in server2.call("GET", "/v1/sandboxes", &server2.admin, None).1["sandboxes"]
        .as_array()
        .unwrap()
    {
        let sid = sandbox["id"].as_str().unwrap();
        let (s, _) = server2.call(
            "DELETE",
            &format!("/v1/sandboxes/{sid}"),
            &server2.admin,
            None,
        );
        assert_eq!(s, 204);
    }
}

/// The lines of a stream, read on a thread of their own (so a test can wait with a bound).
fn lines_of(reader: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn server_sigkilled_mid_agent_run_and_download_keeps_the_run_and_never_ends_a_download_cleanly() {
    super::agent::ensure_fake_image();
    let mut server = Server::init();
    let alice = key(&server.state, "alice", false);
    let id = server.create(
        &alice,
        json!({"image": super::agent::IMAGE, "timeout": 600}),
    );
    // A download in flight: 64 MiB, of which the client has read only the start.
    let events = server.exec(
        &alice,
        &id,
        &["sh", "-c", "head -c 67108864 /dev/zero > /home/berth/big"],
    );
    assert_eq!(events.last().unwrap()["code"], 0, "{events:?}");
    let download = server
        .req(
            "GET",
            &format!("/v1/sandboxes/{id}/files?path=/home/berth/big"),
            &alice,
        )
        .call()
        .unwrap();
    assert_eq!(download.header("content-length"), Some("67108864"));
    let mut body = download.into_reader();
    let mut start = vec![0u8; 1 << 20];
    body.read_exact(&mut start).unwrap();
    // An agent run in flight: the fake CLI hangs after its session starts.
    let path = format!("/v1/sandboxes/{id}/agent-runs");
    let (s, run) = server.call(
        "POST",
        &path,
        &alice,
        Some(json!({"id": "long", "prompt": "fake:hang"})),
    );
    assert_eq!(s, 201, "{run}");
    let first = lines_of(
        server
            .req("GET", &format!("{path}/long/events"), &alice)
            .call()
            .unwrap()
            .into_reader(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !first
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("the run's session starts")
        .contains("session_started")
    {}

    server.kill();
    // The download does not end as if it were whole.
    let mut rest = Vec::new();
    let read = body.read_to_end(&mut rest);
    assert!(
        read.is_err() || rest.len() + start.len() < 67108864,
        "a cut download ended cleanly"
    );

    // The run outlived the server: the next one replays its events and can end it.
    let server2 = Server::start(&server.state, server.admin.clone(), Vec::new());
    let rx = lines_of(
        server2
            .req("GET", &format!("{path}/long/events"), &alice)
            .call()
            .unwrap()
            .into_reader(),
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|l: &String| l.contains("session_started")) {
        let left = deadline.saturating_duration_since(Instant::now());
        seen.push(
            rx.recv_timeout(left)
                .expect("the replay has the session's start"),
        );
    }
    let (s, _) = server2.call("POST", &format!("{path}/long/cancel"), &alice, None);
    assert_eq!(s, 204);
    let finished = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the cancelled run finishes");
        let item: Value = serde_json::from_str(&line).unwrap();
        if item["kind"] == "finished" {
            break item;
        }
    };
    assert_eq!(
        finished["clean"], false,
        "a cancelled run is never clean: {finished}"
    );
    let (s, _) = server2.call("DELETE", &format!("/v1/sandboxes/{id}"), &alice, None);
    assert_eq!(s, 204);
}

#[test]
fn server_sigkilled_at_any_moment_of_a_create_comes_back_and_reconciles() {
    let mut server = Server::init();
    let admin = server.admin.clone();
    let state = server.state.clone();
    let server_id = server.server_id.clone();
    let mut current: Option<Server> = None;
    for delay_ms in (0..16u64).map(|i| 2 + i * 4) {
        let live = current.as_mut().unwrap_or(&mut server);
        let request = live.req("POST", "/v1/sandboxes", &admin);
        let create =
            std::thread::spawn(move || request.send_json(json!({})).ok().map(|r| r.status()));
        std::thread::sleep(Duration::from_millis(delay_ms));
        live.kill();
        let _ = create.join();
        // Whatever moment it died at, the next server starts (a record saved before its
        // container existed is reconciled, not fatal) and knows every container it has.
        let next = Server::start(&state, admin.clone(), Vec::new());
        wait_until(
            "only known sandboxes are left",
            Duration::from_secs(30),
            || only_listed_sandboxes_left(&next, &admin, &server_id),
        );
        current = Some(next);
    }
    let last = current.unwrap();
    for sandbox in last.call("GET", "/v1/sandboxes", &admin, None).1["sandboxes"]
        .as_array()
        .unwrap()
    {
        let sid = sandbox["id"].as_str().unwrap();
        assert_eq!(
            last.call("DELETE", &format!("/v1/sandboxes/{sid}"), &admin, None)
                .0,
            204
        );
    }
}

/// A tar stream: a complete small file, then the header of a large one whose bytes come from
/// `Endless` (the server is killed under it).
struct EndlessTar {
    head: std::io::Cursor<Vec<u8>>,
    rest: Endless,
}

impl EndlessTar {
    fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        let mut small = tar::Header::new_gnu();
        small.set_size(4);
        small.set_mode(0o644);
        small.set_cksum();
        tar.append_data(&mut small, "first", &b"new\n"[..]).unwrap();
        let mut big = tar::Header::new_gnu();
        big.set_size(1 << 30);
        big.set_mode(0o644);
        big.set_path("data").unwrap();
        big.set_cksum();
        let mut head = tar.into_inner().unwrap();
        // `into_inner` wrote the end-of-archive blocks: the big entry's header replaces them.
        head.truncate(head.len() - 1024);
        head.extend_from_slice(big.as_bytes());
        Self {
            head: std::io::Cursor::new(head),
            rest: Endless { sent: 0 },
        }
    }
}

impl Read for EndlessTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.head.read(buf)? {
            0 => self.rest.read(buf),
            n => Ok(n),
        }
    }
}

#[test]
fn server_sigkilled_mid_archive_upload_keeps_the_old_file_whole() {
    let mut server = Server::init();
    let alice = key(&server.state, "alice", false);
    let id = server.create(&alice, json!({"timeout": 600}));
    let (s, _) = server.call(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        &alice,
        Some(json!({"argv": ["sh", "-c", "mkdir -p /home/berth/d && echo old > /home/berth/d/data"]})),
    );
    assert_eq!(s, 200);
    let upload = {
        let request = server.req(
            "PUT",
            &format!("/v1/sandboxes/{id}/archive?path=/home/berth/d"),
            &alice,
        );
        std::thread::spawn(move || {
            request
                .set("Content-Type", "application/x-tar")
                .send(EndlessTar::new())
                .map(|r| r.status())
                .ok()
        })
    };
    wait_until(
        "the archive's big file is under way",
        Duration::from_secs(20),
        || partial_upload_in(&server, &alice, &id, "/home/berth/d"),
    );
    server.kill();
    assert!(
        upload.join().unwrap().is_none(),
        "a cut archive upload claimed success"
    );

    let server2 = Server::start(&server.state, server.admin.clone(), Vec::new());
    // The old file is whole; the entry that came whole before the cut is there; no partial
    // file is left.
    let events = server2.exec(
        &alice,
        &id,
        &["cat", "/home/berth/d/data", "/home/berth/d/first"],
    );
    assert_eq!(text_of(&events, "stdout"), "old\nnew\n");
    wait_until(
        "the partial file is removed",
        Duration::from_secs(30),
        || !partial_upload_in(&server2, &alice, &id, "/home/berth/d"),
    );
    assert_eq!(
        server2
            .call(
                "DELETE",
                &format!("/v1/sandboxes/{id}"),
                &server2.admin,
                None
            )
            .0,
        204
    );
}

#[test]
fn cli_remote_sessions_answer_turn_by_turn_one_at_a_time_and_fall_back_when_the_process_died() {
    super::agent::ensure_fake_image();
    let server = Server::init();
    let alice = key(&server.state, "alice", false);
    let remote = || remote_berth(&server.url, &alice);
    let start = || {
        remote()
            .args(["agent", "session", "start", "--image"])
            .args([super::agent::IMAGE, "--name", "pair", "--json"])
            .output()
            .unwrap()
    };
    let out = start();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let started: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let session = started["session_id"].as_str().unwrap().to_string();
    let sandbox = started["sandbox_id"].as_str().unwrap().to_string();
    assert!(!session.is_empty(), "{started}");
    let out = start();
    assert_eq!(out.status.code(), Some(125), "one live session per agent");
    assert!(
        stderr(&out).contains("already has a running session"),
        "{}",
        stderr(&out)
    );

    let send = |msg: &str, extra: &[&str]| {
        remote()
            .args(["agent", "send"])
            .args(extra)
            .args(["pair", msg])
            .output()
            .unwrap()
    };
    let one = send("what does `main.rs` do? $(x)", &[]);
    assert_eq!(one.status.code(), Some(0), "{}", stderr(&one));
    assert!(
        stdout(&one).contains("echo: what does `main.rs` do? $(x)"),
        "{}",
        stdout(&one)
    );
    assert!(stdout(&one).contains("history: 0 earlier turns"));
    let two = send("now add a test", &["--json"]);
    assert_eq!(two.status.code(), Some(0), "{}", stderr(&two));
    let lines: Vec<Value> = stdout(&two)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.last().unwrap()["session_id"], session.as_str());
    assert!(lines.iter().any(|e| e["type"] == "assistant_text"
        && e["text"]
            .as_str()
            .unwrap()
            .contains("history: 1 earlier turns")));
    assert_eq!(
        lines.iter().filter(|e| e["type"] == "result").count(),
        1,
        "the reply ended at its own result"
    );

    // One turn at a time: while a turn hangs, another is refused with 409.
    let running = || -> Vec<String> {
        let (_, processes) = server.call(
            "GET",
            &format!("/v1/sandboxes/{sandbox}/processes"),
            &alice,
            None,
        );
        processes
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["running"] == true)
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    let process = running().into_iter().next().unwrap();
    let run = process.strip_prefix("agent.").unwrap().to_string();
    let turns = format!("/v1/sandboxes/{sandbox}/agent-runs/{run}/turns");
    let hanging = server
        .req("POST", &turns, &alice)
        .send_json(json!({"message": "fake:hang", "timeout_secs": 2}))
        .unwrap();
    let (status, body) = server.call("POST", &turns, &alice, Some(json!({"message": "me too"})));
    assert_eq!(status, 409, "{body}");
    // The hanging turn hits its timeout: the session's CLI is ended, and says so.
    let items: Vec<Value> = BufReader::new(hanging.into_reader())
        .lines()
        .map(|l| l.unwrap())
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let last = items.last().unwrap();
    assert_eq!(
        (last["kind"].as_str(), last["timed_out"].as_bool()),
        (Some("finished"), Some(true)),
        "{items:?}"
    );

    // The process is gone: the next send says so and resumes the session in a one-shot run.
    let three = send("and the docs", &[]);
    assert_eq!(three.status.code(), Some(0), "{}", stderr(&three));
    assert!(
        stderr(&three).contains("no running session"),
        "{}",
        stderr(&three)
    );
    assert!(
        stdout(&three).contains("history: 2 earlier turns"),
        "{}",
        stdout(&three)
    );

    // A new session, and stop ends it.
    let out = start();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = remote()
        .args(["agent", "session", "stop", "pair"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("stopped the session"),
        "{}",
        stderr(&out)
    );
    wait_until("the session's CLI ends", Duration::from_secs(20), || {
        running().is_empty()
    });
    let out = remote().args(["agent", "rm", "pair"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
