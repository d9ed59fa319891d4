//! The egress gateway's cost, side by side with what it replaces: a sandbox made with and
//! without a gateway, and HTTPS from inside a sandbox directly over Docker's bridge versus
//! through the gateway — as a tunnel (a host without secrets: the gateway copies TLS bytes)
//! and terminated (a secret's host: decrypted, headers rewritten, re-encrypted).
//!
//! The "internet" is this repo's `fake-upstream` in a container on the bridge; the gateway
//! reaches it through the documented test-only overrides. The client is one Python script
//! (`egress_client.py`), the same for every contender, timed inside the sandbox.
//!
//! On a small machine the client, the gateway and the upstream share the same cores, so the
//! download rows also count each one's CPU time: the client's own (it reads it), the gateway's
//! and the upstream's from their containers' cgroups (Docker's stats). That shows where a
//! ratio comes from on the machine it was measured on.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bollard::query_parameters::StatsOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;

use crate::sandbox::Sandbox;
use crate::{percentile, Series};

const UPSTREAM_IMAGE: &str = "berth-bench/fake-upstream:latest";
const DEBIAN: &str = "berth/debian:latest";
const CLIENT: &str = include_str!("egress_client.py");
/// The download size of the throughput rows.
pub const DOWNLOAD: u64 = 256 << 20;

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// `fake-upstream`, built by `scripts/build-agent fake-upstream` next to the agent.
fn upstream_binary(berth: &str) -> anyhow::Result<PathBuf> {
    let target = Path::new(berth)
        .parent()
        .and_then(Path::parent)
        .context("locating target/")?;
    for host in std::fs::read_dir(target.join("agent"))?.flatten() {
        let candidate = host.path().join("release/fake-upstream");
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    bail!("no fake-upstream binary: build it with `scripts/build-agent fake-upstream`")
}

/// A running upstream and the directory (its CA, the client script) sandboxes mount at /ca.
struct Upstream {
    container: String,
    ip: String,
    dir: tempfile::TempDir,
}

impl Upstream {
    fn start(berth: &str) -> anyhow::Result<Self> {
        let ctx = tempfile::tempdir()?;
        std::fs::copy(upstream_binary(berth)?, ctx.path().join("fake-upstream"))?;
        std::fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY fake-upstream /fake-upstream\nENTRYPOINT [\"/fake-upstream\"]\n",
        )?;
        run(Command::new("docker")
            .args(["build", "-q", "-t", UPSTREAM_IMAGE])
            .arg(ctx.path()))?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("egress_client.py"), CLIENT)?;
        let container = run(Command::new("docker")
            .args(["run", "-d", "--label", "berth.bench=true", "-v"])
            .arg(format!("{}:/out", dir.path().display()))
            .args([UPSTREAM_IMAGE, "--names", "bench.test,secret.test"]))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("ready").exists() {
            if Instant::now() > deadline {
                bail!("fake-upstream did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ip = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &container,
        ]))?;
        Ok(Self { container, ip, dir })
    }

    /// berth, pointed at this upstream.
    fn berth(&self, berth: &str) -> Command {
        let mut cmd = Command::new(berth);
        cmd.env(
            "BERTH_EGRESS_TEST_RESOLVE",
            format!("bench.test={0},secret.test={0}", self.ip),
        )
        .env(
            "BERTH_EGRESS_TEST_UPSTREAM_CA",
            self.dir.path().join("ca.pem"),
        )
        .env("BENCH_TOKEN", "bench-secret-value");
        cmd
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .stdout(Stdio::null())
            .status();
    }
}

fn create(up: &Upstream, berth: &str, args: &[&str]) -> anyhow::Result<Sandbox> {
    Sandbox::create_with(up.berth(berth), berth, args)
}

/// What the client measured, per request: wall time, its own CPU time, and the whole
/// machine's busy CPU time (`None` where /proc/stat was unreadable).
#[derive(serde::Deserialize)]
struct ClientTimes {
    ms: Vec<f64>,
    cpu_ms: Vec<f64>,
    machine_ms: Vec<Option<f64>>,
}

