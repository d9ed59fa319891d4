//! `berth serve` and `berth server …`: the edge of the server. It resolves what belongs to
//! this process (the state directory, the engine, the listener, the signals) and hands them
//! to `berth_server::serve`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use berth_engine::docker::DockerEngine;
use berth_server::db::Db;
use berth_server::{auth, AppState};
use berth_service::Service;

use crate::args::{KeyCommand, ServeArgs, ServerCommand};

/// The state directory (`BERTH_STATE_DIR`, …) holds the database; the runtime directory the
/// sandboxes' mounted directories.
fn open_db(create: bool) -> anyhow::Result<Db> {
    let store = super::store();
    Ok(Db::open(
        store.state_dir(),
        berth_sandbox::store::Store::runtime_dir(&store),
        create,
    )?)
}

pub async fn run(command: ServerCommand) -> anyhow::Result<ExitCode> {
    match command {
        ServerCommand::Init => {
            let db = open_db(true)?;
            let id = db.server_id()?;
            if !db.keys()?.is_empty() {
                bail!(
                    "the server in {} is already set up (server {id}); make more keys with `berth server key create --name NAME`",
                    super::store().state_dir().display()
                );
            }
            let key = auth::new_key().context("generating a key")?;
            db.add_key("admin", &auth::hash(&key), true)?;
            eprintln!(
                "berth: server {id} set up in {}; its admin key (shown once) is on stdout",
                Db::path_in(super::store().state_dir()).display()
            );
            println!("{key}");
        }
        ServerCommand::Key { command } => key(command)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn key(command: KeyCommand) -> anyhow::Result<()> {
    let db = open_db(false)?;
    match command {
        KeyCommand::Create { name, admin } => {
            auth::check_name(&name).map_err(anyhow::Error::msg)?;
            let key = auth::new_key().context("generating a key")?;
            if !db.add_key(&name, &auth::hash(&key), admin)? {
                bail!("a key named {name:?} exists: pick another name, or remove it first (`berth server key rm {name}`)");
            }
            eprintln!(
                "berth: key {name} made{}; shown once, on stdout",
                if admin { " (admin)" } else { "" }
            );
            println!("{key}");
        }
        KeyCommand::Ls { json } => {
            let keys = db.keys()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                println!("{:<24} {:<6} CREATED", "NAME", "ADMIN");
                for k in keys {
                    println!("{:<24} {:<6} {}", k.name, k.admin, k.created);
                }
            }
        }
        KeyCommand::Rm { name } => {
            if !db.remove_key(&name)? {
                bail!("no key named {name:?}: see `berth server key ls`");
            }
            eprintln!("berth: key {name} removed");
        }
    }
    Ok(())
}

/// Ends when SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("berth: shutting down (requests in flight finish; sandboxes keep running)");
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let state_dir = super::store().state_dir().to_path_buf();
    let db = Arc::new(open_db(false)?);
    let server_id = db.server_id()?;
    let engine = Arc::new(DockerEngine::connect().await?);
    let agent = berth_sandbox::sandbox::agent_binary()?;
    let workspace_root = match &args.workspace_root {
        Some(dir) => Some(std::fs::canonicalize(dir).with_context(|| {
            format!(
                "--workspace-root {}: no such directory; create it or fix the path",
                dir.display()
            )
        })?),
        None => None,
    };
    let max_upload = berth_spec::parse_size(&args.max_upload)?;
    let service = Service::new(
        engine.clone(),
        db.clone(),
        agent,
        engine.endpoint().socket_path(),
    )
    .with_marks(BTreeMap::from([(
        berth_spec::labels::SERVER.to_string(),
        server_id.clone(),
    )]));
    let state = AppState::new(service, db, workspace_root, max_upload);
    let done = berth_server::reconcile::run(&state, &server_id).await?;
    eprintln!(
        "berth: server {server_id} (state {}): adopted {} sandbox(es), {} vanished, {} orphan(s) collected",
        state_dir.display(),
        done.adopted.len(),
        done.vanished.len(),
        done.collected.len()
    );
    if let Some(path) = args.listen.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("--listen unix:{path}: cannot listen there"))?;
        eprintln!("berth: listening on unix:{path}");
        berth_server::serve(listener, state, shutdown_signal()).await?;
    } else {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| {
                format!(
                    "--listen {}: cannot listen there; give HOST:PORT, e.g. 127.0.0.1:7777, or unix:PATH",
                    args.listen
                )
            })?;
        let addr = listener.local_addr()?;
        eprintln!("berth: listening on http://{addr}");
        let listener = berth_server::no_delay(listener);
        berth_server::serve(listener, state, shutdown_signal()).await?;
    }
    Ok(ExitCode::SUCCESS)
}
