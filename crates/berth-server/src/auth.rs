//! API keys: bearer tokens, stored only as SHA-256 hashes; each key is a tenant.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use berth_service::Caller;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::AppState;

/// The caller, as the auth middleware found it.
#[derive(Debug, Clone)]
pub struct Auth {
    pub name: String,
    pub admin: bool,
}

impl Auth {
    pub fn caller(&self) -> Caller {
        Caller::tenant(self.name.clone(), self.admin)
    }
}

/// A fresh key: `berth_` and 32 random bytes in hex.
pub fn new_key() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("berth_{}", hex::encode(bytes)))
}

/// What is stored of a key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64.
pub fn check_name(name: &str) -> Result<(), String> {
    berth_spec::names::check("key name", name, "alice")
}

/// Requires `Authorization: Bearer <key>` and puts the caller in the request.
pub async fn require_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(key) = header.strip_prefix("Bearer ").map(str::trim) else {
        return ApiError::unauthorized(
            "no API key: send the header `Authorization: Bearer <key>` (make a key with `berth server key create --name NAME`)",
        )
        .into_response();
    };
    match state.db.key_by_hash(&hash(key)) {
        Ok(Some((name, admin))) => {
            let auth = Auth { name, admin };
            req.extensions_mut().insert(auth.clone());
            let mut response = next.run(req).await;
            // For the audit log, written on the way out.
            response.extensions_mut().insert(auth);
            response
        }
        Ok(None) => ApiError::unauthorized(
            "the API key is not known to this server: check BERTH_API_KEY, or make a key with `berth server key create --name NAME`",
        )
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
