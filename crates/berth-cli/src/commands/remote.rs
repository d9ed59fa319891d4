//! The CLI's remote mode: with `BERTH_SERVER` (or `--server`) and `BERTH_API_KEY`, the same
//! verbs go through a berth server's HTTP API, with the same output, `--json` and exit codes.
//!
//! This is an edge like the local commands: it resolves what belongs to the caller (the
//! environment for `--env NAME` and `--secret NAME`, host paths for `cp`) and sends only
//! values; the server never reads this machine.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::args::{
    CpArgs, CreateArgs, ExecArgs, LogsArgs, PsArgs, RmArgs, SandboxRef, SandboxRefs, StopArgs,
};

/// A berth server and the key to use it.
#[derive(Clone)]
pub struct Remote {
    base: String,
    key: String,
    agent: ureq::Agent,
}

impl Remote {
    /// The server named by `--server`/`BERTH_SERVER`, if any.
    pub fn configured(server: Option<&str>) -> anyhow::Result<Option<Self>> {
        let Some(base) = server.filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let base = base.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            bail!("BERTH_SERVER {base:?} is not an http:// URL: give the server's address, e.g. http://127.0.0.1:7777 (put TLS in front of it with a proxy)");
        }
        let key = std::env::var("BERTH_API_KEY").unwrap_or_default();
        if key.is_empty() {
            bail!("BERTH_SERVER is set but BERTH_API_KEY is not: export the key you were given (`berth server key create --name NAME` makes one)");
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .build();
        Ok(Some(Self { base, key, agent }))
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.key))
    }

    /// Turns a failed call into the server's own message.
    fn failed(&self, e: ureq::Error) -> anyhow::Error {
        match e {
            ureq::Error::Status(status, response) => {
                let body: Value = response.into_json().unwrap_or(Value::Null);
                let message = body["message"].as_str().unwrap_or("no message").to_string();
                anyhow::anyhow!("the server answered {status}: {message}")
            }
            ureq::Error::Transport(t) => anyhow::anyhow!(
                "cannot reach the berth server at {}: {t}; is `berth serve` running there?",
                self.base
            ),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<ureq::Response> {
        let request = self.request(method, path);
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        result.map_err(|e| self.failed(e))
    }

    fn json(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let response = self.call(method, path, body)?;
        if response.status() == 204 {
            return Ok(Value::Null);
        }
        Ok(response.into_json()?)
    }
}

/// Everything but RFC 3986's unreserved characters and `/` is percent-encoded: a value is safe
/// as a path segment or a query value.
const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, ENCODED).to_string()
}

fn sandbox_path(reference: &str) -> String {
    format!("/v1/sandboxes/{}", encode(reference))
}

/// `--env` values as the server gets them: `NAME` is resolved here, from the caller's
/// environment (the server never reads this machine's).
fn values(vars: &[berth_spec::EnvVar]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut env = serde_json::Map::new();
    for var in vars {
        let value = match &var.value {
            Some(v) => v.clone(),
            None => std::env::var(&var.name).with_context(|| {
                format!(
                    "--env {}: not set in your environment; export it or give NAME=VALUE",
                    var.name
                )
            })?,
        };
        env.insert(var.name.clone(), json!(value));
    }
    Ok(env)
}

/// `--secret`s as the server gets them, with their values: the edge (`secret_specs`,
/// `agent::settings`) already took a missing one from the caller's environment, so one still
/// without a value is not set there.
fn secret_values(specs: &[berth_spec::SecretSpec]) -> anyhow::Result<Vec<Value>> {
    specs
        .iter()
        .map(|spec| {
            let value = spec.value.as_ref().with_context(|| {
                format!("--secret {}: not set in your environment; export it, or give the value (--secret {}=VALUE@HOST)", spec.name, spec.name)
            })?;
            let hosts: Vec<String> = spec.hosts.iter().map(ToString::to_string).collect();
            Ok(json!({"name": spec.name, "value": value.expose(), "hosts": hosts}))
        })
        .collect()
}

/// Runs a blocking remote call off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

/// The sandbox these flags describe, as the server takes it (values resolved here).
fn sandbox_body(flags: &crate::args::SandboxFlags) -> anyhow::Result<Value> {
    if !flags.volumes.is_empty() || !flags.cap_add.is_empty() || flags.allow_privilege_escalation {
        bail!("--volume, --cap-add and --allow-privilege-escalation are not available through a server: it mounts only under its --workspace-root and never weakens the hardening");
    }
    if flags.user != berth_spec::UserSpec::Auto || flags.runtime.is_some() {
        bail!("--user and --runtime are not available through a server: its sandboxes run as their unprivileged user under the runtime its operator chose");
    }
    if flags.tmp_size != berth_spec::DEFAULT_TMP_SIZE {
        bail!("--tmp-size is not available through a server: its sandboxes get the default /tmp");
    }
    let env = values(&flags.env)?;
    let secrets = secret_values(&crate::args::secret_specs(&flags.secrets)?)?;
    let workspace = flags.workspace.as_ref().map(|w| {
        std::fs::canonicalize(&w.host)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| w.host.clone())
    });
    Ok(json!({
        "image": flags.image,
        "memory": flags.memory,
        "cpus": flags.cpus,
        "pids": flags.pids_limit,
        "network": match flags.network {
            berth_spec::NetworkMode::None => "none",
            berth_spec::NetworkMode::Isolated => "isolated",
            berth_spec::NetworkMode::Bridge => "bridge",
        },
        "allow_hosts": flags.allow_hosts.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "secrets": secrets,
        "env": env,
        "workspace": workspace,
        "read_only": flags.read_only,
    }))
}

