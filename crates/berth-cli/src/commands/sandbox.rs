//! Long-lived sandbox verbs: create, ps, inspect, logs, stop, start, rm.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use berth_engine::docker::DockerEngine;
use berth_engine::Output;
use berth_sandbox::sandbox::{AgentDelivery, SandboxRecord};
use berth_service::{Caller, Service, ServiceError};
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
        volumes: Vec::new(),
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
    let service = super::local_service(DockerEngine::lazily()?)?;
    let records = service.list(&Caller::local());
    if args.quiet {
        for record in &records {
            println!("{}", record.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for record in &records {
        rows.push(service.status(record).await);
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
    let (service, record) = super::open(&args.sandbox)?;
    let status = service.status(&record).await;
    let agent = match service.agent_hello(&record).await {
        Ok(hello) => serde_json::json!({
            "ready": true, "protocol": hello.protocol, "version": hello.version, "pid": hello.pid,
        }),
        Err(e) => serde_json::json!({ "ready": false, "error": e.to_string() }),
    };
    let mut value = public(&record);
    value["status"] = serde_json::json!(status.status);
    value["labels"] = serde_json::json!(status.labels);
    value["agent"] = agent;
    value["socket_dir"] = serde_json::json!(record.run_dir);
    if let Some(egress) = service.egress(&record).await {
        value["egress"] = serde_json::json!(egress);
    }
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let (service, record) = super::open(&args.sandbox)?;
    let mut stream = service.logs(&record, args.follow).await?;
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
async fn each<F, Fut>(
    service: &Service<DockerEngine>,
    references: &[String],
    action: F,
) -> anyhow::Result<ExitCode>
where
    F: Fn(SandboxRecord) -> Fut,
    Fut: std::future::Future<Output = Result<(), ServiceError>>,
{
    let mut outcome = Outcome::default();
    for reference in references {
        let result = match service.get(&Caller::local(), reference) {
            Ok(record) => action(record).await,
            Err(e) => Err(e),
        };
        outcome.report(reference, result.map_err(anyhow::Error::from));
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
                eprintln!("berth: {reference}: {}", crate::say(&e));
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
    let service = super::local_service(DockerEngine::lazily()?)?;
    let grace = Duration::from_secs(args.grace);
    each(&service, &args.sandboxes, |record| {
        let service = &service;
        async move { service.stop(&record, grace).await }
    })
    .await
}

pub async fn start(args: SandboxRefs) -> anyhow::Result<ExitCode> {
    let service = super::local_service(DockerEngine::lazily()?)?;
    each(&service, &args.sandboxes, |record| {
        let service = &service;
        async move { service.start(&record).await }
    })
    .await
}

pub async fn pause(args: SandboxRefs) -> anyhow::Result<ExitCode> {
    let service = super::local_service(DockerEngine::lazily()?)?;
    each(&service, &args.sandboxes, |record| {
        let service = &service;
        async move { service.pause(&record).await }
    })
    .await
}

pub async fn unpause(args: SandboxRefs) -> anyhow::Result<ExitCode> {
    let service = super::local_service(DockerEngine::lazily()?)?;
    each(&service, &args.sandboxes, |record| {
        let service = &service;
        async move { service.resume(&record).await }
    })
    .await
}

pub async fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let service = super::local_service(DockerEngine::lazily()?)?;
    let force = args.force;
    each(&service, &args.sandboxes, |record| {
        let service = &service;
        async move { service.remove(&record, force).await }
    })
    .await
}
