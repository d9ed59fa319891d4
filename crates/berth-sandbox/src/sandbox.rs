//! Long-lived sandboxes: `berth create` … `berth rm`, with berth's agent as PID 1.
//!
//! Creating one: plan the container like a one-shot run (same hardening), then hand PID 1 to
//! the agent — bind-mounted read-only from the host — with the image's own entrypoint and
//! command as its main process. The agent runs as container root with only the capabilities it
//! needs to start workloads as the unprivileged sandbox user (who gets none); workloads raise
//! their own OOM score so the kernel kills them, not the agent. It listens in a per-sandbox host directory; the sandbox is ready when it answers.
//!
//! berth stays daemonless: what a later invocation needs (the token, the socket directory) is a
//! record in berth's state directory, and everything else is on the container's labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_engine::{BindMount, ContainerState, Engine, ImageInfo, VolumePlan};
use berth_protocol::{
    AGENT_PATH, OWNED_DIRS_ENV, SANDBOX_DIR, SANDBOX_ID_ENV, TOKEN_ENV, USER_ENV, WAIT_FOR_ENV,
    WORKDIR_ENV,
};
use berth_spec::{labels, SandboxSpec};
use serde::{Deserialize, Serialize};

use crate::agent_client::{self, AgentClient, AgentError};
use crate::error::SandboxError;
use crate::plan::{plan_sandbox, HostFacts};
pub use crate::store::find;
use crate::store::Store;

/// Capabilities the agent keeps: enough to start processes as the sandbox user, signal them,
/// and manage files for them. Workloads get none (their bounding set is emptied).
pub const AGENT_CAPABILITIES: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
];
/// How long `create`/`start` wait for the agent to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What a later berth invocation needs to reach a sandbox. Stored 0600: it holds the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: Option<String>,
    pub container_id: String,
    pub container_name: String,
    pub image: String,
    pub token: String,
    pub run_dir: PathBuf,
    pub user: String,
    pub workdir: String,
    pub created: String,
    /// The extra labels it was created with ([`CreateOptions::labels`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its egress gateway and policy, when it has one (never a secret's value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::EgressRecord>,
    /// The copy of the agent its container mounts, when it is one berth made
    /// ([`crate::host_dirs::agent_copy`]; made again before a start if a reboot took it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_copy: Option<PathBuf>,
}

/// Finds the agent binary: `$BERTH_AGENT`, next to the berth executable, or in the
/// development build directory (`target/agent/…`, made by `scripts/build-agent`).
pub fn agent_binary() -> Result<PathBuf, SandboxError> {
    static_binary(
        "berth-agent",
        "BERTH_AGENT",
        SandboxError::MissingTool {
            tool: "berth-agent (the static in-sandbox agent)".to_string(),
            purpose: "create sandboxes",
            remedy: "run scripts/build-agent (or ./setup.sh), or set BERTH_AGENT to its path",
        },
    )
}

/// Finds the egress gateway binary: `$BERTH_GATEWAY`, next to the berth executable, or in
/// the development build directory (made by `scripts/build-agent berth-gateway`).
pub fn gateway_binary() -> Result<PathBuf, SandboxError> {
    static_binary(
        "berth-gateway",
        "BERTH_GATEWAY",
        SandboxError::MissingTool {
            tool: "berth-gateway (the static egress gateway)".to_string(),
            purpose: "give a sandbox egress by domain (--allow-host, --secret)",
            remedy: "run scripts/build-agent berth-gateway (or ./setup.sh), or set BERTH_GATEWAY to its path",
        },
    )
}

fn static_binary(name: &str, env: &str, missing: SandboxError) -> Result<PathBuf, SandboxError> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os(env) {
        candidates.push(PathBuf::from(p));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(name));
            // target/{debug,release}/berth → target/agent/<host>/release/<name>
            if let Some(target) = dir.parent() {
                if let Ok(hosts) = std::fs::read_dir(target.join("agent")) {
                    for host in hosts.flatten() {
                        candidates.push(host.path().join("release").join(name));
                    }
                }
            }
        }
    }
    candidates
        .into_iter()
        .find(|p| crate::images::is_static_elf(p).unwrap_or(false))
        .ok_or(missing)
}

