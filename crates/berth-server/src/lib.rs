//! berth-server: berth as a service (`berth serve`).
//!
//! A front end like the CLI: its handlers ([`api`]) authenticate the caller ([`auth`]: API
//! keys, each a tenant), call one operation of `berth_service::Service` and render the result.
//! What only a long-running server can do lives here too: records in SQLite ([`db`]), the
//! lifetimes it enforces ([`lifecycle`]: timeout, idle timeout, what happens at the end),
//! [`reconcile`] with the engine on every start, the audit log and [`metrics`].
//!
//! As in mini-redis, [`serve`] takes its listener and a shutdown future: the caller binds (a
//! test binds port 0) and decides when it ends.

pub mod agent_runs;
pub mod agents;
pub mod api;
pub mod auth;
pub mod db;
pub mod error;
pub mod journal;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod pty;
pub mod reconcile;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use berth_engine::docker::DockerEngine;
use berth_service::Service;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::db::Db;

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service<DockerEngine>>,
    pub db: Arc<Db>,
    pub metrics: Arc<metrics::Metrics>,
    /// Host directories API callers may mount (none when `None`).
    pub workspace_root: Option<PathBuf>,
    /// Largest upload accepted, in bytes.
    pub max_upload: u64,
    /// Streams attached per sandbox right now (they count as activity).
    active: Arc<Mutex<HashMap<String, usize>>>,
    /// The audit log (written before each answer) and activity times (off the request path).
    journal: journal::Journal,
    /// The interactive sessions with a turn in progress (`sandbox/process`).
    turns: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// A session's turn in progress: the next waits until it drops.
pub struct Turn {
    key: String,
    turns: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// An attached stream: while it lives, its sandbox is not idle.
pub struct Activity {
    id: String,
    active: Arc<Mutex<HashMap<String, usize>>>,
    journal: journal::Journal,
}

impl Drop for Activity {
    fn drop(&mut self) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = active.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                active.remove(&self.id);
            }
        }
        // The end of a stream is activity too: the idle clock starts from here.
        self.journal.touch(&self.id);
    }
}

impl AppState {
    pub fn new(
        service: Service<DockerEngine>,
        db: Arc<Db>,
        workspace_root: Option<PathBuf>,
        max_upload: u64,
    ) -> Self {
        Self {
            service: Arc::new(service),
            db: db.clone(),
            metrics: Arc::default(),
            workspace_root,
            max_upload,
            active: Arc::default(),
            journal: journal::Journal::start(db),
            turns: Arc::default(),
        }
    }

    /// Takes the turn of session `process` in sandbox `id`; `None` while another is taken.
    pub fn turn(&self, id: &str, process: &str) -> Option<Turn> {
        let key = format!("{id}/{process}");
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        turns.insert(key.clone()).then(|| Turn {
            key,
            turns: self.turns.clone(),
        })
    }

    /// Marks a stream attached to sandbox `id` until the guard drops.
    pub fn activity(&self, id: &str) -> Activity {
        *self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default() += 1;
        Activity {
            id: id.to_string(),
            active: self.active.clone(),
            journal: self.journal.clone(),
        }
    }

    /// Whether a stream is attached to sandbox `id`.
    pub fn attached(&self, id: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "berth", description = "Hardened Docker sandboxes for AI coding agents and untrusted code: create them, run processes and move files in them, and let the server end them on time."),
    modifiers(&BearerAuth),
    tags((name = "sandboxes"), (name = "processes"), (name = "files"), (name = "agents"), (name = "server"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The routes that need an API key.
fn authed_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(api::create_sandbox, api::list_sandboxes))
        .routes(routes!(api::get_sandbox, api::delete_sandbox))
        .routes(routes!(api::set_timeout))
        .routes(routes!(api::stop_sandbox))
        .routes(routes!(api::start_sandbox))
        .routes(routes!(api::pause_sandbox))
        .routes(routes!(api::resume_sandbox))
        .routes(routes!(api::exec))
        .routes(routes!(api::start_process, api::list_processes))
        .routes(routes!(api::process_output))
        .routes(routes!(api::process_stdin))
        .routes(routes!(api::process_signal))
        .routes(routes!(api::read_file, api::write_file, api::remove_file))
        .routes(routes!(api::list_dir))
        .routes(routes!(api::stat))
        .routes(routes!(api::mkdir))
        .routes(routes!(api::move_path))
        .routes(routes!(api::read_archive, api::write_archive))
        .routes(routes!(api::logs))
        .routes(routes!(api::audit))
        .routes(routes!(agent_runs::start_run))
        .routes(routes!(agent_runs::events))
        .routes(routes!(agent_runs::cancel))
        .routes(routes!(agent_runs::turn))
        .routes(routes!(agents::list_agents))
        .routes(routes!(agents::get_agent, agents::delete_agent))
        .routes(routes!(pty::pty))
}

/// The routes anyone may call.
fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).routes(routes!(api::healthz))
}

