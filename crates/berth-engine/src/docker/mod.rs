//! [`DockerEngine`]: the [`Engine`] trait over the real Docker Engine API, through bollard.
//!
//! Connects through `DOCKER_HOST` (`unix://` or `tcp://`) or the default socket, negotiates the
//! API version down to what the daemon speaks, and turns bollard's errors into
//! [`EngineError`]s that say what to do.

mod config;
mod endpoint;

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters::{
    AttachContainerOptions, BuildImageOptions, CreateContainerOptions, CreateImageOptions,
    DownloadFromContainerOptions, KillContainerOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, LogsOptions, RemoveContainerOptions, RemoveVolumeOptions,
    StopContainerOptions, UploadToContainerOptions, WaitContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};

pub use config::container_body;
pub use endpoint::Endpoint;

use crate::engine::{ByteStream, Engine, OutputStream};
use crate::error::EngineError;
use crate::types::{
    BuildEvent, ContainerPlan, ContainerState, ContainerSummary, EngineInfo, ImageInfo,
    NetworkPlan, NetworkSummary, Output, VolumePlan, VolumeSummary,
};

/// How long a single request may wait for the daemon's response headers. Long-running
/// streams (wait, attach, logs) are bounded by berth's own deadlines, not by this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// What a 404 means for the operation that got it.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Container(&'a str),
    Image(&'a str),
    Other,
}

/// A connection to a Docker Engine.
#[derive(Clone)]
pub struct DockerEngine {
    /// The client as made, speaking bollard's default API version.
    client: Docker,
    /// The client with the API version negotiated down to the daemon's, made on first use.
    negotiated: std::sync::Arc<tokio::sync::OnceCell<Docker>>,
    endpoint: Endpoint,
}

impl DockerEngine {
    /// Connects to the engine named by `DOCKER_HOST`, or the default socket, and negotiates
    /// the API version (one round trip).
    pub async fn connect() -> Result<Self, EngineError> {
        Self::connect_to(Endpoint::from_env()).await
    }

    /// Connects to a given endpoint and negotiates the API version.
    pub async fn connect_to(endpoint: Endpoint) -> Result<Self, EngineError> {
        let engine = Self::lazily_to(endpoint)?;
        engine.docker().await?;
        Ok(engine)
    }

    /// An engine for `DOCKER_HOST` (or the default socket) that makes no request until it is
    /// first used: for a command whose fast path may never need the engine (`berth exec`
    /// talks to the agent; the engine only explains a failure).
    pub fn lazily() -> Result<Self, EngineError> {
        Self::lazily_to(Endpoint::from_env())
    }

    fn lazily_to(endpoint: Endpoint) -> Result<Self, EngineError> {
        Ok(Self {
            client: Self::client(&endpoint)?,
            negotiated: Default::default(),
            endpoint,
        })
    }

    /// The client, its API version negotiated on the first call (one round trip).
    async fn docker(&self) -> Result<&Docker, EngineError> {
        self.negotiated
            .get_or_try_init(|| async {
                self.client.clone().negotiate_version().await.map_err(|e| {
                    classify(
                        &self.endpoint,
                        "connecting to the engine",
                        Subject::Other,
                        e,
                    )
                })
            })
            .await
    }

    fn client(endpoint: &Endpoint) -> Result<Docker, EngineError> {
        let uri = endpoint.uri();
        let result = if uri.starts_with("unix://") {
            Docker::connect_with_unix(uri, REQUEST_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
        } else if uri.starts_with("tcp://") || uri.starts_with("http://") {
            Docker::connect_with_http(uri, REQUEST_TIMEOUT.as_secs(), bollard::API_DEFAULT_VERSION)
        } else {
            return Err(EngineError::BadEndpoint {
                endpoint: uri.to_string(),
            });
        };
        result.map_err(|e| classify(endpoint, "connecting to the engine", Subject::Other, e))
    }

    /// The endpoint this engine was reached through.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn err(&self, operation: &'static str, subject: Subject<'_>, e: BollardError) -> EngineError {
        classify(&self.endpoint, operation, subject, e)
    }
}

/// An empty container id is "no such container" here: the engine would read the path without
/// it as another endpoint. A record saved before its container existed has one.
fn named(id: &str) -> Result<(), EngineError> {
    if id.is_empty() {
        return Err(EngineError::ContainerNotFound { id: String::new() });
    }
    Ok(())
}

