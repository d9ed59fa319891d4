//! Benchmarks of long-lived sandboxes: berth's agent against Docker's own exec and cp, on the
//! same container and image.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_protocol::v1::{exec_input, exec_output, ExecInput, ExecStart, HelloRequest};
use berth_sandbox::agent_client::{self, AgentClient};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;

use crate::{time_once, Series};

/// A sandbox made with the berth CLI, removed on drop.
pub struct Sandbox {
    berth: String,
    pub id: String,
    pub container: String,
    pub run_dir: PathBuf,
    pub token: String,
}

impl Sandbox {
    pub fn create(berth: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::create_with(Command::new(berth), berth, args)
    }

    /// `berth create ARGS` through `cmd` (a `berth` command with its environment set).
    pub fn create_with(mut cmd: Command, berth: &str, args: &[&str]) -> anyhow::Result<Self> {
        let out = cmd.arg("create").args(args).output()?;
        if !out.status.success() {
            bail!(
                "berth create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let id = String::from_utf8(out.stdout)?.trim().to_string();
        let record =
            berth_sandbox::sandbox::find(&berth_sandbox::store::FileStore::from_env(), &id)?;
        Ok(Self {
            berth: berth.to_string(),
            id,
            container: record.container_id,
            run_dir: record.run_dir,
            token: record.token,
        })
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(&self.berth)
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .status();
    }
}

pub async fn docker() -> anyhow::Result<Docker> {
    Ok(Docker::connect_with_defaults()?.negotiate_version().await?)
}

/// Runs argv through berth's agent API; returns (stdout bytes, exit code).
pub async fn berth_api(client: &mut AgentClient, argv: &[&str]) -> anyhow::Result<(u64, i32)> {
    let start = ExecStart {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let request = tokio_stream::once(ExecInput {
        input: Some(exec_input::Input::Start(start)),
    });
    let mut out = client.exec(request).await?.into_inner();
    let mut bytes = 0u64;
    while let Some(msg) = out.message().await? {
        match msg.output {
            Some(exec_output::Output::Stdout(b)) => bytes += b.len() as u64,
            Some(exec_output::Output::Exited(e)) => return Ok((bytes, e.code)),
            Some(exec_output::Output::StartFailed(f)) => bail!("{}", f.message),
            _ => {}
        }
    }
    bail!("no exit status")
}

/// Runs argv through Docker's exec API (create, start+attach, inspect); same result shape.
pub async fn docker_api(
    docker: &Docker,
    container: &str,
    argv: &[&str],
) -> anyhow::Result<(u64, i32)> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(argv.iter().map(|s| s.to_string()).collect()),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                user: Some("1000:1000".to_string()),
                ..Default::default()
            },
        )
        .await?;
    let mut bytes = 0u64;
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await?
    {
        while let Some(item) = output.next().await {
            if let bollard::container::LogOutput::StdOut { message } = item? {
                bytes += message.len() as u64;
            }
        }
    }
    let code = docker.inspect_exec(&exec.id).await?.exit_code.unwrap_or(-1);
    Ok((bytes, i32::try_from(code).unwrap_or(-1)))
}

/// Exec round trip of `true`.
pub async fn exec(berth: &str, iterations: usize, warmup: usize) -> anyhow::Result<Vec<Series>> {
    let sb = Sandbox::create(berth, &[])?;
    let docker = docker().await?;
    let mut client = agent_client::connect(&sb.run_dir, &sb.token).await?;
    let mut series = vec![
        Series::new(
            "docker exec (CLI)",
            "docker exec -u 1000:1000 <c> true".to_string(),
        ),
        Series::new(
            "docker API exec",
            "create + start/attach + inspect via bollard".to_string(),
        ),
        Series::new("berth exec (CLI)", format!("{berth} exec <id> -- true")),
        Series::new(
            "berth API exec",
            "one Exec stream on an open agent connection".to_string(),
        ),
        Series::new(
            "berth API Hello (no process)",
            "the channel's own floor: one unary call on the same connection".to_string(),
        ),
    ];
    let docker_cli = ["docker", "exec", "-u", "1000:1000", &sb.container, "true"]
        .map(String::from)
        .to_vec();
    let berth_cli = [berth, "exec", &sb.id, "--", "true"]
        .map(String::from)
        .to_vec();
    for i in 0..warmup + iterations {
        let record = i >= warmup;
        let d = time_once(&docker_cli)?;
        let t = Instant::now();
        docker_api(&docker, &sb.container, &["true"]).await?;
        let a = t.elapsed();
        let b = time_once(&berth_cli)?;
        let t = Instant::now();
        berth_api(&mut client, &["true"]).await?;
        let c = t.elapsed();
        let t = Instant::now();
        client.hello(HelloRequest {}).await?;
        let h = t.elapsed();
        if record {
            for (s, v) in series.iter_mut().zip([d, a, b, c, h]) {
                s.push(v);
            }
        }
    }
    Ok(series)
}

