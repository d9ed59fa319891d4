//! berth-sandbox's library API against the real Docker daemon: sandboxes in unusual images and
//! the agent's file operations, called the way agent runtimes will call them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Command;

use berth_engine::docker::DockerEngine;
use berth_engine::Engine;
use berth_protocol::v1::{
    exec_input, exec_output, ExecInput, ExecStart, PathRequest, RemoveRequest, RenameRequest,
};
use berth_sandbox::agent_client::AgentClient;
use berth_sandbox::sandbox::{self, CreateOptions, SandboxRecord};
use berth_spec::SandboxSpec;

fn agent() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-agent");
    let out = Command::new(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// An image with nothing but a static busybox at /bin: no shell links, no /etc, no /tmp.
async fn bare_image(engine: &DockerEngine) -> String {
    const TAG: &str = "berth-test/bare:latest";
    if engine.image_inspect(TAG).await.unwrap().is_none() {
        let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
        let dockerfile = b"FROM scratch\nCOPY busybox /bin/busybox\n";
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, mode) in [
            ("Dockerfile", &dockerfile[..], 0o644),
            ("busybox", &busybox[..], 0o755),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            b.append_data(&mut h, name, data).unwrap();
        }
        let labels = [("berth.test".to_string(), "sandbox".to_string())];
        engine
            .image_build(b.into_inner().unwrap().into(), TAG, &labels, &|_| {})
            .await
            .unwrap();
    }
    TAG.to_string()
}

struct Made {
    engine: DockerEngine,
    record: SandboxRecord,
}

impl Made {
    async fn new(image: &str, command: Vec<String>) -> Self {
        let engine = DockerEngine::connect().await.unwrap();
        let info = match engine.image_inspect(image).await.unwrap() {
            Some(i) => i,
            None => berth_sandbox::images::ensure(&engine, image, &|_| {})
                .await
                .unwrap(),
        };
        let mut spec = SandboxSpec::new(command);
        spec.image = image.to_string();
        let options = CreateOptions {
            agent: agent(),
            name: None,
            delivery: Default::default(),
            ..Default::default()
        };
        let record = sandbox::create(
            &engine,
            &berth_sandbox::store::FileStore::from_env(),
            &spec,
            &info,
            engine.endpoint().socket_path(),
            &options,
        )
        .await
        .unwrap();
        Self { engine, record }
    }

    async fn client(&self) -> AgentClient {
        sandbox::connect(&self.engine, &self.record).await.unwrap()
    }

    async fn remove(self) {
        sandbox::remove(
            &self.engine,
            &berth_sandbox::store::FileStore::from_env(),
            &self.record,
            true,
        )
        .await
        .unwrap();
        assert!(self
            .engine
            .container_inspect(&self.record.container_id)
            .await
            .unwrap_err()
            .is_not_found());
    }
}

async fn exec(client: &mut AgentClient, argv: &[&str]) -> (String, i32) {
    let start = ExecStart {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let request = tokio_stream::once(ExecInput {
        input: Some(exec_input::Input::Start(start)),
    });
    let mut out = client.exec(request).await.unwrap().into_inner();
    let mut text = String::new();
    while let Some(msg) = out.message().await.unwrap() {
        match msg.output {
            Some(exec_output::Output::Stdout(b)) => text.push_str(&String::from_utf8_lossy(&b)),
            Some(exec_output::Output::Exited(e)) => return (text, e.code),
            Some(exec_output::Output::StartFailed(f)) => return (f.message, f.exit_code),
            _ => {}
        }
    }
    panic!("no exit");
}

#[tokio::test]
async fn the_agent_runs_in_an_image_without_a_shell() {
    let engine = DockerEngine::connect().await.unwrap();
    let image = bare_image(&engine).await;
    let made = Made::new(&image, vec![]).await;
    let mut client = made.client().await;
    let (out, code) = exec(&mut client, &["/bin/busybox", "echo", "bare"]).await;
    assert_eq!((out.as_str(), code), ("bare\n", 0));
    let (_, code) = exec(&mut client, &["sh", "-c", "true"]).await;
    assert_eq!(code, 127, "there is no shell in this image");
    made.remove().await;
}

#[tokio::test]
async fn the_agent_runs_in_debian() {
    let engine = DockerEngine::connect().await.unwrap();
    if engine
        .image_inspect(berth_sandbox::images::DEBIAN_IMAGE)
        .await
        .unwrap()
        .is_none()
    {
        berth_sandbox::images::build_debian(&engine, "http://deb.debian.org/debian", &|_| {})
            .await
            .unwrap();
    }
    let made = Made::new(berth_sandbox::images::DEBIAN_IMAGE, vec![]).await;
    let mut client = made.client().await;
    let (out, code) = exec(
        &mut client,
        &["python3", "-c", "import os; print(os.getuid(), 6*7)"],
    )
    .await;
    assert_eq!((out.as_str(), code), ("1000 42\n", 0));
    made.remove().await;
}

#[tokio::test]
async fn file_operations_stay_inside_the_sandbox() {
    let made = Made::new(berth_spec::DEFAULT_IMAGE, vec![]).await;
    let mut c = made.client().await;
    let path = |p: &str| PathRequest {
        path: p.to_string(),
    };

    c.make_dir(path("/tmp/a/b/c")).await.unwrap();
    let info = c.stat(path("/tmp/a/b/c")).await.unwrap().into_inner();
    assert_eq!(
        (info.kind.as_str(), info.uid, info.gid),
        ("dir", 1000, 1000)
    );
    exec(
        &mut c,
        &[
            "sh",
            "-c",
            "echo hi > /tmp/a/b/file.txt; ln -s /.berth /tmp/a/escape",
        ],
    )
    .await;
    let list = c.list_dir(path("/tmp/a/b")).await.unwrap().into_inner();
    let names: Vec<_> = list
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind.as_str(), e.size))
        .collect();
    assert_eq!(names, [("c", "dir", names[0].2), ("file.txt", "file", 3)]);

    c.rename(RenameRequest {
        from: "/tmp/a/b/file.txt".into(),
        to: "/tmp/a/moved.txt".into(),
    })
    .await
    .unwrap();
    assert_eq!(exec(&mut c, &["cat", "/tmp/a/moved.txt"]).await.0, "hi\n");
    let e = c
        .remove(RemoveRequest {
            path: "/tmp/a/b".into(),
            recursive: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        tonic::Code::Internal,
        "a non-empty directory needs recursive: {e}"
    );
    c.remove(RemoveRequest {
        path: "/tmp/a/b".into(),
        recursive: true,
    })
    .await
    .unwrap();
    assert_eq!(
        c.stat(path("/tmp/a/b")).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    // berth's own directory and binary are off limits, also through symlinks and `..`.
    for p in [
        "/.berth/agent/agent.sock",
        "/tmp/a/escape/agent",
        "/tmp/../.berth",
        "/.berth-agent",
    ] {
        let e = c.stat(path(p)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{p}: {e}");
        let e = c
            .remove(RemoveRequest {
                path: p.into(),
                recursive: true,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{p}: {e}");
    }
    let e = c.stat(path("relative/path")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    made.remove().await;
}