/// Maps a bollard error to an [`EngineError`] that names the endpoint and a remedy.
fn classify(
    endpoint: &Endpoint,
    operation: &'static str,
    subject: Subject<'_>,
    e: BollardError,
) -> EngineError {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match (status_code, subject) {
            (404, Subject::Container(id)) => EngineError::ContainerNotFound { id: id.to_string() },
            (404, Subject::Image(image)) => EngineError::ImageNotFound {
                image: image.to_string(),
            },
            _ => EngineError::Api {
                operation,
                status: status_code,
                message: message.trim().to_string(),
            },
        },
        BollardError::SocketNotFoundError(path) => EngineError::Unreachable {
            endpoint: endpoint.uri().to_string(),
            reason: format!("no socket at {path}"),
        },
        BollardError::UnsupportedURISchemeError { uri } => {
            EngineError::BadEndpoint { endpoint: uri }
        }
        BollardError::RequestTimeoutError => EngineError::Unreachable {
            endpoint: endpoint.uri().to_string(),
            reason: "the request timed out".to_string(),
        },
        other => {
            let io_kind = io_error_kind(&other);
            match io_kind {
                Some(std::io::ErrorKind::PermissionDenied) => EngineError::PermissionDenied {
                    endpoint: endpoint.uri().to_string(),
                },
                Some(std::io::ErrorKind::NotFound) => EngineError::Unreachable {
                    endpoint: endpoint.uri().to_string(),
                    reason: "the socket does not exist".to_string(),
                },
                Some(std::io::ErrorKind::ConnectionRefused) => EngineError::Unreachable {
                    endpoint: endpoint.uri().to_string(),
                    reason: "connection refused".to_string(),
                },
                _ => EngineError::Transport {
                    operation,
                    message: error_chain(&other),
                },
            }
        }
    }
}

/// The first `io::ErrorKind` in an error's source chain.
fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = err.source();
    }
    None
}

/// An error and its sources joined with `: `.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(err) = current {
        let part = err.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        current = err.source();
    }
    text
}

/// The bridge driver's options for a berth network: no address on the host's side of the
/// bridge when the host must be unreachable (nothing routes to the host), and its MTU.
fn network_options(plan: &NetworkPlan) -> HashMap<String, String> {
    let mut options = HashMap::new();
    if !plan.host_reachable {
        options.insert(
            "com.docker.network.bridge.inhibit_ipv4".to_string(),
            "true".to_string(),
        );
    }
    if let Some(mtu) = plan.mtu {
        options.insert("com.docker.network.driver.mtu".to_string(), mtu.to_string());
    }
    options
}

fn label_filters(labels: &[String]) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), labels.to_vec())])
}

/// bollard's demultiplexed output as an [`OutputStream`] (stdin echoes dropped, errors mapped).
fn output_stream<S>(
    endpoint: &Endpoint,
    operation: &'static str,
    container: &str,
    stream: S,
) -> OutputStream
where
    S: futures_util::Stream<Item = Result<bollard::container::LogOutput, BollardError>>
        + Send
        + 'static,
{
    let endpoint = endpoint.clone();
    let container = container.to_string();
    Box::pin(stream.filter_map(move |item| {
        std::future::ready(match item {
            Ok(out) => into_output(out).map(Ok),
            Err(e) => Some(Err(classify(
                &endpoint,
                operation,
                Subject::Container(&container),
                e,
            ))),
        })
    }))
}

fn into_output(item: bollard::container::LogOutput) -> Option<Output> {
    use bollard::container::LogOutput;
    match item {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            Some(Output::Stdout(message))
        }
        LogOutput::StdErr { message } => Some(Output::Stderr(message)),
        LogOutput::StdIn { .. } => None,
    }
}

