//! What the server does on every start: compare its records with the engine's objects
//! (by labels) so a SIGKILL at any moment loses nothing and leaks nothing.
//!
//! - a recorded sandbox whose container runs (or is paused or stopped) is adopted: its
//!   state is what the engine says, its timers go on from the database;
//! - one whose container vanished is marked `gone` with that reason;
//! - an object carrying this server's label that no live record names (made while the
//!   server died mid-create, say) is removed, and so is an agent's home volume whose agent
//!   the database no longer knows.
//!
//! Only objects labelled with this server's id are touched: the daemonless CLI's sandboxes
//! (and another server's) are never seen here.

use std::collections::BTreeSet;

use berth_engine::Engine;
use berth_spec::labels;
use serde::Serialize;

use crate::AppState;

/// What a reconcile did.
#[derive(Debug, Default, Serialize)]
pub struct Reconciled {
    pub adopted: Vec<String>,
    pub vanished: Vec<String>,
    pub collected: Vec<String>,
}

/// Reconciles the database with the engine.
pub async fn run(
    state: &AppState,
    server_id: &str,
) -> Result<Reconciled, berth_engine::EngineError> {
    let engine = state.service.engine();
    let mut done = Reconciled::default();
    let mut live = BTreeSet::new();
    for life in state.db.lifetimes().unwrap_or_default() {
        let Ok(record) = berth_sandbox::store::find(state.db.as_ref(), &life.id) else {
            continue;
        };
        match engine.container_inspect(&record.container_id).await {
            Ok(s) => {
                let now = match s.status.as_str() {
                    "paused" => "paused",
                    _ if s.running => "running",
                    _ => "stopped",
                };
                if now != life.state {
                    let _ = match now {
                        "paused" => state.db.pause_clock(&life.id, crate::db::now_ms()),
                        other => state.db.set_state(&life.id, other, None),
                    };
                }
                live.insert(life.id.clone());
                done.adopted.push(life.id);
            }
            Err(e) if e.is_not_found() => {
                let reason = "its container vanished while the server was not watching";
                let _ = state.db.set_state(&life.id, "gone", Some(reason));
                let _ = std::fs::remove_dir_all(berth_sandbox::store::Store::sandbox_dir(
                    state.db.as_ref(),
                    &life.id,
                ));
                let _ = state
                    .db
                    .audit("server", "reconcile", Some(&life.id), 410, reason);
                done.vanished.push(life.id);
            }
            Err(e) => return Err(e),
        }
    }
    done.collected = collect_orphans(state, server_id, &live).await?;
    done.collected
        .extend(crate::agents::collect_homes(state, server_id).await?);
    Ok(done)
}

/// Removes the containers and networks this server made whose sandbox it has no live record
/// of (`live`: the ids it keeps). The lifecycle loop runs it too, because the engine finishes
/// a create the server asked for before it was killed, possibly after the next server's start.
/// A sandbox's record is saved before its container exists, so a create in flight is never
/// taken for an orphan.
pub async fn collect_orphans(
    state: &AppState,
    server_id: &str,
    live: &BTreeSet<String>,
) -> Result<Vec<String>, berth_engine::EngineError> {
    let engine = state.service.engine();
    let mut collected = Vec::new();
    let mine = [format!("{}={server_id}", labels::SERVER)];
    let containers = engine.container_list(&mine).await?;
    let networks = engine.network_list(&mine).await?;
    // Read after the listing: whatever was listed existed, so its record (saved first) is
    // in this read, even for a create that was under way.
    let mut live = live.clone();
    live.extend(
        state
            .db
            .lifetimes()
            .unwrap_or_default()
            .into_iter()
            .map(|l| l.id),
    );
    let mut orphans = BTreeSet::new();
    for c in containers {
        if let Some(id) = c.labels.get(labels::ID).filter(|id| !live.contains(*id)) {
            let _ = engine.container_remove(&c.id, true).await;
            orphans.insert(id.clone());
        }
    }
    for n in networks {
        if let Some(id) = n.labels.get(labels::ID).filter(|id| !live.contains(*id)) {
            let _ = engine.network_remove(&n.id).await;
            orphans.insert(id.clone());
        }
    }
    for id in orphans {
        // Its socket directory (no record names it: the create that made it was cut short).
        let runtime = berth_sandbox::store::Store::runtime_dir(state.db.as_ref());
        berth_sandbox::host_dirs::remove(runtime.as_deref(), &id);
        let _ = state.db.audit(
            "server",
            "reconcile",
            Some(&id),
            410,
            "collected: made by this server, no record",
        );
        let _ = state
            .db
            .set_state(&id, "gone", Some("collected by reconcile"));
        collected.push(id);
    }
    Ok(collected)
}
