//! The one-shot run: create, attach, start, stream, wait (with a deadline), remove.
//!
//! Whatever happens — exit, timeout, OOM, start failure, Ctrl-C, an engine error — the
//! container and any network made for it are removed before [`run_once`] returns (unless the
//! user asked to keep them). A crash of berth itself leaves objects whose owner label names a
//! dead process, which `berth gc` removes.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_engine::{Engine, EngineError, ImageInfo};
use berth_spec::labels;
use futures_util::StreamExt;

use crate::error::SandboxError;
use crate::plan::SandboxPlan;
use crate::receipt::{
    AppliedLimits, AppliedSecurity, Outcome, Receipt, StreamDigest, StreamHasher,
};
use crate::sink::OutputSink;

/// Exit code for a run killed at its deadline (as `timeout(1)`).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code when berth or the engine failed.
pub const EXIT_BERTH_FAILED: i32 = 125;
/// Exit code when the command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// Exit code when the command is not found.
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code when the kernel's OOM killer ended the command.
pub const EXIT_OOM: i32 = 137;

/// How long berth waits for a killed container to report its exit.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long berth waits for the output stream to drain after the container exited.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// How a one-shot run behaves beyond its container plan.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Kill the command after this long (`None`: no deadline).
    pub timeout: Option<Duration>,
    /// Leave the container (stopped) instead of removing it.
    pub keep: bool,
    /// Where the run's host directories go (its egress CA files, in
    /// `<dirs>/sandboxes/<id>/egress`): a store's runtime directory, else its state directory.
    pub dirs: PathBuf,
}

impl RunOptions {
    /// The run's own host directory (removed with its container).
    fn host_dir(&self, id: &str) -> PathBuf {
        crate::host_dirs::sandbox_dir(&self.dirs, id)
    }
}

/// A signal that asked berth to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    /// Signal name, e.g. `SIGINT`.
    pub name: &'static str,
    /// Signal number, e.g. 2; berth exits with 128 + it.
    pub number: i32,
}

/// What happened to the command, before it becomes a receipt.
struct Ending {
    exit_code: i32,
    outcome: Outcome,
    oom_killed: bool,
    interrupted_by: Option<Interrupt>,
    error: Option<String>,
    stdout: StreamDigest,
    stderr: StreamDigest,
    captured: Option<(String, String, bool)>,
}

impl Ending {
    fn without_output(exit_code: i32, outcome: Outcome) -> Self {
        Self {
            exit_code,
            outcome,
            oom_killed: false,
            interrupted_by: None,
            error: None,
            stdout: StreamHasher::default().finish(),
            stderr: StreamHasher::default().finish(),
            captured: None,
        }
    }
}

/// The engine objects made so far, for cleanup.
#[derive(Default)]
struct Made {
    network: Option<String>,
    /// The egress gateway, when the sandbox has an egress policy.
    gateway: Option<String>,
    /// What the gateway counted, read before it is removed.
    egress: Option<berth_spec::egress::GatewayStats>,
    container: Option<String>,
    /// A create request may have reached the engine without its answer reaching us.
    uncertain: bool,
}

