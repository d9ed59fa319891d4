//! Egress by domain through berth's gateway, end to end against the real daemon with no
//! internet: the "internet" is `fake-upstream` (this repo's test server with its own CA) in a
//! container on Docker's bridge, and the gateway is pointed at it with the documented
//! test-only overrides (`BERTH_EGRESS_TEST_RESOLVE`, `BERTH_EGRESS_TEST_UPSTREAM_CA`).
//! Clients inside the sandboxes are real: Python's urllib and ssl, busybox wget.

use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::*;

const UPSTREAM_IMAGE: &str = "berth-test/fake-upstream:latest";
const PROBE: &str = include_str!("egress_probe.py");
pub const SECRET: &str = "sekrit-value-9f2c1d";

/// A running fake-upstream answering for `names`; removed when dropped.
pub struct Upstream {
    pub container: String,
    pub ip: String,
    /// Holds the upstream's CA (`ca.pem`) and the probe script; mounted at /ca in sandboxes.
    pub dir: tempfile::TempDir,
    pub names: Vec<String>,
}

fn ensure_upstream_image() {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if *built {
        return;
    }
    let binary = build_static("fake-upstream");
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, ctx.path().join("fake-upstream")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY fake-upstream /fake-upstream\nENTRYPOINT [\"/fake-upstream\"]\nLABEL berth.test=true\n",
    )
    .unwrap();
    docker_build(ctx.path(), UPSTREAM_IMAGE);
    *built = true;
}

impl Upstream {
    pub fn start(names: &[&str], env: &[(&str, &str)]) -> Self {
        ensure_upstream_image();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("probe.py"), PROBE).unwrap();
        let mut args: Vec<String> = ["run", "-d", "--label", "berth.test=true", "-v"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("{}:/out", dir.path().display()));
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args.push(UPSTREAM_IMAGE.into());
        args.push("--names".into());
        args.push(names.join(","));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = docker(&refs);
        assert!(
            out.status.success(),
            "docker run fake-upstream: {}",
            stderr(&out)
        );
        let container = stdout(&out).trim().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.path().join("ready").exists() {
            assert!(Instant::now() < deadline, "fake-upstream did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ip = stdout(&docker(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &container,
        ]))
        .trim()
        .to_string();
        assert!(!ip.is_empty(), "fake-upstream has no address");
        Self {
            container,
            ip,
            dir,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Points berth's gateway at this upstream (test-only overrides).
    pub fn wire(&self, cmd: &mut Command) {
        let resolve: Vec<String> = self
            .names
            .iter()
            .map(|n| format!("{n}={}", self.ip))
            .collect();
        cmd.env("BERTH_EGRESS_TEST_RESOLVE", resolve.join(",")).env(
            "BERTH_EGRESS_TEST_UPSTREAM_CA",
            self.dir.path().join("ca.pem"),
        );
    }

    pub fn mount(&self) -> String {
        format!("{}:/ca:ro", self.dir.path().display())
    }

    /// What the upstream logged: one JSON object per request.
    pub fn requests(&self) -> Vec<Value> {
        stdout(&docker(&["logs", &self.container]))
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
    }
}

fn berth_wired(up: &Upstream) -> Command {
    ensure_gateway();
    let mut cmd = berth();
    up.wire(&mut cmd);
    cmd
}

fn probe(sandbox: &Sandbox, args: &[&str]) -> String {
    let mut cmd = vec!["python3", "/ca/probe.py"];
    cmd.extend_from_slice(args);
    let out = sandbox.exec(&[], &cmd);
    format!("{}{}", stdout(&out), stderr(&out))
}

