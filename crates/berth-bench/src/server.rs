//! `berth serve` against the direct paths: an exec round trip through the HTTP API vs the
//! agent's own API vs Docker's exec API, on one container; create through the API vs
//! `berth create`; and the server's memory with 100 sandboxes.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_sandbox::agent_client;
use berth_sandbox::store::Store;
use serde_json::{json, Value};

use crate::sandbox::{berth_api, docker, docker_api, Sandbox};
use crate::Series;

/// A `berth serve` of its own (state in a temporary directory), stopped on drop.
struct Server {
    child: Child,
    url: String,
    key: String,
    state: tempfile::TempDir,
    agent: ureq::Agent,
}

impl Server {
    fn start(berth: &str) -> anyhow::Result<Self> {
        let state = tempfile::tempdir()?;
        let init = Command::new(berth)
            .args(["server", "init"])
            .env("BERTH_STATE_DIR", state.path())
            .env_remove("BERTH_SERVER")
            .output()?;
        if !init.status.success() {
            bail!(
                "berth server init: {}",
                String::from_utf8_lossy(&init.stderr)
            );
        }
        let key = String::from_utf8(init.stdout)?.trim().to_string();
        let mut child = Command::new(berth)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("BERTH_STATE_DIR", state.path())
            .env_remove("BERTH_SERVER")
            .stderr(Stdio::piped())
            .spawn()?;
        let mut lines = BufReader::new(child.stderr.take().context("server stderr")?).lines();
        let url = loop {
            let Some(line) = lines.next() else {
                bail!("berth serve ended before it listened")
            };
            if let Some(u) = line?.strip_prefix("berth: listening on ") {
                break u.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            url,
            key,
            state,
            agent: ureq::AgentBuilder::new().build(),
        })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<ureq::Response> {
        let r = self
            .agent
            .request(method, &format!("{}{path}", self.url))
            .set("Authorization", &format!("Bearer {}", self.key));
        Ok(match body {
            Some(b) => r.send_json(b)?,
            None => r.call()?,
        })
    }

    fn create(&self) -> anyhow::Result<String> {
        let v: Value = self
            .call("POST", "/v1/sandboxes", Some(json!({})))?
            .into_json()?;
        v["id"].as_str().map(str::to_string).context("no id")
    }

    /// One exec to completion; returns its exit code.
    fn exec(&self, id: &str, argv: &[&str]) -> anyhow::Result<i64> {
        let response = self.call(
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"argv": argv})),
        )?;
        let mut reader = BufReader::new(response.into_reader());
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            let text = std::mem::take(&mut line);
            if text.trim().is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&text)?;
            if event["type"] == "exited" {
                // Read to the body's end, so the connection goes back to the pool.
                std::io::copy(&mut reader, &mut std::io::sink())?;
                return event["code"].as_i64().context("no code");
            }
            if event["type"] == "start_failed" || event["type"] == "error" {
                bail!("exec failed: {}", text.trim());
            }
        }
        bail!("no exit")
    }

    fn remove(&self, id: &str) -> anyhow::Result<()> {
        self.call("DELETE", &format!("/v1/sandboxes/{id}"), None)?;
        Ok(())
    }

    /// The server process's resident memory in bytes.
    fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .context("no VmRSS")?
            .parse()?;
        Ok(kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exec round trip of `true` on one API-made sandbox, three ways.
pub async fn exec(berth: &str, iterations: usize, warmup: usize) -> anyhow::Result<Vec<Series>> {
    let server = Server::start(berth)?;
    let id = server.create()?;
    // The same sandbox's record, from the server's database: the direct paths use it.
    let db = berth_server::db::Db::open(server.state.path(), None, false)?;
    let record = db
        .records()
        .into_iter()
        .find(|r| r.id == id)
        .context("the sandbox's record")?;
    let docker = docker().await?;
    let mut client = agent_client::connect(&record.run_dir, &record.token).await?;
    let mut series = vec![
        Series::new(
            "docker API exec",
            "create + start/attach + inspect via bollard".into(),
        ),
        Series::new(
            "berth agent API exec",
            "one Exec stream on an open agent connection".into(),
        ),
        Series::new(
            "berth HTTP API exec",
            "POST /v1/sandboxes/{id}/exec (NDJSON), keep-alive".into(),
        ),
    ];
    // Each contender is timed on a quiet machine: Docker's own work after an exec (runc, the
    // shim) would otherwise land on whichever call comes next on these two cores.
    let settle = Duration::from_millis(20);
    for i in 0..warmup + iterations {
        let t = Instant::now();
        docker_api(&docker, &record.container_id, &["true"]).await?;
        let a = t.elapsed();
        tokio::time::sleep(settle).await;
        let t = Instant::now();
        berth_api(&mut client, &["true"]).await?;
        let b = t.elapsed();
        tokio::time::sleep(settle).await;
        // Timed inside the blocking section: handing this worker's tasks to another thread
        // on the way in is the benchmark's own cost, not the server's.
        let (code, c) = tokio::task::block_in_place(|| {
            let t = Instant::now();
            server.exec(&id, &["true"]).map(|code| (code, t.elapsed()))
        })?;
        tokio::time::sleep(settle).await;
        if code != 0 {
            bail!("exec through the server answered {code}");
        }
        if i >= warmup {
            for (s, v) in series.iter_mut().zip([a, b, c]) {
                s.push(v);
            }
        }
    }
    server.remove(&id)?;
    Ok(series)
}

/// Create + first exec: through the API vs `berth create` + `berth exec`.
pub fn create(berth: &str, iterations: usize) -> anyhow::Result<Vec<Series>> {
    let server = Server::start(berth)?;
    let mut series = vec![
        Series::new(
            "berth create + exec (CLI)",
            "berth create; berth exec <id> -- true".into(),
        ),
        Series::new(
            "API create + exec",
            "POST /v1/sandboxes; POST …/exec true".into(),
        ),
    ];
    for _ in 0..iterations {
        let t = Instant::now();
        let sb = Sandbox::create(berth, &[])?;
        let ok = Command::new(berth)
            .args(["exec", &sb.id, "--", "true"])
            .status()?
            .success();
        let cli = t.elapsed();
        if !ok {
            bail!("first exec failed");
        }
        drop(sb);
        let t = Instant::now();
        let id = server.create()?;
        server.exec(&id, &["true"])?;
        let api = t.elapsed();
        server.remove(&id)?;
        series[0].push(cli);
        series[1].push(api);
    }
    Ok(series)
}

/// The server's RSS idle, then with `count` sandboxes made through its API; returns
/// (idle bytes, loaded bytes, time to create them all).
pub fn memory(berth: &str, count: usize) -> anyhow::Result<(u64, u64, Duration)> {
    let server = Server::start(berth)?;
    std::thread::sleep(Duration::from_millis(300));
    let idle = server.rss()?;
    let t = Instant::now();
    let mut ids = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for _ in 0..count {
            ids.push(server.create()?);
        }
        // Every one answers.
        for id in &ids {
            server.exec(id, &["true"])?;
        }
        Ok(())
    })();
    let took = t.elapsed();
    let loaded = server.rss();
    for id in &ids {
        let _ = server.remove(id);
    }
    result?;
    Ok((idle, loaded?, took))
}
