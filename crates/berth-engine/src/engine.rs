//! The [`Engine`] trait: the narrow set of operations berth needs from a container engine.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use crate::error::EngineError;
use crate::types::{
    BuildEvent, ContainerPlan, ContainerState, ContainerSummary, EngineInfo, ImageInfo,
    NetworkPlan, NetworkSummary, Output, VolumePlan, VolumeSummary,
};

/// A container's output, stdout and stderr demultiplexed.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, EngineError>> + Send>>;
/// A raw byte stream (tar archives).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, EngineError>> + Send>>;
/// The stdin of an attached exec.
pub type ExecInput = Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// What berth needs from a container engine. Implemented for Docker by
/// [`crate::docker::DockerEngine`]; unit tests implement it with recording fakes.
///
/// Every object an implementation creates must carry the labels the caller put in the plan.
pub trait Engine: Send + Sync + 'static {
    /// Engine facts (versions, enforceable limits); also serves as a ping.
    fn info(&self) -> impl Future<Output = Result<EngineInfo, EngineError>> + Send;

    /// Inspects an image; `Ok(None)` when it is not present.
    fn image_inspect(
        &self,
        reference: &str,
    ) -> impl Future<Output = Result<Option<ImageInfo>, EngineError>> + Send;

    /// Builds an image from a tar build context (with a `Dockerfile` at its root) and tags it.
    fn image_build(
        &self,
        context: Bytes,
        tag: &str,
        labels: &[(String, String)],
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> impl Future<Output = Result<ImageInfo, EngineError>> + Send;

    /// Pulls an image from its registry.
    fn image_pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> impl Future<Output = Result<ImageInfo, EngineError>> + Send;

    /// Creates (does not start) a container; returns its id.
    fn container_create(
        &self,
        plan: &ContainerPlan,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;

    /// Attaches to a created container's stdout and stderr; attach before starting so no
    /// output is lost. The stream ends when the container's output closes.
    fn container_attach(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<OutputStream, EngineError>> + Send;

    /// Starts a created container. A process that cannot be executed is
    /// [`EngineError::StartFailed`].
    fn container_start(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Waits until the container is not running and returns its exit code.
    fn container_wait(&self, id: &str) -> impl Future<Output = Result<i64, EngineError>> + Send;

    /// Sends a signal (`SIGKILL`, `SIGTERM`, …) to the container's main process.
    fn container_kill(
        &self,
        id: &str,
        signal: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Stops the container: stop signal, then kill after `grace`.
    fn container_stop(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Freezes every process of the container (the cgroup freezer: `docker pause`).
    fn container_pause(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Thaws a paused container (`docker unpause`).
    fn container_unpause(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes the container (killing it first when `force`), with its anonymous volumes.
    fn container_remove(
        &self,
        id: &str,
        force: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Inspects a container.
    fn container_inspect(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ContainerState, EngineError>> + Send;

    /// Lists containers (running or not) carrying every given `key=value` label.
    fn container_list(
        &self,
        labels: &[String],
    ) -> impl Future<Output = Result<Vec<ContainerSummary>, EngineError>> + Send;

    /// The container's log (its main process's stdout and stderr); `follow` streams until exit.
    fn container_logs(
        &self,
        id: &str,
        follow: bool,
    ) -> impl Future<Output = Result<OutputStream, EngineError>> + Send;

    /// Uploads a tar archive and unpacks it at `path` inside the container.
    fn archive_upload(
        &self,
        id: &str,
        path: &str,
        tar: Bytes,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Downloads `path` from the container as a tar archive stream.
    fn archive_download(
        &self,
        id: &str,
        path: &str,
    ) -> impl Future<Output = Result<ByteStream, EngineError>> + Send;

    /// Runs `argv` in a running container with stdin, stdout and stderr attached (no TTY, so
    /// stdout and stderr stay strictly framed). Used as berth's fallback channel to its agent.
    fn container_exec_attached(
        &self,
        id: &str,
        argv: &[String],
    ) -> impl Future<Output = Result<(OutputStream, ExecInput), EngineError>> + Send;

    /// Creates a network; returns its id.
    fn network_create(
        &self,
        plan: &NetworkPlan,
    ) -> impl Future<Output = Result<String, EngineError>> + Send;

    /// Attaches a (created or running) container to one more network.
    fn network_connect(
        &self,
        network: &str,
        container: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes a network.
    fn network_remove(&self, id: &str) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Lists networks carrying every given `key=value` label.
    fn network_list(
        &self,
        labels: &[String],
    ) -> impl Future<Output = Result<Vec<NetworkSummary>, EngineError>> + Send;

    /// Creates a named volume with labels (idempotent: an existing volume is kept).
    fn volume_create(
        &self,
        plan: &VolumePlan,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes a volume; a missing one is not an error.
    fn volume_remove(&self, name: &str) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Volumes carrying all of `labels` (`key=value` or `key`).
    fn volume_list(
        &self,
        labels: &[String],
    ) -> impl Future<Output = Result<Vec<VolumeSummary>, EngineError>> + Send;
}