fn numeric_user(user: &str) -> Result<(), SandboxError> {
    let ok = user
        .split(':')
        .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(berth_spec::SpecError::User {
            value: user.to_string(),
        }
        .into())
    }
}

/// How the agent binary gets into the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AgentDelivery {
    /// Bind-mounted read-only from the host (needs an engine that sees the host's files; the
    /// only way into a `--read-only` root file system).
    #[default]
    Mount,
    /// Copied in through the engine's archive API between create and start (works with any
    /// engine, local or remote; not possible with a read-only root file system).
    Archive,
}

/// Options for [`create`].
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The static agent binary to inject.
    pub agent: PathBuf,
    /// A name to find the sandbox by, besides its id.
    pub name: Option<String>,
    /// How to deliver the agent ([`AgentDelivery::Mount`] is forced for read-only roots).
    pub delivery: AgentDelivery,
    /// Extra labels on the container (kept in the record too), e.g. the agent it serves.
    pub labels: BTreeMap<String, String>,
    /// Label the container with this process as its owner, so `berth gc` removes it if this
    /// process dies before removing it itself (sandboxes that live for one run).
    pub owned: bool,
    /// Named volumes to create (if missing) and mount; the sandbox user gets their roots.
    pub volumes: Vec<VolumeMount>,
    /// Start no main process (ignore the image's entrypoint and command): the sandbox only
    /// serves execs, as an agent CLI's sandbox does.
    pub idle: bool,
}

/// A named, labelled volume mounted into a sandbox (an agent CLI's home).
#[derive(Debug, Clone, Default)]
pub struct VolumeMount {
    pub volume: VolumePlan,
    pub target: String,
}