impl Engine for DockerEngine {
    async fn info(&self) -> Result<EngineInfo, EngineError> {
        let (version, info) = tokio::try_join!(
            async {
                self.docker()
                    .await?
                    .version()
                    .await
                    .map_err(|e| self.err("reading the engine version", Subject::Other, e))
            },
            async {
                self.docker()
                    .await?
                    .info()
                    .await
                    .map_err(|e| self.err("reading the engine info", Subject::Other, e))
            }
        )?;
        Ok(EngineInfo {
            server_version: version.version.unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            client_api_version: self.docker().await?.client_version().to_string(),
            operating_system: info.operating_system.unwrap_or_default(),
            kernel_version: info.kernel_version.unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
            memory_limit: info.memory_limit.unwrap_or(false),
            swap_limit: info.swap_limit.unwrap_or(false),
            cpu_cfs_quota: info.cpu_cfs_quota.unwrap_or(false),
            pids_limit: info.pids_limit.unwrap_or(false),
            ncpu: info.ncpu.unwrap_or(0),
            mem_total: info.mem_total.unwrap_or(0),
            runtimes: info
                .runtimes
                .map(|r| {
                    let mut names: Vec<String> = r.into_keys().collect();
                    names.sort();
                    names
                })
                .unwrap_or_default(),
        })
    }

    async fn image_inspect(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        match self.docker().await?.inspect_image(reference).await {
            Ok(image) => {
                let config = image.config.unwrap_or_default();
                Ok(Some(ImageInfo {
                    id: image.id.unwrap_or_default(),
                    repo_digests: image.repo_digests.unwrap_or_default(),
                    user: config.user.filter(|u| !u.is_empty()),
                    entrypoint: config.entrypoint.unwrap_or_default(),
                    cmd: config.cmd.unwrap_or_default(),
                    workdir: config.working_dir.filter(|w| !w.is_empty()),
                    size: image.size,
                }))
            }
            Err(e) => match self.err("inspecting an image", Subject::Image(reference), e) {
                EngineError::ImageNotFound { .. } => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn image_build(
        &self,
        context: Bytes,
        tag: &str,
        labels: &[(String, String)],
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<ImageInfo, EngineError> {
        let options = BuildImageOptions {
            t: Some(tag.to_string()),
            rm: true,
            forcerm: true,
            labels: Some(labels.iter().cloned().collect()),
            ..Default::default()
        };
        let mut stream =
            self.docker()
                .await?
                .build_image(options, None, Some(bollard::body_full(context)));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| self.err("building an image", Subject::Other, e))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api {
                    operation: "building an image",
                    status: 0,
                    message: detail.message.unwrap_or_default(),
                });
            }
            if let Some(line) = info.stream {
                let line = line.trim_end();
                if !line.is_empty() {
                    progress(BuildEvent::Log(line.to_string()));
                }
            }
        }
        self.image_inspect(tag)
            .await?
            .ok_or_else(|| EngineError::ImageNotFound {
                image: tag.to_string(),
            })
    }

    async fn image_pull(
        &self,
        reference: &str,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<ImageInfo, EngineError> {
        let options = CreateImageOptions {
            from_image: Some(reference.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker().await?.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info =
                item.map_err(|e| self.err("pulling an image", Subject::Image(reference), e))?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Api {
                    operation: "pulling an image",
                    status: 0,
                    message: detail.message.unwrap_or_default(),
                });
            }
            let (current, total) = info
                .progress_detail
                .map(|p| (p.current, p.total))
                .unwrap_or((None, None));
            progress(BuildEvent::Progress {
                id: info.id.unwrap_or_default(),
                status: info.status.unwrap_or_default(),
                current,
                total,
            });
        }
        self.image_inspect(reference)
            .await?
            .ok_or_else(|| EngineError::ImageNotFound {
                image: reference.to_string(),
            })
    }

    async fn container_create(&self, plan: &ContainerPlan) -> Result<String, EngineError> {
        let options = CreateContainerOptions {
            name: Some(plan.name.clone()),
            ..Default::default()
        };
        let created = self
            .docker()
            .await?
            .create_container(Some(options), container_body(plan))
            .await
            .map_err(|e| self.err("creating a container", Subject::Image(&plan.image), e))?;
        Ok(created.id)
    }

