//! The fault matrix: each test breaks something on purpose — the CLI SIGKILLed mid-operation,
//! the agent killed under an upload, a full disk, the engine cut off or restarted — and shows
//! that nothing acknowledged is lost, nothing is left that `berth gc` would not find, and the
//! failure is named within a bound (never a hang). The engine-restart and gVisor tests start
//! their own dockerd (own socket, data root, exec root and network namespace); the machine's
//! is never touched.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::*;

/// The longest any failure may take to be reported.
const BOUND: Duration = Duration::from_secs(60);

/// Waits for `child` at most [`BOUND`]; a hang fails the test.
fn finish(child: Child) -> Output {
    let id = child.id();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if started.elapsed() > BOUND {
            kill(id, libc::SIGKILL);
            panic!("still running after {BOUND:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    waiter.join().unwrap()
}

/// Polls `done` until it holds or [`BOUND`] passes.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < BOUND, "{what}: not within {BOUND:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

/// A file of `mib` MiB of random-looking bytes.
fn big_file(dir: &Path, name: &str, mib: usize) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let mut block: Vec<u8> = (0..1usize << 20).map(|j| (j * 7 + j / 251) as u8).collect();
    for i in 0..mib {
        block[..8].copy_from_slice(&(i as u64).to_le_bytes());
        f.write_all(&block).unwrap();
    }
    path
}

#[test]
fn a_sigkilled_cli_mid_exec_takes_its_process_with_it() {
    let sb = Sandbox::create(&[]);
    let child = berth()
        .args([
            "exec",
            &sb.id,
            "--",
            "sh",
            "-c",
            "echo $$ > /tmp/pid; exec sleep 300",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("the command started", || {
        sb.exec(&[], &["test", "-s", "/tmp/pid"]).status.success()
    });
    kill(child.id(), libc::SIGKILL);
    let _ = finish(child);
    // The agent sees the stream end and ends the whole process tree.
    eventually("the orphaned command ended", || {
        !sb.exec(&[], &["sh", "-c", "kill -0 $(cat /tmp/pid)"])
            .status
            .success()
    });
    assert!(
        sb.exec(&[], &["true"]).status.success(),
        "the sandbox is still usable"
    );
}

/// Uploads a file holding "the old content" (written as `name` in `dir`) to `dest`.
fn put_old_file(sb: &Sandbox, dir: &Path, name: &str, dest: &str) {
    let old = dir.join(name);
    std::fs::write(&old, "the old content\n").unwrap();
    let up = cp(old.to_str().unwrap(), &format!("{}:{dest}", sb.id))
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
}

#[test]
fn a_sigkilled_cli_mid_copy_leaves_the_old_files_whole_both_ways() {
    let sb = Sandbox::create(&[]);
    let dir = tempfile::tempdir().unwrap();
    // Upload: the old file in the sandbox stays as it was.
    put_old_file(&sb, dir.path(), "old", "/home/berth/data");
    let big = big_file(dir.path(), "data", 512);
    let child = cp(big.to_str().unwrap(), &format!("{}:/home/berth/", sb.id))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the upload started", || {
        sb.sh("ls -a /home/berth").contains(".berth-upload-")
    });
    kill(child.id(), libc::SIGKILL);
    let _ = finish(child);
    assert_eq!(sb.sh("cat /home/berth/data"), "the old content\n");
    eventually("the partial upload was removed", || {
        !sb.sh("ls -a /home/berth").contains(".berth-upload-")
    });

    // Download: an old host file under the same name stays as it was.
    sb.sh("head -c 536870912 /dev/zero > /home/berth/big");
    let dest = dir.path().join("down");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("big"), "old host file\n").unwrap();
    let child = cp(
        &format!("{}:/home/berth/big", sb.id),
        dest.to_str().unwrap(),
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    eventually("the download started", || {
        std::fs::read_dir(&dest).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".berth-part")
        })
    });
    kill(child.id(), libc::SIGKILL);
    let _ = finish(child);
    assert_eq!(
        std::fs::read_to_string(dest.join("big")).unwrap(),
        "old host file\n",
        "a killed download replaced the old file"
    );
    // The next download there replaces the file whole and sweeps the killed one's leftover.
    let out = cp(
        &format!("{}:/home/berth/big", sb.id),
        dest.to_str().unwrap(),
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(dest.join("big")).unwrap().len(),
        536_870_912
    );
    let left: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["big"], "no partial download is left behind");
}

