//! Helpers shared by the integration tests.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BASE: &str = "berth/base:latest";

/// A `berth` command with a clean logging environment.
pub fn berth() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env_remove("BERTH_LOG").stdin(Stdio::null());
    cmd
}

/// `berth cp FROM TO`, to run (`.output()`) or start (`.spawn()`).
pub fn cp(from: &str, to: &str) -> Command {
    let mut cmd = berth();
    cmd.args(["cp", from, to]);
    cmd
}

/// Builds berth/base once per test binary if the engine does not have it.
pub fn ensure_base_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let present = docker(&["image", "inspect", BASE]).status.success();
    if !present {
        let out = berth().args(["image", "build"]).output().unwrap();
        assert!(
            out.status.success(),
            "berth image build failed (is busybox-static installed?): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    *built = true;
}

pub const DEBIAN: &str = "berth/debian:latest";

/// Builds berth/debian once (debootstrap, ~1.5 min) if the engine does not have it.
pub fn ensure_debian_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    if !docker(&["image", "inspect", DEBIAN]).status.success() {
        let out = berth()
            .args(["image", "build", "--debian"])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "berth image build --debian: {}",
            stderr(&out)
        );
    }
    *built = true;
}

/// Builds a static in-sandbox binary of this repo (`scripts/build-agent PACKAGE`) and
/// returns its path.
pub fn build_static(package: &str) -> std::path::PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-agent");
    let out = Command::new(&script).arg(package).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/build-agent {package} failed: {}",
        stderr(&out)
    );
    stdout(&out).trim().into()
}

/// Builds the egress gateway once per test binary (berth finds it under target/agent/).
pub fn ensure_gateway() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built {
        build_static("berth-gateway");
        *built = true;
    }
}

/// Runs `berth run ARGS` (image ensured) and returns its output.
pub fn run(args: &[&str]) -> Output {
    ensure_base_image();
    berth().arg("run").args(args).output().unwrap()
}

/// Runs `berth run --json ARGS` and returns the receipt and the exit code.
pub fn run_json(args: &[&str]) -> (serde_json::Value, i32) {
    ensure_base_image();
    let out = berth().args(["run", "--json"]).args(args).output().unwrap();
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON receipt ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (receipt, out.status.code().unwrap_or(-1))
}

/// `docker build -q -t TAG CONTEXT`, asserting success.
pub fn docker_build(context: &Path, tag: &str) {
    let out = Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(context)
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build {tag}: {}", stderr(&out));
}

/// berth's state directory as the berth under test sees it.
pub fn state_dir() -> std::path::PathBuf {
    std::env::var("BERTH_STATE_DIR").map_or_else(
        |_| Path::new(&std::env::var("HOME").unwrap()).join(".local/state/berth"),
        std::path::PathBuf::from,
    )
}

/// berth's runtime directory as the tests run it (as root, or with `$BERTH_RUNTIME_DIR`).
pub fn runtime_dir() -> std::path::PathBuf {
    std::env::var("BERTH_RUNTIME_DIR").map_or_else(
        |_| std::path::PathBuf::from("/run/berth"),
        std::path::PathBuf::from,
    )
}

/// The `berth.id` label of a container.
pub fn berth_id_of(container: &str) -> String {
    let out = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"berth.id\"}}",
        container,
    ]);
    stdout(&out).trim().to_string()
}

/// Runs the docker CLI.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Ids of containers (any state) carrying `label` (`key=value`).
pub fn containers_with(label: &str) -> Vec<String> {
    let out = docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
    ]);
    stdout(&out).lines().map(str::to_string).collect()
}

/// Ids of networks carrying `label`.
pub fn networks_with(label: &str) -> Vec<String> {
    let out = docker(&["network", "ls", "-q", "--filter", &format!("label={label}")]);
    stdout(&out).lines().map(str::to_string).collect()
}

/// The running berth container owned by process `pid`, waiting for it to appear.
pub fn running_container_of(pid: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = docker(&[
            "ps",
            "--no-trunc",
            "--filter",
            "label=berth.managed=true",
            "--format",
            "{{.ID}} {{.Label \"berth.owner\"}}",
        ]);
        for line in stdout(&out).lines() {
            if let Some((id, owner)) = line.split_once(' ') {
                if owner.contains(&format!(":{pid}:")) {
                    return id.to_string();
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no running container for berth pid {pid}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes containers by id, ignoring ones already gone.
pub fn remove_containers(ids: &[String]) {
    for id in ids {
        // A sandbox's directory in the runtime directory goes with it (berth's own removal
        // does that; a test that removes containers by hand must too).
        let sandbox = berth_id_of(id);
        let _ = docker(&["rm", "-f", id]);
        if !sandbox.is_empty() && !sandbox.contains('/') {
            let _ = std::fs::remove_dir_all(runtime_dir().join("sandboxes").join(sandbox));
        }
    }
}

/// Held by every test that leaves garbage on purpose (a SIGKILLed berth) or runs `berth gc`,
/// from the kill to its own gc: otherwise one test's gc removes what another test is about
/// to look for.
pub fn gc_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A spawned berth that a failing test interrupts (SIGINT: berth cleans up) instead of leaving
/// it running.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            kill(self.0.id(), libc::SIGINT);
            let _ = self.0.wait();
        }
    }
}

/// Sends `signal` to `pid`.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal})");
}

/// A temporary directory owned by `uid:gid` (tests run as root, so they can chown).
pub fn dir_owned_by(uid: u32, gid: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    dir
}

pub fn owner_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// Builds the static agent once per test binary (berth finds it under target/agent/).
pub fn ensure_agent() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-agent");
    let out = Command::new(&script).output().unwrap();
    assert!(
        out.status.success(),
        "scripts/build-agent failed: {}",
        stderr(&out)
    );
    *built = true;
}

/// A sandbox made with `berth create`, removed (forcefully) when dropped.
pub struct Sandbox {
    pub id: String,
}

impl Sandbox {
    pub fn create(args: &[&str]) -> Self {
        ensure_base_image();
        ensure_agent();
        let out = berth().arg("create").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "berth create failed: {}",
            stderr(&out)
        );
        Self {
            id: stdout(&out).trim().to_string(),
        }
    }

    /// `berth exec OPTS ID -- CMD`.
    pub fn exec(&self, opts: &[&str], cmd: &[&str]) -> Output {
        berth()
            .arg("exec")
            .args(opts)
            .arg(&self.id)
            .arg("--")
            .args(cmd)
            .output()
            .unwrap()
    }

    /// `berth exec` of a shell script; asserts success and returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.exec(&[], &["sh", "-c", script]);
        assert_eq!(out.status.code(), Some(0), "{script}: {}", stderr(&out));
        stdout(&out)
    }

    pub fn inspect(&self) -> serde_json::Value {
        let out = berth().args(["inspect", &self.id]).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn container(&self) -> String {
        self.inspect()["container_id"].as_str().unwrap().to_string()
    }

    pub fn socket_dir(&self) -> std::path::PathBuf {
        self.inspect()["socket_dir"].as_str().unwrap().into()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = berth().args(["rm", "-f", &self.id]).output();
    }
}
