//! Signals, crashes, `--keep` and `berth gc`: nothing leaks.

use std::process::Stdio;

use super::common::*;

/// Starts `berth run ARGS` in the background; returns it, its running container and berth id.
fn spawn_run(args: &[&str]) -> (std::process::Child, String, String) {
    ensure_base_image();
    let child = berth()
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let container = running_container_of(child.id());
    let labels = docker(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"berth.id\"}}",
        &container,
    ]);
    let id = stdout(&labels).trim().to_string();
    (child, container, id)
}

fn interrupted_run_leaves_nothing(signal: i32, expected_exit: i32) {
    let (child, _, id) = spawn_run(&["--network", "isolated", "--", "sleep", "300"]);
    kill(child.id(), signal);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(expected_exit), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert!(
        containers_with(&format!("berth.id={id}")).is_empty(),
        "container leaked"
    );
    assert!(
        networks_with(&format!("berth.id={id}")).is_empty(),
        "network leaked"
    );
}

#[test]
fn ctrl_c_removes_the_sandbox() {
    interrupted_run_leaves_nothing(libc::SIGINT, 130);
}

#[test]
fn sigterm_removes_the_sandbox() {
    interrupted_run_leaves_nothing(libc::SIGTERM, 143);
}

#[test]
fn a_crashed_berth_is_cleaned_up_by_gc() {
    let (mut child, container, id) = spawn_run(&["--network", "isolated", "--", "sleep", "300"]);
    let _gc = gc_lock();
    kill(child.id(), libc::SIGKILL);
    child.wait().unwrap();
    assert_eq!(
        containers_with(&format!("berth.id={id}")).len(),
        1,
        "the crash left the container"
    );

    let dry = berth()
        .args(["gc", "--dry-run", "--json"])
        .output()
        .unwrap();
    assert_eq!(dry.status.code(), Some(0), "{}", stderr(&dry));
    let listed: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    let items = listed["items"].as_array().unwrap();
    assert!(items
        .iter()
        .any(|i| i["id"] == container.as_str() && i["removed"] == false));
    assert!(items
        .iter()
        .any(|i| i["kind"] == "network" && i["name"] == format!("berth-net-{id}")));
    assert_eq!(
        containers_with(&format!("berth.id={id}")).len(),
        1,
        "dry run removed something"
    );

    let gc = berth().args(["gc"]).output().unwrap();
    assert_eq!(gc.status.code(), Some(0), "{}", stderr(&gc));
    assert!(stdout(&gc).contains("removed container"), "{}", stdout(&gc));
    assert!(containers_with(&format!("berth.id={id}")).is_empty());
    assert!(networks_with(&format!("berth.id={id}")).is_empty());
}

#[test]
fn gc_leaves_live_runs_alone() {
    let (mut child, container, _) = spawn_run(&["--", "sleep", "300"]);
    let _gc = gc_lock();
    let gc = berth().args(["gc", "--json"]).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert!(!listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == container.as_str()));
    assert_eq!(
        stdout(&docker(&[
            "inspect",
            "-f",
            "{{.State.Running}}",
            &container
        ]))
        .trim(),
        "true"
    );
    kill(child.id(), libc::SIGINT);
    child.wait().unwrap();
}

#[test]
fn keep_leaves_a_labelled_container_that_gc_respects() {
    let (r, code) = run_json(&["--keep", "--", "sh", "-c", "echo kept > /tmp/x"]);
    assert_eq!(code, 0);
    assert_eq!(r["kept"], true);
    let id = r["id"].as_str().unwrap();
    let kept = containers_with(&format!("berth.id={id}"));
    assert_eq!(kept.len(), 1);
    assert_eq!(
        containers_with("berth.keep=true")
            .iter()
            .filter(|c| kept.contains(c))
            .count(),
        1
    );

    let gc = berth()
        .args(["gc", "--dry-run", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&gc.stdout).unwrap();
    assert!(!listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == kept[0].as_str()));
    let gc_all = berth()
        .args(["gc", "--all", "--dry-run", "--json"])
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&gc_all.stdout).unwrap();
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["id"] == kept[0].as_str()));
    remove_containers(&kept);
}