/// The OpenAPI document, as `/v1/openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut doc) = public_routes().split_for_parts();
    doc.merge(authed_routes().split_for_parts().1);
    utoipa::Modify::modify(&CommonErrors, &mut doc);
    doc
}

/// Documents the answers any operation may give besides its own: a bad request, no or an
/// unknown key, someone else's (or no) sandbox, an engine or agent that is not there.
struct CommonErrors;

impl utoipa::Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let authed = path.starts_with("/v1/");
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in operations.into_iter().flatten() {
                let responses = &mut op.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description));
                };
                add("503", "The engine or the sandbox's agent cannot be reached");
                if authed {
                    add(
                        "400",
                        "The request is not valid; the message says what to send",
                    );
                    add("401", "No API key, or one this server does not know");
                }
                if path.contains("{id}") {
                    add("404", "No such sandbox among yours");
                    add("409", "The sandbox is in the wrong state for this");
                }
            }
        }
    }
}

/// Gives every request an id (`x-request-id`, also in error bodies), counts it, and writes
/// it to the audit log with the key's name, the sandbox and the outcome.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let sandbox = req
        .uri()
        .path()
        .strip_prefix("/v1/sandboxes/")
        .map(|rest| rest.split('/').next().unwrap_or("").to_string())
        .filter(|s| !s.is_empty());
    let mut response = error::REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let status = response.status().as_u16();
    if let Ok(value) = id.parse() {
        response.headers_mut().insert("x-request-id", value);
    }
    state.metrics.request(&method, &route, status);
    if route.starts_with("/v1/") {
        let key = response
            .extensions()
            .get::<auth::Auth>()
            .map_or("-".to_string(), |a| a.name.clone());
        let outcome = if status < 400 { "ok" } else { "error" };
        // Using a sandbox is activity; looking at its record (a dashboard polling) is not.
        let looking = method == "GET" && route == "/v1/sandboxes/{id}";
        state.journal.record(journal::Call {
            key,
            action: format!("{method} {route}"),
            sandbox,
            status,
            outcome,
            activity: status < 400 && !looking,
        });
    }
    response
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut by_state = std::collections::BTreeMap::new();
    for life in state.db.lifetimes().unwrap_or_default() {
        *by_state.entry(life.state).or_insert(0u64) += 1;
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(&by_state),
    )
        .into_response()
}

/// The whole application: the API, `/v1/openapi.json`, `/metrics`.
pub fn app(state: AppState) -> axum::Router {
    let (authed, _) = authed_routes().split_for_parts();
    let (public, _) = public_routes().split_for_parts();
    let doc = Arc::new(openapi());
    authed
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .merge(public)
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json(doc.as_ref().clone()) }
            }),
        )
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                error::ApiError::method_not_allowed(&method, uri.path())
            },
        )
        .fallback(|| async {
            error::ApiError::from(berth_service::ServiceError::not_found(
                "no such endpoint: see /v1/openapi.json for the API",
            ))
        })
        .with_state(state)
}

/// A TCP listener whose connections send each write at once (`TCP_NODELAY`). An exec's
/// events are small writes one after the other: without it the second waits for the
/// client's delayed ACK, 40 ms per exec for Python's HTTP clients.
pub fn no_delay(
    listener: tokio::net::TcpListener,
) -> impl axum::serve::Listener<Io = tokio::net::TcpStream, Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!("TCP_NODELAY on an API connection failed: {e}");
        }
    })
}

/// Serves the API on `listener` (TCP or a unix socket) until `shutdown` completes; the
/// lifecycle loop runs beside it. Requests in flight finish first (graceful shutdown).
pub async fn serve<L>(
    listener: L,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let enforcer = tokio::spawn(lifecycle::run(state.clone()));
    let result = axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    enforcer.abort();
    result
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    #[tokio::test]
    async fn api_connections_send_each_write_at_once() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = super::no_delay(tcp);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (io, _) = listener.accept().await;
        assert!(io.nodelay().unwrap());
        drop(client.await.unwrap().unwrap());
    }
}