/// Creates and starts a sandbox, and waits until its agent answers.
pub async fn create<E: Engine>(
    engine: &E,
    store: &dyn Store,
    spec: &SandboxSpec,
    image: &ImageInfo,
    engine_socket: Option<PathBuf>,
    options: &CreateOptions,
) -> Result<SandboxRecord, SandboxError> {
    if let Some(name) = &options.name {
        if find(store, name).is_ok() {
            return Err(SandboxError::Exists { name: name.clone() });
        }
    }
    let id = crate::owner::new_id();
    let host = HostFacts::detect(engine_socket)?;
    let mut plan = plan_sandbox(spec, &id, labels::KIND_SANDBOX, &host)?;
    numeric_user(&plan.container.user)?;

    let dir = store.sandbox_dir(&id);
    // Not under `dir`: the container sees its mounts' host paths (see `host_dirs`). Made
    // once the record is saved (`start_container`), so a killed create leaves none unnamed.
    let runtime = store.runtime_dir();
    let run_dir = crate::host_dirs::run_dir(&id, runtime.as_deref(), &dir);

    let mut token = [0u8; 32];
    getrandom::fill(&mut token).map_err(|e| {
        SandboxError::io("generating a token", std::io::Error::other(e.to_string()))
    })?;
    let token = hex::encode(token);
    let main: Vec<String> = if options.idle {
        Vec::new()
    } else if spec.command.is_empty() {
        image.entrypoint.iter().chain(&image.cmd).cloned().collect()
    } else {
        spec.command.clone()
    };
    let workdir = plan
        .container
        .workdir
        .clone()
        .or_else(|| image.workdir.clone())
        .unwrap_or_else(|| "/".to_string());

    let c = &mut plan.container;
    let user = std::mem::replace(&mut c.user, "0:0".to_string());
    c.entrypoint = Some(vec![
        AGENT_PATH.to_string(),
        "init".to_string(),
        "--".to_string(),
    ]);
    c.cmd = main;
    c.env.extend([
        format!("{TOKEN_ENV}={token}"),
        format!("{SANDBOX_ID_ENV}={id}"),
        format!("{USER_ENV}={user}"),
        format!("{WORKDIR_ENV}={workdir}"),
    ]);
    let delivery = if spec.security.read_only_rootfs {
        AgentDelivery::Mount
    } else {
        options.delivery
    };
    let agent_copy = match delivery {
        AgentDelivery::Mount => Some(crate::host_dirs::agent_copy(
            &options.agent,
            runtime.as_deref(),
        )?),
        AgentDelivery::Archive => None,
    };
    if let Some(source) = &agent_copy {
        c.binds.push(BindMount {
            source: source.display().to_string(),
            target: AGENT_PATH.to_string(),
            read_only: true,
        });
    }
    c.binds.push(BindMount {
        source: run_dir.display().to_string(),
        target: SANDBOX_DIR.to_string(),
        read_only: false,
    });
    c.cap_add
        .extend(AGENT_CAPABILITIES.iter().map(|s| s.to_string()));
    c.stop_timeout = Some(10);
    if let Some(name) = &options.name {
        c.labels.insert(labels::NAME.to_string(), name.clone());
    }
    c.labels.extend(options.labels.clone());
    for v in &options.volumes {
        c.binds.push(BindMount {
            source: v.volume.name.clone(),
            target: v.target.clone(),
            read_only: false,
        });
    }
    if !options.volumes.is_empty() {
        let dirs: Vec<&str> = options.volumes.iter().map(|v| v.target.as_str()).collect();
        c.env.push(format!("{OWNED_DIRS_ENV}={}", dirs.join(":")));
    }

    // A sandbox that lives for one run, or is kept on purpose, says so on all its objects.
    if options.owned {
        plan.label_all(labels::OWNER, &crate::owner::current_owner());
    }
    // Whose it is (a server and its tenant) is on every object too, so a reconcile finds a
    // gateway or network whose sandbox is gone.
    for key in [labels::SERVER, labels::TENANT] {
        if let Some(value) = options.labels.get(key) {
            plan.label_all(key, value);
        }
    }
    if options
        .labels
        .get(labels::KEEP)
        .is_some_and(|v| v == "true")
    {
        plan.mark_kept();
    }
    let record = SandboxRecord {
        id: id.clone(),
        name: options.name.clone(),
        container_id: String::new(),
        container_name: plan.container.name.clone(),
        image: spec.image.clone(),
        token,
        run_dir,
        user,
        workdir,
        created: host.created.clone(),
        labels: options.labels.clone(),
        egress: plan.egress.as_ref().map(|e| e.record()),
        agent_copy: agent_copy.filter(|copy| copy != &options.agent),
    };
    let agent = match delivery {
        AgentDelivery::Mount => None,
        AgentDelivery::Archive => Some(agent_archive(&options.agent)?),
    };
    for v in &options.volumes {
        engine.volume_create(&v.volume).await?;
    }
    let made = make(engine, store, &plan, record, agent).await;
    if made.is_err() {
        remove_objects(engine, &id).await;
        store.forget(&id);
    }
    made
}

/// A tar archive holding the agent at [`AGENT_PATH`] (root-owned, read-only, executable).
fn agent_archive(agent: &std::path::Path) -> Result<bytes::Bytes, SandboxError> {
    let binary = std::fs::read(agent)
        .map_err(|e| SandboxError::io(format!("reading {}", agent.display()), e))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o555);
    header.set_uid(0);
    header.set_gid(0);
    let mut archive = tar::Builder::new(Vec::new());
    archive
        .append_data(
            &mut header,
            AGENT_PATH.trim_start_matches('/'),
            binary.as_slice(),
        )
        .and_then(|()| archive.into_inner())
        .map(bytes::Bytes::from)
        .map_err(|e| SandboxError::io("packing the agent", e))
}