pub async fn create(remote: Remote, args: CreateArgs) -> anyhow::Result<ExitCode> {
    if args.sandbox.workdir.is_some() {
        bail!("--workdir is not available with `berth create` through a server: give `--cwd DIR` to each `berth exec`");
    }
    let mut body = sandbox_body(&args.sandbox)?;
    body["name"] = json!(args.name);
    body["command"] = json!(args.command);
    let json_out = args.json;
    let sandbox = blocking(move || remote.json("POST", "/v1/sandboxes", Some(body))).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&sandbox)?);
    } else {
        println!("{}", sandbox["id"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth run` through a server: a sandbox made for the command, the command streamed as
/// `berth exec` streams it (its exit code is berth's; 124 on timeout), the sandbox removed
/// after — also on Ctrl-C, and by the server's own timeout if this client vanishes.
pub async fn run(remote: Remote, args: crate::args::RunArgs) -> anyhow::Result<ExitCode> {
    if args.json || args.receipt.is_some() {
        bail!("--json and --receipt are made by the local runner: through a server, use `berth create`, `berth exec` and `berth rm` (the server's audit log records them)");
    }
    if args.keep {
        bail!(
            "--keep is not available through a server: `berth create` makes a sandbox that stays"
        );
    }
    let mut body = sandbox_body(&args.sandbox)?;
    let limit = (!args.timeout.is_zero()).then(|| args.timeout.as_secs().max(1));
    // The server removes the sandbox itself a minute after the command's own limit.
    body["timeout"] = json!(limit.map_or(24 * 3600, |t| t + 60));
    let exec = json!({"argv": args.command, "cwd": args.sandbox.workdir, "timeout_secs": limit});
    // Registered before anything is made, so an early Ctrl-C is not lost either.
    let interrupted = crate::signals::interrupted()?;
    tokio::pin!(interrupted);
    let remove = |remote: &Remote, id: &str| {
        let (remote, path) = (remote.clone(), sandbox_path(id));
        blocking(move || {
            let _ = remote.json("DELETE", &path, None);
            Ok(())
        })
    };
    let creating = {
        let remote = remote.clone();
        tokio::task::spawn_blocking(move || remote.json("POST", "/v1/sandboxes", Some(body)))
    };
    tokio::pin!(creating);
    let made = tokio::select! {
        made = &mut creating => made??,
        signal = &mut interrupted => {
            // The sandbox may be made all the same: wait for the answer and remove it.
            eprintln!("berth: interrupted ({}); removing the sandbox being made", signal.name);
            if let Ok(Ok(made)) = creating.await {
                remove(&remote, made["id"].as_str().unwrap_or_default()).await?;
            }
            return Ok(ExitCode::from(128 + signal.number as u8));
        }
    };
    let id = made["id"].as_str().unwrap_or_default().to_string();
    let path = format!("{}/exec", sandbox_path(&id));
    let ran = {
        let remote = remote.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<u8> {
            let response = remote.call("POST", &path, Some(exec))?;
            follow_events(response.into_reader())
        })
    };
    tokio::select! {
        ran = ran => {
            remove(&remote, &id).await?;
            Ok(ExitCode::from(ran??))
        }
        signal = &mut interrupted => {
            eprintln!("berth: interrupted ({}); removing sandbox {id}", signal.name);
            remove(&remote, &id).await?;
            Ok(ExitCode::from(128 + signal.number as u8))
        }
    }
}

pub async fn ps(remote: Remote, args: PsArgs) -> anyhow::Result<ExitCode> {
    let list = blocking(move || {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/sandboxes?limit=1000&after={}", encode(a)),
                None => "/v1/sandboxes?limit=1000".to_string(),
            };
            let page = remote.json("GET", &path, None)?;
            all.extend(page["sandboxes"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_string()),
                None => return Ok(all),
            }
        }
    })
    .await?;
    if args.quiet {
        for s in &list {
            println!("{}", s["id"].as_str().unwrap_or_default());
        }
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<14} {:<16} {:<22} {:<26} STATUS",
            "ID", "NAME", "IMAGE", "CREATED"
        );
        for s in &list {
            println!(
                "{:<14} {:<16} {:<22} {:<26} {}",
                s["id"].as_str().unwrap_or_default(),
                s["name"].as_str().unwrap_or("-"),
                s["image"].as_str().unwrap_or_default(),
                s["created"].as_str().unwrap_or_default(),
                s["state"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(remote: Remote, args: SandboxRef) -> anyhow::Result<ExitCode> {
    let path = sandbox_path(&args.sandbox);
    let value = blocking(move || remote.json("GET", &path, None)).await?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

/// Applies one call to each sandbox, printing each that worked (as the local verbs do).
async fn each(
    remote: Remote,
    references: Vec<String>,
    call: impl Fn(&Remote, &str) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let mut outcome = super::sandbox::Outcome::default();
        for reference in &references {
            outcome.report(reference, call(&remote, reference));
        }
        Ok(outcome.code())
    })
    .await
}

pub async fn rm(remote: Remote, args: RmArgs) -> anyhow::Result<ExitCode> {
    let force = args.force;
    each(remote, args.sandboxes, move |r, reference| {
        let path = sandbox_path(reference);
        if !force {
            let s = r.json("GET", &path, None)?;
            if s["state"] == "running" {
                bail!("sandbox {reference} is running: stop it first (`berth stop {reference}`) or use `berth rm -f {reference}`");
            }
        }
        r.json("DELETE", &path, None).map(drop)
    })
    .await
}

pub async fn stop(remote: Remote, args: StopArgs) -> anyhow::Result<ExitCode> {
    let grace = args.grace;
    each(remote, args.sandboxes, move |r, reference| {
        r.json(
            "POST",
            &format!("{}/stop", sandbox_path(reference)),
            Some(json!({"grace": grace})),
        )
        .map(drop)
    })
    .await
}

pub async fn start(remote: Remote, args: SandboxRefs) -> anyhow::Result<ExitCode> {
    each(remote, args.sandboxes, |r, reference| {
        r.json("POST", &format!("{}/start", sandbox_path(reference)), None)
            .map(drop)
    })
    .await
}

/// `berth pause` / `berth unpause` through a server (`action`: `pause` or `resume`).
pub async fn lifecycle(
    remote: Remote,
    args: SandboxRefs,
    action: &'static str,
) -> anyhow::Result<ExitCode> {
    each(remote, args.sandboxes, move |r, reference| {
        r.json(
            "POST",
            &format!("{}/{action}", sandbox_path(reference)),
            None,
        )
        .map(drop)
    })
    .await
}

/// `berth top` through a server.
pub async fn top(remote: Remote, args: crate::args::TopArgs) -> anyhow::Result<ExitCode> {
    let path = format!("{}/processes", sandbox_path(&args.sandbox));
    let list = blocking(move || remote.json("GET", &path, None)).await?;
    let list: Vec<berth_service::exec::Process> =
        serde_json::from_value(list).context("the server's process list")?;
    super::exec::print_processes(&list, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `berth signal` through a server.
pub async fn signal(remote: Remote, args: crate::args::SignalArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "{}/processes/{}/signal",
        sandbox_path(&args.sandbox),
        encode(&args.tag)
    );
    let body = json!({"signal": args.signal});
    blocking(move || remote.json("POST", &path, Some(body))).await?;
    Ok(ExitCode::SUCCESS)
}

/// `berth fs` through a server.
pub async fn fs(remote: Remote, command: crate::args::FsCommand) -> anyhow::Result<ExitCode> {
    use crate::args::FsCommand;
    let base = format!("{}/files", sandbox_path(super::fs::sandbox_of(&command)));
    let query = |path: &str| format!("?path={}", encode(path));
    blocking(move || {
        match &command {
            FsCommand::Ls(a) => {
                let list = remote.json("GET", &format!("{base}/list{}", query(&a.path)), None)?;
                let list: Vec<berth_service::files::FileEntry> =
                    serde_json::from_value(list).context("the server's listing")?;
                super::fs::print(&list, a.json, false)?;
            }
            FsCommand::Stat(a) => {
                let one = remote.json("GET", &format!("{base}/stat{}", query(&a.path)), None)?;
                let one: berth_service::files::FileEntry =
                    serde_json::from_value(one).context("the server's stat")?;
                super::fs::print(&[one], a.json, true)?;
            }
            FsCommand::Mkdir(a) => {
                remote.json("POST", &format!("{base}/mkdir{}", query(&a.path)), None)?;
            }
            FsCommand::Rm(a) => {
                let path = format!("{base}{}&recursive={}", query(&a.path), a.recursive);
                remote.json("DELETE", &path, None)?;
            }
            FsCommand::Mv(a) => {
                let body = json!({"from": a.from, "to": a.to});
                remote.json("POST", &format!("{base}/move"), Some(body))?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

pub async fn logs(remote: Remote, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let path = format!(
        "{}/logs?follow={}",
        sandbox_path(&args.sandbox),
        args.follow
    );
    blocking(move || {
        let response = remote.call("GET", &path, None)?;
        let mut reader = response.into_reader();
        std::io::copy(&mut reader, &mut std::io::stdout().lock())?;
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// Prints one process's events as `berth exec` does; returns its exit code.
fn follow_events(reader: impl Read) -> anyhow::Result<u8> {
    for line in std::io::BufReader::new(reader).lines() {
        let line = line.context("the server's stream broke")?;
        if line.trim().is_empty() {
            continue; // a keep-alive
        }
        let event: berth_service::ExecEvent = serde_json::from_str(&line)
            .with_context(|| format!("the server sent an event berth does not know: {line}"))?;
        match &event {
            berth_service::ExecEvent::Stdout { .. } => write_out(
                &mut std::io::stdout().lock(),
                &event.bytes().unwrap_or_default(),
            )?,
            berth_service::ExecEvent::Stderr { .. } => write_out(
                &mut std::io::stderr().lock(),
                &event.bytes().unwrap_or_default(),
            )?,
            berth_service::ExecEvent::Started { .. } => {}
            _ => return final_code(&event),
        }
    }
    bail!("the server's stream ended before the process did; its outcome is unknown")
}

fn write_out(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// The exit code a final event means (`exited`, `start_failed`), or the error it reports.
fn final_code(event: &berth_service::ExecEvent) -> anyhow::Result<u8> {
    match event {
        berth_service::ExecEvent::Exited { code, .. } => {
            Ok(u8::try_from(*code).unwrap_or(crate::EXIT_BERTH))
        }
        berth_service::ExecEvent::StartFailed { exit_code, message } => {
            eprintln!("berth: {message}");
            Ok(u8::try_from(*exit_code).unwrap_or(127))
        }
        berth_service::ExecEvent::Error { message } => bail!("{message}"),
        _ => bail!("the server sent a final event berth does not know"),
    }
}

/// `berth exec -i` / `-t` through a server: the process attached over the server's
/// WebSocket (`/pty`), stdin streamed as it is read (bytes, not text), the terminal's size and
/// signals forwarded as locally; without `-t` each output frame says its stream.
async fn exec_attached(
    remote: Remote,
    args: ExecArgs,
    env: serde_json::Map<String, Value>,
    timeout: Option<u64>,
) -> anyhow::Result<ExitCode> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let url = format!(
        "{}{}/pty",
        remote.base.replacen("http://", "ws://", 1),
        sandbox_path(&args.sandbox)
    );
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", remote.key)
            .parse()
            .context("BERTH_API_KEY is not a valid header value")?,
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(response) => {
                let body: Value = response
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                let message = body["message"].as_str().unwrap_or("no message");
                anyhow::anyhow!(
                    "the server answered {}: {message}",
                    response.status().as_u16()
                )
            }
            other => anyhow::anyhow!(
                "cannot reach the berth server at {}: {other}; is `berth serve` running there?",
                remote.base
            ),
        })?;
    let (mut to_server, mut from_server) = socket.split();
    let (rows, cols) = super::exec::terminal_size();
    let start = json!({
        "argv": args.command, "env": env, "cwd": args.cwd, "tty": args.tty,
        "rows": rows, "cols": cols, "timeout_secs": timeout,
    });
    to_server.send(Message::text(start.to_string())).await?;
    let (inputs, mut from_user) = tokio::sync::mpsc::channel::<berth_service::exec::Input>(16);
    if !args.interactive {
        // Nothing will be typed: the process reads EOF, as locally without -i.
        inputs.send(berth_service::exec::Input::Close).await?;
    }
    super::exec::forward_terminal(&inputs, args.interactive, args.tty);
    drop(inputs);
    tokio::spawn(async move {
        use berth_service::exec::Input;
        while let Some(input) = from_user.recv().await {
            let message = match input {
                Input::Stdin(data) => Message::Binary(data),
                Input::Close => Message::text(json!({"close_stdin": true}).to_string()),
                Input::Resize { rows, cols } => {
                    Message::text(json!({"resize": {"rows": rows, "cols": cols}}).to_string())
                }
                Input::Signal(n) => Message::text(json!({"signal": n}).to_string()),
            };
            if to_server.send(message).await.is_err() {
                return;
            }
        }
    });
    let raw = (args.tty && std::io::stdin().is_terminal()).then(super::exec::RawMode::enable);
    while let Some(message) = from_server.next().await {
        match message.context("the server's stream broke")? {
            Message::Binary(data) if args.tty => write_out(&mut std::io::stdout().lock(), &data)?,
            Message::Binary(data) => match data.split_first() {
                Some((1, rest)) => write_out(&mut std::io::stdout().lock(), rest)?,
                Some((2, rest)) => write_out(&mut std::io::stderr().lock(), rest)?,
                _ => {}
            },
            Message::Text(text) => {
                let event: berth_service::ExecEvent =
                    serde_json::from_str(&text).with_context(|| {
                        format!("the server sent an event berth does not know: {text}")
                    })?;
                drop(raw);
                return Ok(ExitCode::from(final_code(&event)?));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    bail!("the server's stream ended before the process did; its outcome is unknown")
}

pub async fn exec(remote: Remote, args: ExecArgs) -> anyhow::Result<ExitCode> {
    if args.user.is_some() {
        bail!("--user is not available through a server: processes run as the sandbox's user");
    }
    let base = sandbox_path(&args.sandbox);
    let env = values(&args.env)?;
    let timeout = (!args.timeout.is_zero()).then(|| args.timeout.as_secs().max(1));
    if let Some(tag) = args.attach.clone() {
        return blocking(move || {
            let response = remote.call(
                "GET",
                &format!("{base}/processes/{}/output", encode(&tag)),
                None,
            )?;
            Ok(ExitCode::from(follow_events(response.into_reader())?))
        })
        .await;
    }
    if args.detach {
        let id = args
            .tag
            .clone()
            .unwrap_or_else(|| format!("p-{}", berth_sandbox::owner::new_id()));
        let body = json!({"id": id, "argv": args.command, "env": env, "cwd": args.cwd, "timeout_secs": timeout});
        let started =
            blocking(move || remote.json("POST", &format!("{base}/processes"), Some(body))).await?;
        println!("{}", started["id"].as_str().unwrap_or_default());
        return Ok(ExitCode::SUCCESS);
    }
    if args.interactive || args.tty {
        return exec_attached(remote, args, env, timeout).await;
    }
    let body = json!({"argv": args.command, "env": env, "cwd": args.cwd, "timeout_secs": timeout});
    blocking(move || {
        let response = remote.call("POST", &format!("{base}/exec"), Some(body))?;
        Ok(ExitCode::from(follow_events(response.into_reader())?))
    })
    .await
}

/// `SANDBOX:PATH` → (sandbox, path).
fn remote_side(text: &str) -> Option<(String, String)> {
    let (sandbox, path) = text.split_once(':')?;
    (!sandbox.is_empty() && !sandbox.contains('/') && path.starts_with('/'))
        .then(|| (sandbox.to_string(), path.to_string()))
}

pub async fn cp(remote: Remote, args: CpArgs) -> anyhow::Result<ExitCode> {
    match (remote_side(&args.source), remote_side(&args.destination)) {
        (None, Some((sandbox, dest))) => {
            let source = args.source.clone();
            blocking(move || upload(&remote, Path::new(&source), &sandbox, &dest)).await?;
        }
        (Some((sandbox, path)), None) => {
            let dest = args.destination.clone();
            blocking(move || download(&remote, &sandbox, &path, Path::new(&dest))).await?;
        }
        _ => bail!("one side of `berth cp` must be SANDBOX:/ABSOLUTE/PATH and the other a host path, e.g. berth cp ./data.txt $id:/workspace/"),
    }
    Ok(ExitCode::SUCCESS)
}

fn upload(remote: &Remote, source: &Path, sandbox: &str, dest: &str) -> anyhow::Result<()> {
    let meta = super::cp::source_metadata(source)?;
    let name = source
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    let base = sandbox_path(sandbox);
    let is_dir = dest.ends_with('/')
        || remote
            .json(
                "GET",
                &format!("{base}/files/stat?path={}", encode(dest)),
                None,
            )
            .is_ok_and(|s| s["kind"] == "dir");
    if meta.is_file() {
        let target = if is_dir {
            format!("{}/{name}", dest.trim_end_matches('/'))
        } else {
            dest.to_string()
        };
        use std::os::unix::fs::PermissionsExt;
        let mode = format!("{:o}", meta.permissions().mode() & 0o7777);
        let file = std::fs::File::open(source)?;
        remote
            .request(
                "PUT",
                &format!("{base}/files?path={}&mode={mode}", encode(&target)),
            )
            .set("Content-Length", &meta.len().to_string())
            .send(file)
            .map_err(|e| remote.failed(e))?;
        return Ok(());
    }
    // A directory goes as a tar stream, packed on the fly.
    let (dir, entry) = if is_dir {
        (dest.trim_end_matches('/').to_string(), name)
    } else {
        let p = Path::new(dest);
        (
            p.parent().map_or("/".into(), |p| p.display().to_string()),
            p.file_name()
                .map_or(name, |n| n.to_string_lossy().into_owned()),
        )
    };
    let (reader, writer) = std::io::pipe()?;
    let source = source.to_path_buf();
    let packer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut tar = tar::Builder::new(writer);
        tar.follow_symlinks(false);
        tar.append_dir_all(&entry, &source)?;
        tar.finish()
    });
    let sent = remote
        .request("PUT", &format!("{base}/archive?path={}", encode(&dir)))
        .set("Content-Type", "application/x-tar")
        .send(reader)
        .map_err(|e| remote.failed(e));
    let packed = packer
        .join()
        .map_err(|_| anyhow::anyhow!("packing the directory failed"))?;
    sent?;
    packed.context("packing the directory")?;
    Ok(())
}

fn download(remote: &Remote, sandbox: &str, path: &str, dest: &Path) -> anyhow::Result<()> {
    let base = sandbox_path(sandbox);
    let stat = remote.json(
        "GET",
        &format!("{base}/files/stat?path={}", encode(path)),
        None,
    )?;
    let name = Path::new(path)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "root".into());
    if stat["kind"] == "file" {
        let target = match super::cp::download_target(dest)? {
            (dir, None) => dir.join(&name),
            (dir, Some(rename)) => dir.join(rename),
        };
        let response = remote.call("GET", &format!("{base}/files?path={}", encode(path)), None)?;
        let expected: Option<u64> = response
            .header("content-length")
            .and_then(|v| v.parse().ok());
        if let Some(dir) = target.parent() {
            super::cp::sweep_parts(dir);
        }
        let tmp = super::cp::part_path(&target);
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        let copied = std::io::copy(&mut response.into_reader(), &mut file);
        let copied = match copied {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                bail!(
                    "the download broke off: {e}; nothing was written to {}",
                    target.display()
                );
            }
        };
        if expected.is_some_and(|n| n != copied) {
            let _ = std::fs::remove_file(&tmp);
            bail!(
                "the download was cut short ({copied} bytes); nothing was written to {}",
                target.display()
            );
        }
        super::cp::put_in_place(&tmp, &target)
            .with_context(|| format!("writing {}", target.display()))?;
        return Ok(());
    }
    let response = remote.call(
        "GET",
        &format!("{base}/archive?path={}", encode(path)),
        None,
    )?;
    let (into, rename) = super::cp::download_target(dest)?;
    super::cp::unpack(response.into_reader(), &into, rename.as_deref())
}

/// The user labels a kept agent sandbox carries on a server: what it was made from (a run
/// with other settings gets a new one) and that it is kept.
const SPEC_LABEL: &str = "berth-cli.agent-spec";
const KEEP_LABEL: &str = "berth-cli.agent-keep";

/// `berth agent run` through a server: a sandbox for the run (the CLI's API host and
/// `--allow-host`s reachable through its gateway, `--secret` values handed over write-only),
/// the run streamed as the same events and summary as locally. Without `--keep` the sandbox
/// is removed after; with `--name` it mounts the agent's home on the server, so `--resume`
/// continues a session of the agent (the server checks that it is one); with `--keep` the
/// agent's kept sandbox is reused (started or resumed when it was stopped or paused).
pub async fn agent_run(
    remote: Remote,
    args: crate::args::AgentRunArgs,
) -> anyhow::Result<ExitCode> {
    let Prepared {
        cli,
        keep,
        max_kept,
        print,
        sandbox,
        run,
        missing,
    } = prepare(&args, &super::agent::prompt(&args)?.0)?;
    let name = args.agent.name.clone();
    let json_out = args.json;
    let fail_on_denial = args.fail_on_denial;
    blocking(move || {
        let kept = match (&name, keep) {
            (Some(n), true) => kept_sandboxes(&remote, n)?,
            _ => Vec::new(),
        };
        let reuse = kept_sandbox(&kept, &print, &remote)?;
        let reused = reuse.is_some();
        let id = match reuse {
            Some(id) => id,
            None => {
                let made = remote.json("POST", "/v1/sandboxes", Some(sandbox))?;
                made["id"].as_str().unwrap_or_default().to_string()
            }
        };
        if !json_out {
            let how = if reused { "reusing" } else { "in" };
            eprintln!("berth: {how} sandbox {id} (on {})", remote.base);
        }
        if keep {
            prune_kept(&remote, &kept, max_kept, &id);
        }
        let started = std::time::Instant::now();
        let result = stream_run(&remote, &id, &run, cli, json_out).map(|mut report| {
            report.missing_env = missing;
            report
        });
        if !keep {
            // Made for this run, removed after it, whatever happened.
            let _ = remote.json("DELETE", &sandbox_path(&id), None);
        }
        let mut report = result?;
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.fail_on_denial = fail_on_denial;
        report.agent = name;
        report.kept = keep;
        if let (Some(asked), Some(got)) = (&args.resume, &report.session_id) {
            if !args.fork && asked != got {
                report.problems.push(format!(
                    "{cli} did not resume session {asked}: it started {got} instead"
                ));
            }
        }
        Ok(super::agent::finish(&report, json_out))
    })
    .await
}

/// An agent run through a server, resolved at this edge: the sandbox to make (or find kept
/// by its fingerprint) and the run to start in it.
struct Prepared {
    cli: berth_events::Cli,
    keep: bool,
    max_kept: usize,
    /// The settings' fingerprint: a kept sandbox made from others is not reused.
    print: String,
    sandbox: Value,
    run: Value,
    missing: Vec<String>,
}

/// `args` with the prompt already read (a session's start has none).
fn prepare(args: &crate::args::AgentRunArgs, prompt: &str) -> anyhow::Result<Prepared> {
    if !args.agent.credentials.is_empty() {
        bail!("--credentials mounts a host file, which a server never does: give the key with --secret instead");
    }
    let name = args.agent.name.clone();
    if let Some(n) = &name {
        berth_runtimes::store::validate_name(n)?;
    }
    if args.keep && name.is_none() {
        bail!("--keep needs --name: a kept sandbox belongs to a named agent (e.g. --name reviewer --keep)");
    }
    if args.resume.is_some() && name.is_none() {
        bail!("--resume needs --name: sessions live in a named agent's home (e.g. --name reviewer --resume ID)");
    }
    if args.fork && args.resume.is_none() {
        bail!("--fork needs --resume SESSION (e.g. --resume 1d1e46f9-… --fork)");
    }
    let settings = super::agent::settings(&args.agent)?;
    let keep = args.keep || settings.keep == Some(true);
    let max_kept = args.max_containers.or(settings.max_containers).unwrap_or(1);
    let cli = settings.cli();
    let policy = settings.egress();
    let secrets = secret_values(&policy.secrets)?;
    let (env, missing) = berth_runtimes::launch::cli_env(&settings);
    let env: serde_json::Map<String, Value> = env
        .into_iter()
        .filter(|(k, _)| k != "HOME")
        .map(|(k, v)| (k, json!(v)))
        .collect();
    let timeout = settings
        .timeout
        .unwrap_or(berth_runtimes::settings::DEFAULT_AGENT_TIMEOUT)
        .as_secs()
        .max(1);
    let workspace = settings.workspace.as_ref().map(|w| {
        std::fs::canonicalize(&w.host)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| w.host.clone())
    });
    let network = match settings.network {
        Some(berth_spec::NetworkMode::Bridge) => "bridge",
        Some(berth_spec::NetworkMode::Isolated) => "isolated",
        _ => "none",
    };
    let print = berth_runtimes::launch::fingerprint(&settings, &settings.sandbox_spec()?);
    let mut sandbox = json!({
        "image": settings.image(),
        "memory": settings.memory,
        "cpus": settings.cpus,
        "pids": settings.pids,
        "network": network,
        "allow_hosts": policy.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "secrets": secrets,
        "workspace": workspace,
        "read_only": settings.read_only.unwrap_or(false),
        "agent": name,
        // The server ends it if this client is never heard from again.
        "timeout": timeout + 300,
    });
    if keep {
        // Kept for the agent's next run: stopped after an hour without activity, started
        // again by that run.
        sandbox["timeout"] = json!(0);
        sandbox["idle_timeout"] = json!(3600);
        sandbox["on_timeout"] = json!("stop");
        sandbox["labels"] = json!({SPEC_LABEL: print, KEEP_LABEL: "true"});
    }
    let run = json!({
        "id": format!("run-{}", uuid::Uuid::new_v4().simple()),
        "cli": cli.to_string(),
        "prompt": prompt,
        "model": settings.model,
        "max_turns": settings.max_turns,
        "permission_mode": settings.permission_mode,
        "env": env,
        "timeout_secs": timeout,
        "resume": args.resume,
        "fork": args.fork,
    });
    Ok(Prepared {
        cli,
        keep,
        max_kept,
        print,
        sandbox,
        run,
        missing,
    })
}

/// Starts `run` (an agent run's body) in sandbox `id` and streams its events as
/// `berth agent run` prints them, to the CLI's end.
fn stream_run(
    remote: &Remote,
    id: &str,
    run: &Value,
    cli: berth_events::Cli,
    json_out: bool,
) -> anyhow::Result<berth_runtimes::launch::RunReport> {
    let base = sandbox_path(id);
    remote.json("POST", &format!("{base}/agent-runs"), Some(run.clone()))?;
    let run_id = run["id"].as_str().unwrap_or_default();
    let events = remote.call(
        "GET",
        &format!("{base}/agent-runs/{run_id}/events?cli={cli}"),
        None,
    )?;
    let mut report = berth_runtimes::launch::RunReport::new(cli, id);
    if follow_run(events.into_reader(), &mut report, json_out)? {
        bail!("the server ended run {run_id} as a session's turn, which a one-shot run is not: this berth and the server do not match; update one of them");
    }
    Ok(report)
}

/// Reads a run's (or a turn's) items into `report`, printing each event: true when a turn
/// ended (the CLI still runs), false when the CLI ended.
fn follow_run(
    reader: impl Read,
    report: &mut berth_runtimes::launch::RunReport,
    json_out: bool,
) -> anyhow::Result<bool> {
    for line in std::io::BufReader::new(reader).lines() {
        let line = line.context("the server's stream broke")?;
        if line.trim().is_empty() {
            continue;
        }
        let item: Value = serde_json::from_str(&line)?;
        match item["kind"].as_str() {
            Some("event") => {
                let record: berth_events::Record = serde_json::from_value(item["record"].clone())?;
                report.summary.add(&record);
                super::agent::print_event(&record, json_out);
            }
            Some("turn_ended") => {
                report.cli_exit_code = Some(0);
                if report.summary.session_id.is_some() {
                    report.session_id = report.summary.session_id.clone();
                }
                return Ok(true);
            }
            Some("finished") => {
                report.cli_exit_code = item["exit_code"].as_i64().map(|c| c as i32);
                report.timed_out = item["timed_out"].as_bool().unwrap_or(false);
                if report.summary.session_id.is_some() {
                    report.session_id = report.summary.session_id.clone();
                }
                return Ok(false);
            }
            _ => bail!(
                "{}",
                item["message"].as_str().unwrap_or("the run's stream broke")
            ),
        }
    }
    bail!("the server's stream ended before the run did")
}

/// The process id prefix of an interactive session's run.
const SESSION_RUN: &str = "session-";

/// The agent's live interactive session among its kept sandboxes: (sandbox, run id).
fn live_session(remote: &Remote, kept: &[Value]) -> anyhow::Result<Option<(String, String)>> {
    for sandbox in kept.iter().rev().filter(|s| s["state"] == "running") {
        let id = sandbox["id"].as_str().unwrap_or_default();
        let list = remote.json("GET", &format!("{}/processes", sandbox_path(id)), None)?;
        let list: Vec<berth_service::exec::Process> = serde_json::from_value(list)?;
        let live = list.iter().filter(|p| p.running).find_map(|p| {
            p.id.strip_prefix("agent.")
                .filter(|run| run.starts_with(SESSION_RUN))
        });
        if let Some(run) = live {
            return Ok(Some((id.to_string(), run.to_string())));
        }
    }
    Ok(None)
}

/// `berth agent session start` through a server: the agent's kept sandbox there (made or
/// reused as `agent run --keep` does), and Claude Code in it as an interactive run that
/// waits for turns.
pub async fn session_start(
    remote: Remote,
    args: crate::args::SessionStartArgs,
) -> anyhow::Result<ExitCode> {
    let Some(name) = args.agent.name.clone() else {
        bail!("a session belongs to a named agent: berth agent session start --name pair --workspace .");
    };
    let run_args = crate::args::AgentRunArgs {
        agent: args.agent.clone(),
        prompt: None,
        prompt_file: None,
        keep: true,
        max_containers: None,
        resume: args.resume.clone(),
        fork: false,
        json: args.json,
        fail_on_denial: false,
    };
    let prepared = prepare(&run_args, "")?;
    let cli = prepared.cli;
    let mut run = prepared.run.clone();
    let run_id = format!("{SESSION_RUN}{}", uuid::Uuid::new_v4().simple());
    run["id"] = json!(run_id);
    run["interactive"] = json!(true);
    run["timeout_secs"] = Value::Null;
    let json_out = args.json;
    blocking(move || {
        let kept = kept_sandboxes(&remote, &name)?;
        if let Some((sandbox, run)) = live_session(&remote, &kept)? {
            bail!("agent {name:?} already has a running session ({run} in sandbox {sandbox}); `berth agent session stop {name}` ends it");
        }
        let id = match kept_sandbox(&kept, &prepared.print, &remote)? {
            Some(id) => id,
            None => {
                let made = remote.json("POST", "/v1/sandboxes", Some(prepared.sandbox))?;
                made["id"].as_str().unwrap_or_default().to_string()
            }
        };
        prune_kept(&remote, &kept, prepared.max_kept, &id);
        let started = remote.json(
            "POST",
            &format!("{}/agent-runs", sandbox_path(&id)),
            Some(run),
        )?;
        let session_id = started["session_id"].as_str().unwrap_or_default();
        if json_out {
            println!(
                "{}",
                json!({"agent": name, "session_id": session_id, "sandbox_id": id, "cli": cli.to_string()})
            );
        } else {
            println!("{session_id}");
            eprintln!("berth: agent {name:?} is listening in sandbox {id} (on {}); send it turns with `berth agent send {name} \"…\"`", remote.base);
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// `berth agent send` through a server: one turn to the agent's live session there; if it
/// has none (its process died, its sandbox was stopped), a one-shot run in its kept sandbox
/// that resumes its last session answers instead, as locally.
pub async fn send(remote: Remote, args: crate::args::AgentSendArgs) -> anyhow::Result<ExitCode> {
    berth_runtimes::store::validate_name(&args.name)?;
    let timeout = args.timeout.as_secs().max(1);
    blocking(move || {
        let name = args.name.clone();
        let agent = remote.json("GET", &format!("/v1/agents/{}", encode(&name)), None).map_err(
            |e| anyhow::anyhow!("{e:#}; start a session with `berth agent session start --name {name}`"),
        )?;
        let cli: berth_events::Cli = agent["cli"].as_str().unwrap_or("claude").parse()?;
        let kept = kept_sandboxes(&remote, &name)?;
        let started = std::time::Instant::now();
        let mut report = match live_session(&remote, &kept)? {
            Some((sandbox, run)) => {
                let turn = json!({"message": args.message, "cli": cli.to_string(), "timeout_secs": timeout});
                let reply = remote.call(
                    "POST",
                    &format!("{}/agent-runs/{run}/turns", sandbox_path(&sandbox)),
                    Some(turn),
                )?;
                let mut report = berth_runtimes::launch::RunReport::new(cli, &sandbox);
                report.session_id = agent["last_session"].as_str().map(str::to_string);
                if !follow_run(reply.into_reader(), &mut report, args.json)? && !report.timed_out {
                    report.problems.push(format!(
                        "the session process exited (code {}) before the turn's result",
                        report.cli_exit_code.unwrap_or(-1)
                    ));
                }
                report
            }
            None => {
                let Some(session) = agent["last_session"].as_str() else {
                    bail!("agent {name:?} has no session to send to: start one with `berth agent session start --name {name}`");
                };
                let Some(sandbox) = kept.last() else {
                    bail!("agent {name:?} has no sandbox on the server: start a session with `berth agent session start --name {name}`");
                };
                let id = ready(&remote, sandbox)?;
                eprintln!("berth: agent {name:?} has no running session; answered with a one-shot run that resumed the session");
                let run = json!({
                    "id": format!("run-{}", uuid::Uuid::new_v4().simple()),
                    "cli": cli.to_string(),
                    "prompt": args.message,
                    "timeout_secs": timeout,
                    "resume": session,
                });
                stream_run(&remote, &id, &run, cli, args.json)?
            }
        };
        report.duration_ms = started.elapsed().as_millis() as u64;
        report.agent = Some(name);
        report.kept = true;
        Ok(super::agent::finish(&report, args.json))
    })
    .await
}

/// `berth agent session stop` through a server: the live session's run cancelled (the
/// server closes its stdin, then sends SIGTERM).
pub async fn session_stop(
    remote: Remote,
    args: crate::args::AgentNameArg,
) -> anyhow::Result<ExitCode> {
    blocking(move || {
        let kept = kept_sandboxes(&remote, &args.name)?;
        match live_session(&remote, &kept)? {
            Some((sandbox, run)) => {
                let cancel = format!("{}/agent-runs/{run}/cancel", sandbox_path(&sandbox));
                remote.json("POST", &cancel, None)?;
                eprintln!("berth: stopped the session of agent {:?}", args.name);
            }
            None => eprintln!("berth: agent {:?} has no running session", args.name),
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}

/// The agent's kept sandbox made from the same settings, made ready for a run; the newest
/// one wins.
fn kept_sandbox(kept: &[Value], print: &str, remote: &Remote) -> anyhow::Result<Option<String>> {
    match kept.iter().rev().find(|s| s["labels"][SPEC_LABEL] == print) {
        Some(sandbox) => ready(remote, sandbox).map(Some),
        None => Ok(None),
    }
}

/// A listed sandbox made ready for a run (started when stopped, resumed when paused); its id.
fn ready(remote: &Remote, sandbox: &Value) -> anyhow::Result<String> {
    let id = sandbox["id"].as_str().unwrap_or_default().to_string();
    match sandbox["state"].as_str() {
        Some("stopped") => {
            remote.json("POST", &format!("{}/start", sandbox_path(&id)), None)?;
        }
        Some("paused") => {
            remote.json("POST", &format!("{}/resume", sandbox_path(&id)), None)?;
        }
        _ => {}
    }
    Ok(id)
}

/// The agent's kept sandboxes on the server, oldest first.
fn kept_sandboxes(remote: &Remote, name: &str) -> anyhow::Result<Vec<Value>> {
    let list = remote.json(
        "GET",
        &format!("/v1/sandboxes?agent={}&limit=1000", encode(name)),
        None,
    )?;
    Ok(list["sandboxes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["labels"][KEEP_LABEL] == "true")
        .cloned()
        .collect())
}

/// Removes the oldest of `kept` beyond `max` (never `current`).
fn prune_kept(remote: &Remote, kept: &[Value], max: usize, current: &str) {
    let ids: Vec<&str> = kept.iter().filter_map(|s| s["id"].as_str()).collect();
    // `current` is in `kept` unless it was made just now.
    let count = ids.len() + usize::from(!ids.contains(&current));
    let excess = count.saturating_sub(max.max(1));
    for old in ids.into_iter().filter(|id| *id != current).take(excess) {
        let _ = remote.json("DELETE", &sandbox_path(old), None);
    }
}

/// `berth agent ls` through a server: the caller's named agents there.
pub async fn agent_ls(remote: Remote, args: crate::args::AgentLsArgs) -> anyhow::Result<ExitCode> {
    let agents = blocking(move || remote.json("GET", "/v1/agents", None)).await?;
    let rows = agents.as_array().cloned().unwrap_or_default();
    super::agent::print_agents(&rows, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// `berth agent rm` through a server: the agents' sandboxes, homes and sessions there.
pub async fn agent_rm(remote: Remote, args: crate::args::AgentRmArgs) -> anyhow::Result<ExitCode> {
    blocking(move || {
        for name in &args.names {
            let path = format!("/v1/agents/{}", encode(name));
            let agent = remote.json("GET", &path, None)?;
            let n = agent["sandboxes"].as_array().map_or(0, Vec::len);
            remote.json("DELETE", &path, None)?;
            eprintln!(
                "berth: removed agent {name:?} ({n} sandbox(es), its home volume and sessions)"
            );
        }
        Ok(ExitCode::SUCCESS)
    })
    .await
}