    async fn container_attach(&self, id: &str) -> Result<OutputStream, EngineError> {
        let options = AttachContainerOptions {
            stream: true,
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let attached = self
            .docker()
            .await?
            .attach_container(id, Some(options))
            .await
            .map_err(|e| self.err("attaching to a container", Subject::Container(id), e))?;
        Ok(output_stream(
            &self.endpoint,
            "reading output",
            id,
            attached.output,
        ))
    }

    async fn container_start(&self, id: &str) -> Result<(), EngineError> {
        named(id)?;
        self.docker()
            .await?
            .start_container(id, None)
            .await
            .map_err(
                |e| match self.err("starting a container", Subject::Container(id), e) {
                    EngineError::Api {
                        status: 400 | 500,
                        message,
                        ..
                    } => EngineError::StartFailed {
                        id: id.to_string(),
                        message,
                    },
                    other => other,
                },
            )
    }

    async fn container_wait(&self, id: &str) -> Result<i64, EngineError> {
        named(id)?;
        let options = WaitContainerOptions {
            condition: "not-running".to_string(),
        };
        let mut stream = self.docker().await?.wait_container(id, Some(options));
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(self.err("waiting for a container", Subject::Container(id), e)),
            None => Err(EngineError::Transport {
                operation: "waiting for a container",
                message: "the engine closed the wait stream without an exit code".to_string(),
            }),
        }
    }

    async fn container_kill(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        named(id)?;
        let options = KillContainerOptions {
            signal: signal.to_string(),
        };
        self.docker()
            .await?
            .kill_container(id, Some(options))
            .await
            .map_err(|e| self.err("signalling a container", Subject::Container(id), e))
    }

    async fn container_stop(&self, id: &str, grace: Duration) -> Result<(), EngineError> {
        named(id)?;
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        self.docker()
            .await?
            .stop_container(id, Some(options))
            .await
            .map_err(|e| self.err("stopping a container", Subject::Container(id), e))
    }

    async fn container_pause(&self, id: &str) -> Result<(), EngineError> {
        named(id)?;
        self.docker()
            .await?
            .pause_container(id)
            .await
            .map_err(|e| self.err("pausing a container", Subject::Container(id), e))
    }

    async fn container_unpause(&self, id: &str) -> Result<(), EngineError> {
        named(id)?;
        self.docker()
            .await?
            .unpause_container(id)
            .await
            .map_err(|e| self.err("unpausing a container", Subject::Container(id), e))
    }

    async fn container_remove(&self, id: &str, force: bool) -> Result<(), EngineError> {
        named(id)?;
        let options = RemoveContainerOptions {
            force,
            v: true,
            ..Default::default()
        };
        self.docker()
            .await?
            .remove_container(id, Some(options))
            .await
            .map_err(|e| self.err("removing a container", Subject::Container(id), e))
    }

