//! The hardening policy, observed from inside the sandbox.

use super::common::*;

/// Reads a cgroup value under v1 or v2 naming.
const PROBE: &str = r#"
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs):' /proc/self/status
echo "uid=$(id -u)"
echo "ifaces=$(ls /sys/class/net | tr '\n' ' ')"
if [ -f /sys/fs/cgroup/memory.max ]; then
  echo "mem=$(cat /sys/fs/cgroup/memory.max)"
  echo "swap=$(cat /sys/fs/cgroup/memory.swap.max)"
  echo "pids=$(cat /sys/fs/cgroup/pids.max)"
  echo "cpu=$(cat /sys/fs/cgroup/cpu.max)"
else
  echo "mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  echo "memsw=$(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes)"
  echo "pids=$(cat /sys/fs/cgroup/pids/pids.max)"
  echo "cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
fi
"#;

fn probe(extra: &[&str]) -> std::collections::BTreeMap<String, String> {
    let mut args = extra.to_vec();
    args.extend(["--", "sh", "-c", PROBE]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(['=', ':'])?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

#[test]
fn defaults_are_enforced_inside_the_sandbox() {
    let p = probe(&["--memory", "96m", "--cpus", "0.5", "--pids-limit", "77"]);
    assert_eq!(p["CapEff"], "0000000000000000", "{p:?}");
    assert_eq!(p["CapPrm"], "0000000000000000", "{p:?}");
    assert_eq!(p["CapBnd"], "0000000000000000", "{p:?}");
    assert_eq!(p["NoNewPrivs"], "1");
    assert_ne!(p["uid"], "0");
    assert_eq!(p["ifaces"], "lo");
    assert_eq!(p["mem"], (96u64 << 20).to_string());
    if let Some(memsw) = p.get("memsw") {
        assert_eq!(memsw, &(96u64 << 20).to_string(), "no swap on cgroup v1");
    } else {
        assert_eq!(p["swap"], "0", "no swap on cgroup v2");
    }
    assert_eq!(p["pids"], "77");
    assert!(
        p["cpu"] == "50000 100000" || p["cpu"] == "50000 100000\n",
        "cpu quota: {}",
        p["cpu"]
    );
}

#[test]
fn weakening_is_explicit() {
    let p = probe(&[
        "--user",
        "root",
        "--cap-add",
        "CHOWN",
        "--allow-privilege-escalation",
    ]);
    assert_eq!(p["uid"], "0");
    assert_eq!(p["CapEff"], "0000000000000001", "only CAP_CHOWN: {p:?}");
    assert_eq!(p["NoNewPrivs"], "0");
}

#[test]
fn fork_bombs_stop_at_the_pids_limit() {
    // The bomb runs in a subshell that dies when fork fails; the outer shell then uses only
    // builtins, since nothing can fork any more.
    let script = "(for i in $(seq 60); do sleep 30 & done); \
        if [ -f /sys/fs/cgroup/pids.current ]; then read n < /sys/fs/cgroup/pids.current; \
        else read n < /sys/fs/cgroup/pids/pids.current; fi; echo current=$n";
    let out = run(&[
        "--pids-limit",
        "20",
        "--timeout",
        "60s",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let text = stdout(&out);
    let current: u32 = text
        .trim()
        .trim_start_matches("current=")
        .parse()
        .unwrap_or_else(|_| panic!("{text} {}", stderr(&out)));
    assert!(current <= 20, "{current} processes despite --pids-limit 20");
    assert!(
        stderr(&out).contains("fork"),
        "forks must have failed: {}",
        stderr(&out)
    );
}

#[test]
fn read_only_root_with_writable_tmp() {
    let out = run(&[
        "--read-only",
        "--",
        "sh",
        "-c",
        "touch /tmp/ok && echo tmp-ok; touch /etc/nope",
    ]);
    assert!(stdout(&out).contains("tmp-ok"));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // Without --read-only the root is writable by root but not by the sandbox user.
    let out = run(&["--", "sh", "-c", "touch /tmp/ok && echo tmp-ok"]);
    assert_eq!(stdout(&out), "tmp-ok\n");
    // /tmp behaves like a normal /tmp: programs written there can run.
    let out = run(&[
        "--read-only",
        "--",
        "sh",
        "-c",
        "printf '#!/bin/sh\\necho ran\\n' > /tmp/x; chmod +x /tmp/x; /tmp/x",
    ]);
    assert_eq!(stdout(&out), "ran\n", "{}", stderr(&out));
}

/// A TCP server on all host interfaces that greets each connection.
fn host_listener() -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"reached-host\n");
        }
    });
    port
}

/// The host's addresses a sandbox might try: its primary IPv4 and Docker's bridge gateway.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .unwrap();
    let mut addrs: Vec<String> = stdout(&out)
        .split_whitespace()
        .filter(|a| a.contains('.'))
        .map(str::to_string)
        .collect();
    let gw = docker(&[
        "network",
        "inspect",
        "bridge",
        "-f",
        "{{(index .IPAM.Config 0).Gateway}}",
    ]);
    addrs.push(stdout(&gw).trim().to_string());
    addrs.retain(|a| !a.is_empty());
    addrs
}

fn reach_host(network: &str) -> (Vec<bool>, String) {
    let port = host_listener();
    let addrs = host_addresses();
    let mut script = String::from("ls /sys/class/net | tr '\\n' ' '; echo; ");
    for a in &addrs {
        script.push_str(&format!(
            "nc -w 3 {a} {port} </dev/null || echo unreachable; "
        ));
    }
    let out = run(&["--network", network, "--", "sh", "-c", &script]);
    let text = stdout(&out);
    let reached = text.lines().skip(1).map(|l| l == "reached-host").collect();
    (reached, format!("{addrs:?} {text} {}", stderr(&out)))
}

#[test]
fn isolated_network_reaches_nothing_and_is_removed() {
    let (reached, text) = reach_host("isolated");
    assert!(text.contains("eth0"), "{text}");
    assert!(
        !reached.is_empty() && reached.iter().all(|r| !r),
        "isolated reached the host: {text}"
    );
    let (r, code) = run_json(&["--network", "isolated", "--", "true"]);
    assert_eq!(code, 0);
    let id = r["id"].as_str().unwrap();
    assert!(r["security"]["network"]
        .as_str()
        .unwrap()
        .starts_with("berth-net-"));
    assert!(
        networks_with(&format!("berth.id={id}")).is_empty(),
        "network left behind"
    );
}

#[test]
fn bridge_network_has_egress_and_none_has_nothing() {
    let (reached, text) = reach_host("bridge");
    assert!(
        reached.iter().all(|r| *r),
        "bridge should reach the host: {text}"
    );
    let out = run(&[
        "--",
        "sh",
        "-c",
        "ls /sys/class/net; cat /proc/net/route | wc -l",
    ]);
    assert_eq!(
        stdout(&out),
        "lo\n1\n",
        "network none has only loopback and no routes"
    );
}
