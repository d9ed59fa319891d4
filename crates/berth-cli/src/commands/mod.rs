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
        std::sync::Arc::new(berth_sandbox::store::FileStore::local()),
        berth_sandbox::sandbox::agent_binary()?,
        socket,
    )
    .with_secrets_from_environment())
}