fn probe_json(sandbox: &Sandbox, args: &[&str]) -> Value {
    let text = probe(sandbox, args);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

fn objects_of(id: &str) -> (Vec<String>, Vec<String>) {
    let label = format!("berth.id={id}");
    (containers_with(&label), networks_with(&label))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[test]
fn a_sandbox_reaches_only_its_policy_and_never_holds_the_secret() {
    ensure_debian_image();
    ensure_agent();
    let up = Upstream::start(&["allowed.test", "secret.test"], &[]);
    let out = output(berth_wired(&up).args([
        "create",
        "--image",
        DEBIAN,
        "--allow-host",
        "allowed.test",
        "--allow-host",
        "localhost",
        "--allow-host",
        "10.1.2.3",
        "--allow-host",
        "169.254.169.254",
        "--secret",
        &format!("TOKEN={SECRET}@secret.test"),
        "-v",
        &up.mount(),
    ]));
    assert_eq!(out.status.code(), Some(0), "create: {}", stderr(&out));
    let sandbox = Sandbox {
        id: stdout(&out).trim().to_string(),
    };
    let gateway = format!("berth-gw-{}", sandbox.id);

    // An allowed host answers, through a real TLS tunnel to the upstream; the placeholder
    // reaches a host that is not the secret's unchanged.
    let allowed: Value =
        serde_json::from_str(&probe(&sandbox, &["urllib", "https://allowed.test/echo"])).unwrap();
    let auth = allowed["headers"]["authorization"].as_str().unwrap();
    assert!(
        auth.starts_with("Bearer berth-placeholder-token-"),
        "{allowed}"
    );
    // Its only interface is on berth's internal network, whose large MTU (the gateway's
    // sandbox-side hop in fewer packets) the tunnel above just crossed.
    let out = sandbox.exec(&[], &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(stdout(&out).trim(), "65520", "{}", stderr(&out));
    // The secret's host gets the value, put in by the gateway.
    let secret: Value =
        serde_json::from_str(&probe(&sandbox, &["urllib", "https://secret.test/echo"])).unwrap();
    assert_eq!(
        secret["headers"]["authorization"],
        format!("Bearer {SECRET}"),
        "{secret}"
    );
    // Tools that read only the system bundle trust the sandbox's CA too (berth appended it).
    let out = sandbox.exec(
        &[],
        &[
            "env",
            "-u",
            "SSL_CERT_FILE",
            "python3",
            "/ca/probe.py",
            "system",
            "https://secret.test/echo",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("\"host\":\"secret.test\""),
        "{}",
        stdout(&out)
    );
    // Plain HTTP goes through the proxy too (and never gets a secret).
    let plain: Value =
        serde_json::from_str(&probe(&sandbox, &["urllib", "http://allowed.test/echo"])).unwrap();
    assert_eq!(plain["host"], "allowed.test");
    let fronted = probe(
        &sandbox,
        &["plain-host", "http://allowed.test/echo", "evil.test"],
    );
    assert!(fronted.contains("\"host\":\"allowed.test\""), "{fronted}");

    // A tunnel to port 80 carries plain HTTP (only 443 must be TLS for the CONNECT host).
    let tunnel = probe_json(&sandbox, &["connect-plain", "allowed.test:80"]);
    assert!(
        tunnel["status"].as_str().unwrap().contains("200"),
        "{tunnel}"
    );
    assert!(
        tunnel["body"]
            .as_str()
            .unwrap()
            .contains("\"host\":\"allowed.test\""),
        "{tunnel}"
    );

    // Refusals name the host and the policy.
    let denied = probe_json(&sandbox, &["connect", "denied.test:443"]);
    assert!(
        denied["status"].as_str().unwrap().contains("403"),
        "{denied}"
    );
    let body = denied["body"].as_str().unwrap();
    assert!(
        body.contains("denied.test:443 is not on this sandbox's egress policy"),
        "{body}"
    );
    assert!(
        body.contains("allowed.test") && body.contains("--allow-host denied.test"),
        "{body}"
    );
    let raw_ip = probe_json(&sandbox, &["connect", "1.2.3.4:443"]);
    assert!(
        raw_ip["body"]
            .as_str()
            .unwrap()
            .contains("raw IP addresses"),
        "{raw_ip}"
    );
    for (target, why) in [
        ("localhost:443", "loopback"),
        ("10.1.2.3:443", "private"),
        ("169.254.169.254:80", "link-local"),
    ] {
        let r = probe_json(&sandbox, &["connect", target]);
        assert!(
            r["status"].as_str().unwrap().contains("403"),
            "{target}: {r}"
        );
        assert!(r["body"].as_str().unwrap().contains(why), "{target}: {r}");
    }
    let port = probe_json(&sandbox, &["connect", "allowed.test:22"]);
    assert!(
        port["body"]
            .as_str()
            .unwrap()
            .contains("--allow-host allowed.test:22"),
        "{port}"
    );
    // A tunnel to an allowed host must carry TLS for that host.
    let sni = probe_json(&sandbox, &["connect", "allowed.test:443", "secret.test"]);
    assert!(
        sni["body"].as_str().unwrap().starts_with("TLS-ERROR"),
        "{sni}"
    );

    // Tools that ignore the proxy have no network and no DNS.
    assert!(probe(&sandbox, &["direct", &up.ip, "443"]).starts_with("FAILED"));
    assert!(probe(&sandbox, &["direct", "1.1.1.1", "443"]).starts_with("FAILED"));
    assert!(probe(&sandbox, &["dns", "example.com"]).starts_with("FAILED"));

    // The sandbox holds only the placeholder: environment, every process's environ, files.
    let inside = sandbox.sh(&format!(
        "echo \"$TOKEN\"; grep -l '{SECRET}' /proc/*/environ 2>/dev/null; \
         grep -rl '{SECRET}' /.berth-egress /etc /tmp /home /workspace 2>/dev/null; true"
    ));
    assert!(
        inside.trim().starts_with("berth-placeholder-token-"),
        "{inside}"
    );
    assert!(!inside.contains(SECRET), "{inside}");
    // … and so do both containers' configurations, the gateway's log, and berth's records.
    let inspected = stdout(&docker(&["inspect", &sandbox.container(), &gateway]));
    assert!(inspected.contains("berth-placeholder-token-"));
    assert!(
        !inspected.contains(SECRET),
        "the secret is in a container's configuration"
    );
    let logs = docker(&["logs", &gateway]);
    let logs = format!("{}{}", stdout(&logs), stderr(&logs));
    assert!(
        logs.contains("\"decision\":\"deny\"") && logs.contains(&sandbox.id),
        "{logs}"
    );
    assert!(!logs.contains(SECRET), "the secret is in the gateway's log");
    let state = state_dir();
    let grep = Command::new("grep")
        .args(["-rl", SECRET])
        .arg(&state)
        .arg(runtime_dir())
        .output()
        .unwrap();
    assert!(
        stdout(&grep).trim().is_empty(),
        "in berth's state: {}",
        stdout(&grep)
    );

    // The policy is visible, the counts too; no value is.
    let inspect = berth().args(["inspect", &sandbox.id]).output().unwrap();
    let text = stdout(&inspect);
    assert!(!text.contains(SECRET));
    let egress = &serde_json::from_str::<Value>(&text).unwrap()["egress"];
    assert_eq!(egress["secrets"][0]["name"], "TOKEN");
    assert_eq!(egress["secrets"][0]["hosts"][0], "secret.test");
    assert!(egress["allow"]
        .as_array()
        .unwrap()
        .contains(&"allowed.test".into()));
    assert!(egress["stats"]["denied"].as_u64().unwrap() >= 7, "{egress}");
    assert!(
        egress["stats"]["allowed"].as_u64().unwrap() >= 3,
        "{egress}"
    );
    assert!(
        egress["stats"]["injected"].as_u64().unwrap() >= 1,
        "{egress}"
    );
    let recent = egress["stats"]["recent_denials"].to_string();
    assert!(
        recent.contains("does not match the CONNECT host"),
        "{recent}"
    );

    // The upstream saw the value from the secret's host only.
    let seen = up.requests();
    assert!(seen
        .iter()
        .any(|r| r["host"] == "secret.test" && r["authorization"] == format!("Bearer {SECRET}")));
    assert!(seen
        .iter()
        .filter(|r| r["host"] == "allowed.test")
        .all(|r| !r["authorization"].to_string().contains(SECRET)));

    // Stopped, the sandbox's gateway stops too; started again, the gateway gets its secret
    // back from the caller's environment (it was only ever in the old gateway's memory).
    let out = berth().args(["stop", &sandbox.id]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stop: {}", stderr(&out));
    let running = stdout(&docker(&["inspect", "-f", "{{.State.Running}}", &gateway]));
    assert_eq!(running.trim(), "false");
    let out = output(
        berth_wired(&up)
            .args(["start", &sandbox.id])
            .env("TOKEN", SECRET),
    );
    assert_eq!(out.status.code(), Some(0), "start: {}", stderr(&out));
    let again: Value =
        serde_json::from_str(&probe(&sandbox, &["urllib", "https://secret.test/echo"])).unwrap();
    assert_eq!(
        again["headers"]["authorization"],
        format!("Bearer {SECRET}"),
        "{again}"
    );

    // Killing the gateway leaves the sandbox without egress, never with more.
    let out = docker(&["kill", &gateway]);
    assert!(out.status.success());
    let after = probe(&sandbox, &["urllib", "https://allowed.test/echo"]);
    assert!(
        after.contains("Error") || after.contains("error"),
        "{after}"
    );
    assert!(probe(&sandbox, &["direct", &up.ip, "443"]).starts_with("FAILED"));

    // Removing the sandbox removes its gateway and network.
    let id = sandbox.id.clone();
    drop(sandbox);
    let (containers, networks) = objects_of(&id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "{containers:?} {networks:?}"
    );
}

#[test]
fn a_one_shot_run_with_a_gateway_reports_egress_and_leaves_nothing() {
    ensure_base_image();
    let up = Upstream::start(&["allowed.test"], &[]);
    let out = output(berth_wired(&up).args([
        "run",
        "--json",
        "--allow-host",
        "allowed.test",
        "--",
        "sh",
        "-c",
        "wget -q -O- http://allowed.test/echo && ! wget -q -O- http://denied.test/ 2>/dev/null",
    ]));
    let receipt: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
    assert_eq!(receipt["exit_code"], 0, "{receipt}");
    assert!(receipt["stdout_text"]
        .as_str()
        .unwrap()
        .contains("\"host\":\"allowed.test\""));
    let egress = &receipt["egress"];
    assert_eq!(egress["allow"], serde_json::json!(["allowed.test"]));
    assert_eq!(egress["stats"]["allowed"], 1, "{egress}");
    assert_eq!(egress["stats"]["denied"], 1, "{egress}");
    assert!(receipt["security"]["network"]
        .as_str()
        .unwrap()
        .starts_with("berth-egress-"));
    let id = receipt["id"].as_str().unwrap();
    let (containers, networks) = objects_of(id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "{containers:?} {networks:?}"
    );
}

#[test]
fn a_crashed_run_leaves_a_gateway_that_gc_removes() {
    ensure_base_image();
    ensure_gateway();
    let mut child = Running(
        berth()
            .args(["run", "--allow-host", "example.com", "--", "sleep", "60"])
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let container = running_container_of(pid);
    let id = berth_id_of(&container);
    // Wait until the sandbox itself runs (the gateway starts first).
    let deadline = Instant::now() + Duration::from_secs(60);
    while containers_with(&format!("berth.id={id}")).len() < 2 {
        assert!(Instant::now() < deadline, "the sandbox never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _gc = gc_lock();
    kill(pid, libc::SIGKILL);
    let _ = child.0.wait();
    let (containers, networks) = objects_of(&id);
    assert_eq!(containers.len(), 2, "sandbox and gateway are left behind");
    assert_eq!(networks.len(), 1);
    let ca_dir = runtime_dir().join("sandboxes").join(&id);
    assert!(ca_dir.join("egress/ca.pem").exists(), "the run's CA files");
    let out = berth().args(["gc"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (containers, networks) = objects_of(&id);
    assert!(
        containers.is_empty() && networks.is_empty(),
        "{containers:?} {networks:?}"
    );
    assert!(!ca_dir.exists(), "gc leaves the run's CA files");
}

#[test]
fn bad_egress_input_is_refused_clearly() {
    ensure_base_image();
    ensure_gateway();
    let cases: [(&[&str], &str); 6] = [
        (&["--allow-host", "https://pypi.org"], "not a URL"),
        (&["--allow-host", "*.com"], "wildcard"),
        (&["--secret", "1X=v@a.com"], "--secret"),
        (&["--secret", "TOKEN=v"], "names no host"),
        (
            &["--secret", "BERTH_TEST_SURELY_UNSET_SECRET@a.com"],
            "not set in your environment",
        ),
        (
            &["--allow-host", "a.com", "--network", "bridge"],
            "--network bridge",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "true"]);
        let out = berth().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{flags:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"));
    }
    // Without the gateway binary nothing is made, and berth says how to get it.
    let out = berth()
        .args(["run", "--allow-host", "a.com", "--", "true"])
        .env("BERTH_GATEWAY", "/nonexistent/berth-gateway")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("scripts/build-agent berth-gateway"),
        "{}",
        stderr(&out)
    );
    // A secret's value never appears in an error about it.
    let out = berth()
        .args(["run", "--secret", "1BAD=hunter2-value", "--", "true"])
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("hunter2-value"), "{}", stderr(&out));
}

/// Fetches PyPI's index of `six` and downloads its first wheel: the issue's `pip download`,
/// with Python's urllib (the debian image has no pip). Prints `index <status>` and then
/// `wheel <bytes>` or `wheel refused: <error>`.
const PYPI_CLIENT: &str = r##"
import re, sys, urllib.request, urllib.error
index = urllib.request.urlopen("https://pypi.org/simple/six/", timeout=30)
html = index.read().decode()
print("index", index.status)
url = re.search(r'href="(https://files\.pythonhosted\.org/[^"#]+\.whl)', html).group(1)
try:
    print("wheel", len(urllib.request.urlopen(url, timeout=60).read()))
except urllib.error.URLError as e:
    print("wheel refused:", e)
"##;

#[test]
fn the_real_package_index_is_reachable_only_as_far_as_the_policy_allows() {
    // The host's own view first: where PyPI cannot be reached at all, there is nothing to show.
    let host = Command::new("python3")
        .args(["-c", "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/six/', timeout=20)"])
        .output()
        .unwrap();
    if !host.status.success() {
        eprintln!(
            "SKIPPED: PyPI is not reachable from this host: {}",
            stderr(&host)
        );
        return;
    }
    ensure_debian_image();
    ensure_gateway();
    let run = |allow: &[&str]| {
        let mut args = vec!["run", "--json", "--image", DEBIAN];
        for host in allow {
            args.extend(["--allow-host", host]);
        }
        args.extend(["--", "python3", "-c", PYPI_CLIENT]);
        let out = berth().args(&args).output().unwrap();
        let receipt: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", stdout(&out), stderr(&out)));
        receipt
    };
    let both = run(&["pypi.org", "files.pythonhosted.org"]);
    let text = both["stdout_text"].as_str().unwrap();
    assert!(text.contains("index 200"), "{both}");
    let size: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("wheel "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no wheel: {both}"));
    assert!(size > 1000, "{both}");
    assert_eq!(both["egress"]["stats"]["denied"], 0, "{both}");
    // Without the files host, the index answers and the download is refused by the gateway.
    let index_only = run(&["pypi.org"]);
    let text = index_only["stdout_text"].as_str().unwrap();
    assert!(text.contains("index 200"), "{index_only}");
    assert!(text.contains("wheel refused"), "{index_only}");
    assert_eq!(index_only["egress"]["stats"]["denied"], 1, "{index_only}");
    let recent = index_only["egress"]["stats"]["recent_denials"].to_string();
    assert!(recent.contains("files.pythonhosted.org"), "{recent}");
}
