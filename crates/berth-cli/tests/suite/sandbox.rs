//! Long-lived sandboxes and the agent: exec, PTY, files, lifecycle, reaping, isolation.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::common::*;

#[test]
fn exec_propagates_exit_codes_and_keeps_streams_apart() {
    let sb = Sandbox::create(&[]);
    let out = sb.exec(
        &[],
        &["sh", "-c", "echo out1; echo err1 >&2; echo out2; exit 3"],
    );
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(stdout(&out), "out1\nout2\n");
    assert_eq!(stderr(&out), "err1\n");

    let out = sb.exec(&[], &["no-such-command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = sb.exec(&[], &["/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126));
    // PATH is searched like execvp: a non-executable match is skipped for a later one, and
    // is reported (126) only if nothing else matches.
    sb.sh("mkdir -p /tmp/a /tmp/b && printf '#!/bin/sh\\necho a\\n' > /tmp/a/tool && printf '#!/bin/sh\\necho b\\n' > /tmp/b/tool && chmod 644 /tmp/a/tool && chmod 755 /tmp/b/tool");
    let out = sb.exec(&["--env", "PATH=/tmp/none:/tmp/a:/tmp/b"], &["tool"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "b\n"));
    let out = sb.exec(&["--env", "PATH=/tmp/none:/tmp/a"], &["tool"]);
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    let out = sb.exec(&["--cwd", "/nowhere"], &["true"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(stderr(&out).contains("/nowhere"), "{}", stderr(&out));

    // Arguments, env and cwd arrive verbatim; no shell is added.
    let tricky = "$HOME `id` $(id) 'q' \"d\"";
    let out = sb.exec(
        &["--env", "A=1 2", "--cwd", "/tmp"],
        &[
            "sh",
            "-c",
            "printf '%s|%s|%s' \"$1\" \"$A\" \"$PWD\"",
            "sh",
            tricky,
        ],
    );
    assert_eq!(stdout(&out), format!("{tricky}|1 2|/tmp"));
}

#[test]
fn processes_run_unprivileged_under_a_protected_agent() {
    let sb = Sandbox::create(&["--memory", "128m"]);
    let text = sb.sh("grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; id -u; cat /proc/self/oom_score_adj /proc/1/oom_score_adj; ls /sys/class/net; cat /proc/1/comm");
    assert_eq!(
        text,
        "CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\n1000\n500\n0\nlo\n.berth-agent\n"
    );
    // The agent's own threads have an empty bounding set too (it is per thread).
    let bounding = sb.sh("cat /proc/1/task/*/status | grep CapBnd | sort -u");
    assert_eq!(bounding, "CapBnd:\t0000000000000000\n");
    // A process starts with no blocked and no ignored signals, whatever the agent's are.
    let out = sb.exec(&[], &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"]);
    assert_eq!(
        stdout(&out),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
    // Even uid 0 gets no capabilities back.
    let out = sb.exec(&["--user", "0"], &["grep", "CapEff", "/proc/self/status"]);
    assert_eq!(stdout(&out), "CapEff:\t0000000000000000\n");
    // The workload cannot touch the agent's socket directory.
    let out = sb.exec(
        &[],
        &[
            "sh",
            "-c",
            "ln -sf /tmp/x /.berth/agent/agent.sock || mv /.berth/agent /.berth/moved",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(sb.exec(&[], &["true"]).status.success());
    // When the workload exhausts memory, the workload dies and the agent keeps answering.
    let out = sb.exec(
        &[],
        &["sh", "-c", "x=$(head -c 400000000 /dev/zero | tr '\\0' a)"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(
        sb.exec(&[], &["true"]).status.success(),
        "agent gone after workload OOM"
    );
}

#[test]
fn binary_output_round_trips_byte_exact() {
    let sb = Sandbox::create(&[]);
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &all_bytes).unwrap();
    let dest = format!("{}:/tmp/bytes.bin", sb.id);
    let up = berth()
        .args(["cp"])
        .arg(file.path())
        .arg(&dest)
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
    let out = sb.exec(&[], &["cat", "/tmp/bytes.bin"]);
    assert!(
        out.stdout == all_bytes,
        "stdout differs ({} bytes)",
        out.stdout.len()
    );
    let out = sb.exec(&[], &["sh", "-c", "cat /tmp/bytes.bin >&2"]);
    assert!(out.stderr == all_bytes);
}

#[test]
fn stdin_streams_and_eof_reaches_cat() {
    let sb = Sandbox::create(&[]);
    let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
    let mut child = berth()
        .args(["exec", "-i", &sb.id, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            stdin.write_all(&data).unwrap();
            // Dropping stdin is the EOF that must reach `cat`, or this test hangs.
        })
    };
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == data, "{} bytes back", out.stdout.len());
}

fn processes(sb: &Sandbox) -> Vec<(String, String)> {
    // pid and state of every process but the reader itself.
    let text = sb.sh("for s in /proc/[0-9]*/stat; do read line < $s && echo \"$line\"; done");
    text.lines()
        .filter_map(|l| {
            let pid = l.split_whitespace().next()?.to_string();
            let rest = &l[l.rfind(')')? + 2..];
            let comm = &l[l.find('(')? + 1..l.rfind(')')?];
            Some((
                format!("{pid} {comm}"),
                rest.split_whitespace().next()?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn a_timeout_kills_every_descendant() {
    let sb = Sandbox::create(&[]);
    let started = Instant::now();
    let out = sb.exec(
        &["--timeout", "1s"],
        &[
            "sh",
            "-c",
            "sleep 100 & setsid sleep 200 & (trap '' TERM; sleep 300) & sleep 400",
        ],
    );
    assert_eq!(out.status.code(), Some(124), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the exec did not return at its deadline"
    );
    let left: Vec<_> = processes(&sb)
        .into_iter()
        .filter(|(p, _)| p.contains("sleep"))
        .collect();
    assert!(left.is_empty(), "survivors: {left:?}");
}

#[test]
fn orphaned_grandchildren_leave_no_zombies() {
    let sb = Sandbox::create(&["--pids-limit", "1000"]);
    sb.sh("for i in $(seq 200); do (sleep 0.2 &) ; done; sleep 2");
    // The 200 sleeps were orphaned to PID 1 and exited; PID 1 must have reaped them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let procs = processes(&sb);
        let zombies: Vec<_> = procs.iter().filter(|(_, state)| state == "Z").collect();
        let sleeps = procs.iter().filter(|(p, _)| p.contains("sleep")).count();
        if zombies.is_empty() && sleeps == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombies: {zombies:?}, sleeps left: {sleeps}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_pty_has_the_terminal_size_of_the_caller_and_follows_resizes() {
    let sb = Sandbox::create(&[]);
    let berth_bin = env!("CARGO_BIN_EXE_berth");
    // `script` gives berth a real terminal of a known size; a background job resizes it while
    // the command sleeps, and the command must see the new size.
    let inner = format!(
        "stty rows 33 cols 77; (sleep 1; stty rows 40 cols 100 < /dev/tty) & \
         {berth_bin} exec -t {} -- sh -c 'stty size; tty; sleep 3; stty size'",
        sb.id
    );
    let session = std::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While that terminal is open, another process must not inherit any end of it (or any
    // other descriptor of the agent's): only its own stdio and the directory `ls` opens.
    std::thread::sleep(Duration::from_millis(1500));
    let fds = sb.exec(&[], &["ls", "/proc/self/fd"]);
    assert_eq!(stdout(&fds), "0\n1\n2\n3\n", "{}", stderr(&fds));
    let out = session.wait_with_output().unwrap();
    let text = stdout(&out).replace('\r', "");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"33 77"), "{text:?} {}", stderr(&out));
    assert!(
        lines.get(1).is_some_and(|l| l.starts_with("/dev/pts/")),
        "{text:?}"
    );
    assert_eq!(lines.get(2), Some(&"40 100"), "{text:?}");
}

#[test]
fn a_single_file_upload_replaces_whole_or_not_at_all() {
    let sb = Sandbox::create(&["--tmp-size", "16m", "--memory", "256m"]);
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "old contents\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&small, std::fs::Permissions::from_mode(0o640)).unwrap();
    let target = format!("{}:/tmp/keep.txt", sb.id);
    let cp = |src: &std::path::Path| {
        berth()
            .args(["cp", &src.display().to_string(), &target])
            .output()
            .unwrap()
    };
    assert!(cp(&small).status.success());
    // Sent raw: mode, owner and contents arrive, and a planted symlink is replaced, not
    // followed.
    sb.sh("ln -sf /workspace/elsewhere /tmp/link.txt");
    let out = berth()
        .args([
            "cp",
            &small.display().to_string(),
            &format!("{}:/tmp/link.txt", sb.id),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        sb.sh("stat -c '%a %U' /tmp/keep.txt; cat /tmp/keep.txt; [ ! -L /tmp/link.txt ] && cat /tmp/link.txt; [ ! -e /workspace/elsewhere ] && echo not-followed"),
        "640 berth\nold contents\nold contents\nnot-followed\n"
    );

    // 32 MiB cannot fit in a 16 MiB /tmp: the copy fails with the agent's own reason, and the
    // old file is still whole, with no temporary file left behind.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 32 << 20]).unwrap();
    let out = cp(&big);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("stopped answering"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        sb.sh("cat /tmp/keep.txt; ls -A /tmp"),
        "old contents\nkeep.txt\nlink.txt\n"
    );
}

#[test]
fn files_copy_both_ways_as_the_sandbox_user() {
    let sb = Sandbox::create(&[]);
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("tree/sub")).unwrap();
    std::fs::write(src.path().join("tree/a.txt"), "alpha").unwrap();
    std::fs::write(src.path().join("tree/sub/b.sh"), "#!/bin/sh\necho b\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        src.path().join("tree/sub/b.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let up = berth()
        .arg("cp")
        .arg(src.path().join("tree"))
        .arg(format!("{}:/tmp/", sb.id))
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
    assert_eq!(sb.sh("cat /tmp/tree/a.txt; /tmp/tree/sub/b.sh; stat -c '%u %a' /tmp/tree/a.txt /tmp/tree/sub/b.sh"), "alphab\n1000 644\n1000 755\n");

    // Download a directory under a new name, and a single file into a directory.
    sb.sh("mkdir -p /tmp/out/deep && echo result > /tmp/out/deep/r.txt");
    let dest = tempfile::tempdir().unwrap();
    let down = berth()
        .arg("cp")
        .arg(format!("{}:/tmp/out", sb.id))
        .arg(dest.path().join("got"))
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(
        std::fs::read_to_string(dest.path().join("got/deep/r.txt")).unwrap(),
        "result\n"
    );
    let down = berth()
        .arg("cp")
        .arg(format!("{}:/tmp/tree/a.txt", sb.id))
        .arg(dest.path())
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(
        std::fs::read_to_string(dest.path().join("a.txt")).unwrap(),
        "alpha"
    );

    // berth's own files are off limits, and bad input says so.
    let out = berth()
        .arg("cp")
        .arg(format!("{}:/.berth/agent", sb.id))
        .arg(dest.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
    let out = berth().args(["cp", "a", "b"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("SANDBOX:/ABSOLUTE/PATH"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_gigabyte_checksums_equal_both_ways() {
    let ws = dir_owned_by(1000, 1000);
    let sb = Sandbox::create(&["--workspace", &ws.path().display().to_string()]);
    let host = tempfile::tempdir().unwrap();
    let big = host.path().join("big.bin");
    // 1 GiB of pseudo-random bytes, hashed as written.
    let mut hasher = Sha256::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            for chunk in block.chunks_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                chunk.copy_from_slice(&state.to_le_bytes());
            }
            hasher.update(&block);
            f.write_all(&block).unwrap();
        }
    }
    let want = hex::encode(hasher.finalize());
    let up = berth()
        .arg("cp")
        .arg(&big)
        .arg(format!("{}:/workspace/", sb.id))
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", stderr(&up));
    let inside = sb.sh("sha256sum /workspace/big.bin");
    assert_eq!(inside.split_whitespace().next(), Some(want.as_str()));
    let back = host.path().join("back.bin");
    let down = berth()
        .arg("cp")
        .arg(format!("{}:/workspace/big.bin", sb.id))
        .arg(&back)
        .output()
        .unwrap();
    assert!(down.status.success(), "{}", stderr(&down));
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(&back).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    assert_eq!(hex::encode(hasher.finalize()), want);
}

#[test]
fn lifecycle_ps_inspect_logs_stop_start_rm() {
    let sb = Sandbox::create(&[
        "--name",
        &format!("life-{}", std::process::id()),
        "--",
        "sh",
        "-c",
        "echo main-started; exec sleep 100000",
    ]);
    let info = sb.inspect();
    assert_eq!(info["agent"]["ready"], true);
    assert_eq!(info["agent"]["pid"], 1);
    assert_eq!(info["status"], "running");
    assert!(info.get("token").is_none(), "the token must not be printed");
    assert_eq!(info["labels"]["berth.kind"], "sandbox");

    let ps = berth().args(["ps", "--json"]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert!(rows
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == sb.id.as_str()));
    let quiet = berth().args(["ps", "-q"]).output().unwrap();
    assert!(
        stdout(&quiet).lines().any(|l| l == sb.id),
        "{}",
        stdout(&quiet)
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = berth().args(["logs", &sb.id]).output().unwrap();
        if stdout(&logs).contains("main-started") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "main process output not in the log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // By name, too.
    let by_name = berth()
        .args([
            "exec",
            &format!("life-{}", std::process::id()),
            "--",
            "echo",
            "named",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&by_name), "named\n");

    let stop = berth().args(["stop", "-t", "2", &sb.id]).output().unwrap();
    assert!(stop.status.success(), "{}", stderr(&stop));
    let out = sb.exec(&[], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not running") && stderr(&out).contains("berth start"),
        "{}",
        stderr(&out)
    );

    let start = berth().args(["start", &sb.id]).output().unwrap();
    assert!(start.status.success(), "{}", stderr(&start));
    assert_eq!(sb.sh("echo back"), "back\n");

    let container = sb.container();
    let rm = berth().args(["rm", &sb.id]).output().unwrap();
    assert_eq!(
        rm.status.code(),
        Some(125),
        "rm without -f must refuse a running sandbox"
    );
    let rm = berth().args(["rm", "-f", &sb.id]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(
        !docker(&["inspect", &container]).status.success(),
        "container left behind"
    );
    let out = sb.exec(&[], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("no sandbox"), "{}", stderr(&out));
}

/// A paused sandbox's agent is frozen: its socket would take a call and never answer. Calls
/// say it is paused (and how to thaw it) instead of hanging; `unpause` thaws it.
#[test]
fn a_paused_sandbox_says_so_instead_of_hanging_and_unpause_thaws_it() {
    let sb = Sandbox::create(&[]);
    let ticker = sb.exec(
        &["-d"],
        &[
            "sh",
            "-c",
            "while :; do date +%s%N >> /tmp/ticks; sleep 0.05; done",
        ],
    );
    assert!(ticker.status.success(), "{}", stderr(&ticker));
    for _ in 0..2 {
        let out = berth().args(["pause", &sb.id]).output().unwrap();
        assert!(
            out.status.success(),
            "pausing twice is fine: {}",
            stderr(&out)
        );
        assert_eq!(stdout(&out).trim(), sb.id);
    }
    let info = sb.inspect();
    assert_eq!(info["status"], "paused");
    assert_eq!(info["agent"]["ready"], false, "{info}");
    let frozen = docker(&["exec", &sb.container(), "true"]);
    assert!(!frozen.status.success(), "docker agrees it is paused");
    let started = Instant::now();
    for call in [
        vec!["exec", sb.id.as_str(), "--", "true"],
        vec!["fs", "ls", sb.id.as_str(), "/tmp"],
        vec!["top", sb.id.as_str()],
    ] {
        let out = berth().args(&call).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{call:?}");
        assert!(
            stderr(&out).contains("is paused") && stderr(&out).contains("berth unpause"),
            "{call:?}: {}",
            stderr(&out)
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "must fail fast, not hang"
    );
    let out = berth().args(["start", &sb.id]).output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("paused, not stopped"),
        "{}",
        stderr(&out)
    );

    let ticks = |sb: &Sandbox| sb.sh("wc -l < /tmp/ticks").trim().parse::<u64>().unwrap();
    let out = berth().args(["unpause", &sb.id]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let before = ticks(&sb);
    std::thread::sleep(Duration::from_millis(500));
    assert!(ticks(&sb) > before, "its processes run again");
    let out = berth().args(["resume", &sb.id]).output().unwrap();
    assert!(
        out.status.success(),
        "resuming a running sandbox is fine: {}",
        stderr(&out)
    );

    // Paused behind berth's back (no mark): a call that goes unanswered is checked against
    // the engine after a few seconds, and fails the same way.
    assert!(docker(&["pause", &sb.container()]).status.success());
    let started = Instant::now();
    let out = sb.exec(&[], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("is paused"), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "must fail, not hang: {:?}",
        started.elapsed()
    );
    let thaw = docker(&["unpause", &sb.container()]);
    assert!(thaw.status.success(), "{}", stderr(&thaw));
    assert_eq!(sb.sh("echo thawed"), "thawed\n");

    // Paused behind berth's back and thawed the same way: the mark is not believed.
    let out = berth().args(["pause", &sb.id]).output().unwrap();
    assert!(out.status.success());
    assert!(docker(&["unpause", &sb.container()]).status.success());
    assert_eq!(sb.sh("echo thawed"), "thawed\n");

    // A paused sandbox is removed with -f like any other.
    assert!(berth()
        .args(["pause", &sb.id])
        .output()
        .unwrap()
        .status
        .success());
    let container = sb.container();
    let rm = berth().args(["rm", "-f", &sb.id]).output().unwrap();
    assert!(rm.status.success(), "{}", stderr(&rm));
    assert!(!docker(&["inspect", &container]).status.success());
}

#[test]
fn a_killed_agent_gives_a_clear_error_not_a_hang() {
    let sb = Sandbox::create(&[]);
    let container = sb.container();
    let running = berth()
        .args(["exec", &sb.id, "--", "sleep", "300"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !processes(&sb).iter().any(|(p, _)| p.ends_with("sleep")) {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(docker(&["kill", "--signal", "KILL", &container])
        .status
        .success());
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("not running"), "{}", stderr(&out));
    let started = Instant::now();
    let out = sb.exec(&[], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not running") && stderr(&out).contains("137"),
        "{}",
        stderr(&out)
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "must fail fast, not hang"
    );
}

#[test]
fn a_socket_swapped_for_a_symlink_is_refused_and_tokens_are_checked() {
    let sb = Sandbox::create(&[]);
    let socket = sb.socket_dir().join("agent/agent.sock");
    let saved = socket.with_extension("real");
    std::fs::rename(&socket, &saved).unwrap();
    std::os::unix::fs::symlink("/var/run/docker.sock", &socket).unwrap();
    let out = sb.exec(&[], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("refusing") && stderr(&out).contains("symbolic link"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&socket).unwrap();
    std::fs::rename(&saved, &socket).unwrap();
    assert!(sb.exec(&[], &["true"]).status.success());

    // A wrong token is refused by the agent.
    let state = std::env::var("HOME").unwrap()
        + "/.local/state/berth/sandboxes/"
        + &sb.id
        + "/sandbox.json";
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let token = record["token"].as_str().unwrap().to_string();
    record["token"] = serde_json::json!("0".repeat(64));
    std::fs::write(&state, serde_json::to_vec(&record).unwrap()).unwrap();
    let out = sb.exec(&[], &["true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("token"), "{}", stderr(&out));
    record["token"] = serde_json::json!(token);
    std::fs::write(&state, serde_json::to_vec(&record).unwrap()).unwrap();
    assert!(sb.exec(&[], &["true"]).status.success());
}

#[test]
fn fifty_sandboxes_take_twenty_concurrent_execs_each() {
    let sandboxes: Vec<Sandbox> = (0..50)
        .map(|_| Sandbox::create(&["--memory", "64m"]))
        .collect();
    let failures = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for batch in sandboxes.chunks(5) {
            let failures = &failures;
            scope.spawn(move || {
                for sb in batch {
                    let children: Vec<_> = (0..20)
                        .map(|i| {
                            berth()
                                .args(["exec", &sb.id, "--", "sh", "-c", &format!("echo {i}")])
                                .stdout(Stdio::piped())
                                .stderr(Stdio::piped())
                                .spawn()
                                .unwrap()
                        })
                        .collect();
                    for (i, child) in children.into_iter().enumerate() {
                        let out = child.wait_with_output().unwrap();
                        if !out.status.success() || stdout(&out) != format!("{i}\n") {
                            eprintln!(
                                "exec {i} in {} failed ({:?}): stdout {:?}, stderr {:?}",
                                sb.id,
                                out.status,
                                stdout(&out),
                                stderr(&out)
                            );
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    assert_eq!(failures.into_inner(), 0);
}

#[test]
fn background_processes_reattach_replay_and_take_signals() {
    let sb = Sandbox::create(&[]);
    let started = berth()
        .args([
            "exec",
            "-d",
            "--tag",
            "job",
            &sb.id,
            "--",
            "sh",
            "-c",
            "echo first; echo oops >&2; sleep 2; echo last; exit 7",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&started), "job\n", "{}", stderr(&started));
    // Re-attaching replays what was printed before and follows to the exit code.
    let attached = berth()
        .args(["exec", "--attach", "job", &sb.id])
        .output()
        .unwrap();
    assert_eq!(attached.status.code(), Some(7));
    assert_eq!(stdout(&attached), "first\nlast\n");
    assert_eq!(stderr(&attached), "oops\n");
    // After the exit, attach still replays the kept output.
    let again = berth()
        .args(["exec", "--attach", "job", &sb.id])
        .output()
        .unwrap();
    assert_eq!(
        (again.status.code(), stdout(&again)),
        (Some(7), "first\nlast\n".to_string())
    );

    let bg = berth()
        .args([
            "exec", "-d", "--tag", "sleeper", &sb.id, "--", "sleep", "300",
        ])
        .output()
        .unwrap();
    assert!(bg.status.success(), "{}", stderr(&bg));
    let dup = berth()
        .args(["exec", "-d", "--tag", "sleeper", &sb.id, "--", "true"])
        .output()
        .unwrap();
    assert_eq!(dup.status.code(), Some(125));
    assert!(stderr(&dup).contains("still running"), "{}", stderr(&dup));
    let top = berth().args(["top", "--json", &sb.id]).output().unwrap();
    let rows: serde_json::Value = serde_json::from_slice(&top.stdout).unwrap();
    let sleeper = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tag"] == "sleeper")
        .unwrap()
        .clone();
    assert_eq!(sleeper["running"], true);
    let sig = berth()
        .args(["signal", "--signal", "USR1", &sb.id, "sleeper"])
        .output()
        .unwrap();
    assert!(sig.status.success(), "{}", stderr(&sig));
    let ended = berth()
        .args(["exec", "--attach", "sleeper", &sb.id])
        .output()
        .unwrap();
    assert_eq!(ended.status.code(), Some(128 + 10), "{}", stderr(&ended));
    let none = berth()
        .args(["exec", "--attach", "nope", &sb.id])
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(125));
    assert!(
        stderr(&none).contains("no background process"),
        "{}",
        stderr(&none)
    );
}

#[test]
fn read_only_sandboxes_work_with_the_agent_bind_mounted() {
    let sb = Sandbox::create(&["--read-only", "--network", "isolated"]);
    let out = sb.exec(
        &[],
        &["sh", "-c", "touch /tmp/ok && echo tmp-ok; touch /etc/nope"],
    );
    assert_eq!(stdout(&out), "tmp-ok\n");
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // The agent binary itself is read-only, too.
    let out = sb.exec(&["--user", "0"], &["sh", "-c", "echo x > /.berth-agent"]);
    assert_ne!(out.status.code(), Some(0));
    let id = sb.id.clone();
    assert!(!networks_with(&format!("berth.id={id}")).is_empty());
    drop(sb);
    assert!(
        networks_with(&format!("berth.id={id}")).is_empty(),
        "rm must remove the sandbox's network"
    );
    assert!(containers_with(&format!("berth.id={id}")).is_empty());
}

#[test]
fn the_exec_channel_fallback_speaks_the_same_protocol() {
    // Creation itself waits for the agent over the exec channel when it is forced.
    ensure_base_image();
    ensure_agent();
    let created = berth()
        .arg("create")
        .env("BERTH_CHANNEL", "exec")
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let sb = Sandbox {
        id: stdout(&created).trim().to_string(),
    };
    let via_exec = |args: &[&str]| {
        berth()
            .args(args)
            .env("BERTH_CHANNEL", "exec")
            .output()
            .unwrap()
    };
    let out = via_exec(&[
        "exec",
        &sb.id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (out.status.code(), stdout(&out), stderr(&out)),
        (Some(3), "out\n".into(), "err\n".into())
    );

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 256) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("up.bin"), &data).unwrap();
    let up = via_exec(&[
        "cp",
        &dir.path().join("up.bin").display().to_string(),
        &format!("{}:/tmp/", sb.id),
    ]);
    assert!(up.status.success(), "{}", stderr(&up));
    let down = via_exec(&[
        "cp",
        &format!("{}:/tmp/up.bin", sb.id),
        &dir.path().join("down.bin").display().to_string(),
    ]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(std::fs::read(dir.path().join("down.bin")).unwrap() == data);

    // Without BERTH_CHANNEL, berth falls back on its own when the socket is out of its reach
    // (here: its host directory moved away; inside the sandbox the mount still works).
    let run = sb.socket_dir();
    let hidden = run.with_file_name("run-hidden");
    std::fs::rename(&run, &hidden).unwrap();
    let out = sb.exec(&[], &["echo", "fell back"]);
    std::fs::rename(&hidden, &run).unwrap();
    assert_eq!(stdout(&out), "fell back\n", "{}", stderr(&out));
}

#[test]
fn the_agent_can_be_copied_in_through_the_archive_api() {
    let sb = Sandbox::create(&["--agent-delivery", "archive"]);
    let info = sb.inspect();
    assert_eq!(info["agent"]["ready"], true);
    let container = sb.container();
    let mounts = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Destination}} {{end}}",
        &container,
    ]);
    assert!(
        !stdout(&mounts).contains("/.berth-agent"),
        "copied, not mounted: {}",
        stdout(&mounts)
    );
    assert_eq!(
        sb.sh("stat -c '%u %a' /.berth-agent; cat /proc/1/comm"),
        "0 555\n.berth-agent\n"
    );
    let out = sb.exec(&["--user", "0"], &["sh", "-c", "echo x > /.berth-agent"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the workload must not replace the agent"
    );

    // A read-only root cannot take an archive copy: berth mounts the agent instead.
    let ro = Sandbox::create(&["--agent-delivery", "archive", "--read-only"]);
    assert_eq!(ro.sh("echo ok"), "ok\n");
}

#[test]
fn fs_verbs_make_list_move_and_remove_inside_the_sandbox_only() {
    let sb = Sandbox::create(&[]);
    let fs = |args: &[&str]| berth().arg("fs").args(args).output().unwrap();
    let ok = |args: &[&str]| {
        let out = fs(args);
        assert!(out.status.success(), "fs {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    ok(&["mkdir", &sb.id, "/tmp/a/b"]);
    let stat: serde_json::Value =
        serde_json::from_str(&ok(&["stat", "--json", &sb.id, "/tmp/a/b"])).unwrap();
    assert_eq!(stat["kind"], "dir");
    assert_eq!(
        stat["uid"], 1000,
        "new directories belong to the sandbox user"
    );
    ok(&["mv", &sb.id, "/tmp/a", "/tmp/c"]);
    let listing: serde_json::Value =
        serde_json::from_str(&ok(&["ls", "--json", &sb.id, "/tmp/c"])).unwrap();
    assert_eq!(listing[0]["name"], "b");
    assert!(ok(&["ls", &sb.id, "/tmp"]).contains(" c"));
    let out = fs(&["rm", &sb.id, "/tmp/c"]);
    assert_eq!(out.status.code(), Some(125), "a directory needs -r");
    ok(&["rm", "-r", &sb.id, "/tmp/c"]);
    let out = fs(&["stat", &sb.id, "/tmp/c"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("/tmp/c"), "{}", stderr(&out));
    // The agent's own directory is off limits, also through `..`.
    let out = fs(&["ls", &sb.id, "/tmp/../.berth"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn the_mount_table_names_no_host_home_state_dir_or_build_path() {
    // With an egress policy, so the gateway's CA directory is mounted too.
    ensure_gateway();
    let sb = Sandbox::create(&["--workspace", "/tmp", "--allow-host", "example.com"]);
    let table = sb.sh("cat /proc/self/mountinfo");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .display()
        .to_string();
    let home = std::env::var("HOME").unwrap();
    for host in [format!("{home}/"), repo, ".local/state".to_string()] {
        assert!(
            !table.contains(&host),
            "{host} is in the mount table:\n{table}"
        );
    }
    // Only what the user asked for (the workspace) shows its host path.
    assert!(table.contains(" /workspace "), "{table}");
    assert!(table.contains(" /.berth-egress "), "{table}");
}

#[test]
fn a_sandbox_starts_again_after_a_reboot_emptied_the_runtime_dir() {
    ensure_base_image();
    ensure_agent();
    let runtime = tempfile::tempdir().unwrap();
    let cmd = |args: &[&str]| {
        let out = berth()
            .env("BERTH_RUNTIME_DIR", runtime.path())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "berth {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let id = cmd(&["create"]).trim().to_string();
    let mounted = docker(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Source}} {{end}}",
        &format!("berth-sandbox-{id}"),
    ]);
    let sources = stdout(&mounted);
    assert!(
        sources
            .split_whitespace()
            .all(|s| s.starts_with(&runtime.path().display().to_string())),
        "every mount comes from the runtime dir: {sources}"
    );
    cmd(&["stop", "-t", "1", &id]);
    // What a reboot does to /run.
    for entry in std::fs::read_dir(runtime.path()).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    cmd(&["start", &id]);
    assert_eq!(cmd(&["exec", &id, "--", "echo", "back"]), "back\n");
    cmd(&["rm", "-f", &id]);
    assert!(
        !runtime.path().join("sandboxes").join(&id).exists(),
        "rm leaves the sandbox's runtime dir behind"
    );
}
