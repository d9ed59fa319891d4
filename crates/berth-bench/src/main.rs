//! `berth-bench`: times berth and the docker CLI side by side, in one run, interleaved, and
//! prints medians and ratios. It is a program, not a test: nothing here asserts a timing.
//!
//! ```text
//! cargo build --release && target/release/berth-bench run --iterations 40
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use serde::Serialize;

/// Benchmarks berth against docker on this machine.
#[derive(Parser)]
#[command(
    after_help = "Example:\n  cargo build --release && target/release/berth-bench run --iterations 40"
)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
    /// The berth binary (default: next to this program).
    #[arg(long, global = true)]
    berth: Option<PathBuf>,
    /// Timed iterations per contender.
    #[arg(long, global = true, default_value_t = 30)]
    iterations: usize,
    /// Untimed warm-up iterations per contender.
    #[arg(long, global = true, default_value_t = 3)]
    warmup: usize,
    /// Print the results as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum Bench {
    /// One-shot `berth run -- true` vs `docker run --rm <same image> true`.
    Run,
}

const IMAGE: &str = "berth/base:latest";

struct Contender {
    name: &'static str,
    argv: Vec<String>,
}

#[derive(Serialize)]
struct Stats {
    name: &'static str,
    command: String,
    iterations: usize,
    median_ms: f64,
    p90_ms: f64,
    min_ms: f64,
    ratio_to_baseline: f64,
    ratio_to_hardened_docker: f64,
}

fn time_once(argv: &[String]) -> anyhow::Result<Duration> {
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
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
        .status()?;
    if !prepared.success() {
        bail!("`berth image build` failed");
    }
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let contenders = match cli.bench {
        Bench::Run => vec![
            Contender {
                name: "docker run --rm",
                argv: s(&["docker", "run", "--rm", IMAGE, "true"]),
            },
            Contender {
                name: "docker run --rm (same hardening)",
                argv: s(&[
                    "docker",
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--user",
                    "1000:1000",
                    "--cap-drop",
                    "ALL",
                    "--security-opt",
                    "no-new-privileges",
                    "--memory",
                    "1g",
                    "--memory-swap",
                    "1g",
                    "--cpus",
                    "1",
                    "--pids-limit",
                    "512",
                    "--tmpfs",
                    "/tmp:rw,nosuid,nodev,mode=1777,size=268435456",
                    IMAGE,
                    "true",
                ]),
            },
            Contender {
                name: "berth run",
                argv: vec![berth.clone(), "run".into(), "--".into(), "true".into()],
            },
        ],
    };
    for c in &contenders {
        for _ in 0..cli.warmup {
            time_once(&c.argv)?;
        }
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for i in 0..cli.iterations {
        // Interleave, rotating the order, so drift affects every contender alike.
        for k in 0..contenders.len() {
            let j = (i + k) % contenders.len();
            samples[j].push(time_once(&contenders[j].argv)?.as_secs_f64() * 1000.0);
        }
    }
    let median_of = |v: &Vec<f64>| {
        let mut b = v.clone();
        b.sort_by(f64::total_cmp);
        percentile(&b, 0.5)
    };
    let baseline = median_of(&samples[0]);
    let hardened = median_of(&samples[1]);
    let stats: Vec<Stats> = contenders
        .iter()
        .zip(samples)
        .map(|(c, mut v)| {
            v.sort_by(f64::total_cmp);
            let median = percentile(&v, 0.5);
            Stats {
                name: c.name,
                command: c.argv.join(" "),
                iterations: v.len(),
                median_ms: median,
                p90_ms: percentile(&v, 0.9),
                min_ms: v[0],
                ratio_to_baseline: median / baseline,
                ratio_to_hardened_docker: median / hardened,
            }
        })
        .collect();
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!(
            "{:<34} {:>10} {:>10} {:>10} {:>9} {:>11}",
            "contender", "median ms", "p90 ms", "min ms", "vs docker", "vs hardened"
        );
        for s in &stats {
            println!(
                "{:<34} {:>10.1} {:>10.1} {:>10.1} {:>8.2}x {:>10.2}x",
                s.name,
                s.median_ms,
                s.p90_ms,
                s.min_ms,
                s.ratio_to_baseline,
                s.ratio_to_hardened_docker
            );
        }
        println!(
            "\nratios are medians over the median of `docker run --rm` and of docker with berth's hardening flags; {} iterations each, interleaved",
            cli.iterations
        );
    }
    Ok(())
}