/// stdout throughput of a 1 GiB stream, in GB/s (reported as ms per GiB and converted).
pub async fn stream(berth: &str, iterations: usize) -> anyhow::Result<Vec<Series>> {
    const GIB: u64 = 1 << 30;
    let sb = Sandbox::create(berth, &[])?;
    let docker = docker().await?;
    let mut client = agent_client::connect(&sb.run_dir, &sb.token).await?;
    // dd writes 1 MiB blocks; busybox `head -c` alone tops out near 0.27 GB/s here.
    let argv = ["dd", "if=/dev/zero", "bs=1048576", "count=1024"];
    let mut series = vec![
        Series::new(
            "docker exec (CLI)",
            "docker exec <c> dd if=/dev/zero bs=1M count=1024 > /dev/null".to_string(),
        ),
        Series::new(
            "docker API exec",
            "bollard attach stream, bytes counted".to_string(),
        ),
        Series::new(
            "berth exec (CLI)",
            "berth exec <id> -- dd if=/dev/zero bs=1M count=1024 > /dev/null".to_string(),
        ),
        Series::new(
            "berth API exec",
            "agent Exec stream, bytes counted".to_string(),
        ),
        Series::new(
            "pipe inside the sandbox (ceiling)",
            "berth exec <id> -- sh -c 'dd … | cat > /dev/null'".to_string(),
        ),
    ];
    let ceiling = vec![
        berth.to_string(),
        "exec".into(),
        sb.id.clone(),
        "--".into(),
        "sh".into(),
        "-c".into(),
        "dd if=/dev/zero bs=1048576 count=1024 2>/dev/null | cat > /dev/null".into(),
    ];
    let mut docker_cli = vec!["docker".to_string(), "exec".into(), sb.container.clone()];
    docker_cli.extend(argv.iter().map(|s| s.to_string()));
    let mut berth_cli = vec![berth.to_string(), "exec".into(), sb.id.clone(), "--".into()];
    berth_cli.extend(argv.iter().map(|s| s.to_string()));
    for _ in 0..iterations {
        let d = time_once(&docker_cli)?;
        let t = Instant::now();
        let (n, _) = docker_api(&docker, &sb.container, &argv).await?;
        let a = t.elapsed();
        if n != GIB {
            bail!("docker API delivered {n} bytes");
        }
        let b = time_once(&berth_cli)?;
        let t = Instant::now();
        let (n, _) = berth_api(&mut client, &argv).await?;
        let c = t.elapsed();
        if n != GIB {
            bail!("berth API delivered {n} bytes");
        }
        let p = time_once(&ceiling)?;
        for (s, v) in series.iter_mut().zip([d, a, b, c, p]) {
            s.push(v);
        }
    }
    Ok(series)
}

