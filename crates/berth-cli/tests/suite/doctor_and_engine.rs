//! `berth doctor`, engine addresses (DOCKER_HOST unix and tcp), and the offline images.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;

use super::common::*;

#[test]
fn doctor_passes_here_and_names_remedies_when_the_engine_is_missing() {
    let out = berth().args(["doctor"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for check in [
        "engine socket",
        "engine reachable",
        "API version",
        "cgroup limits",
        "default image",
    ] {
        assert!(stdout(&out).contains(check), "{check}: {}", stdout(&out));
    }
    let json = berth().args(["doctor", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);

    let out = berth()
        .args(["doctor"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAIL"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("systemctl start docker"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn run_against_a_missing_engine_fails_clearly_with_125() {
    let out = berth()
        .args(["run", "--", "true"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = stderr(&out);
    assert!(
        err.contains("not reachable") && err.contains("berth doctor"),
        "{err}"
    );
    let out = berth()
        .args(["run", "--", "true"])
        .env("DOCKER_HOST", "ftp://nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("DOCKER_HOST"), "{}", stderr(&out));
}

/// Forwards TCP connections on a loopback port to the Docker unix socket.
fn tcp_proxy_to_docker() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(unix) = UnixStream::connect("/var/run/docker.sock") else {
                continue;
            };
            let (mut tcp_r, mut unix_w) = (tcp.try_clone().unwrap(), unix.try_clone().unwrap());
            let (mut unix_r, mut tcp_w) = (unix, tcp);
            std::thread::spawn(move || pump(&mut tcp_r, &mut unix_w));
            std::thread::spawn(move || pump(&mut unix_r, &mut tcp_w));
        }
    });
    port
}

fn pump(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = [0u8; 65536];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

#[test]
fn docker_host_over_tcp_works() {
    ensure_base_image();
    let port = tcp_proxy_to_docker();
    let out = berth()
        .args(["run", "--", "echo", "via tcp"])
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "via tcp\n", "{}", stderr(&out));
    let out = berth()
        .args(["run", "--", "echo", "via unix"])
        .env("DOCKER_HOST", "unix:///var/run/docker.sock")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "via unix\n", "{}", stderr(&out));
}

#[test]
fn base_image_is_non_root_with_tmp_and_workspace() {
    ensure_base_image();
    let user = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}} {{index .Config.Labels \"berth.managed\"}}",
        BASE,
    ]);
    assert_eq!(stdout(&user).trim(), "1000:1000 true");
    let out = run(&[
        "--user",
        "1000:1000",
        "--",
        "sh",
        "-c",
        "stat -c '%a %u' /tmp /workspace /home/berth; grep berth /etc/passwd",
    ]);
    assert_eq!(
        stdout(&out),
        "1777 0\n755 1000\n755 1000\nberth:x:1000:1000:berth:/home/berth:/bin/sh\n",
        "{}",
        stderr(&out)
    );
}

#[test]
fn image_build_is_repeatable_and_reports_json() {
    ensure_base_image();
    let out = berth().args(["image", "build", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"], BASE);
    assert!(v["id"].as_str().unwrap().starts_with("sha256:"));
    let missing = berth()
        .args(["image", "build"])
        .env("BERTH_BUSYBOX", "/nonexistent/busybox")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        stderr(&missing).contains("busybox-static"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn unknown_images_fail_clearly() {
    let out = run(&["--image", "berth-test/does-not-exist:1", "--", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("berth-test/does-not-exist:1"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn debian_image_has_real_toolchains() {
    const DEBIAN: &str = "berth/debian:latest";
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
    let out = run(&[
        "--image", DEBIAN, "--", "bash", "-c",
        "echo \"$BASH_VERSION\" | cut -d. -f1; python3 -c 'print(6*7)'; git --version | cut -d' ' -f1-2; id -un",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1..], ["42", "git version", "berth"], "{text}");
    assert!(lines[0].parse::<u32>().unwrap() >= 5, "{text}");
}
