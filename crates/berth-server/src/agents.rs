//! Named agents through the API: what `berth agent run --name` is locally, per tenant.
//!
//! A sandbox created with `agent: NAME` mounts that agent's home volume at the CLI's home, so
//! the CLI's sessions outlive the sandbox; runs in it may resume them (`resume`, `fork`), and
//! only sessions berth saw this tenant's agent make can be resumed. The volume belongs to the
//! tenant and the agent (its name is a hash of this server, the tenant and the agent, so two
//! tenants' agents of one name never share a home) and carries the server's labels, so the
//! reconcile removes one whose agent is gone. `DELETE /v1/agents/{name}` removes the agent's
//! sandboxes, its home and its sessions, as `berth agent rm` does locally.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Extension;
use berth_engine::{Engine, VolumePlan};
use berth_runtimes::settings::AGENT_HOME;
use berth_runtimes::store::SessionEntry;
use berth_sandbox::sandbox::{SandboxRecord, VolumeMount};
use berth_spec::labels;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::auth::Auth;
use crate::db::ServerAgent;
use crate::error::{ApiError, ErrorBody, Json, Path};
use crate::AppState;

/// The agent a server-made sandbox serves, if any.
pub fn agent_of(record: &SandboxRecord) -> Option<&str> {
    record.labels.get(labels::AGENT).map(String::as_str)
}

/// The home volume of the tenant's agent `name` on server `server_id`.
pub fn home_volume(server_id: &str, tenant: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{server_id}\n{tenant}\n{name}").as_bytes());
    format!("berth-home-{name}-{}", hex::encode(&digest[..6]))
}

/// Checks the name, makes the agent known and returns the mount of its home. The agent's
/// row is written before its volume can exist, so the reconcile never takes a volume being
/// made for an orphan.
pub fn prepare_home(state: &AppState, tenant: &str, name: &str) -> Result<VolumeMount, ApiError> {
    berth_runtimes::store::validate_name(name).map_err(|e| ApiError::invalid(e.to_string()))?;
    state.db.add_agent(tenant, name)?;
    let server_id = state.db.server_id()?;
    Ok(VolumeMount {
        volume: VolumePlan {
            name: home_volume(&server_id, tenant, name),
            labels: [
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::KIND.to_string(), labels::KIND_VOLUME.to_string()),
                (labels::AGENT.to_string(), name.to_string()),
            ]
            .into(),
        },
        target: AGENT_HOME.to_string(),
    })
}

/// A named agent.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Agent {
    pub name: String,
    pub tenant: String,
    pub created: String,
    /// The CLI it runs (`claude`, `codex`, `gemini`), once it ran.
    pub cli: Option<String>,
    /// Its sessions, oldest first (a fork names the session it came from).
    #[schema(value_type = Vec<Object>)]
    pub sessions: Vec<SessionEntry>,
    pub last_session: Option<String>,
    /// The ids of its live sandboxes.
    pub sandboxes: Vec<String>,
}

fn view(state: &AppState, auth: &Auth, agent: ServerAgent) -> Agent {
    let sandboxes = sandboxes_of(state, auth, &agent.tenant, &agent.name)
        .into_iter()
        .map(|r| r.id)
        .collect();
    let record = agent.record;
    Agent {
        cli: record.as_ref().map(|r| r.cli.to_string()),
        last_session: record
            .as_ref()
            .and_then(|r| r.last_session().map(String::from)),
        sessions: record.map(|r| r.sessions).unwrap_or_default(),
        name: agent.name,
        tenant: agent.tenant,
        created: agent.created,
        sandboxes,
    }
}

/// The live sandboxes of `tenant`'s agent `name`, oldest first.
fn sandboxes_of(state: &AppState, auth: &Auth, tenant: &str, name: &str) -> Vec<SandboxRecord> {
    state
        .service
        .list(&auth.caller())
        .into_iter()
        .filter(|r| {
            agent_of(r) == Some(name)
                && r.labels.get(labels::TENANT).map(String::as_str) == Some(tenant)
        })
        .collect()
}

fn find(state: &AppState, auth: &Auth, name: &str) -> Result<ServerAgent, ApiError> {
    state.db.agent(&auth.name, name)?.ok_or_else(|| {
        berth_service::ServiceError::not_found(format!(
            "no agent named {name:?}: it is made by the first sandbox created with \"agent\": {name:?}"
        ))
        .into()
    })
}

/// Lists your named agents (an admin key: everyone's).
#[utoipa::path(get, path = "/v1/agents", tag = "agents",
    responses((status = 200, body = Vec<Agent>)),
    security(("api_key" = [])))]
pub async fn list_agents(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
) -> Result<Json<Vec<Agent>>, ApiError> {
    let tenant = (!auth.admin).then_some(auth.name.as_str());
    let agents = state.db.agents(tenant)?;
    Ok(Json(
        agents.into_iter().map(|a| view(&state, &auth, a)).collect(),
    ))
}

/// One of your named agents, with its sessions.
#[utoipa::path(get, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "The agent's name")),
    responses((status = 200, body = Agent), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn get_agent(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Result<Json<Agent>, ApiError> {
    let agent = find(&state, &auth, &name)?;
    Ok(Json(view(&state, &auth, agent)))
}

/// Removes one of your named agents: its sandboxes (killed), its home volume and its sessions.
#[utoipa::path(delete, path = "/v1/agents/{name}", tag = "agents",
    params(("name" = String, Path, description = "The agent's name")),
    responses((status = 204), (status = 404, body = ErrorBody)),
    security(("api_key" = [])))]
pub async fn delete_agent(
    State(state): State<AppState>,
    Extension(auth): Extension<Auth>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let agent = find(&state, &auth, &name)?;
    for record in sandboxes_of(&state, &auth, &agent.tenant, &agent.name) {
        state.service.remove(&record, true).await?;
        state
            .db
            .set_state(&record.id, "gone", Some("its agent was removed"))?;
    }
    let server_id = state.db.server_id()?;
    state
        .service
        .engine()
        .volume_remove(&home_volume(&server_id, &agent.tenant, &agent.name))
        .await
        .map_err(berth_service::ServiceError::from)?;
    state.db.remove_agent(&agent.tenant, &agent.name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes this server's agent home volumes whose agent it no longer knows (removed while
/// a volume was still in use, or by a server killed between the two).
pub async fn collect_homes(
    state: &AppState,
    server_id: &str,
) -> Result<Vec<String>, berth_engine::EngineError> {
    let engine = state.service.engine();
    let mine = [
        format!("{}={server_id}", labels::SERVER),
        format!("{}={}", labels::KIND, labels::KIND_VOLUME),
    ];
    let mut collected = Vec::new();
    for v in engine.volume_list(&mine).await? {
        let (Some(tenant), Some(name)) =
            (v.labels.get(labels::TENANT), v.labels.get(labels::AGENT))
        else {
            continue;
        };
        if matches!(state.db.agent(tenant, name), Ok(None))
            && engine.volume_remove(&v.name).await.is_ok()
        {
            collected.push(v.name);
        }
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_differ_by_tenant_and_server_and_show_the_name() {
        let a = home_volume("s1", "alice", "fixer");
        assert!(a.starts_with("berth-home-fixer-"), "{a}");
        assert_eq!(a, home_volume("s1", "alice", "fixer"));
        assert_ne!(a, home_volume("s1", "bob", "fixer"));
        assert_ne!(a, home_volume("s2", "alice", "fixer"));
    }
}
