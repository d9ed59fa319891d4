//! Long-lived sandbox verbs: create, ps, inspect, logs, stop, start, rm.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::docker::DockerEngine;
use berth_engine::{Engine, Output};
use berth_sandbox::sandbox::{self, AgentDelivery, SandboxRecord};
use futures_util::StreamExt;

use crate::args::{CreateArgs, LogsArgs, PsArgs, RmArgs, SandboxRef, SandboxRefs, StopArgs};

/// A record as scripts see it: everything but the token.
fn public(record: &SandboxRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "name": record.name,
        "container_id": record.container_id,
        "container_name": record.container_name,
        "image": record.image,
        "user": record.user,
        "workdir": record.workdir,
        "created": record.created,
    })
}

pub async fn create(args: CreateArgs) -> anyhow::Result<ExitCode> {
    let spec = args.sandbox.spec(args.command.clone())?;
    let engine = DockerEngine::connect().await?;
    // Built here (with progress) when missing; the operation then finds it.
    super::ensure_image(&engine, &spec.image).await?;
    let delivery = match args.agent_delivery.as_deref() {
        Some("archive") => Some(AgentDelivery::Archive),
        Some(_) => Some(AgentDelivery::Mount),
        None => None,
    };
    let request = berth_service::CreateRequest {
        spec,
        name: args.name.clone(),
        labels: Default::default(),
        delivery,
    };
    let record = super::local_service(engine)?
        .create(&berth_service::Caller::local(), request, &|_| {})
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&public(&record))?);
    } else {
        println!("{}", record.id);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn ps(args: PsArgs) -> anyhow::Result<ExitCode> {
    let records = berth_sandbox::store::Store::records(&berth_sandbox::store::FileStore::local());
    if args.quiet {
        for record in &records {
            println!("{}", record.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let engine = DockerEngine::connect().await?;
    let mut rows = Vec::new();
    for record in &records {
        rows.push(sandbox::status(&engine, record).await);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<14} {:<16} {:<22} {:<26} STATUS",
            "ID", "NAME", "IMAGE", "CREATED"
        );
        for r in rows {
            println!(
                "{:<14} {:<16} {:<22} {:<26} {}",
                r.id,
                r.name.as_deref().unwrap_or("-"),
                r.image,
                r.created,
                r.status
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn inspect(args: SandboxRef) -> anyhow::Result<ExitCode> {
    let record = sandbox::find(&berth_sandbox::store::FileStore::local(), &args.sandbox)?;
    let engine = DockerEngine::connect().await?;
    let status = sandbox::status(&engine, &record).await;
    let agent = match sandbox::connect(&engine, &record).await {
        Ok(mut client) => match berth_sandbox::agent_client::hello(&mut client).await {
            Ok(hello) => serde_json::json!({
                "ready": true, "protocol": hello.protocol, "version": hello.agent_version, "pid": hello.pid,
            }),
            Err(e) => serde_json::json!({ "ready": false, "error": e.to_string() }),
        },
        Err(e) => serde_json::json!({ "ready": false, "error": e.to_string() }),
    };
    let mut value = public(&record);
    value["status"] = serde_json::json!(status.status);
    value["labels"] = serde_json::json!(status.labels);
    value["agent"] = agent;
    value["socket_dir"] = serde_json::json!(record.run_dir);
    if let Some(egress) = &record.egress {
        let stats = berth_sandbox::egress::stats(&engine, &egress.gateway_name)
            .await
            .ok();
        value["egress"] = serde_json::json!(egress.report(stats));
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let record = sandbox::find(&berth_sandbox::store::FileStore::local(), &args.sandbox)?;
    let engine = DockerEngine::connect().await?;
    let mut stream = engine
        .container_logs(&record.container_id, args.follow)
        .await?;
    while let Some(item) = stream.next().await {
        match item? {
            Output::Stdout(b) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&b)?;
                out.flush()?;
            }
            Output::Stderr(b) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&b)?;
                err.flush()?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies `action` to each sandbox, reporting each failure; fails if any failed.
async fn each<F, Fut>(references: &[String], action: F) -> anyhow::Result<ExitCode>
where
    F: Fn(SandboxRecord) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut outcome = Outcome::default();
    for reference in references {
        let result = match sandbox::find(&berth_sandbox::store::FileStore::local(), reference) {
            Ok(record) => action(record).await,
            Err(e) => Err(e.into()),
        };
        outcome.report(reference, result);
    }
    Ok(outcome.code())
}

/// How a verb over several sandboxes went: each that worked is printed (as docker does),
/// each failure said; any failure makes the exit code berth's own.
#[derive(Default)]
pub struct Outcome {
    failed: bool,
}

impl Outcome {
    pub fn report(&mut self, reference: &str, result: anyhow::Result<()>) {
        match result {
            Ok(()) => println!("{reference}"),
            Err(e) => {
                eprintln!("berth: {reference}: {}", crate::describe(&e));
                self.failed = true;
            }
        }
    }

    pub fn code(&self) -> ExitCode {
        if self.failed {
            ExitCode::from(crate::EXIT_BERTH)
        } else {
            ExitCode::SUCCESS
        }
    }
}

pub async fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let service = std::sync::Arc::new(super::local_service(DockerEngine::connect().await?)?);
    let grace = Duration::from_secs(args.grace);
    each(&args.sandboxes, |record| {
        let service = service.clone();
        async move { Ok(service.stop(&record, grace).await?) }
    })
    .await
}

pub async fn start(args: SandboxRefs) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    each(&args.sandboxes, |record| {
        let engine = engine.clone();
        async move { Ok(sandbox::start(&engine, &record, true).await?) }
    })
    .await
}

pub async fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    let force = args.force;
    each(&args.sandboxes, |record| {
        let engine = engine.clone();
        async move {
            Ok(sandbox::remove(
                &engine,
                &berth_sandbox::store::FileStore::local(),
                &record,
                force,
            )
            .await?)
        }
    })
    .await
}