#[test]
fn the_agent_killed_mid_upload_keeps_the_old_file_and_says_so() {
    let sb = Sandbox::create(&[]);
    let dir = tempfile::tempdir().unwrap();
    put_old_file(&sb, dir.path(), "data", "/home/berth/");
    let big_dir = tempfile::tempdir().unwrap();
    let big = big_file(big_dir.path(), "data", 512);
    let child = cp(big.to_str().unwrap(), &format!("{}:/home/berth/", sb.id))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the upload started", || {
        sb.sh("ls -a /home/berth").contains(".berth-upload-")
    });
    assert!(docker(&["kill", &sb.container()]).status.success());
    let out = finish(child);
    assert_ne!(out.status.code(), Some(0), "a cut upload claimed success");
    let err = stderr(&out);
    assert!(
        err.contains("not running") || err.contains("stopped answering"),
        "{err}"
    );
    let start = berth().args(["start", &sb.id]).output().unwrap();
    assert!(start.status.success(), "{}", stderr(&start));
    assert_eq!(sb.sh("cat /home/berth/data"), "the old content\n");
}

#[test]
fn a_full_workspace_is_a_clear_error_and_keeps_the_old_file() {
    let ws = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0777", "tmpfs"])
        .arg(ws.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mounting a small tmpfs needs root");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(ws.path().to_path_buf());
    std::fs::write(ws.path().join("data"), "the old content\n").unwrap();
    let sb = Sandbox::create(&["--workspace", ws.path().to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let big = big_file(dir.path(), "data", 20);
    let out = finish(
        cp(big.to_str().unwrap(), &format!("{}:/workspace/", sb.id))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("os error"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(ws.path().join("data")).unwrap(),
        "the old content\n"
    );
    let left: Vec<_> = std::fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    // A workload that fills it gets ENOSPC itself; the sandbox goes on.
    let fill = sb.exec(
        &[],
        &["sh", "-c", "head -c 20000000 /dev/zero > /workspace/fill"],
    );
    assert_ne!(fill.status.code(), Some(0));
    assert!(sb.exec(&[], &["rm", "/workspace/fill"]).status.success());
    assert!(sb.exec(&[], &["true"]).status.success());
}

#[test]
fn sigkilled_creates_leave_only_what_ps_or_gc_finds() {
    ensure_base_image();
    ensure_agent();
    let state = tempfile::tempdir().unwrap();
    let cmd = || {
        let mut c = berth();
        c.env("BERTH_STATE_DIR", state.path());
        c
    };
    for delay_ms in [5u64, 30, 80, 150, 300] {
        let child = cmd()
            .arg("create")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        kill(child.id(), libc::SIGKILL);
        let _ = finish(child);
    }
    // Every container made for this state directory is a sandbox `berth ps` lists (and
    // `berth rm` removes) or something `berth gc` finds.
    let listed = stdout(&cmd().args(["ps", "-q"]).output().unwrap());
    let gc = stdout(&cmd().args(["gc", "--dry-run", "--json"]).output().unwrap());
    let prefix = state.path().display().to_string();
    for id in containers_with("berth.managed=true") {
        let facts = stdout(&docker(&[
            "inspect",
            "-f",
            "{{index .Config.Labels \"berth.id\"}} {{range .Mounts}}{{.Source}} {{end}}",
            &id,
        ]));
        if !facts.contains(&prefix) {
            continue;
        }
        let berth_id = facts.split_whitespace().next().unwrap_or_default();
        assert!(
            listed.contains(berth_id) || gc.contains(berth_id) || gc.contains(&id[..12]),
            "container {id} ({facts}) is neither listed nor collected:\nps: {listed}\ngc: {gc}"
        );
    }
    for id in listed.split_whitespace() {
        let rm = cmd().args(["rm", "-f", id]).output().unwrap();
        assert!(rm.status.success(), "{}", stderr(&rm));
    }
    let _ = cmd().args(["gc"]).output();
}

/// A TCP proxy to the engine's socket that the test can cut: every connection is shut down
/// at once and new ones are closed as they come.
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CuttableProxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, streams) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if flag.load(Ordering::SeqCst) {
                    continue;
                }
                let engine =
                    std::os::unix::net::UnixStream::connect("/var/run/docker.sock").unwrap();
                streams.lock().unwrap().push(client.try_clone().unwrap());
                let mut to_engine = engine.try_clone().unwrap();
                let mut from_client = client.try_clone().unwrap();
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_client, &mut to_engine);
                    let _ = to_engine.shutdown(std::net::Shutdown::Both);
                });
                let (mut from_engine, mut to_client) = (engine, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_engine, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Self { port, cut, open }
    }

    /// The engine is gone, as far as berth can tell.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn the_engine_cut_off_mid_run_is_named_and_gc_cleans_up() {
    ensure_base_image();
    ensure_agent();
    let _gc = gc_lock();
    let proxy = CuttableProxy::start();
    let state = tempfile::tempdir().unwrap();
    let child = berth()
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", proxy.port))
        .env("BERTH_STATE_DIR", state.path())
        .args([
            "run",
            "--timeout",
            "5m",
            "--",
            "sh",
            "-c",
            "echo started; sleep 300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut container = String::new();
    eventually("the run started", || {
        container = running_container_of(pid);
        !container.is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    proxy.cut();
    let started = Instant::now();
    let out = finish(child);
    assert_ne!(out.status.code(), Some(0), "a lost engine claimed success");
    assert!(started.elapsed() < BOUND);
    let err = stderr(&out);
    assert!(
        err.contains("connection to the Docker engine broke") && !err.contains("panicked"),
        "the failure does not name the engine: {err}"
    );
    // The container the dead run left is berth's and its owner is gone: gc finds it.
    let gc = berth().args(["gc", "--json"]).output().unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        !docker(&["inspect", &container]).status.success(),
        "gc left the run's container: {}",
        stdout(&gc)
    );
}

/// A dockerd of the test's own: socket, data root, exec root and config in a temp dir, in a
/// network namespace of its own.
struct OwnEngine {
    dir: tempfile::TempDir,
    runsc: bool,
    child: Option<Child>,
}

impl OwnEngine {
    fn start(runsc: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd")
            .tempdir()
            .unwrap();
        let mut engine = Self {
            dir,
            runsc,
            child: None,
        };
        engine.boot();
        // berth's base image, built offline into this engine.
        let out = engine.berth().args(["image", "build"]).output().unwrap();
        assert!(out.status.success(), "image build: {}", stderr(&out));
        engine
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    fn boot(&mut self) {
        let d = self.dir.path();
        let config = if self.runsc {
            r#"{"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}}"#
        } else {
            "{}"
        };
        std::fs::write(d.join("daemon.json"), config).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("dockerd.log"))
            .unwrap();
        // Its own network namespace too: a second dockerd in the host's would manage (and on
        // shutdown remove) the host's docker0 bridge, which the machine's engine owns.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .arg("--config-file")
            .arg(d.join("daemon.json"))
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--bridge", "none", "--iptables=false", "--ip-masq=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let host = self.host();
        eventually("the test's dockerd answered", || {
            Command::new("docker")
                .args(["-H", &host, "version"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.boot();
    }

    fn berth(&self) -> Command {
        let mut c = berth();
        c.env("DOCKER_HOST", self.host())
            .env("BERTH_STATE_DIR", self.dir.path().join("state"));
        c
    }

    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(["-H", &self.host()])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for OwnEngine {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = stdout(&self.docker(&["ps", "-aq"]));
            for id in ids.split_whitespace() {
                let _ = self.docker(&["rm", "-f", id]);
            }
        }
        self.stop();
        let _ = Command::new("umount")
            .arg("-R")
            .arg("-l")
            .arg(self.dir.path().join("root"))
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn an_engine_restart_stops_sandboxes_and_berth_start_brings_them_back() {
    ensure_agent();
    let host_bridge = || {
        Command::new("ip")
            .args(["link", "show", "docker0"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let bridge_before = host_bridge();
    let mut engine = OwnEngine::start(false);
    let out = engine
        .berth()
        .args(["create", "--name", "survivor"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let write = engine
        .berth()
        .args([
            "exec",
            "survivor",
            "--",
            "sh",
            "-c",
            "echo kept > /home/berth/note",
        ])
        .output()
        .unwrap();
    assert!(write.status.success(), "{}", stderr(&write));

    engine.stop();
    let down = finish(
        engine
            .berth()
            .args(["exec", "survivor", "--", "true"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert_eq!(down.status.code(), Some(125));
    assert!(
        stderr(&down).contains("Docker daemon not reachable"),
        "{}",
        stderr(&down)
    );

    engine.boot();
    let stopped = engine
        .berth()
        .args(["exec", "survivor", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(stopped.status.code(), Some(125));
    assert!(
        stderr(&stopped).contains("not running") && stderr(&stopped).contains("berth start"),
        "{}",
        stderr(&stopped)
    );
    let ps = engine.berth().args(["ps"]).output().unwrap();
    assert!(stdout(&ps).contains("exited"), "{}", stdout(&ps));

    let start = engine.berth().args(["start", "survivor"]).output().unwrap();
    assert!(start.status.success(), "{}", stderr(&start));
    let read = engine
        .berth()
        .args(["exec", "survivor", "--", "cat", "/home/berth/note"])
        .output()
        .unwrap();
    assert_eq!(stdout(&read), "kept\n", "{}", stderr(&read));

    // Restarted again while running: the same, and then nothing is left.
    engine.restart();
    let start = engine.berth().args(["start", "survivor"]).output().unwrap();
    assert!(start.status.success(), "{}", stderr(&start));
    let rm = engine
        .berth()
        .args(["rm", "-f", "survivor"])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    let gc = engine
        .berth()
        .args(["gc", "--dry-run", "--all", "--json"])
        .output()
        .unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    let left = stdout(&engine.docker(&["ps", "-aq", "--filter", "label=berth.managed"]));
    assert!(left.trim().is_empty(), "left behind: {left}");
    drop(engine);
    assert_eq!(
        host_bridge(),
        bridge_before,
        "the test's dockerd touched the machine engine's docker0"
    );
}

#[test]
fn gvisor_runs_the_agent_exec_files_and_isolation() {
    assert!(
        Path::new("/usr/bin/runsc").exists(),
        "gVisor is not installed: apt-get install runsc (.ci/run does)"
    );
    ensure_agent();
    let engine = OwnEngine::start(true);
    let doctor = engine.berth().args(["doctor"]).output().unwrap();
    assert!(
        stdout(&doctor).contains("gVisor (runsc)") && stdout(&doctor).contains("registered"),
        "{}",
        stdout(&doctor)
    );

    // One-shot: the kernel answering is gVisor's.
    let run = engine
        .berth()
        .args(["run", "--runtime", "runsc", "--json", "--", "dmesg"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let receipt: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(receipt["security"]["runtime"], "runsc");
    assert!(
        receipt["stdout_text"]
            .as_str()
            .unwrap_or_default()
            .contains("gVisor"),
        "{receipt}"
    );

    let made = engine
        .berth()
        .args(["create", "--name", "g", "--runtime", "runsc"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let exec = |args: &[&str]| engine.berth().args(["exec"]).args(args).output().unwrap();
    // Exec: exit codes, separate streams, timeouts, background processes.
    let out = exec(&["g", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(
        (stdout(&out).as_str(), stderr(&out).as_str()),
        ("out\n", "err\n")
    );
    assert_eq!(exec(&["g", "--", "nosuch"]).status.code(), Some(127));
    assert_eq!(
        exec(&["g", "--timeout", "1s", "--", "sleep", "30"])
            .status
            .code(),
        Some(124)
    );
    assert!(exec(&["g", "-d", "--tag", "bg", "--", "sleep", "60"])
        .status
        .success());
    let top = engine.berth().args(["top", "g"]).output().unwrap();
    assert!(stdout(&top).contains("sleep 60"), "{}", stdout(&top));
    // Isolation: the workload is unprivileged, with no capabilities, no new privileges, no
    // network but loopback, and the kernel it sees is not the host's.
    let facts = stdout(&exec(&[
        "g",
        "--",
        "sh",
        "-c",
        "id -u; grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; ls /sys/class/net; uname -r",
    ]));
    assert!(facts.starts_with("1000\n"), "{facts}");
    assert!(facts.contains("CapEff:\t0000000000000000"), "{facts}");
    // gVisor's /proc has no NoNewPrivs line; the receipt above says it was asked for.
    assert_eq!(receipt["security"]["no_new_privileges"], true);
    assert!(!facts.contains("eth0"), "{facts}");
    let host_kernel =
        String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    assert!(
        !facts.ends_with(&host_kernel),
        "the host's kernel answered: {facts}"
    );
    // Files: both ways, byte-exact.
    let dir = tempfile::tempdir().unwrap();
    let big = big_file(dir.path(), "blob", 8);
    let up = engine
        .berth()
        .args(["cp", big.to_str().unwrap(), "g:/tmp/"])
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
    let back = dir.path().join("back");
    let down = engine
        .berth()
        .args(["cp", "g:/tmp/blob", back.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(sha256(&big), sha256(&back));
    let ls = engine
        .berth()
        .args(["fs", "ls", "g", "/tmp"])
        .output()
        .unwrap();
    assert!(stdout(&ls).contains("blob"), "{}", stdout(&ls));
    let rm = engine.berth().args(["rm", "-f", "g"]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
}

/// `berth serve` on `engine`, with its own state directory: (process, URL).
fn serve_on(engine: &OwnEngine, state: &Path) -> (Running, String) {
    use std::io::BufRead;
    let mut child = engine
        .berth()
        .env("BERTH_STATE_DIR", state)
        // More than the default one thread: the restart story holds either way.
        .args(["serve", "--listen", "127.0.0.1:0", "--threads", "2"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("berth: listening on ").map(str::to_string))
        .expect("the server did not say where it listens");
    std::thread::spawn(move || for _ in lines {});
    (Running(child), url)
}

/// (status, JSON body) of one API call.
fn api(
    url: &str,
    key: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let request = ureq::request(method, &format!("{url}{path}"))
        .set("Authorization", &format!("Bearer {key}"));
    let answer = match body {
        Some(b) => request.send_json(b),
        None => request.call(),
    };
    match answer {
        Ok(r) => {
            let status = r.status();
            let text = r.into_string().unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            match lines.len() {
                1 => (status, lines.into_iter().next().unwrap()),
                _ => (status, serde_json::Value::Array(lines)),
            }
        }
        Err(ureq::Error::Status(status, r)) => (status, r.into_json().unwrap_or_default()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

#[test]
fn an_engine_restart_under_the_server_is_reported_and_start_or_reconcile_recover() {
    ensure_agent();
    let mut engine = OwnEngine::start(false);
    let state = engine.dir.path().join("server-state");
    let init = engine
        .berth()
        .env("BERTH_STATE_DIR", &state)
        .args(["server", "init"])
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let key = stdout(&init).trim().to_string();
    let (server, url) = serve_on(&engine, &state);
    let (s, made) = api(
        &url,
        &key,
        "POST",
        "/v1/sandboxes",
        Some(serde_json::json!({})),
    );
    assert_eq!(s, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    let exec = |url: &str| {
        api(
            url,
            &key,
            "POST",
            &format!("/v1/sandboxes/{id}/exec"),
            Some(serde_json::json!({"argv": ["true"]})),
        )
    };
    assert_eq!(exec(&url).0, 200);

    // The engine restarts under the running server: its sandbox is stopped, and says so.
    engine.restart();
    let (s, sandbox) = api(&url, &key, "GET", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(s, 200);
    assert_ne!(sandbox["status"], "running", "{sandbox}");
    let (s, refused) = exec(&url);
    assert_eq!(s, 409, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not running"),
        "{refused}"
    );
    let (s, started) = api(
        &url,
        &key,
        "POST",
        &format!("/v1/sandboxes/{id}/start"),
        None,
    );
    assert_eq!(s, 200, "{started}");
    let (s, events) = exec(&url);
    assert_eq!(s, 200);
    assert_eq!(
        events
            .as_array()
            .and_then(|e| e.last())
            .map(|e| e["code"].clone()),
        Some(0.into()),
        "{events}"
    );

    // Restarted again, with the server killed while it was down: the next server's
    // reconcile records the sandbox as stopped, and start brings it back.
    drop(server);
    engine.restart();
    let (server, url) = serve_on(&engine, &state);
    let (s, sandbox) = api(&url, &key, "GET", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(
        (s, sandbox["state"].as_str()),
        (200, Some("stopped")),
        "{sandbox}"
    );
    let (s, started) = api(
        &url,
        &key,
        "POST",
        &format!("/v1/sandboxes/{id}/start"),
        None,
    );
    assert_eq!(s, 200, "{started}");
    assert_eq!(exec(&url).0, 200);
    let (s, _) = api(&url, &key, "DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(s, 204);
    drop(server);
    let left = stdout(&engine.docker(&["ps", "-aq", "--filter", "label=berth.managed"]));
    assert!(left.trim().is_empty(), "left behind: {left}");
}
