//! berth-service: every sandbox operation, once.
//!
//! The front ends — the CLI in local mode and the HTTP server — parse, authenticate, resolve
//! what belongs to their caller (environment, cwd, the tenant), call one operation of
//! [`Service`] and render its result. No front end speaks the agent protocol or reaches the
//! engine around these operations. Each operation fails with a [`ServiceError`] of one
//! [`ErrorKind`], which maps to one exit code and one HTTP status.
//!
//! The operations, as one list (what the server's routes and the CLI's verbs call):
//! create · list · get · status · remove · stop · start · pause · resume · exec (events with
//! byte offsets) · processes (start by a caller-chosen id, attach from an offset, stdin,
//! signal) · files (read, write, list, stat, mkdir, move, remove) · logs.

pub mod error;
pub mod exec;
pub mod files;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_engine::BuildEvent;
use berth_engine::{Engine, ImageInfo, OutputStream};
use berth_sandbox::agent_client::AgentClient;
use berth_sandbox::egress::SecretLookup;
use berth_sandbox::sandbox::{
    self, AgentDelivery, CreateOptions, SandboxRecord, SandboxStatus, VolumeMount,
};
use berth_sandbox::store::{self, Store};
use berth_spec::SandboxSpec;

pub use error::{ErrorKind, Remedy, ServiceError};
pub use exec::{ExecEvent, ExecRequest, Offsets};

/// The label naming the tenant (API key) a server-made sandbox belongs to.
pub const TENANT_LABEL: &str = berth_spec::labels::TENANT;

/// Who is asking: the local user (sees everything in its own store) or one tenant of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant, for a server's callers; `None` for the daemonless CLI's user.
    pub tenant: Option<String>,
    /// An admin sees every tenant's sandboxes.
    pub admin: bool,
}

impl Caller {
    /// The daemonless CLI's user: the store is theirs alone.
    pub fn local() -> Self {
        Self {
            tenant: None,
            admin: true,
        }
    }

    /// One tenant of a server.
    pub fn tenant(name: impl Into<String>, admin: bool) -> Self {
        Self {
            tenant: Some(name.into()),
            admin,
        }
    }

    /// Whether this caller may see the sandbox.
    pub fn sees(&self, record: &SandboxRecord) -> bool {
        self.admin || record.labels.get(TENANT_LABEL) == self.tenant.as_ref()
    }
}

/// What a sandbox's agent says of itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AgentHello {
    pub protocol: String,
    pub version: String,
    pub pid: u32,
}

/// What to make: the spec (already the hardened defaults plus the caller's choices) and how.
#[derive(Debug, Clone)]
pub struct CreateRequest {
    pub spec: SandboxSpec,
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// How the agent gets into the container; `None`: mounted, or copied when the engine is
    /// remote or the root file system is read-only.
    pub delivery: Option<AgentDelivery>,
    /// Named volumes to mount (made when missing), e.g. a named agent's home; they carry the
    /// service's marks and the caller's tenant like the sandbox does.
    pub volumes: Vec<VolumeMount>,
}

/// The sandbox operations over one engine and one store.
pub struct Service<E: Engine> {
    engine: Arc<E>,
    store: Arc<dyn Store>,
    agent: PathBuf,
    engine_socket: Option<PathBuf>,
    /// Labels every sandbox this service makes carries (a server marks its own).
    marks: BTreeMap<String, String>,
    /// Where a secret known only by name gets its value (a restarted gateway's): the front
    /// end's answer (the daemonless CLI's user's environment); a server has none, so it never
    /// hands a sandbox its own environment.
    secret_lookup: Option<Arc<SecretLookup<'static>>>,
    /// One open connection per sandbox's agent ([`Service::agent`]).
    clients: std::sync::Mutex<HashMap<String, AgentClient>>,
}

impl<E: Engine> Service<E> {
    /// A service over `engine` (reached at `engine_socket` when local) keeping records in
    /// `store`, putting the agent binary at `agent` into each sandbox.
    pub fn new(
        engine: Arc<E>,
        store: Arc<dyn Store>,
        agent: PathBuf,
        engine_socket: Option<PathBuf>,
    ) -> Self {
        Self {
            engine,
            store,
            agent,
            engine_socket,
            marks: BTreeMap::new(),
            secret_lookup: None,
            clients: Default::default(),
        }
    }

