//! `berth gc`: finds and removes berth objects that no live berth process owns.
//!
//! An object is garbage when its owner label names a process on this host that is gone
//! (berth crashed, was SIGKILLed, or the machine rebooted). Objects kept on purpose
//! (`--keep`), long-lived sandboxes (`berth create`: no owner process by design), the home
//! volumes of named agents, and objects
//! owned from other hosts are left alone unless `all` is set.

use berth_engine::Engine;
use berth_spec::labels;
use serde::Serialize;

use crate::error::SandboxError;
use crate::owner::{owner_liveness, Liveness};

/// What `berth gc` looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct GcOptions {
    /// Only list; remove nothing.
    pub dry_run: bool,
    /// Also remove kept objects, objects of live runs and of other hosts.
    pub all: bool,
}

/// One object gc found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcItem {
    /// `container`, `network`, `volume`, or `record` (a sandbox's local state).
    pub kind: &'static str,
    /// Engine id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Why it is garbage.
    pub reason: String,
    /// It was removed (false in a dry run or on error).
    pub removed: bool,
    /// Why removal failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn verdict(
    object_labels: &std::collections::BTreeMap<String, String>,
    all: bool,
) -> Option<String> {
    if object_labels.contains_key(labels::SERVER) {
        // A server's objects are its reconcile's, never the daemonless CLI's.
        return None;
    }
    if all {
        return Some("--all".to_string());
    }
    let Some(owner) = object_labels.get(labels::OWNER) else {
        // Long-lived sandboxes and their networks: removed with `berth rm`, not by gc.
        return None;
    };
    if object_labels.get(labels::KEEP).is_some_and(|v| v == "true") {
        return None;
    }
    match owner_liveness(object_labels) {
        Liveness::Gone => Some(format!("owner {owner} is gone")),
        Liveness::Alive | Liveness::OtherHost => None,
    }
}

/// Runs one removal (if any) and records how it went; "already gone" counts as removed.
async fn settle(
    kind: &'static str,
    id: String,
    name: String,
    reason: String,
    removal: Option<impl std::future::Future<Output = Result<(), berth_engine::EngineError>>>,
) -> GcItem {
    let (removed, error) = match removal {
        None => (false, None),
        Some(fut) => match fut.await {
            Ok(()) => (true, None),
            Err(e) if e.is_not_found() => (true, None),
            Err(e) => (false, Some(e.to_string())),
        },
    };
    GcItem {
        kind,
        id,
        name,
        reason,
        removed,
        error,
    }
}

