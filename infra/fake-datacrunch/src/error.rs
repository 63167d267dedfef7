//! The provider's error envelope.
//!
//! Every error the real API returns is a JSON body `{"code": "...", "message": "..."}`; clients
//! branch on `code` (and, for a few cases such as "Invalid instance id" or "Can't discontinue a
//! provisioning instance", on `message`). The fake therefore never lets axum answer with its own
//! plain-text rejections: request bodies are parsed by hand through [`parse_json`] and every
//! handler returns [`ApiError`] on failure.

use axum::{
    body::Bytes,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;
use serde_json::json;

/// An error answered as `{"code","message"}` with an HTTP status.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `invalid_request`: a malformed or semantically invalid request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized_request`: bad client credentials or a missing/expired bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized_request", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The exact 404 the provider gives for an unknown (or vanished) instance.
    pub fn invalid_instance_id() -> Self {
        Self::not_found("Invalid instance id")
    }

    /// 400 `forbidden_action`: the action is not allowed in the instance's current status.
    /// The real API uses 400 (not 403) for these.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "forbidden_action", message)
    }

    /// 503 `service_unavailable`: the capacity error of a deploy.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        )
    }

    /// An injected 5xx with code `server_error`.
    pub fn server_error(status: StatusCode, message: impl Into<String>) -> Self {
        Self::new(status, "server_error", message)
    }

    /// The JSON body, also used for the per-instance results of a multi-id action.
    pub fn body(&self) -> serde_json::Value {
        json!({ "code": self.code, "message": self.message })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// Parses a JSON request body, ignoring unknown fields (serde's default) and turning any
/// syntax or type error into a 400 `invalid_request` in the provider's envelope.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("Request body must be a JSON object"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("Invalid request body: {e}")))
}

/// Like [`parse_json`] but an empty body yields `T::default()` (for admin routes whose body is
/// optional).
pub fn parse_json_or_default<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// Fallback for unknown routes.
pub async fn route_not_found() -> ApiError {
    ApiError::not_found("Not found")
}

/// Fallback for a known path with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "Method not allowed",
    )
}