/// Runs the client in a sandbox; its own timings.
fn client(berth: &str, sandbox: &Sandbox, args: &[&str]) -> anyhow::Result<ClientTimes> {
    let out = run(Command::new(berth)
        .args(["exec", &sandbox.id, "--", "python3", "/ca/egress_client.py"])
        .args(args))?;
    Ok(serde_json::from_str(&out)?)
}

/// A container's CPU time so far (its cgroup's), in nanoseconds.
async fn cpu_ns(docker: &Docker, container: &str) -> anyhow::Result<u64> {
    let options = StatsOptionsBuilder::new()
        .stream(false)
        .one_shot(true)
        .build();
    let stats = docker
        .stats(container, Some(options))
        .next()
        .await
        .with_context(|| format!("no stats for {container}"))??;
    stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .with_context(|| format!("no CPU usage in the stats of {container}"))
}

/// CPU time per download, in milliseconds, of each process on the path.
pub struct CpuSeries {
    pub name: &'static str,
    /// The client process (Python, TLS): its own user + system time.
    pub client: Vec<f64>,
    /// The gateway's container (empty for the direct path).
    pub gateway: Vec<f64>,
    /// The upstream's container (TLS, the body).
    pub upstream: Vec<f64>,
    /// The whole machine's busy CPU time during the download: the three above, the kernel's
    /// network work charged to none of them, and anything else running.
    pub machine: Vec<f64>,
}

/// Prints the CPU table: median CPU milliseconds per download, and how many of the
/// machine's cores were busy during it (on a 2-core machine, 2.0 is all there is);
/// `downloads` are the same contenders' wall times, in the same order.
pub fn report_cpu(rows: &[CpuSeries], downloads: &[Series]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("\n## CPU time per 256 MiB download (median ms; this machine has {cores} cores)\n");
    println!("| contender | client | gateway | upstream | whole machine | cores busy |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let cell = |v: &[f64]| {
        if v.is_empty() {
            "—".to_string()
        } else {
            format!("{:.0}", percentile(v, 0.5))
        }
    };
    for (r, wall) in rows.iter().zip(downloads) {
        let busy = if r.machine.is_empty() {
            "—".to_string()
        } else {
            format!("{:.2}", percentile(&r.machine, 0.5) / wall.median())
        };
        println!(
            "| {} | {} | {} | {} | {} | {busy} |",
            r.name,
            cell(&r.client),
            cell(&r.gateway),
            cell(&r.upstream),
            cell(&r.machine),
        );
    }
    println!(
        "\n- client: the Python process's own user + system time; gateway and upstream: their \
         containers' cgroup CPU time over the whole client run (one small warm-up request \
         included); whole machine: busy time of all cores during the download (/proc/stat, \
         10 ms ticks), which also holds the kernel's network work charged to no process; \
         cores busy: whole machine over the median wall time."
    );
}

