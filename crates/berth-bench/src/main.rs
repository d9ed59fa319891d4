//! `berth-bench`: times berth and Docker side by side, in one run, interleaved, and prints
//! medians and ratios. It is a program, not a test: nothing here asserts a timing.
//!
//! ```text
//! cargo build --release && scripts/build-agent && target/release/berth-bench all
//! ```

mod egress;
mod sandbox;
mod server;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

/// Benchmarks berth against docker on this machine.
#[derive(Parser)]
#[command(
    after_help = "Example:\n  cargo build --release && scripts/build-agent && target/release/berth-bench all"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// The berth binary (default: next to this program).
    #[arg(long, global = true)]
    berth: Option<PathBuf>,
    /// Timed iterations per contender (throughput and file benchmarks use a fifth of it).
    #[arg(long, global = true, default_value_t = 30)]
    iterations: usize,
    /// Untimed warm-up iterations per contender.
    #[arg(long, global = true, default_value_t = 3)]
    warmup: usize,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Bench {
    /// One-shot `berth run -- true` vs `docker run --rm <same image> true`.
    Run,
    /// Exec round trip of `true`: berth (CLI and API) vs docker exec (CLI and API).
    Exec,
    /// stdout throughput of a 1 GiB stream.
    Stream,
    /// Upload and download of 256 MiB: berth cp vs docker cp.
    Files,
    /// Create a sandbox and finish a first exec vs `docker run --rm … true`.
    Create,
    /// The agent's binary size and idle memory.
    Agent,
    /// The egress gateway: create with vs without, 256 MiB through it vs direct, latency.
    Egress,
    /// `berth serve`: exec through the HTTP API vs the agent's API vs Docker's; create
    /// through the API vs `berth create`; the server's memory with 100 sandboxes.
    Server,
    /// Everything above.
    All,
}

const IMAGE: &str = "berth/base:latest";

/// Timings of one contender.
pub struct Series {
    name: &'static str,
    command: String,
    ms: Vec<f64>,
}

impl Series {
    pub fn new(name: &'static str, command: String) -> Self {
        Self {
            name,
            command,
            ms: Vec::new(),
        }
    }

    pub fn push(&mut self, d: Duration) {
        self.ms.push(d.as_secs_f64() * 1000.0);
    }

    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.ms, p)
    }

    fn median(&self) -> f64 {
        self.percentile(0.5)
    }
}

/// The `p` percentile (0.0–1.0) of some samples, NaN for none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// Runs a command to completion (output discarded) and times it.
pub fn time_once(argv: &[String]) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {}", argv[0]))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("`{}` failed with {status}", argv.join(" "));
    }
    Ok(elapsed)
}

/// Prints a table; ratios are medians over the median of `baseline`.
fn report(title: &str, series: &[Series], baseline: usize, bytes: Option<u64>) {
    println!("\n## {title}\n");
    let base = series[baseline].median();
    print!(
        "| contender | median ms | p90 ms | min ms | vs {} |",
        series[baseline].name
    );
    if bytes.is_some() {
        print!(" median GB/s |");
    }
    println!();
    print!("| --- | ---: | ---: | ---: | ---: |");
    if bytes.is_some() {
        print!(" ---: |");
    }
    println!();
    for s in series {
        print!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2}x |",
            s.name,
            s.median(),
            s.percentile(0.9),
            s.percentile(0.0),
            s.median() / base
        );
        if let Some(b) = bytes {
            print!(" {:.2} |", b as f64 / (s.median() / 1000.0) / 1e9);
        }
        println!();
    }
    println!();
    for s in series {
        println!("- {}: `{}` ({} samples)", s.name, s.command, s.ms.len());
    }
}

