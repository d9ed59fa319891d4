//! One module per `berth` verb.

pub mod agent;
pub mod cp;
pub mod doctor;
pub mod exec;
pub mod fs;
pub mod gc;
pub mod image;
pub mod remote;
pub mod run;
pub mod sandbox;
pub mod server;

use berth_engine::docker::DockerEngine;
use berth_engine::{Engine, ImageInfo};

use crate::progress::Progress;

/// The image, built (berth/base) or pulled with progress if it is not present.
pub async fn ensure_image(engine: &DockerEngine, reference: &str) -> anyhow::Result<ImageInfo> {
    berth_spec::check_image(reference)?;
    if let Some(image) = engine.image_inspect(reference).await? {
        return Ok(image);
    }
    let progress = Progress::start(&format!("preparing image {reference}"));
    match berth_sandbox::images::ensure(engine, reference, &|e| progress.event(e)).await {
        Ok(image) => {
            progress.finish(&format!("image {reference} ready"));
            Ok(image)
        }
        Err(e) => {
            progress.abandon();
            Err(e.into())
        }
    }
}

/// The local service, its engine connected only if a call needs it (`berth exec`'s fast path
/// makes no Docker call), and the caller's sandbox named `reference`.
pub fn open(
    reference: &str,
) -> anyhow::Result<(
    berth_service::Service<DockerEngine>,
    berth_sandbox::sandbox::SandboxRecord,
)> {
    let service = local_service(DockerEngine::lazily()?)?;
    let record = service.get(&berth_service::Caller::local(), reference)?;
    Ok((service, record))
}

/// The sandbox operations over the local engine and the daemonless CLI's records; a secret
/// without a value comes from this (the caller's own) environment.
pub fn local_service(engine: DockerEngine) -> anyhow::Result<berth_service::Service<DockerEngine>> {
    let socket = engine.endpoint().socket_path();
    Ok(berth_service::Service::new(
        std::sync::Arc::new(engine),
        std::sync::Arc::new(store()),
        berth_sandbox::sandbox::agent_binary()?,
        socket,
    )
    .with_secret_lookup(std::sync::Arc::new(env_secret)))
}

/// The daemonless CLI's sandbox records and mounted directories, where its environment says
/// (`BERTH_STATE_DIR`, `BERTH_RUNTIME_DIR`, …): resolved here, at the edge, and handed down.
pub fn store() -> berth_sandbox::store::FileStore {
    berth_sandbox::store::FileStore::from_env()
}

/// The daemonless CLI's named-agent records (`<state dir>/agents`).
pub fn agents() -> berth_runtimes::store::AgentStore {
    berth_runtimes::store::AgentStore::in_state(store().state_dir())
}

/// A secret's value from the caller's environment (empty counts as unset): the edge where
/// `--secret NAME` without a value, and a restarted gateway's secrets, are resolved.
pub fn env_secret(name: &str) -> Option<berth_spec::SecretValue> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(berth_spec::SecretValue::new)
}

/// `--env NAME` (and `env` in berth.toml) resolved from the caller's environment; a name that
/// is unset here stays without a value, so it is not passed (and an agent run says so).
pub fn resolve_env(vars: &mut [berth_spec::EnvVar]) {
    for var in vars.iter_mut().filter(|v| v.value.is_none()) {
        var.value = std::env::var(&var.name).ok();
    }
}

/// A host path as the libraries take it, absolute: `~` is the caller's home and a relative
/// path is taken from the caller's cwd. Not canonicalized: the plan does that, and says so
/// when the path does not exist.
pub fn absolute_host_path(mount: &mut berth_spec::MountSpec) {
    let given = mount.host.as_str();
    let home = || std::env::var("HOME").unwrap_or_else(|_| "/".to_string());
    let expanded = match given.strip_prefix('~') {
        Some("") => std::path::PathBuf::from(home()),
        Some(rest) if rest.starts_with('/') => {
            std::path::PathBuf::from(format!("{}{rest}", home()))
        }
        _ => std::path::PathBuf::from(given),
    };
    let absolute = if expanded.is_absolute() {
        expanded
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(expanded),
            Err(_) => return,
        }
    };
    mount.host = absolute.display().to_string();
}

/// `--secret NAME` values resolved from the caller's environment where not given.
pub fn resolve_secrets(secrets: &mut [berth_spec::SecretSpec]) {
    for s in secrets.iter_mut().filter(|s| s.value.is_none()) {
        s.value = env_secret(&s.name);
    }
}