    async fn container_inspect(&self, id: &str) -> Result<ContainerState, EngineError> {
        named(id)?;
        let c = self
            .docker()
            .await?
            .inspect_container(id, None)
            .await
            .map_err(|e| self.err("inspecting a container", Subject::Container(id), e))?;
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        Ok(ContainerState {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default(),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.filter(|e| !e.is_empty()),
            started_at: state.started_at,
            finished_at: state.finished_at,
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            image: config.image.unwrap_or_default(),
            ip_addresses: c
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(name, endpoint)| {
                    endpoint
                        .ip_address
                        .filter(|ip| !ip.is_empty())
                        .map(|ip| (name, ip))
                })
                .collect(),
        })
    }

    async fn container_list(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, EngineError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(label_filters(labels)),
            ..Default::default()
        };
        let rows = self
            .docker()
            .await?
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err("listing containers", Subject::Other, e))?;
        Ok(rows
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
                status: c.status.unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    async fn container_logs(&self, id: &str, follow: bool) -> Result<OutputStream, EngineError> {
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            tail: "all".to_string(),
            ..Default::default()
        };
        Ok(output_stream(
            &self.endpoint,
            "reading logs",
            id,
            self.docker().await?.logs(id, Some(options)),
        ))
    }

    async fn archive_upload(&self, id: &str, path: &str, tar: Bytes) -> Result<(), EngineError> {
        let options = UploadToContainerOptions {
            path: path.to_string(),
            ..Default::default()
        };
        self.docker()
            .await?
            .upload_to_container(id, Some(options), bollard::body_full(tar))
            .await
            .map_err(|e| self.err("uploading into a container", Subject::Container(id), e))
    }

    async fn archive_download(&self, id: &str, path: &str) -> Result<ByteStream, EngineError> {
        let options = DownloadFromContainerOptions {
            path: path.to_string(),
        };
        let endpoint = self.endpoint.clone();
        let owned_id = id.to_string();
        let stream = self
            .docker()
            .await?
            .download_from_container(id, Some(options))
            .map_err(move |e| {
                classify(
                    &endpoint,
                    "downloading from a container",
                    Subject::Container(&owned_id),
                    e,
                )
            });
        Ok(Box::pin(stream))
    }

    async fn container_exec_attached(
        &self,
        id: &str,
        argv: &[String],
    ) -> Result<(OutputStream, crate::engine::ExecInput), EngineError> {
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(false),
            ..Default::default()
        };
        let exec = self
            .docker()
            .await?
            .create_exec(id, options)
            .await
            .map_err(|e| self.err("creating an exec", Subject::Container(id), e))?;
        let started = self
            .docker()
            .await?
            .start_exec(&exec.id, None)
            .await
            .map_err(|e| self.err("starting an exec", Subject::Container(id), e))?;
        match started {
            bollard::exec::StartExecResults::Attached { output, input } => Ok((
                output_stream(&self.endpoint, "reading an exec", id, output),
                input,
            )),
            bollard::exec::StartExecResults::Detached => Err(EngineError::Transport {
                operation: "starting an exec",
                message: "the engine did not attach the exec's streams".to_string(),
            }),
        }
    }

    async fn network_create(&self, plan: &NetworkPlan) -> Result<String, EngineError> {
        let request = bollard::models::NetworkCreateRequest {
            name: plan.name.clone(),
            driver: Some("bridge".to_string()),
            internal: Some(plan.internal),
            labels: Some(plan.labels.clone().into_iter().collect()),
            options: Some(network_options(plan)),
            ..Default::default()
        };
        let created = self
            .docker()
            .await?
            .create_network(request)
            .await
            .map_err(|e| self.err("creating a network", Subject::Other, e))?;
        Ok(created.id)
    }

    async fn network_connect(&self, network: &str, container: &str) -> Result<(), EngineError> {
        let request = bollard::models::NetworkConnectRequest {
            container: container.to_string(),
            ..Default::default()
        };
        self.docker()
            .await?
            .connect_network(network, request)
            .await
            .map_err(|e| {
                self.err(
                    "connecting a container to a network",
                    Subject::Container(container),
                    e,
                )
            })
    }

    async fn network_remove(&self, id: &str) -> Result<(), EngineError> {
        self.docker()
            .await?
            .remove_network(id)
            .await
            .map_err(|e| self.err("removing a network", Subject::Other, e))
    }

    async fn network_list(&self, labels: &[String]) -> Result<Vec<NetworkSummary>, EngineError> {
        let options = ListNetworksOptions {
            filters: Some(label_filters(labels)),
        };
        let rows = self
            .docker()
            .await?
            .list_networks(Some(options))
            .await
            .map_err(|e| self.err("listing networks", Subject::Other, e))?;
        Ok(rows
            .into_iter()
            .map(|n| NetworkSummary {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                labels: n.labels.unwrap_or_default().into_iter().collect(),
            })
            .collect())
    }

    async fn volume_create(&self, plan: &VolumePlan) -> Result<(), EngineError> {
        let request = bollard::models::VolumeCreateRequest {
            name: Some(plan.name.clone()),
            labels: Some(plan.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker()
            .await?
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(|e| self.err("creating a volume", Subject::Other, e))
    }

    async fn volume_remove(&self, name: &str) -> Result<(), EngineError> {
        match self
            .docker()
            .await?
            .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
            .await
        {
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            other => other.map_err(|e| self.err("removing a volume", Subject::Other, e)),
        }
    }

    async fn volume_list(&self, labels: &[String]) -> Result<Vec<VolumeSummary>, EngineError> {
        let options = ListVolumesOptions {
            filters: Some(label_filters(labels)),
        };
        let listed = self
            .docker()
            .await?
            .list_volumes(Some(options))
            .await
            .map_err(|e| self.err("listing volumes", Subject::Other, e))?;
        Ok(listed
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| VolumeSummary {
                name: v.name,
                labels: v.labels.into_iter().collect(),
            })
            .collect())
    }
}