fn oneshot(berth: &str, iterations: usize, warmup: usize) -> anyhow::Result<Vec<Series>> {
    let mut series = vec![
        Series::new("docker run --rm", format!("docker run --rm {IMAGE} true")),
        Series::new(
            "docker run --rm (same hardening)",
            format!("docker run --rm --network none --user 1000:1000 --cap-drop ALL --security-opt no-new-privileges --memory 1g --memory-swap 1g --cpus 1 --pids-limit 512 --tmpfs /tmp:rw,exec,nosuid,nodev,mode=1777,size=268435456 {IMAGE} true"),
        ),
        Series::new("berth run", format!("{berth} run -- true")),
    ];
    let argv: Vec<Vec<String>> = series
        .iter()
        .map(|c| c.command.split_whitespace().map(str::to_string).collect())
        .collect();
    for _ in 0..warmup {
        for a in &argv {
            time_once(a)?;
        }
    }
    for i in 0..iterations {
        // Interleave, rotating the order, so drift affects every contender alike.
        for k in 0..argv.len() {
            let j = (i + k) % argv.len();
            series[j].push(time_once(&argv[j])?);
        }
    }
    Ok(series)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let berth = match cli.berth {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("locating berth next to berth-bench")?
            .join("berth"),
    };
    if !berth.exists() {
        bail!(
            "no berth binary at {}: build it with `cargo build --release`",
            berth.display()
        );
    }
    let berth = berth.display().to_string();
    let prepared = Command::new(&berth)
        .args(["image", "build"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !prepared.success() {
        bail!("`berth image build` failed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let n = cli.iterations;
    let few = (n / 5).max(3);
    let want = |b: Bench| cli.bench == b || cli.bench == Bench::All;
    println!(
        "# berth-bench ({} iterations; throughput and files: {few})",
        n
    );
    if want(Bench::Run) {
        report(
            "One-shot run of `true`",
            &oneshot(&berth, n, cli.warmup)?,
            0,
            None,
        );
    }
    if want(Bench::Create) {
        report(
            "Create a sandbox and finish a first exec",
            &sandbox::create(&berth, few.max(10))?,
            0,
            None,
        );
    }
    if want(Bench::Exec) {
        let series = runtime.block_on(sandbox::exec(&berth, n.max(100), cli.warmup))?;
        report(
            "Exec round trip of `true` (same container)",
            &series,
            1,
            None,
        );
    }
    if want(Bench::Stream) {
        report(
            "stdout throughput, 1 GiB",
            &runtime.block_on(sandbox::stream(&berth, few))?,
            0,
            Some(1 << 30),
        );
    }
    if want(Bench::Files) {
        let series = runtime.block_on(sandbox::files(&berth, few, cli.warmup))?;
        println!(
            "\n(upload rows compare with `docker cp upload`, download rows with each other below)"
        );
        report("Upload 256 MiB", &series[..2], 0, Some(256 << 20));
        report("Download 256 MiB", &series[2..], 0, Some(256 << 20));
    }
    if want(Bench::Egress) {
        let ([create, download, latency], cpu) =
            egress::egress(&runtime, &berth, few.max(10), n.max(100) * 2)?;
        report(
            "Create a sandbox and finish a first exec: with vs without a gateway",
            &create[..2],
            0,
            None,
        );
        report(
            "One-shot `berth run -- true`: with vs without a gateway",
            &create[2..],
            0,
            None,
        );
        report(
            "HTTPS download of 256 MiB from inside a sandbox",
            &download,
            0,
            Some(egress::DOWNLOAD),
        );
        egress::report_cpu(&cpu, &download);
        report(
            "One HTTPS request (new connection: CONNECT + TLS + GET /echo)",
            &latency,
            0,
            None,
        );
        let base = latency[0].median();
        for s in &latency[1..] {
            println!(
                "- added latency per request, {}: {:.2} ms",
                s.name,
                s.median() - base
            );
        }
    }
    if want(Bench::Server) {
        let series = runtime.block_on(server::exec(&berth, n.max(100), cli.warmup))?;
        report(
            "Exec round trip of `true` through the server (same container)",
            &series,
            0,
            None,
        );
        let added = series[2].median() - series[1].median();
        println!(
            "- added by the HTTP API over the direct agent path: {added:.2} ms; HTTP API vs Docker API: {:.1}x faster",
            series[0].median() / series[2].median()
        );
        report(
            "Create a sandbox and finish a first exec: API vs CLI",
            &server::create(&berth, few.max(10))?,
            0,
            None,
        );
        let (idle, loaded, took) = server::memory(&berth, 100)?;
        println!("\n## The server's memory\n");
        println!("- idle: {:.1} MiB RSS", idle as f64 / (1 << 20) as f64);
        println!(
            "- with 100 sandboxes made through the API (and one exec in each): {:.1} MiB RSS; creating them took {:.1} s",
            loaded as f64 / (1 << 20) as f64,
            took.as_secs_f64()
        );
    }
    if want(Bench::Agent) {
        let (size, rss) = sandbox::agent(&berth)?;
        println!("\n## The agent\n");
        println!(
            "- binary size: {:.2} MB ({size} bytes, static, stripped)",
            size as f64 / 1e6
        );
        println!(
            "- idle resident memory (VmRSS of PID 1): {:.2} MB",
            rss as f64 / 1e6
        );
    }
    Ok(())
}