/// Removes a container; when another process is already removing it, waits (a few seconds at
/// most) until it is gone, so two `berth gc` at once both succeed.
async fn remove_container<E: Engine>(
    engine: &E,
    id: &str,
) -> Result<(), berth_engine::EngineError> {
    match engine.container_remove(id, true).await {
        Err(e) if e.is_removal_in_progress() => {
            for _ in 0..100 {
                match engine.container_inspect(id).await {
                    Err(gone) if gone.is_not_found() => return Ok(()),
                    Err(other) => return Err(other),
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            }
            Err(e)
        }
        other => other,
    }
}

/// Finds garbage and (unless a dry run) removes it: containers first, then networks and
/// volumes.
pub async fn collect<E: Engine>(
    engine: &E,
    store: &crate::store::FileStore,
    options: GcOptions,
) -> Result<Vec<GcItem>, SandboxError> {
    let filter = [labels::managed_filter()];
    let (containers, networks, volumes) = tokio::try_join!(
        engine.container_list(&filter),
        engine.network_list(&filter),
        engine.volume_list(&filter)
    )?;
    let mut items = Vec::new();
    // The sandboxes whose containers stay: their directories stay too.
    let mut staying = std::collections::HashSet::new();
    // Containers first: a network cannot be removed while a container is attached.
    for c in containers {
        if verdict(&c.labels, options.all).is_none() {
            staying.extend(c.labels.get(labels::ID).cloned());
        }
        if let Some(reason) = verdict(&c.labels, options.all) {
            let removal = (!options.dry_run).then(|| remove_container(engine, &c.id));
            let item = settle("container", c.id.clone(), c.name, reason, removal).await;
            let removed = item.removed;
            if !removed {
                staying.extend(c.labels.get(labels::ID).cloned());
            }
            items.push(item);
            // A sandbox's local record (and its directories, a one-shot run's CA directory
            // too) goes with its container, so `berth ps` does not keep showing it.
            let sandbox = c.labels.get(labels::ID).filter(|_| {
                removed
                    && matches!(
                        c.labels.get(labels::KIND).map(String::as_str),
                        Some(labels::KIND_SANDBOX | labels::KIND_RUN)
                    )
            });
            if let Some(id) = sandbox {
                if crate::store::Store::forget(store, id) {
                    items.push(GcItem {
                        kind: "record",
                        id: id.clone(),
                        name: format!("sandbox {id}"),
                        reason: "its container was removed".to_string(),
                        removed: true,
                        error: None,
                    });
                }
            }
        }
    }
    if !options.dry_run {
        if let Some(runtime) = crate::store::Store::runtime_dir(store) {
            crate::host_dirs::sweep(&runtime, &staying);
        }
    }
    for n in networks {
        if let Some(reason) = verdict(&n.labels, options.all) {
            let removal = (!options.dry_run).then(|| engine.network_remove(&n.id));
            items.push(settle("network", n.id.clone(), n.name, reason, removal).await);
        }
    }
    // Volumes last: one in use by a container cannot be removed.
    for v in volumes {
        if let Some(reason) = verdict(&v.labels, options.all) {
            let removal = (!options.dry_run).then(|| engine.volume_remove(&v.name));
            items.push(settle("volume", v.name.clone(), v.name.clone(), reason, removal).await);
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{Call, FakeEngine};
    use berth_engine::{ContainerSummary, NetworkSummary};
    use std::collections::BTreeMap;

    fn labelled(owner: &str, keep: bool) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::OWNER.to_string(), owner.to_string()),
        ]);
        if keep {
            l.insert(labels::KEEP.to_string(), "true".to_string());
        }
        l
    }

    #[tokio::test]
    async fn removes_only_what_dead_owners_left() {
        let engine = FakeEngine::exiting(0, b"", b"");
        let dead = format!("{}:999999999:1", crate::owner::hostname());
        let live = crate::owner::current_owner();
        *engine.containers.lock().unwrap() = vec![
            ContainerSummary {
                id: "dead".into(),
                labels: labelled(&dead, false),
                ..Default::default()
            },
            ContainerSummary {
                id: "live".into(),
                labels: labelled(&live, false),
                ..Default::default()
            },
            ContainerSummary {
                id: "kept".into(),
                labels: labelled(&dead, true),
                ..Default::default()
            },
            ContainerSummary {
                id: "sandbox".into(),
                labels: BTreeMap::from([(labels::MANAGED.to_string(), "true".to_string())]),
                ..Default::default()
            },
        ];
        *engine.networks.lock().unwrap() = vec![NetworkSummary {
            id: "net".into(),
            labels: labelled(&dead, false),
            ..Default::default()
        }];
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::FileStore::new(dir.path());
        let dry = collect(
            &engine,
            &store,
            GcOptions {
                dry_run: true,
                all: false,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            dry.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["dead", "net"]
        );
        assert!(dry.iter().all(|i| !i.removed));
        assert!(!engine
            .calls()
            .iter()
            .any(|c| matches!(c, Call::Remove { .. } | Call::NetworkRemove)));

        let done = collect(&engine, &store, GcOptions::default())
            .await
            .unwrap();
        assert!(done.iter().all(|i| i.removed));
        let all = collect(
            &engine,
            &store,
            GcOptions {
                dry_run: true,
                all: true,
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 5);
    }
}
