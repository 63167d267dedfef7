//! Lambda Cloud's error envelope: `{"error": {"code", "message", "suggestion"}}` with the codes
//! of its OpenAPI document (`errorCode`, v1.4.0, plus `global/quota-exceeded` and
//! `global/duplicate` which newer versions and public clients show).

use axum::{
    body::Bytes,
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::de::DeserializeOwned;
use serde_json::json;

pub const INVALID_API_KEY: &str = "global/invalid-api-key";
pub const INVALID_PARAMETERS: &str = "global/invalid-parameters";
pub const OBJECT_DOES_NOT_EXIST: &str = "global/object-does-not-exist";
pub const UNKNOWN: &str = "global/unknown";
pub const QUOTA_EXCEEDED: &str = "global/quota-exceeded";
pub const DUPLICATE: &str = "global/duplicate";
pub const INSUFFICIENT_CAPACITY: &str = "instance-operations/launch/insufficient-capacity";
pub const KEY_IN_USE: &str = "ssh-keys/key-in-use";

#[derive(Debug, Clone)]
pub struct LambdaError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub suggestion: Option<&'static str>,
}

impl LambdaError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            suggestion: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, INVALID_PARAMETERS, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, OBJECT_DOES_NOT_EXIST, message)
    }

    pub fn unauthorized() -> Self {
        Self {
            suggestion: Some("Create a new API key and try again."),
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                INVALID_API_KEY,
                "API key is invalid, expired, or deleted.",
            )
        }
    }

    /// 400 on launch when the region has none of the type left.
    pub fn insufficient_capacity() -> Self {
        Self {
            suggestion: Some("Choose an instance type with more availability, or try again later."),
            ..Self::new(
                StatusCode::BAD_REQUEST,
                INSUFFICIENT_CAPACITY,
                "Not enough capacity to fulfill launch request.",
            )
        }
    }
}

impl IntoResponse for LambdaError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "suggestion": self.suggestion,
            }
        });
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body; any failure (syntax, a missing or unknown field) is the API's
/// `global/invalid-parameters`, never axum's plain-text rejection.
pub fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, LambdaError> {
    serde_json::from_slice(body).map_err(|e| LambdaError::invalid(format!("Invalid request: {e}")))
}

pub async fn route_not_found() -> LambdaError {
    LambdaError::not_found("Not found")
}

pub async fn method_not_allowed() -> LambdaError {
    LambdaError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        INVALID_PARAMETERS,
        "Method not allowed",
    )
}
