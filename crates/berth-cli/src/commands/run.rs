//! `berth run`: one command in a fresh hardened sandbox.

use std::process::ExitCode;

use anyhow::Context;
use berth_engine::docker::DockerEngine;
use berth_sandbox::plan::{plan_sandbox, HostFacts};
use berth_sandbox::receipt::Outcome;
use berth_sandbox::{owner, run_once, CaptureSink, Receipt, RunOptions, StdioSink};
use berth_spec::{format_bytes, labels};

use crate::args::RunArgs;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let interrupt = crate::signals::interrupted().context("installing signal handlers")?;
    let spec = args.spec()?;
    let engine = DockerEngine::connect().await?;
    let host = HostFacts::detect(engine.endpoint().socket_path())?;
    let mut plan = plan_sandbox(&spec, &owner::new_id(), labels::KIND_RUN, &host)?;
    if args.keep {
        plan.mark_kept();
    }
    for warning in &plan.warnings {
        eprintln!("berth: warning: {warning}");
    }

    let image = super::ensure_image(&engine, &spec.image).await?;

    let options = RunOptions {
        timeout: spec.timeout,
        keep: args.keep,
        dirs: {
            let store = super::store();
            berth_sandbox::store::Store::runtime_dir(&store)
                .unwrap_or_else(|| store.state_dir().to_path_buf())
        },
    };
    let receipt = if args.json {
        let limit = berth_spec::parse_size(&args.capture_limit)?;
        let sink = CaptureSink::new(usize::try_from(limit).unwrap_or(usize::MAX));
        run_once(&engine, &plan, &image, &options, sink, interrupt).await?
    } else {
        run_once(&engine, &plan, &image, &options, StdioSink, interrupt).await?
    };

    if let Some(path) = &args.receipt {
        let json = serde_json::to_vec_pretty(&receipt)?;
        std::fs::write(path, json)
            .with_context(|| format!("writing the receipt to {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&receipt)?);
    }
    explain(&receipt);
    Ok(ExitCode::from(
        u8::try_from(receipt.exit_code & 0xff).unwrap_or(125),
    ))
}

/// Tells the user on stderr why a run ended the way it did, when it is not obvious.
fn explain(r: &Receipt) {
    match r.outcome {
        Outcome::Exited => {}
        Outcome::TimedOut => eprintln!(
            "berth: timed out after {}; the sandbox was killed (exit 124). Raise --timeout, or 0 to disable.",
            r.limits
                .timeout_seconds
                .map(|s| format!("{s}s"))
                .unwrap_or_default()
        ),
        Outcome::OomKilled => eprintln!(
            "berth: out of memory: the kernel's OOM killer ended the command at the {} memory limit (exit 137). Raise --memory.",
            format_bytes(u64::try_from(r.limits.memory_bytes).unwrap_or(0))
        ),
        Outcome::StartFailed => eprintln!(
            "berth: {} (exit {})",
            r.error.as_deref().unwrap_or("the command could not start"),
            r.exit_code
        ),
        Outcome::Interrupted => eprintln!(
            "berth: interrupted by {}; the sandbox was removed (exit {})",
            r.interrupted_by.as_deref().unwrap_or("a signal"),
            r.exit_code
        ),
    }
    if r.kept {
        eprintln!(
            "berth: kept container {} (remove it with `docker rm {}` or `berth gc --all`)",
            r.container_name, r.container_name
        );
    }
}
