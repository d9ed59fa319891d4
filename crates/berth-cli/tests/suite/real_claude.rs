//! The real Claude Code CLI (the `claude` binary bundled in PyPI's `claude-agent-sdk` wheel)
//! in a berth sandbox, with its Messages API answered by `fake-upstream` *through the egress
//! gateway* as if it were api.anthropic.com: berth hands the CLI a placeholder, the gateway
//! puts the real key into `x-api-key`, and the stand-in refuses any other key.
//!
//! Skipped, saying so, only when PyPI cannot be reached to fetch the wheel.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde_json::Value;

use super::common::*;
use super::egress::Upstream;

/// The wheel that bundles Claude Code 2.1.332 (the version the issue was found with).
const SDK: &str = "claude-agent-sdk==0.2.189";
const IMAGE: &str = "berth-test/claude-real:0.2.189";
const KEY: &str = "sk-ant-api03-real-key-for-the-test-only";

fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-cache/claude-agent-sdk")
}

/// The real `claude` binary, fetched from PyPI once; `None` when PyPI is unreachable.
fn claude_binary() -> Option<PathBuf> {
    let dir = cache();
    let binary = dir.join("claude");
    if binary.exists() {
        return Some(binary);
    }
    std::fs::create_dir_all(&dir).unwrap();
    let pip = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-q",
            SDK,
            "-d",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    if !pip.status.success() {
        eprintln!(
            "SKIPPED: the real Claude Code test needs PyPI to fetch {SDK}: {}",
            stderr(&pip)
        );
        return None;
    }
    let extract = Command::new("python3")
        .arg("-c")
        .arg(
            "import glob, sys, zipfile\n\
             w = glob.glob(sys.argv[1] + '/claude_agent_sdk-*.whl')[0]\n\
             z = zipfile.ZipFile(w)\n\
             open(sys.argv[1] + '/claude', 'wb').write(z.read('claude_agent_sdk/_bundled/claude'))\n",
        )
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        extract.status.success(),
        "extracting claude: {}",
        stderr(&extract)
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(binary)
}

/// berth/base plus the glibc the binary links against, bash for its Bash tool, and claude.
fn ensure_image() -> bool {
    static BUILT: Mutex<Option<bool>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ok) = *built {
        return ok;
    }
    ensure_base_image();
    ensure_agent();
    if docker(&["image", "inspect", IMAGE]).status.success() {
        *built = Some(true);
        return true;
    }
    let Some(claude) = claude_binary() else {
        *built = Some(false);
        return false;
    };
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path().join("root");
    for dir in ["usr/local/bin", "lib/x86_64-linux-gnu", "lib64", "bin"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(&claude, root.join("usr/local/bin/claude")).unwrap();
    for lib in [
        "libc.so.6",
        "librt.so.1",
        "libpthread.so.0",
        "libdl.so.2",
        "libm.so.6",
        "libtinfo.so.6",
    ] {
        std::fs::copy(
            Path::new("/lib/x86_64-linux-gnu").join(lib),
            root.join("lib/x86_64-linux-gnu").join(lib),
        )
        .unwrap_or_else(|e| panic!("{lib}: {e}"));
    }
    std::fs::copy(
        "/lib64/ld-linux-x86-64.so.2",
        root.join("lib64/ld-linux-x86-64.so.2"),
    )
    .unwrap();
    std::fs::copy("/bin/bash", root.join("bin/bash")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM berth/base:latest\nCOPY root/ /\nLABEL berth.test=true\n",
    )
    .unwrap();
    docker_build(ctx.path(), IMAGE);
    *built = Some(true);
    true
}

fn run_claude(up: &Upstream, workspace: &Path, extra: &[&str]) -> (Vec<Value>, Value, i32, String) {
    ensure_gateway();
    let mut cmd = berth();
    up.wire(&mut cmd);
    let out = cmd
        .args(["agent", "run", "--json", "--image", IMAGE, "--workspace"])
        .arg(workspace)
        .args(["--secret", "ANTHROPIC_API_KEY"])
        .args(extra)
        .args(["--timeout", "3m", "--prompt", "write the proof file"])
        .env("ANTHROPIC_API_KEY", KEY)
        .output()
        .unwrap();
    let mut lines: Vec<Value> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let summary = lines
        .pop()
        .unwrap_or_else(|| panic!("no output; stderr: {}", stderr(&out)));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    (lines, summary, out.status.code().unwrap_or(-1), all)
}

#[test]
fn the_real_claude_code_edits_the_workspace_through_the_gateway_without_holding_the_key() {
    if !ensure_image() {
        return;
    }
    let proof = "echo berth-real-claude > /workspace/proof.txt && echo key=$ANTHROPIC_API_KEY >> /workspace/proof.txt && id -u";
    let up = Upstream::start(
        &["api.anthropic.com"],
        &[("EXPECT_KEY", KEY), ("PROOF_COMMAND", proof)],
    );

    // Default: bypassPermissions, so the tool call runs and writes into the workspace.
    let ws = dir_owned_by(1000, 1000);
    let (events, summary, code, all) = run_claude(&up, ws.path(), &[]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(summary["clean"], true, "{summary}");
    assert_eq!(summary["permission_denied"], 0, "{summary}");
    assert!(events
        .iter()
        .any(|e| e["type"] == "tool_call" && e["name"] == "Bash"));
    let written = std::fs::read_to_string(ws.path().join("proof.txt")).unwrap();
    assert!(written.starts_with("berth-real-claude\n"), "{written}");
    // Inside, the key is a placeholder; the real one never reached the sandbox or its output.
    assert!(
        written.contains("key=berth-placeholder-anthropic_api_key-"),
        "{written}"
    );
    assert!(
        !written.contains(KEY) && !all.contains(KEY),
        "the sandbox saw the key"
    );
    // The stand-in saw the real key on every Messages API call (it refuses any other).
    let seen = up.requests();
    let messages: Vec<&Value> = seen
        .iter()
        .filter(|r| r["path"] == "/v1/messages")
        .collect();
    assert!(messages.len() >= 2, "tool call and answer: {seen:?}");
    assert!(
        messages.iter().all(|r| r["x_api_key"] == KEY),
        "{messages:?}"
    );
    assert!(seen
        .iter()
        .all(|r| !r["x_api_key"].to_string().contains("placeholder")));

    // The CLI's own modes stay reachable: `default` denies the write headless, for real.
    let ws = dir_owned_by(1000, 1000);
    let (events, summary, code, all) = run_claude(
        &up,
        ws.path(),
        &["--permission-mode", "default", "--fail-on-denial"],
    );
    assert_eq!(code, 1, "--fail-on-denial: {all}");
    assert!(
        events.iter().any(|e| e["type"] == "permission_denied"),
        "{all}"
    );
    assert_eq!(summary["permission_denied"], 1, "{summary}");
    assert_eq!(summary["clean"], false);
    assert!(!ws.path().join("proof.txt").exists());
}
