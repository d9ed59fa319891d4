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
    // A sandbox through a tcp engine: berth treats it as remote, so the agent is copied in
    // through the archive API rather than bind-mounted.
    ensure_agent();
    let tcp = format!("tcp://127.0.0.1:{port}");
    let created = berth()
        .args(["create"])
        .env("DOCKER_HOST", &tcp)
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", stderr(&created));
    let id = stdout(&created).trim().to_string();
    let exec = berth()
        .args(["exec", &id, "--", "echo", "sandbox via tcp"])
        .env("DOCKER_HOST", &tcp)
        .output()
        .unwrap();
    let info = berth().args(["inspect", &id]).output().unwrap();
    let container = serde_json::from_slice::<serde_json::Value>(&info.stdout).unwrap()
        ["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mounts = docker(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Destination}} {{end}}",
        &container,
    ]);
    let _ = berth()
        .args(["rm", "-f", &id])
        .env("DOCKER_HOST", &tcp)
        .output();
    assert_eq!(stdout(&exec), "sandbox via tcp\n", "{}", stderr(&exec));
    assert!(
        !stdout(&mounts).contains("/.berth-agent"),
        "{}",
        stdout(&mounts)
    );
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
    ensure_debian_image();
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

/// A minimal read-only registry (Docker Registry HTTP API v2) on loopback, serving one image
/// made from `docker save` of berth/base. Docker treats 127.0.0.0/8 as an insecure registry,
/// so it pulls over plain HTTP.
fn serve_registry(repo: &'static str, tag: &'static str) -> u16 {
    use sha2::{Digest, Sha256};
    use std::collections::HashMap;
    use std::io::BufRead;

    ensure_base_image();
    let saved = docker(&["save", BASE]).stdout;
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in tar::Archive::new(saved.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let digest = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    let config = files[manifest[0]["Config"].as_str().unwrap()].clone();
    let config_desc = serde_json::json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": digest(&config), "size": config.len(),
    });
    blobs.insert(digest(&config), config);
    let mut layers = Vec::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let data = files[layer.as_str().unwrap()].clone();
        layers.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": digest(&data), "size": data.len(),
        }));
        blobs.insert(digest(&data), data);
    }
    let oci = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = digest(&oci);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut request_line = String::new();
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, content_type, body): (&str, &str, &[u8]) = if path == "/v2/" {
                ("200 OK", "application/json", b"{}")
            } else if path == format!("/v2/{repo}/manifests/{tag}")
                || path == format!("/v2/{repo}/manifests/{manifest_digest}")
            {
                ("200 OK", "application/vnd.oci.image.manifest.v1+json", &oci)
            } else if let Some(blob) = path
                .strip_prefix(&format!("/v2/{repo}/blobs/"))
                .and_then(|d| blobs.get(d))
            {
                ("200 OK", "application/octet-stream", blob)
            } else {
                (
                    "404 Not Found",
                    "application/json",
                    b"{\"errors\":[{\"code\":\"NAME_UNKNOWN\"}]}",
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nDocker-Content-Digest: {}\r\nConnection: close\r\n\r\n",
                body.len(),
                if content_type.contains("manifest") { manifest_digest.as_str() } else { "" },
            );
            let _ = conn.write_all(head.as_bytes());
            if method != "HEAD" {
                let _ = conn.write_all(body);
            }
        }
    });
    port
}

#[test]
fn images_from_a_registry_are_pulled_with_progress() {
    let port = serve_registry("berth-test/pulled", "1");
    let reference = format!("127.0.0.1:{port}/berth-test/pulled:1");
    let _ = docker(&["rmi", "-f", &reference]);
    let out = berth()
        .args(["run", "--image", &reference, "--", "echo", "pulled"])
        .output()
        .unwrap();
    let _ = docker(&["rmi", "-f", &reference]);
    assert_eq!(stdout(&out), "pulled\n", "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("preparing image {reference}")),
        "{err}"
    );
    assert!(err.contains("Downloaded newer image"), "{err}");
}
