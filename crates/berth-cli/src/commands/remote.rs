//! The CLI's remote mode: with `BERTH_SERVER` (or `--server`) and `BERTH_API_KEY`, the same
//! verbs go through a berth server's HTTP API, with the same output, `--json` and exit codes.
//!
//! This is an edge like the local commands: it resolves what belongs to the caller (the
//! environment for `--env NAME` and `--secret NAME`, host paths for `cp`) and sends only
//! values; the server never reads this machine.

use std::io::{BufRead, Read, Write};
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

pub async fn create(remote: Remote, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let flags = &args.sandbox;
    if !flags.volumes.is_empty() || !flags.cap_add.is_empty() || flags.allow_privilege_escalation {
        bail!("--volume, --cap-add and --allow-privilege-escalation are not available through a server: it mounts only under its --workspace-root and never weakens the hardening");
    }
    let env = values(&flags.env)?;
    let secrets = secret_values(&crate::args::secret_specs(&flags.secrets)?)?;
    let workspace = flags.workspace.as_ref().map(|w| {
        std::fs::canonicalize(&w.host)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| w.host.clone())
    });
    let body = json!({
        "image": flags.image,
        "name": args.name,
        "command": args.command,
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
    });
    let json_out = args.json;
    let sandbox = blocking(move || remote.json("POST", "/v1/sandboxes", Some(body))).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&sandbox)?);
    } else {
        println!("{}", sandbox["id"].as_str().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
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
            berth_service::ExecEvent::Stdout { .. } => {
                let mut out = std::io::stdout().lock();
                out.write_all(&event.bytes().unwrap_or_default())?;
                out.flush()?;
            }
            berth_service::ExecEvent::Stderr { .. } => {
                let mut err = std::io::stderr().lock();
                err.write_all(&event.bytes().unwrap_or_default())?;
                err.flush()?;
            }
            berth_service::ExecEvent::Exited { code, .. } => {
                return Ok(u8::try_from(*code).unwrap_or(crate::EXIT_BERTH))
            }
            berth_service::ExecEvent::StartFailed { exit_code, message } => {
                eprintln!("berth: {message}");
                return Ok(u8::try_from(*exit_code).unwrap_or(127));
            }
            berth_service::ExecEvent::Error { message } => bail!("{message}"),
            berth_service::ExecEvent::Started { .. } => {}
        }
    }
    bail!("the server's stream ended before the process did; its outcome is unknown")
}

pub async fn exec(remote: Remote, args: ExecArgs) -> anyhow::Result<ExitCode> {
    if args.tty {
        bail!("-t (a terminal) is not available through a server yet: run without -t, or on the server's host");
    }
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
    let stdin = if args.interactive {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin (remote mode sends it as text)")?;
        Some(text)
    } else {
        None
    };
    let body = json!({"argv": args.command, "env": env, "cwd": args.cwd, "timeout_secs": timeout, "stdin": stdin});
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
        let tmp = target.with_extension("berth-part");
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
        std::fs::rename(&tmp, &target)?;
        return Ok(());
    }
    let response = remote.call(
        "GET",
        &format!("{base}/archive?path={}", encode(path)),
        None,
    )?;
    let (into, rename) = super::cp::download_target(dest)?;
    let mut archive = tar::Archive::new(response.into_reader());
    for entry in archive.entries()? {
        let mut entry = entry?;
        let mut rel = entry.path()?.into_owned();
        if let Some(new) = &rename {
            if let Ok(rest) = rel.strip_prefix(&name) {
                rel = Path::new(new).join(rest);
            }
        }
        if rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "the server sent an archive entry outside the destination: {}",
                rel.display()
            );
        }
        let target = into.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        entry.unpack(&target)?;
    }
    Ok(())
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
    let (prompt, _) = super::agent::prompt(&args)?;
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
    let run_id = format!("run-{}", uuid::Uuid::new_v4().simple());
    let run = json!({
        "id": run_id,
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
        let result = (|| -> anyhow::Result<berth_runtimes::launch::RunReport> {
            let base = sandbox_path(&id);
            remote.json("POST", &format!("{base}/agent-runs"), Some(run))?;
            let events = remote.call(
                "GET",
                &format!("{base}/agent-runs/{run_id}/events?cli={cli}"),
                None,
            )?;
            let mut report = berth_runtimes::launch::RunReport::new(cli, &id);
            report.missing_env = missing;
            for line in std::io::BufReader::new(events.into_reader()).lines() {
                let line = line.context("the server's stream broke")?;
                if line.trim().is_empty() {
                    continue;
                }
                let item: Value = serde_json::from_str(&line)?;
                match item["kind"].as_str() {
                    Some("event") => {
                        let record: berth_events::Record =
                            serde_json::from_value(item["record"].clone())?;
                        report.summary.add(&record);
                        super::agent::print_event(&record, json_out);
                    }
                    Some("finished") => {
                        report.cli_exit_code = item["exit_code"].as_i64().map(|c| c as i32);
                        report.timed_out = item["timed_out"].as_bool().unwrap_or(false);
                        report.session_id = report.summary.session_id.clone();
                        return Ok(report);
                    }
                    _ => bail!(
                        "{}",
                        item["message"].as_str().unwrap_or("the run's stream broke")
                    ),
                }
            }
            bail!("the server's stream ended before the run did")
        })();
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

/// The agent's kept sandbox made from the same settings, made ready for a run (started when
/// stopped, resumed when paused); the newest one wins.
fn kept_sandbox(kept: &[Value], print: &str, remote: &Remote) -> anyhow::Result<Option<String>> {
    let Some(sandbox) = kept.iter().rev().find(|s| s["labels"][SPEC_LABEL] == print) else {
        return Ok(None);
    };
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
    Ok(Some(id))
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