/// The egress tables: create → first exec, 256 MiB download, per-request latency, and the
/// CPU time of each process on the download's path.
pub fn egress(
    runtime: &tokio::runtime::Runtime,
    berth: &str,
    iterations: usize,
    requests: usize,
) -> anyhow::Result<([Vec<Series>; 3], Vec<CpuSeries>)> {
    let docker = runtime.block_on(crate::sandbox::docker())?;
    if !Command::new("docker")
        .args(["image", "inspect", DEBIAN])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success()
    {
        run(Command::new(berth).args(["image", "build", "--debian"]))?;
    }
    let up = Upstream::start(berth)?;

    // Create → first exec, and a one-shot run, with and without a gateway.
    let mut create_series = vec![
        Series::new(
            "berth create + exec",
            "berth create; berth exec <id> -- true".into(),
        ),
        Series::new(
            "berth create --allow-host + exec",
            "berth create --allow-host bench.test; berth exec <id> -- true".into(),
        ),
        Series::new("berth run", "berth run -- true".into()),
        Series::new(
            "berth run --allow-host",
            "berth run --allow-host bench.test -- true".into(),
        ),
    ];
    let once = |args: &[&str]| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let sb = create(&up, berth, args)?;
        run(Command::new(berth).args(["exec", &sb.id, "--", "true"]))?;
        Ok(t.elapsed())
    };
    let run_once = |args: &[&str]| -> anyhow::Result<Duration> {
        let t = Instant::now();
        run(up.berth(berth).arg("run").args(args).args(["--", "true"]))?;
        Ok(t.elapsed())
    };
    once(&["--allow-host", "bench.test"])?; // builds the gateway image if needed
    for i in 0..iterations {
        // Interleaved, rotating the order, so drift affects every contender alike.
        for k in 0..create_series.len() {
            let j = (i + k) % create_series.len();
            let gateway: &[&str] = if j % 2 == 0 {
                &[]
            } else {
                &["--allow-host", "bench.test"]
            };
            let took = if j < 2 {
                once(gateway)?
            } else {
                run_once(gateway)?
            };
            create_series[j].push(took);
        }
    }

    let mount = format!("{}:/ca:ro", up.dir.path().display());
    let direct = create(
        &up,
        berth,
        &["--image", DEBIAN, "--network", "bridge", "-v", &mount],
    )?;
    let gateway = create(
        &up,
        berth,
        &[
            "--image",
            DEBIAN,
            "--allow-host",
            "bench.test",
            "--secret",
            "BENCH_TOKEN@secret.test",
            "-v",
            &mount,
        ],
    )?;
    let contenders: [(&'static str, &Sandbox, &str, &str); 3] = [
        ("direct (bridge network)", &direct, "direct", "bench.test"),
        (
            "through the gateway (TLS tunnel)",
            &gateway,
            "proxy",
            "bench.test",
        ),
        (
            "through the gateway (TLS terminated, secret injected)",
            &gateway,
            "proxy",
            "secret.test",
        ),
    ];
    let describe = |what: &str, mode: &str, host: &str| {
        format!("python3 egress_client.py {mode} {host} {what} (Python ssl, new connection each)")
    };
    let mut download: Vec<Series> = contenders
        .iter()
        .map(|(name, _, mode, host)| {
            Series::new(name, describe(&format!("/bytes/{DOWNLOAD}"), mode, host))
        })
        .collect();
    let mut cpu: Vec<CpuSeries> = contenders
        .iter()
        .map(|(name, ..)| CpuSeries {
            name,
            client: Vec::new(),
            gateway: Vec::new(),
            upstream: Vec::new(),
            machine: Vec::new(),
        })
        .collect();
    let gateway_container = berth_sandbox::egress::gateway_name(&gateway.id);
    let cpu_now = |container: &str| runtime.block_on(cpu_ns(&docker, container));
    let path = format!("/bytes/{DOWNLOAD}");
    for round in 0..iterations.max(3) {
        for k in 0..contenders.len() {
            let j = (round + k) % contenders.len();
            let (_, sandbox, mode, host) = contenders[j];
            let through_gateway = mode == "proxy";
            let (gw0, up0) = (
                if through_gateway {
                    cpu_now(&gateway_container)?
                } else {
                    0
                },
                cpu_now(&up.container)?,
            );
            let times = client(berth, sandbox, &[mode, host, &path, "1", &up.ip])?;
            let ms = |ns: u64| ns as f64 / 1e6;
            if through_gateway {
                cpu[j]
                    .gateway
                    .push(ms(cpu_now(&gateway_container)?.saturating_sub(gw0)));
            }
            cpu[j]
                .upstream
                .push(ms(cpu_now(&up.container)?.saturating_sub(up0)));
            cpu[j].client.extend(&times.cpu_ms);
            cpu[j].machine.extend(times.machine_ms.iter().flatten());
            download[j].ms.extend(times.ms);
        }
    }
    let mut latency: Vec<Series> = contenders
        .iter()
        .map(|(name, _, mode, host)| Series::new(name, describe("/echo", mode, host)))
        .collect();
    for round in 0..4 {
        for k in 0..contenders.len() {
            let j = (round + k) % contenders.len();
            let (_, sandbox, mode, host) = contenders[j];
            let n = (requests / 4).max(1).to_string();
            latency[j]
                .ms
                .extend(client(berth, sandbox, &[mode, host, "/echo", &n, &up.ip])?.ms);
        }
    }
    Ok(([create_series, download, latency], cpu))
}