/// Runs `plan` once and returns its receipt; see the module docs for the guarantees.
///
/// `interrupt` resolves when berth is asked to stop (Ctrl-C, SIGTERM); the run then kills and
/// removes its container and reports [`Outcome::Interrupted`].
pub async fn run_once<E: Engine, S: OutputSink>(
    engine: &E,
    plan: &SandboxPlan,
    image: &ImageInfo,
    options: &RunOptions,
    sink: S,
    interrupt: impl Future<Output = Interrupt>,
) -> Result<Receipt, SandboxError> {
    let started_at = now_rfc3339();
    let clock = Instant::now();
    tokio::pin!(interrupt);
    let mut made = Made::default();
    let result = drive(engine, plan, options, sink, interrupt, &mut made).await;

    if let Some(gateway) = &made.gateway {
        made.egress = crate::egress::stats(engine, gateway).await.ok();
    }
    let keep = options.keep && result.is_ok();
    let sweep = result.is_err()
        || made.uncertain
        || matches!(&result, Ok(e) if e.outcome == Outcome::Interrupted);
    if !keep {
        cleanup(engine, plan, options, &made, sweep).await;
    }
    let ending = result?;
    let container = &plan.container;
    Ok(Receipt {
        id: plan.id.clone(),
        container_id: made.container.clone().unwrap_or_default(),
        container_name: container.name.clone(),
        image: container.image.clone(),
        image_digest: image.digest().to_string(),
        command: container.cmd.clone(),
        limits: AppliedLimits {
            memory_bytes: container.memory_bytes,
            memory_swap_bytes: container.memory_swap_bytes,
            cpus: container.nano_cpus as f64 / 1e9,
            pids: container.pids_limit,
            timeout_seconds: options.timeout.map(|t| t.as_secs_f64()),
        },
        security: AppliedSecurity {
            user: container.user.clone(),
            cap_drop: container.cap_drop.clone(),
            cap_add: container.cap_add.clone(),
            no_new_privileges: container
                .security_opt
                .iter()
                .any(|o| o == "no-new-privileges"),
            read_only_rootfs: container.read_only_rootfs,
            runtime: container.runtime.clone(),
            network: container.network.clone(),
            mounts: container
                .binds
                .iter()
                .map(|b| {
                    let mode = if b.read_only { "ro" } else { "rw" };
                    format!("{}:{}:{mode}", b.source, b.target)
                })
                .collect(),
        },
        started_at,
        finished_at: now_rfc3339(),
        duration_ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
        exit_code: ending.exit_code,
        outcome: ending.outcome,
        timed_out: ending.outcome == Outcome::TimedOut,
        oom_killed: ending.oom_killed,
        interrupted_by: ending.interrupted_by.map(|i| i.name.to_string()),
        error: ending.error,
        stdout: ending.stdout,
        stderr: ending.stderr,
        kept: keep,
        egress: plan
            .egress
            .as_ref()
            .map(|e| e.record().report(made.egress.clone())),
        output_truncated: ending.captured.as_ref().is_some_and(|c| c.2),
        stdout_text: ending.captured.as_ref().map(|c| c.0.clone()),
        stderr_text: ending.captured.map(|c| c.1),
    })
}