async fn make<E: Engine>(
    engine: &E,
    store: &dyn Store,
    plan: &crate::plan::SandboxPlan,
    mut record: SandboxRecord,
    agent: Option<bytes::Bytes>,
) -> Result<SandboxRecord, SandboxError> {
    let gateway_image = match &plan.egress {
        Some(_) => crate::egress::image(engine).await?,
        None => String::new(),
    };
    if let Some(network) = &plan.network {
        engine.network_create(network).await?;
    }
    let mut container = plan.container.clone();
    let Some(egress) = &plan.egress else {
        start_container(engine, store, &container, &mut record, agent).await?;
        return Ok(record);
    };
    // The gateway and the sandbox start at the same time (each start is most of the cost);
    // the agent holds the main process until the gateway is configured, and no exec comes
    // before both are ready.
    let ca_dir = crate::host_dirs::ca_dir(&record.run_dir);
    crate::egress::mount_ca(&ca_dir, &mut container)?;
    container.env.push(format!(
        "{WAIT_FOR_ENV}={}/{}",
        crate::egress::CA_DIR,
        crate::egress::CA_FILE
    ));
    let id = record.id.clone();
    let (gateway, sandbox) = tokio::join!(
        crate::egress::start(engine, &id, egress, &gateway_image, &ca_dir),
        start_container(engine, store, &container, &mut record, agent)
    );
    gateway?;
    sandbox?;
    trust_in_system_bundle(engine, &record).await;
    Ok(record)
}

/// Adds the gateway's CA to the image's system bundle, where the image has one and it is
/// writable, for tools that read only that (the variables cover the rest). Best effort: an
/// image without a shell or a bundle keeps its own.
async fn trust_in_system_bundle<E: Engine>(engine: &E, record: &SandboxRecord) {
    use berth_protocol::v1::{exec_input, exec_output, ExecInput, ExecStart};
    let script = format!(
        "f={SYSTEM_BUNDLE}; [ -f \"$f\" ] && [ -w \"$f\" ] && cat {}/{} >> \"$f\"",
        crate::egress::CA_DIR,
        crate::egress::CA_FILE
    );
    let start = ExecStart {
        argv: vec!["sh".into(), "-c".into(), script],
        user: "0:0".into(),
        timeout_ms: 10_000,
        ..Default::default()
    };
    let Ok(mut client) = connect(engine, record).await else {
        return;
    };
    let input = tokio_stream::once(ExecInput {
        input: Some(exec_input::Input::Start(start)),
    });
    let Ok(response) = client.exec(input).await else {
        return;
    };
    let mut stream = response.into_inner();
    while let Ok(Some(msg)) = stream.message().await {
        if matches!(
            msg.output,
            Some(exec_output::Output::Exited(_) | exec_output::Output::StartFailed(_))
        ) {
            break;
        }
    }
}

/// Debian's and Alpine's bundle of trusted roots.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Creates the sandbox's container, saves its record, starts it and waits for the agent.
async fn start_container<E: Engine>(
    engine: &E,
    store: &dyn Store,
    container: &berth_engine::ContainerPlan,
    record: &mut SandboxRecord,
    agent: Option<bytes::Bytes>,
) -> Result<(), SandboxError> {
    // The record comes first: a create killed between the engine's answer and the next save
    // still leaves a sandbox `ps` lists and `rm` removes (by its id label), never a container
    // nothing knows.
    store.save(record)?;
    crate::host_dirs::make_run_dir(&record.run_dir)?;
    record.container_id = engine.container_create(container).await?;
    store.save(record)?;
    if let Some(archive) = agent {
        engine
            .archive_upload(&record.container_id, "/", archive)
            .await?;
    }
    engine.container_start(&record.container_id).await?;
    let (mut client, hello) = ready(engine, record).await?;
    main_started(&mut client, hello).await
}