    /// Lets a secret without a value get one from `lookup` (the CLI: its user's environment).
    pub fn with_secret_lookup(mut self, lookup: Arc<SecretLookup<'static>>) -> Self {
        self.secret_lookup = Some(lookup);
        self
    }

    /// Labels every sandbox made from now on carries.
    pub fn with_marks(mut self, marks: BTreeMap<String, String>) -> Self {
        self.marks = marks;
        self
    }

    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The image, made (berth's own images, offline) when it is missing.
    pub async fn ensure_image(
        &self,
        reference: &str,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<ImageInfo, ServiceError> {
        Ok(berth_sandbox::images::ensure(self.engine.as_ref(), reference, progress).await?)
    }

    /// Creates and starts a sandbox; returns once its agent answers.
    pub async fn create(
        &self,
        caller: &Caller,
        request: CreateRequest,
        progress: &(dyn Fn(BuildEvent) + Send + Sync),
    ) -> Result<SandboxRecord, ServiceError> {
        if let Some(name) = &request.name {
            berth_spec::names::check("sandbox name", name, "web-1")
                .map_err(ServiceError::invalid)?;
        }
        let mut request = request;
        for s in request
            .spec
            .egress
            .secrets
            .iter_mut()
            .filter(|s| s.value.is_none())
        {
            match &self.secret_lookup {
                Some(lookup) => s.value = lookup(&s.name),
                None => {
                    return Err(ServiceError::invalid(format!(
                        "secret {} has no value: give it (this service never takes one from its own environment)",
                        s.name
                    )))
                }
            }
        }
        let image = self.ensure_image(&request.spec.image, progress).await?;
        let mut labels = request.labels;
        labels.extend(self.marks.clone());
        if let Some(tenant) = &caller.tenant {
            labels.insert(TENANT_LABEL.to_string(), tenant.clone());
        }
        let delivery = match request.delivery {
            Some(d) => d,
            None if self.engine_socket.is_none() => AgentDelivery::Archive,
            None => AgentDelivery::Mount,
        };
        let mut volumes = request.volumes;
        for v in &mut volumes {
            v.volume.labels.extend(self.marks.clone());
            if let Some(tenant) = &caller.tenant {
                v.volume
                    .labels
                    .insert(TENANT_LABEL.to_string(), tenant.clone());
            }
        }
        let options = CreateOptions {
            agent: self.agent.clone(),
            name: request.name,
            delivery,
            labels,
            volumes,
            ..Default::default()
        };
        sandbox::create(
            self.engine.as_ref(),
            self.store.as_ref(),
            &request.spec,
            &image,
            self.engine_socket.clone(),
            &options,
        )
        .await
        .map_err(|e| match e {
            // It never came up: what it was asked to be is why (nothing is left behind).
            berth_sandbox::SandboxError::AgentDown { state, .. } => ServiceError::invalid(format!(
                "the sandbox stopped while it started ({state}): check its command and limits"
            )),
            other => other.into(),
        })
    }

    /// The caller's sandboxes, oldest first.
    pub fn list(&self, caller: &Caller) -> Vec<SandboxRecord> {
        self.store
            .records()
            .into_iter()
            .filter(|r| caller.sees(r))
            .collect()
    }

    /// One of the caller's sandboxes, by id, name or unique id prefix. Someone else's is
    /// "not found", never "forbidden": its existence is not the caller's to know.
    pub fn get(&self, caller: &Caller, reference: &str) -> Result<SandboxRecord, ServiceError> {
        // The common case, an exact id, is one indexed lookup.
        if let Some(record) = self.store.get(reference).filter(|r| caller.sees(r)) {
            return Ok(record);
        }
        Ok(store::find_in(self.list(caller), reference)?)
    }

    /// What the engine says about it now.
    pub async fn status(&self, record: &SandboxRecord) -> SandboxStatus {
        sandbox::status(self.engine.as_ref(), record).await
    }

    /// Removes it (killing it when `force`) with everything it made, and its record.
    pub async fn remove(&self, record: &SandboxRecord, force: bool) -> Result<(), ServiceError> {
        self.disconnect(&record.id);
        Ok(sandbox::remove(self.engine.as_ref(), self.store.as_ref(), record, force).await?)
    }

    pub async fn stop(&self, record: &SandboxRecord, grace: Duration) -> Result<(), ServiceError> {
        self.disconnect(&record.id);
        Ok(sandbox::stop(self.engine.as_ref(), record, grace).await?)
    }

    pub async fn start(&self, record: &SandboxRecord) -> Result<(), ServiceError> {
        let state = self.engine.container_inspect(&record.container_id).await?;
        if state.status == "paused" {
            return Err(ServiceError::conflict(format!(
                "sandbox {} is paused, not stopped",
                record.id
            ))
            .with_remedy(Remedy::Resume {
                id: record.id.clone(),
            }));
        }
        if state.running {
            return Ok(());
        }
        self.disconnect(&record.id);
        Ok(sandbox::start(
            self.engine.as_ref(),
            record,
            &self.agent,
            self.secret_lookup
                .as_deref()
                .unwrap_or(&berth_sandbox::egress::no_secrets),
        )
        .await?)
    }

    /// Freezes every process (the clock of a server's timeout stops with it).
    pub async fn pause(&self, record: &SandboxRecord) -> Result<(), ServiceError> {
        let state = self.engine.container_inspect(&record.container_id).await?;
        match state.status.as_str() {
            "paused" => Ok(()),
            "running" => {
                self.engine.container_pause(&record.container_id).await?;
                // Its frozen agent would take a call and never answer: calls check this
                // mark first (a stat, so the fast path stays free of engine calls).
                let mark = self.paused_mark(record);
                let made = match mark.parent() {
                    Some(dir) => std::fs::create_dir_all(dir),
                    None => Ok(()),
                };
                made.and_then(|()| std::fs::write(&mark, b""))
                    .map_err(|e| {
                        ServiceError::internal(format!("writing {}: {e}", mark.display()))
                    })?;
                Ok(())
            }
            other => Err(ServiceError::conflict(format!(
                "sandbox {} is {other}, not running: only a running sandbox can be paused",
                record.id
            ))),
        }
    }

    pub async fn resume(&self, record: &SandboxRecord) -> Result<(), ServiceError> {
        let state = self.engine.container_inspect(&record.container_id).await?;
        match state.status.as_str() {
            "paused" => {
                self.engine.container_unpause(&record.container_id).await?;
                let _ = std::fs::remove_file(self.paused_mark(record));
                Ok(())
            }
            "running" => Ok(()),
            other => Err(ServiceError::conflict(format!(
                "sandbox {} is {other}, not paused: start it instead",
                record.id
            ))),
        }
    }

    /// The main process's output (stdout and stderr as the engine keeps them).
    pub async fn logs(
        &self,
        record: &SandboxRecord,
        follow: bool,
    ) -> Result<OutputStream, ServiceError> {
        Ok(self
            .engine
            .container_logs(&record.container_id, follow)
            .await?)
    }

    /// What the sandbox's agent says of itself (protocol, version, pid), asked over a fresh
    /// connection, so it also tells whether the agent answers right now.
    pub async fn agent_hello(&self, record: &SandboxRecord) -> Result<AgentHello, ServiceError> {
        self.refuse_if_paused(record).await?;
        let mut client = sandbox::connect(self.engine.as_ref(), record).await?;
        let hello = self
            .answered(record, client.hello(berth_protocol::v1::HelloRequest {}))
            .await?
            .into_inner();
        Ok(AgentHello {
            protocol: hello.protocol,
            version: hello.agent_version,
            pid: hello.pid,
        })
    }

    /// The sandbox's egress policy with its gateway's counts (none while the gateway is not
    /// running); `None` for a sandbox without a policy.
    pub async fn egress(
        &self,
        record: &SandboxRecord,
    ) -> Option<berth_sandbox::receipt::EgressReport> {
        let egress = record.egress.as_ref()?;
        let stats = berth_sandbox::egress::stats(self.engine.as_ref(), &egress.gateway_name)
            .await
            .ok();
        Some(egress.report(stats))
    }

    /// A client of the sandbox's agent (its socket, else the exec channel). One connection
    /// per sandbox is kept and shared (HTTP/2 carries every call on it), so a call costs no
    /// connect; it is dropped when the sandbox stops, starts or goes, or a call finds it broken.
    pub async fn agent(&self, record: &SandboxRecord) -> Result<AgentClient, ServiceError> {
        self.refuse_if_paused(record).await?;
        if let Some(client) = self.clients().get(&record.id) {
            return Ok(client.clone());
        }
        let client = sandbox::connect(self.engine.as_ref(), record).await?;
        self.clients().insert(record.id.clone(), client.clone());
        Ok(client)
    }

    /// A paused sandbox's frozen agent takes a call and never answers: a call is refused
    /// instead when `pause` left its mark (and the engine agrees: a mark left by a pause that
    /// was undone behind berth's back is dropped).
    async fn refuse_if_paused(&self, record: &SandboxRecord) -> Result<(), ServiceError> {
        let mark = self.paused_mark(record);
        if !mark.exists() {
            return Ok(());
        }
        let state = self.engine.container_inspect(&record.container_id).await?;
        if state.status == "paused" {
            return Err(paused(record));
        }
        let _ = std::fs::remove_file(&mark);
        Ok(())
    }

    /// The mark `pause` leaves in the sandbox's directory.
    fn paused_mark(&self, record: &SandboxRecord) -> PathBuf {
        self.store.sandbox_dir(&record.id).join("paused")
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentClient>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets the kept connection to a sandbox's agent.
    pub fn disconnect(&self, id: &str) {
        self.clients().remove(id);
    }

    /// A failed agent call as a service error. A broken connection is forgotten and explained
    /// by what happened to the sandbox (stopped by an engine restart, its agent killed, …),
    /// so the caller hears "not running", not a transport error.
    pub(crate) async fn explained(
        &self,
        record: &SandboxRecord,
        status: tonic::Status,
    ) -> ServiceError {
        // `Internal` is also what a stream torn under a call can come back as, without a
        // source to tell it from the agent's own errors: asking costs one connect, and an
        // agent that answers leaves the status as it was.
        let maybe_broke = berth_sandbox::agent_client::channel_broke(&status)
            || status.code() == tonic::Code::Internal;
        if !maybe_broke {
            return status.into();
        }
        self.disconnect(&record.id);
        match sandbox::recheck(self.engine.as_ref(), record).await {
            Err(down) => down.into(),
            Ok(Some(client)) => {
                self.clients().insert(record.id.clone(), client);
                status.into()
            }
            Ok(None) => status.into(),
        }
    }
}

impl<E: Engine> Service<E> {
    /// An agent call's answer, its failure explained by [`Service::explained`]. A call
    /// unanswered for a few seconds is checked against the engine, and a sandbox found paused
    /// (behind berth's back: `pause` leaves a mark that is checked before any call) is a
    /// conflict rather than a wait on its frozen agent that would never end.
    pub(crate) async fn answered<T: Send>(
        &self,
        record: &SandboxRecord,
        call: impl std::future::Future<Output = Result<T, tonic::Status>> + Send,
    ) -> Result<T, ServiceError> {
        tokio::pin!(call);
        loop {
            match tokio::time::timeout(Duration::from_secs(3), &mut call).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(status)) => return Err(self.explained(record, status).await),
                Err(_) => {
                    let state = self.engine.container_inspect(&record.container_id).await?;
                    if state.status == "paused" {
                        self.disconnect(&record.id);
                        return Err(paused(record));
                    }
                }
            }
        }
    }
}

/// A call into a paused sandbox, refused.
fn paused(record: &SandboxRecord) -> ServiceError {
    ServiceError::conflict(format!(
        "sandbox {} is paused: its processes are frozen",
        record.id
    ))
    .with_remedy(Remedy::Resume {
        id: record.id.clone(),
    })
}

/// `result.or_explain(service, record).await`: an agent call's result, its failure explained
/// by [`Service::explained`].
pub(crate) trait OrExplain<T> {
    fn or_explain<'a, E: Engine>(
        self,
        service: &'a Service<E>,
        record: &'a SandboxRecord,
    ) -> impl std::future::Future<Output = Result<T, ServiceError>> + Send + 'a
    where
        T: Send + 'a;
}

impl<T> OrExplain<T> for Result<T, tonic::Status> {
    async fn or_explain<'a, E: Engine>(
        self,
        service: &'a Service<E>,
        record: &'a SandboxRecord,
    ) -> Result<T, ServiceError>
    where
        T: Send + 'a,
    {
        match self {
            Ok(value) => Ok(value),
            Err(status) => Err(service.explained(record, status).await),
        }
    }
}