async fn drive<E: Engine, S: OutputSink>(
    engine: &E,
    plan: &SandboxPlan,
    options: &RunOptions,
    mut sink: S,
    mut interrupt: std::pin::Pin<&mut impl Future<Output = Interrupt>>,
    made: &mut Made,
) -> Result<Ending, SandboxError> {
    // Phase 1: make the objects and attach before starting, so no output is lost.
    let prepared = tokio::select! {
        biased;
        signal = interrupt.as_mut() => {
            made.uncertain = true;
            let mut ending = Ending::without_output(128 + signal.number, Outcome::Interrupted);
            ending.interrupted_by = Some(signal);
            return Ok(ending);
        }
        prepared = prepare(engine, plan, options, made) => prepared?,
    };
    let (container_id, output) = prepared;

    // Phase 2: start. A command that cannot be executed fails here, not at exit.
    if let Err(e) = engine.container_start(&container_id).await {
        return match e {
            EngineError::StartFailed { message, .. } => {
                let (code, reason) = classify_start_failure(&message);
                let mut ending = Ending::without_output(code, Outcome::StartFailed);
                ending.error = Some(reason);
                Ok(ending)
            }
            other => Err(other.into()),
        };
    }

    // Phase 3: stream output on its own task while waiting for exit, a deadline or a signal.
    let pump = tokio::spawn(async move {
        let mut output = output;
        let (mut out, mut err) = (StreamHasher::default(), StreamHasher::default());
        let mut sink_ok = true;
        let mut stream_error = None;
        while let Some(item) = output.next().await {
            match item {
                Ok(chunk) => {
                    match &chunk {
                        berth_engine::Output::Stdout(b) => out.update(b),
                        berth_engine::Output::Stderr(b) => err.update(b),
                    }
                    if sink_ok && sink.write(&chunk).is_err() {
                        // The reader went away (e.g. `| head`): keep counting, stop writing.
                        sink_ok = false;
                    }
                }
                Err(e) => {
                    stream_error = Some(e.to_string());
                    break;
                }
            }
        }
        (out.finish(), err.finish(), sink.captured(), stream_error)
    });

    let deadline = options.timeout.filter(|t| !t.is_zero());
    let sleep = async {
        match deadline {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let wait = engine.container_wait(&container_id);
    tokio::pin!(wait, sleep);
    let mut outcome = Outcome::Exited;
    let mut interrupted_by = None;
    let waited = tokio::select! {
        code = &mut wait => code,
        () = &mut sleep => {
            outcome = Outcome::TimedOut;
            kill_and_wait(engine, &container_id, wait).await
        }
        signal = interrupt.as_mut() => {
            outcome = Outcome::Interrupted;
            interrupted_by = Some(signal);
            kill_and_wait(engine, &container_id, wait).await
        }
    };

    let drained = tokio::time::timeout(DRAIN_GRACE, pump).await;
    let (stdout, stderr, captured, stream_error) = match drained {
        Ok(Ok(result)) => result,
        _ => (
            StreamHasher::default().finish(),
            StreamHasher::default().finish(),
            None,
            Some("the output stream did not finish".to_string()),
        ),
    };
    if let Some(message) = stream_error {
        tracing::warn!("output stream ended with an error: {message}");
    }
    let code = waited?;

    let mut ending = Ending {
        exit_code: i32::try_from(code).unwrap_or(EXIT_BERTH_FAILED),
        outcome,
        oom_killed: false,
        interrupted_by,
        error: None,
        stdout,
        stderr,
        captured,
    };
    match outcome {
        Outcome::TimedOut => ending.exit_code = EXIT_TIMEOUT,
        Outcome::Interrupted => {
            ending.exit_code = 128 + interrupted_by.map_or(2, |s| s.number);
        }
        _ => {
            let mut state = engine.container_inspect(&container_id).await?;
            // The engine learns of an OOM kill from its own event, which can come a moment
            // after the exit: a SIGKILLed process (137) is asked about again for a while.
            for _ in 0..10 {
                if state.oom_killed || code != 137 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                state = engine.container_inspect(&container_id).await?;
            }
            ending.oom_killed = state.oom_killed;
            if state.oom_killed && code != 0 {
                ending.outcome = Outcome::OomKilled;
                ending.exit_code = EXIT_OOM;
            }
        }
    }
    Ok(ending)
}

async fn prepare<E: Engine>(
    engine: &E,
    plan: &SandboxPlan,
    options: &RunOptions,
    made: &mut Made,
) -> Result<(String, berth_engine::OutputStream), SandboxError> {
    let gateway_image = match &plan.egress {
        Some(_) => Some(crate::egress::image(engine).await?),
        None => None,
    };
    if let Some(network) = &plan.network {
        made.uncertain = true;
        made.network = Some(engine.network_create(network).await?);
    }
    let mut container = plan.container.clone();
    if let (Some(egress), Some(image)) = (&plan.egress, &gateway_image) {
        let ca_dir = options.host_dir(&plan.id).join("egress");
        crate::egress::mount_ca(&ca_dir, &mut container)?;
        made.uncertain = true;
        made.gateway = Some(
            crate::egress::start(engine, &plan.id, egress, image, &ca_dir)
                .await?
                .container_id,
        );
    }
    made.uncertain = true;
    let id = engine.container_create(&container).await?;
    made.container = Some(id.clone());
    made.uncertain = false;
    let output = engine.container_attach(&id).await?;
    Ok((id, output))
}

async fn kill_and_wait<E: Engine>(
    engine: &E,
    id: &str,
    wait: std::pin::Pin<&mut impl Future<Output = Result<i64, EngineError>>>,
) -> Result<i64, EngineError> {
    if let Err(e) = engine.container_kill(id, "SIGKILL").await {
        // "is not running" means it exited on its own in the meantime; the wait tells.
        tracing::debug!("kill: {e}");
    }
    match tokio::time::timeout(KILL_GRACE, wait).await {
        Ok(code) => code,
        Err(_) => Err(EngineError::Transport {
            operation: "waiting for a killed container",
            message: format!("no exit reported {}s after SIGKILL", KILL_GRACE.as_secs()),
        }),
    }
}

/// Removes what the run made. With `sweep`, also finds objects by the sandbox's id label, in
/// case a create request was interrupted after the engine acted on it.
async fn cleanup<E: Engine>(
    engine: &E,
    plan: &SandboxPlan,
    options: &RunOptions,
    made: &Made,
    sweep: bool,
) {
    let mut containers: Vec<String> = made
        .container
        .iter()
        .chain(&made.gateway)
        .cloned()
        .collect();
    if sweep {
        let filter = [format!("{}={}", labels::ID, plan.id)];
        if let Ok(found) = engine.container_list(&filter).await {
            containers.extend(found.into_iter().map(|c| c.id));
        }
    }
    containers.sort();
    containers.dedup();
    // The sandbox and its gateway go at the same time (each removal waits on the engine).
    let removals = containers.iter().map(|id| async move {
        if let Err(e) = engine.container_remove(id, true).await {
            if !e.is_not_found() {
                tracing::warn!("could not remove container {id}: {e}; `berth gc` will retry");
            }
        }
    });
    futures_util::future::join_all(removals).await;
    if plan.egress.is_some() {
        // Its CA directory goes with its container.
        let _ = std::fs::remove_dir_all(options.host_dir(&plan.id));
    }
    let mut networks: Vec<String> = made.network.iter().cloned().collect();
    if sweep && plan.network.is_some() {
        let filter = [format!("{}={}", labels::ID, plan.id)];
        if let Ok(found) = engine.network_list(&filter).await {
            networks.extend(found.into_iter().map(|n| n.id));
        }
    }
    networks.sort();
    networks.dedup();
    for id in &networks {
        if let Err(e) = engine.network_remove(id).await {
            if !e.is_not_found() {
                tracing::warn!("could not remove network {id}: {e}; `berth gc` will retry");
            }
        }
    }
}

/// Maps the runtime's start error to 127 (not found), 126 (not executable) or 125 (other),
/// with a message a user can act on.
pub fn classify_start_failure(message: &str) -> (i32, String) {
    // runc: `... starting container process caused: exec: "nope": executable file not found
    // in $PATH: unknown`
    let detail = message
        .rfind("exec: ")
        .map(|i| &message[i + "exec: ".len()..])
        .unwrap_or(message);
    let detail = detail.trim_end_matches(": unknown").trim();
    let lower = message.to_ascii_lowercase();
    let about_exec = lower.contains("exec: ") || lower.contains("starting container process");
    if about_exec
        && (lower.contains("executable file not found")
            || lower.contains("no such file or directory"))
    {
        (EXIT_NOT_FOUND, format!("command not found: {detail}"))
    } else if about_exec
        && (lower.contains("permission denied") || lower.contains("exec format error"))
    {
        (
            EXIT_NOT_EXECUTABLE,
            format!("command cannot be executed: {detail}"),
        )
    } else {
        (
            EXIT_BERTH_FAILED,
            format!("the sandbox could not start: {message}"),
        )
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeEngine};
    use crate::plan::{plan_sandbox, HostFacts};
    use crate::sink::CaptureSink;
    use berth_spec::{NetworkMode, SandboxSpec};

    fn plan(network: NetworkMode) -> SandboxPlan {
        let mut spec = SandboxSpec::new(vec!["echo".into(), "hi".into()]);
        spec.network = network;
        let host = HostFacts {
            engine_socket: None,
            owner: "h:1:1".into(),
            created: "t".into(),
        };
        plan_sandbox(&spec, "id1", "run", &host).unwrap()
    }

    fn never() -> std::future::Pending<Interrupt> {
        std::future::pending()
    }

    /// Runs a plan with the given network against a fake, capturing output.
    async fn run_fake(
        engine: &FakeEngine,
        network: NetworkMode,
        options: RunOptions,
        interrupt: impl Future<Output = Interrupt>,
    ) -> Receipt {
        run_once(
            engine,
            &plan(network),
            &ImageInfo::default(),
            &options,
            CaptureSink::new(1024),
            interrupt,
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn exit_code_and_output_and_removal() {
        let engine = FakeEngine::exiting(42, b"out", b"err");
        let r = run_fake(&engine, NetworkMode::None, RunOptions::default(), never()).await;
        assert_eq!(r.exit_code, 42);
        assert_eq!(r.outcome, Outcome::Exited);
        assert_eq!(r.stdout.bytes, 3);
        assert_eq!(r.stdout_text.as_deref(), Some("out"));
        assert_eq!(r.stderr_text.as_deref(), Some("err"));
        let calls = engine.calls();
        assert!(matches!(calls[0], Call::Create(ref p) if p.cap_drop == ["ALL"]));
        let attach = calls
            .iter()
            .position(|c| matches!(c, Call::Attach))
            .unwrap();
        let start = calls.iter().position(|c| matches!(c, Call::Start)).unwrap();
        assert!(attach < start, "attach must precede start: {calls:?}");
        assert!(matches!(calls.last(), Some(Call::Remove { force: true })));
    }

    #[tokio::test]
    async fn keep_leaves_the_container() {
        let engine = FakeEngine::exiting(0, b"", b"");
        let options = RunOptions {
            keep: true,
            ..Default::default()
        };
        let r = run_fake(&engine, NetworkMode::None, options, never()).await;
        assert!(r.kept);
        assert!(!engine
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Remove { .. })));
    }

    #[tokio::test]
    async fn isolated_network_is_created_and_removed() {
        let engine = FakeEngine::exiting(0, b"", b"");
        run_fake(
            &engine,
            NetworkMode::Isolated,
            RunOptions::default(),
            never(),
        )
        .await;
        let calls = engine.calls();
        assert!(matches!(calls[0], Call::NetworkCreate(ref n) if n.internal));
        assert!(matches!(calls.last(), Some(Call::NetworkRemove)));
    }

    #[tokio::test]
    async fn start_failure_maps_to_127_and_still_removes() {
        let engine = FakeEngine::failing_start(
            "OCI runtime create failed: runc create failed: unable to start container process: exec: \"nope\": executable file not found in $PATH: unknown",
        );
        let r = run_fake(&engine, NetworkMode::None, RunOptions::default(), never()).await;
        assert_eq!(r.exit_code, 127);
        assert_eq!(r.outcome, Outcome::StartFailed);
        assert!(r
            .error
            .unwrap()
            .contains("\"nope\": executable file not found"));
        assert!(matches!(engine.calls().last(), Some(Call::Remove { .. })));
    }

    #[tokio::test]
    async fn timeout_kills_and_reports_124() {
        let engine = FakeEngine::hanging();
        let options = RunOptions {
            timeout: Some(Duration::from_millis(50)),
            keep: false,
            dirs: std::env::temp_dir(),
        };
        let r = run_fake(&engine, NetworkMode::None, options, never()).await;
        assert_eq!(r.exit_code, 124);
        assert!(r.timed_out);
        assert!(engine.calls().iter().any(|c| matches!(c, Call::Kill)));
    }

    #[tokio::test]
    async fn interrupt_kills_sweeps_and_reports_130() {
        let engine = FakeEngine::hanging();
        let signal = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Interrupt {
                name: "SIGINT",
                number: 2,
            }
        };
        let r = run_fake(&engine, NetworkMode::None, RunOptions::default(), signal).await;
        assert_eq!(r.exit_code, 130);
        assert_eq!(r.interrupted_by.as_deref(), Some("SIGINT"));
        let calls = engine.calls();
        assert!(calls.iter().any(|c| matches!(c, Call::List)));
        assert!(matches!(calls.last(), Some(Call::Remove { force: true })));
    }

    #[tokio::test]
    async fn oom_is_named() {
        let engine = FakeEngine::oom();
        let r = run_fake(&engine, NetworkMode::None, RunOptions::default(), never()).await;
        assert_eq!(r.exit_code, 137);
        assert_eq!(r.outcome, Outcome::OomKilled);
        assert!(r.oom_killed);
    }

    #[test]
    fn start_failures_are_classified() {
        assert_eq!(
            classify_start_failure(
                "starting container process caused: exec: \"/x\": permission denied: unknown"
            )
            .0,
            126
        );
        assert_eq!(classify_start_failure("starting container process caused: exec: \"/x\": stat /x: no such file or directory: unknown").0, 127);
        assert_eq!(
            classify_start_failure("error while mounting volume: no such file or directory").0,
            125
        );
    }
}