/// Waits until the agent has tried to start the main process (after the egress gateway, when
/// there is one), and fails if it could not: a mistyped command is an error of `create`, not a
/// line in the container log.
/// `hello` is the agent's first answer: only a main process still waiting asks again.
async fn main_started(
    client: &mut AgentClient,
    mut hello: berth_protocol::v1::HelloReply,
) -> Result<(), SandboxError> {
    use berth_protocol::v1::MainState;
    let deadline = Instant::now()
        + Duration::from_millis(berth_protocol::WAIT_FOR_LIMIT_MS)
        + Duration::from_secs(5);
    loop {
        match hello.main_state() {
            MainState::MainFailed => {
                return Err(SandboxError::MainFailed {
                    message: hello.main_failure,
                })
            }
            MainState::MainWaiting if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                hello = agent_client::hello(client).await?;
            }
            _ => return Ok(()),
        }
    }
}

/// Waits until the agent answers, failing fast if the container stops.
pub async fn wait_ready<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
) -> Result<AgentClient, SandboxError> {
    Ok(ready(engine, record).await?.0)
}

/// [`wait_ready`], with the agent's first answer.
async fn ready<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
) -> Result<(AgentClient, berth_protocol::v1::HelloReply), SandboxError> {
    /// Direct attempts before also trying the exec channel (the socket may be out of reach).
    const DIRECT_TRIES: u32 = 50;
    let started = Instant::now();
    let mut tries = 0u32;
    loop {
        let attempt = if exec_channel_forced() || tries >= DIRECT_TRIES {
            // Falls back to the exec channel, and fails fast if the sandbox stopped.
            match connect(engine, record).await {
                Ok(client) => Ok(client),
                Err(e @ (SandboxError::AgentDown { .. } | SandboxError::Engine(_))) => {
                    return Err(e)
                }
                Err(e) => Err(e),
            }
        } else {
            agent_client::connect(&record.run_dir, &record.token)
                .await
                .map_err(SandboxError::from)
        };
        match attempt {
            Ok(mut client) => match agent_client::hello(&mut client).await {
                Ok(hello) => return Ok((client, hello)),
                Err(e) if started.elapsed() > READY_TIMEOUT => return Err(e.into()),
                Err(_) => {}
            },
            Err(e @ SandboxError::Agent(AgentError::Untrusted { .. })) => return Err(e),
            Err(e) if started.elapsed() > READY_TIMEOUT => return Err(e),
            Err(_) => {}
        }
        tries += 1;
        if tries.is_multiple_of(40) {
            let state = engine.container_inspect(&record.container_id).await?;
            if !state.running {
                return Err(SandboxError::AgentDown {
                    id: record.id.clone(),
                    state: describe_state(&state),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(if tries < 200 { 2 } else { 20 })).await;
    }
}

/// "exited with 137 (OOM-killed)" and the like.
pub fn describe_state(state: &ContainerState) -> String {
    let mut text = match (state.status.as_str(), state.exit_code) {
        ("exited", Some(code)) => format!("its container exited with {code}"),
        (status, _) => format!("its container is {status}"),
    };
    if state.oom_killed {
        text.push_str(" (killed: out of memory)");
    }
    if let Some(error) = &state.error {
        text.push_str(&format!(": {error}"));
    }
    text
}

/// Whether `BERTH_CHANNEL=exec` asks for the exec channel instead of the socket.
pub fn exec_channel_forced() -> bool {
    std::env::var("BERTH_CHANNEL").is_ok_and(|v| v == "exec")
}

/// Connects to a sandbox's agent: through its socket, or — when the socket cannot be reached
/// but the sandbox runs (or `BERTH_CHANNEL=exec`) — through `docker exec … dial-stdio`. If the
/// agent does not answer, says what happened to the sandbox.
pub async fn connect<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
) -> Result<AgentClient, SandboxError> {
    let direct = if exec_channel_forced() {
        Err(AgentError::NotListening {
            path: record.run_dir.clone(),
            reason: "BERTH_CHANNEL=exec".to_string(),
        })
    } else {
        agent_client::connect(&record.run_dir, &record.token).await
    };
    match direct {
        Ok(client) => Ok(client),
        Err(e @ AgentError::Untrusted { .. }) => Err(e.into()),
        Err(e) => match engine.container_inspect(&record.container_id).await {
            Ok(state) if !state.running => Err(SandboxError::AgentDown {
                id: record.id.clone(),
                state: describe_state(&state),
            }),
            Ok(_) => {
                match agent_client::connect_via_exec(engine, &record.container_id, &record.token)
                    .await
                {
                    Ok(mut client) => {
                        agent_client::hello(&mut client).await?;
                        Ok(client)
                    }
                    // A container killed a moment ago still reads as running until the engine
                    // has seen it exit; the exec failing is then the first sign of it.
                    Err(_) => match stopped_soon(engine, record).await {
                        Some(state) => Err(SandboxError::AgentDown {
                            id: record.id.clone(),
                            state,
                        }),
                        None => Err(e.into()),
                    },
                }
            }
            Err(inspect) if inspect.is_not_found() => Err(SandboxError::AgentDown {
                id: record.id.clone(),
                state: "its container no longer exists".to_string(),
            }),
            Err(inspect) => Err(inspect.into()),
        },
    }
}

/// After a call or stream to a sandbox's agent broke: whether the agent still answers (a
/// fresh client that did say hello), whether the sandbox is down and why (its container
/// stopped or vanished), or neither (`Ok(None)`: no answer, but the engine says it runs).
/// A dying agent's socket still takes connections into its backlog: only an answer shows it
/// is alive.
pub async fn recheck<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
) -> Result<Option<AgentClient>, SandboxError> {
    let mut client = connect(engine, record).await?;
    let hello = tokio::time::timeout(Duration::from_secs(2), agent_client::hello(&mut client));
    if let Ok(Ok(_)) = hello.await {
        return Ok(Some(client));
    }
    match stopped_soon(engine, record).await {
        Some(state) => Err(SandboxError::AgentDown {
            id: record.id.clone(),
            state,
        }),
        None => Ok(None),
    }
}

/// The container's state once the engine reports it stopped or gone, if it does within two
/// seconds; `None` while it still runs.
pub async fn stopped_soon<E: Engine>(engine: &E, record: &SandboxRecord) -> Option<String> {
    for _ in 0..20 {
        match engine.container_inspect(&record.container_id).await {
            Ok(state) if !state.running => return Some(describe_state(&state)),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) if e.is_not_found() => {
                return Some("its container no longer exists".to_string())
            }
            Err(_) => return None,
        }
    }
    None
}

