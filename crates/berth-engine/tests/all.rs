//! The Docker backend against the real local daemon: every operation of the `Engine` trait.
//!
//! Objects carry `berth.test=engine` plus a per-test id and are removed by label.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::time::Duration;

use berth_engine::docker::{DockerEngine, Endpoint};
use berth_engine::{ContainerPlan, Engine, EngineError, NetworkPlan, Output};
use bytes::Bytes;
use futures_util::StreamExt;

const IMAGE: &str = "berth-test/engine:latest";

fn tar_of(files: &[(&str, &[u8], u32)]) -> Bytes {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        b.append_data(&mut h, path, *data).unwrap();
    }
    Bytes::from(b.into_inner().unwrap())
}

async fn engine_with_image() -> DockerEngine {
    let engine = DockerEngine::connect().await.unwrap();
    if engine.image_inspect(IMAGE).await.unwrap().is_none() {
        let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
        let dockerfile =
            b"FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT [\"/bin/busybox\"]\n";
        let context = tar_of(&[
            ("Dockerfile", dockerfile, 0o644),
            ("busybox", &busybox, 0o755),
        ]);
        let labels = [("berth.test".to_string(), "engine".to_string())];
        let logs = std::sync::Mutex::new(Vec::new());
        let info = engine
            .image_build(context, IMAGE, &labels, &|e| {
                logs.lock().unwrap().push(format!("{e:?}"))
            })
            .await
            .unwrap();
        assert!(info.id.starts_with("sha256:"));
        assert!(logs.lock().unwrap().iter().any(|l| l.contains("Step")));
    }
    engine
}

fn plan(test: &str, cmd: &[&str]) -> ContainerPlan {
    ContainerPlan {
        name: format!("berth-test-{test}-{}", std::process::id()),
        image: IMAGE.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        user: "1000:1000".to_string(),
        labels: BTreeMap::from([
            ("berth.test".to_string(), "engine".to_string()),
            (
                "berth.test.case".to_string(),
                format!("{test}-{}", std::process::id()),
            ),
        ]),
        memory_bytes: 64 << 20,
        memory_swap_bytes: 64 << 20,
        nano_cpus: 1_000_000_000,
        pids_limit: 64,
        cap_drop: vec!["ALL".to_string()],
        security_opt: vec!["no-new-privileges".to_string()],
        network: "none".to_string(),
        ..Default::default()
    }
}

async fn cleanup(engine: &DockerEngine, test: &str) {
    let label = format!("berth.test.case={test}-{}", std::process::id());
    for c in engine
        .container_list(std::slice::from_ref(&label))
        .await
        .unwrap()
    {
        let _ = engine.container_remove(&c.id, true).await;
    }
    for n in engine.network_list(&[label]).await.unwrap() {
        let _ = engine.network_remove(&n.id).await;
    }
}

async fn collect(mut stream: berth_engine::OutputStream) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            Output::Stdout(b) => out.extend_from_slice(&b),
            Output::Stderr(b) => err.extend_from_slice(&b),
        }
    }
    (out, err)
}

#[tokio::test]
async fn info_reports_versions_and_limits() {
    let engine = DockerEngine::connect().await.unwrap();
    let info = engine.info().await.unwrap();
    assert!(!info.server_version.is_empty());
    assert!(!info.client_api_version.is_empty());
    assert!(info.memory_limit && info.pids_limit && info.cpu_cfs_quota);
    assert!(info.ncpu > 0);
}