fn random_file(path: &Path, bytes: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = 0x2545f4914f6cdd1du64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..bytes >> 20 {
        for chunk in block.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    Ok(f.flush()?)
}

/// Upload and download of 256 MiB: `berth cp` against `docker cp`, into a bind-mounted
/// workspace (the same disk for both).
pub async fn files(berth: &str, iterations: usize, warmup: usize) -> anyhow::Result<Vec<Series>> {
    let work = std::env::temp_dir().join(format!("berth-bench-{}", std::process::id()));
    let ws = work.join("ws");
    std::fs::create_dir_all(&ws)?;
    std::os::unix::fs::chown(&ws, Some(1000), Some(1000))?;
    let file = work.join("blob.bin");
    random_file(&file, 256 << 20)?;
    let sb = Sandbox::create(berth, &["--workspace", &ws.display().to_string()])?;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let file_s = file.display().to_string();
    let down = work.join("down.bin").display().to_string();
    let mut series = vec![
        Series::new(
            "docker cp upload",
            "docker cp blob <c>:/workspace/blob.bin".to_string(),
        ),
        Series::new(
            "berth cp upload",
            "berth cp blob <id>:/workspace/blob.bin".to_string(),
        ),
        Series::new(
            "docker cp download",
            "docker cp <c>:/workspace/blob.bin down".to_string(),
        ),
        Series::new(
            "berth cp download",
            "berth cp <id>:/workspace/blob.bin down".to_string(),
        ),
    ];
    // Each copy leaves 256 MiB of dirty pages; flushing them (untimed) before every timed copy
    // keeps one contender's writeback out of the next one's time.
    let timed = |argv: Vec<String>| -> anyhow::Result<Duration> {
        Command::new("sync").status()?;
        time_once(&argv)
    };
    for i in 0..warmup + iterations {
        let up_d = timed(s(&[
            "docker",
            "cp",
            &file_s,
            &format!("{}:/workspace/blob.bin", sb.container),
        ]))?;
        let up_b = timed(s(&[
            berth,
            "cp",
            &file_s,
            &format!("{}:/workspace/blob.bin", sb.id),
        ]))?;
        let _ = std::fs::remove_file(&down);
        let down_d = timed(s(&[
            "docker",
            "cp",
            &format!("{}:/workspace/blob.bin", sb.container),
            &down,
        ]))?;
        let _ = std::fs::remove_file(&down);
        let down_b = timed(s(&[
            berth,
            "cp",
            &format!("{}:/workspace/blob.bin", sb.id),
            &down,
        ]))?;
        if i >= warmup {
            for (s, v) in series.iter_mut().zip([up_d, up_b, down_d, down_b]) {
                s.push(v);
            }
        }
    }
    if std::fs::metadata(&down)?.len() != 256 << 20 {
        bail!("download size mismatch");
    }
    drop(sb);
    std::fs::remove_dir_all(&work).context("cleaning up")?;
    Ok(series)
}

/// `berth create` + first `berth exec … true` against `docker run --rm <same image> true`.
pub fn create(berth: &str, iterations: usize) -> anyhow::Result<Vec<Series>> {
    let mut series = vec![
        Series::new(
            "docker run --rm",
            "docker run --rm berth/base:latest true".to_string(),
        ),
        Series::new(
            "berth create + exec",
            "berth create; berth exec <id> -- true (rm not timed)".to_string(),
        ),
        Series::new(
            "berth create + exec, agent by archive",
            "berth create --agent-delivery archive; berth exec <id> -- true".to_string(),
        ),
    ];
    let docker_run = ["docker", "run", "--rm", "berth/base:latest", "true"]
        .map(String::from)
        .to_vec();
    let create_and_exec = |args: &[&str]| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let sb = Sandbox::create(berth, args)?;
        let ok = Command::new(berth)
            .args(["exec", &sb.id, "--", "true"])
            .status()?
            .success();
        let elapsed = t.elapsed();
        if !ok {
            bail!("first exec failed");
        }
        Ok(elapsed)
    };
    for _ in 0..iterations {
        series[0].push(time_once(&docker_run)?);
        series[1].push(create_and_exec(&[])?);
        series[2].push(create_and_exec(&["--agent-delivery", "archive"])?);
    }
    Ok(series)
}

/// The agent's size on disk and resident memory when idle.
pub fn agent(berth: &str) -> anyhow::Result<(u64, u64)> {
    let binary = berth_sandbox::sandbox::agent_binary()?;
    let size = std::fs::metadata(binary)?.len();
    let sb = Sandbox::create(berth, &[])?;
    std::thread::sleep(Duration::from_secs(2));
    let pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &sb.container])
        .output()?;
    let pid = String::from_utf8(pid.stdout)?.trim().to_string();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("reading the agent's VmRSS")?;
    Ok((size, rss_kib * 1024))
}