/// Stops a sandbox (SIGTERM to the agent, which stops every process; SIGKILL after `grace`).
pub async fn stop<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
    grace: Duration,
) -> Result<(), SandboxError> {
    engine.container_stop(&record.container_id, grace).await?;
    if let Some(egress) = &record.egress {
        if let Err(e) = engine.container_stop(&egress.gateway_name, grace).await {
            if !e.is_not_found() {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// Starts a stopped sandbox (its egress gateway first) and waits for its agent.
///
/// A gateway that restarts has lost its secrets (they were only in its memory): `secrets`
/// answers their values again (the daemonless CLI's from its user's environment; a server's
/// knows none, so it never hands a sandbox its own environment). A secret with no value is
/// left out, with a warning, so its placeholder reaches the host unchanged.
pub async fn start<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
    agent: &Path,
    secrets: &crate::egress::SecretLookup<'_>,
) -> Result<(), SandboxError> {
    crate::host_dirs::prepare(&record.run_dir, record.agent_copy.as_deref(), agent)?;
    if let Some(egress) = &record.egress {
        let state = engine.container_inspect(&egress.gateway_name).await?;
        if !state.running {
            engine.container_start(&egress.gateway_name).await?;
        }
        hand_secrets(engine, record, secrets).await?;
    }
    engine.container_start(&record.container_id).await?;
    wait_ready(engine, record).await?;
    if record.egress.is_some() {
        // The restarted gateway made a new CA.
        trust_in_system_bundle(engine, record).await;
    }
    Ok(())
}

/// Hands a sandbox's gateway its policy and its secrets' values, as `secrets` answers them.
/// A secret with no value is left out, with a warning, so its placeholder reaches the host
/// unchanged.
pub async fn hand_secrets<E: Engine>(
    engine: &E,
    record: &SandboxRecord,
    secrets: &crate::egress::SecretLookup<'_>,
) -> Result<(), SandboxError> {
    let Some(egress) = &record.egress else {
        return Ok(());
    };
    let lookup = secrets;
    let mut secrets = Vec::new();
    for s in &egress.secrets {
        match lookup(&s.name) {
            Some(value) => secrets.push(berth_spec::egress::GatewaySecret {
                name: s.name.clone(),
                placeholder: s.placeholder.clone(),
                value,
                hosts: s.hosts.clone(),
            }),
            None => tracing::warn!(
                "secret {} is not set in this environment, so sandbox {}'s gateway goes without it; export it and run `berth start {}` again to hand it over",
                s.name, record.id, record.id
            ),
        }
    }
    crate::egress::configure(
        engine,
        &record.id,
        &egress.gateway_name,
        &egress.network,
        &egress.allow,
        &secrets,
        &crate::host_dirs::ca_dir(&record.run_dir),
    )
    .await?;
    Ok(())
}

async fn remove_objects<E: Engine>(engine: &E, id: &str) {
    let filter = [format!("{}={id}", labels::ID)];
    if let Ok(containers) = engine.container_list(&filter).await {
        for c in containers {
            let _ = engine.container_remove(&c.id, true).await;
        }
    }
    if let Ok(networks) = engine.network_list(&filter).await {
        for n in networks {
            let _ = engine.network_remove(&n.id).await;
        }
    }
}

/// Removes a sandbox: its container (killed if running), its network and its record.
pub async fn remove<E: Engine>(
    engine: &E,
    store: &dyn Store,
    record: &SandboxRecord,
    force: bool,
) -> Result<(), SandboxError> {
    if !force {
        if let Ok(state) = engine.container_inspect(&record.container_id).await {
            if state.running {
                return Err(SandboxError::Running {
                    id: record.id.clone(),
                });
            }
        }
    }
    remove_objects(engine, &record.id).await;
    store.forget(&record.id);
    Ok(())
}

/// One sandbox as `berth ps` / `berth inspect` show it.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxStatus {
    pub id: String,
    pub name: Option<String>,
    pub image: String,
    pub status: String,
    pub created: String,
    pub container_id: String,
    pub user: String,
    pub workdir: String,
    pub labels: BTreeMap<String, String>,
    /// The egress policy (without the gateway's counts; see [`crate::egress::stats`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::receipt::EgressReport>,
}

/// The status of a sandbox from its record and its container.
pub async fn status<E: Engine>(engine: &E, record: &SandboxRecord) -> SandboxStatus {
    let state = engine.container_inspect(&record.container_id).await;
    let (status, labels) = match state {
        Ok(s) => (
            if s.status == "paused" {
                "paused".to_string()
            } else if s.running {
                "running".to_string()
            } else {
                describe_state(&s)
            },
            s.labels,
        ),
        Err(e) if e.is_not_found() => (
            "missing (container removed outside berth)".to_string(),
            BTreeMap::new(),
        ),
        Err(e) => (format!("unknown: {e}"), BTreeMap::new()),
    };
    // The policy only: counting asks the gateway (an exec), which `berth inspect` does.
    let egress = record.egress.as_ref().map(|e| e.report(None));
    SandboxStatus {
        egress,
        id: record.id.clone(),
        name: record.name.clone(),
        image: record.image.clone(),
        status,
        created: record.created.clone(),
        container_id: record.container_id.clone(),
        user: record.user.clone(),
        workdir: record.workdir.clone(),
        labels,
    }
}