#[tokio::test]
async fn unreachable_endpoints_say_so() {
    let e = DockerEngine::connect_to(Endpoint::new("unix:///nonexistent/docker.sock"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    assert!(e.to_string().contains("berth doctor"), "{e}");
    let e = DockerEngine::connect_to(Endpoint::new("tcp://127.0.0.1:1"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, EngineError::Unreachable { .. }), "{e:?}");
    let e = DockerEngine::connect_to(Endpoint::new("ftp://x"))
        .await
        .err()
        .unwrap();
    assert!(matches!(e, EngineError::BadEndpoint { .. }), "{e:?}");
}

#[tokio::test]
async fn missing_images_and_containers_are_typed() {
    let engine = DockerEngine::connect().await.unwrap();
    assert!(engine
        .image_inspect("berth-test/nope:0")
        .await
        .unwrap()
        .is_none());
    let e = engine
        .container_inspect("berth-test-no-such-container")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    let e = engine
        .container_remove("berth-test-no-such-container", true)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    // An empty id (a record saved before its container existed) is "not found" too, for
    // every call that names a container.
    assert!(engine
        .container_inspect("")
        .await
        .unwrap_err()
        .is_not_found());
    assert!(engine.container_start("").await.unwrap_err().is_not_found());
    assert!(engine
        .container_remove("", true)
        .await
        .unwrap_err()
        .is_not_found());
    // No registry is reachable here, so a pull fails with an error, not a hang.
    let pulled = tokio::time::timeout(
        Duration::from_secs(120),
        engine.image_pull("berth-test/not-on-any-registry:0", &|_| {}),
    )
    .await
    .unwrap();
    assert!(pulled.is_err());
}

#[tokio::test]
async fn container_lifecycle_with_separate_streams() {
    let engine = engine_with_image().await;
    let p = plan("lifecycle", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let id = engine.container_create(&p).await.unwrap();
    let listed = engine
        .container_list(&[format!("berth.test.case=lifecycle-{}", std::process::id())])
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "created");
    assert_eq!(listed[0].name, p.name);
    let attached = engine.container_attach(&id).await.unwrap();
    engine.container_start(&id).await.unwrap();
    let (code, (out, err)) = tokio::join!(engine.container_wait(&id), collect(attached));
    assert_eq!(code.unwrap(), 3);
    assert_eq!(out, b"out\n");
    assert_eq!(err, b"err\n");
    let state = engine.container_inspect(&id).await.unwrap();
    assert_eq!(state.exit_code, Some(3));
    assert!(!state.running);
    assert_eq!(state.labels["berth.test"], "engine");
    let (out, err) = collect(engine.container_logs(&id, false).await.unwrap()).await;
    assert_eq!(
        (out.as_slice(), err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    engine.container_remove(&id, false).await.unwrap();
    assert!(engine
        .container_inspect(&id)
        .await
        .unwrap_err()
        .is_not_found());
    cleanup(&engine, "lifecycle").await;
}

#[tokio::test]
async fn start_failures_are_their_own_error() {
    let engine = engine_with_image().await;
    let mut p = plan("startfail", &[]);
    p.entrypoint = Some(vec!["/no/such/binary".to_string()]);
    let id = engine.container_create(&p).await.unwrap();
    let e = engine.container_start(&id).await.unwrap_err();
    match &e {
        EngineError::StartFailed { message, .. } => {
            assert!(message.contains("no such file"), "{message}")
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    cleanup(&engine, "startfail").await;
}

#[tokio::test]
async fn kill_and_stop_end_running_containers() {
    let engine = engine_with_image().await;
    let id = engine
        .container_create(&plan("kill", &["sleep", "300"]))
        .await
        .unwrap();
    engine.container_start(&id).await.unwrap();
    assert!(engine.container_inspect(&id).await.unwrap().running);
    engine.container_kill(&id, "SIGKILL").await.unwrap();
    assert_eq!(engine.container_wait(&id).await.unwrap(), 137);

    let mut p = plan("stop", &["sleep", "300"]);
    p.name.push_str("-stop");
    let id = engine.container_create(&p).await.unwrap();
    engine.container_start(&id).await.unwrap();
    engine
        .container_stop(&id, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(!engine.container_inspect(&id).await.unwrap().running);
    cleanup(&engine, "kill").await;
    cleanup(&engine, "stop").await;
}

#[tokio::test]
async fn archives_round_trip() {
    let engine = engine_with_image().await;
    let mut p = plan("archive", &["sleep", "300"]);
    p.tmpfs
        .insert("/tmp".to_string(), "rw,mode=1777".to_string());
    let id = engine.container_create(&p).await.unwrap();
    engine.container_start(&id).await.unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    engine
        .archive_upload(&id, "/tmp", tar_of(&[("blob.bin", &payload, 0o644)]))
        .await
        .unwrap();
    let mut stream = engine.archive_download(&id, "/tmp/blob.bin").await.unwrap();
    let mut tarball = Vec::new();
    while let Some(chunk) = stream.next().await {
        tarball.extend_from_slice(&chunk.unwrap());
    }
    let mut archive = tar::Archive::new(tarball.as_slice());
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(entry.path().unwrap().to_str(), Some("blob.bin"));
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut back).unwrap();
    assert_eq!(back, payload);
    cleanup(&engine, "archive").await;
}

#[tokio::test]
async fn networks_create_list_remove() {
    let engine = DockerEngine::connect().await.unwrap();
    let label = format!("berth.test.case=network-{}", std::process::id());
    let plan = NetworkPlan {
        name: format!("berth-test-net-{}", std::process::id()),
        internal: true,
        host_reachable: false,
        mtu: Some(9000),
        labels: BTreeMap::from([
            ("berth.test".to_string(), "engine".to_string()),
            (
                "berth.test.case".to_string(),
                format!("network-{}", std::process::id()),
            ),
        ]),
    };
    let id = engine.network_create(&plan).await.unwrap();
    let listed = engine
        .network_list(std::slice::from_ref(&label))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].name, plan.name);
    // The bridge driver got the MTU and kept the host off the network.
    let options = std::process::Command::new("docker")
        .args(["network", "inspect", "-f", "{{json .Options}}", &id])
        .output()
        .unwrap();
    let options = String::from_utf8_lossy(&options.stdout);
    assert!(
        options.contains(r#""com.docker.network.driver.mtu":"9000""#),
        "{options}"
    );
    assert!(
        options.contains(r#""com.docker.network.bridge.inhibit_ipv4":"true""#),
        "{options}"
    );
    engine.network_remove(&id).await.unwrap();
    assert!(engine.network_list(&[label]).await.unwrap().is_empty());
}
