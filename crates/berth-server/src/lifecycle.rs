//! The lifetimes the server enforces: every second it ends sandboxes whose timeout passed or
//! that were idle too long, by their `on_timeout` (kill, stop or pause), and audits it.
//!
//! Idle means: no API call that uses the sandbox (reading its record is not use), no stream attached to it (an exec, a process's
//! output, logs followed), and no background process started through berth still running —
//! an agent working away with nobody watching is not idle. A paused sandbox's clock stands
//! still (its deadline moves on at resume).
//!
//! Every five seconds it also collects orphans: containers and networks of this server with no
//! record, which the engine can finish creating after a killed server's successor started.

use std::time::Duration;

use crate::db::{now_ms, Lifetime, OnTimeout};
use crate::AppState;

/// How often the clocks are checked.
const TICK: Duration = Duration::from_secs(1);

/// Runs until aborted.
pub async fn run(state: AppState) {
    /// Ticks between two sweeps for orphans (containers of this server with no record).
    const ORPHAN_SWEEP_TICKS: u64 = 5;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    let server_id = state.db.server_id();
    loop {
        tick.tick().await;
        ticks += 1;
        if let (true, Ok(server_id)) = (ticks % ORPHAN_SWEEP_TICKS == 0, &server_id) {
            let none = std::collections::BTreeSet::new();
            match crate::reconcile::collect_orphans(&state, server_id, &none).await {
                Ok(ids) if !ids.is_empty() => {
                    tracing::info!("collected {} orphan(s): {ids:?}", ids.len())
                }
                Err(e) => tracing::warn!("lifecycle: looking for orphans: {e}"),
                Ok(_) => {}
            }
        }
        let lives = match state.db.lifetimes() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("lifecycle: {e}");
                continue;
            }
        };
        for life in lives.into_iter().filter(|l| l.state == "running") {
            if let Some(reason) = due(&state, &life).await {
                end(&state, &life, &reason).await;
            }
        }
    }
}

/// Why this sandbox's time is up, if it is.
async fn due(state: &AppState, life: &Lifetime) -> Option<String> {
    let now = now_ms();
    if life.deadline_ms.is_some_and(|d| d <= now) {
        return Some("its timeout passed".to_string());
    }
    let idle = life.idle_timeout_ms?;
    if now - life.last_active_ms < idle || state.attached(&life.id) {
        return None;
    }
    // A process started through berth that still runs is activity.
    let record = berth_sandbox::store::find(state.db.as_ref(), &life.id).ok()?;
    match state.service.processes(&record).await {
        Ok(processes) if processes.iter().any(|p| p.running) => {
            let _ = state.db.touch(&life.id);
            None
        }
        _ => Some(format!("it was idle for {} s", idle / 1000)),
    }
}

/// Ends a sandbox the way it asked for.
async fn end(state: &AppState, life: &Lifetime, reason: &str) {
    let Ok(record) = berth_sandbox::store::find(state.db.as_ref(), &life.id) else {
        return;
    };
    let (action, result) = match life.on_timeout {
        OnTimeout::Kill => ("kill", state.service.remove(&record, true).await),
        OnTimeout::Stop => (
            "stop",
            state.service.stop(&record, Duration::from_secs(10)).await,
        ),
        OnTimeout::Pause => ("pause", state.service.pause(&record).await),
    };
    let outcome = match &result {
        Ok(()) => format!("{action}: {reason}"),
        Err(e) => format!("{action} failed ({reason}): {e}"),
    };
    let recorded = match (life.on_timeout, &result) {
        (_, Err(_)) => Ok(()),
        (OnTimeout::Kill, Ok(())) => state.db.set_state(&life.id, "gone", Some(reason)),
        (OnTimeout::Stop, Ok(())) => state.db.set_state(&life.id, "stopped", Some(reason)),
        (OnTimeout::Pause, Ok(())) => state.db.pause_clock(&life.id, now_ms()),
    };
    if let Err(e) = recorded {
        tracing::warn!("lifecycle: {e}");
    }
    tracing::info!(sandbox = %life.id, tenant = %life.tenant, "{outcome}");
    let status = if result.is_ok() { 200 } else { 500 };
    let _ = state.db.audit(
        "server",
        &format!("lifecycle {action}"),
        Some(&life.id),
        status,
        &outcome,
    );
}
