//! [`ApiError`]: a [`ServiceError`] as the API answers it — the kind's status and a JSON body
//! with a code, a message that says what to do, and the request's id.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use berth_service::{ErrorKind, ServiceError};
use serde::Serialize;

tokio::task_local! {
    /// The id of the request being served (set by the request-id middleware).
    pub static REQUEST_ID: String;
}

/// The current request's id, if any.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The body of every error.
#[derive(Debug, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// `invalid`, `not_found`, `conflict`, `forbidden`, `too_large`, `unavailable`,
    /// `unauthorized`, `method_not_allowed` or `internal`.
    pub code: String,
    pub message: String,
    pub request_id: String,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
        }
    }

    pub fn method_not_allowed(method: &axum::http::Method, path: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            code: "method_not_allowed",
            message: format!(
                "{method} is not an operation of {path}: see /v1/openapi.json for the methods it takes"
            ),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ServiceError::invalid(message).into()
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ServiceError::not_found(message).into()
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ServiceError::conflict(message).into()
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let status =
            StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Self {
            status,
            code: e.kind.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ServiceError::new(ErrorKind::Internal, e.to_string()).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
            request_id: request_id(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        let status = e.status();
        let mut error = ApiError::invalid(format!(
            "the JSON body is not valid here: {}; see /v1/openapi.json for this endpoint's schema",
            e.body_text()
        ));
        if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            error.message = "send the body as JSON with the header `Content-Type: application/json`, e.g. curl -H 'Content-Type: application/json' -d '{}'".into();
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            error.status = status;
            error.code = "too_large";
        }
        error
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::invalid(format!(
            "the query string is not valid here: {}; see /v1/openapi.json for this endpoint's parameters",
            e.body_text()
        ))
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::invalid(format!("the path is not valid: {}", e.body_text()))
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(e: axum::extract::rejection::BytesRejection) -> Self {
        let mut error = ApiError::invalid(format!("the body could not be read: {}", e.body_text()));
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error.status = StatusCode::PAYLOAD_TOO_LARGE;
            error.code = "too_large";
        }
        error
    }
}

/// `axum::Json`, answering a bad body with berth's JSON error.
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Query`, answering a bad query with berth's JSON error.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `axum::extract::Path`, answering a bad path with berth's JSON error.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
