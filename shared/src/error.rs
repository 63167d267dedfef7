//! The one error type of the public API, and the one place it becomes an HTTP response.
//!
//! Messages the user guide quotes (`Invalid or missing API key`, `Insufficient scope`, …) are
//! written here exactly once.

use http::StatusCode;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid or missing API key")]
    Unauthorized,
    #[error("Insufficient scope")]
    InsufficientScope { required: &'static str },
    #[error("Insufficient credits")]
    InsufficientCredits { required: String, available: String },
    /// A submit whose hold would take the month's spend past the account's limit (issue 11).
    #[error("Monthly spend limit reached: this month's spend is {spent} of your {limit} credit limit and this job needs {required} more. Raise the limit under Budgets in the dashboard, or wait for next month.")]
    MonthlySpendLimitReached {
        limit: String,
        spent: String,
        required: String,
    },
    /// A job's `max_cost` cannot pay for the least a job costs (see `jobs::model::MaxCost`).
    #[error("max_cost is below the minimum a job of this type can cost")]
    InsufficientBudget { max_cost: String, minimum: String },
    /// `SSH key not found`: 400 when a job names it, 404 when it is the resource itself.
    #[error("SSH key not found")]
    SshKeyNotFound { id: String, as_resource: bool },
    #[error("No available instances")]
    NoAvailableInstances {
        instance_type: String,
        location: Option<String>,
    },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("Malformed JSON body: {0}")]
    MalformedJson(String),
    /// A field is missing, unknown or holds an invalid value.
    #[error("{message}")]
    Validation { field: String, message: String },
    #[error("Request body too large: the limit is {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("Route not found")]
    RouteNotFound,
    #[error("Method not allowed")]
    MethodNotAllowed { allowed: String },
    /// A state conflict; `code` is the machine-readable reason.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The GPU provider could not answer and nothing cached could stand in.
    #[error("The GPU provider is unavailable right now; please retry shortly")]
    ProviderUnavailable { detail: String },
    /// A Stripe webhook whose `Stripe-Signature` does not prove it came from Stripe.
    #[error("Invalid Stripe signature: {0}")]
    InvalidSignature(String),
    /// The payment provider (Stripe) could not be reached or refused us; nothing was charged.
    #[error("Payments are unavailable right now; please retry shortly")]
    PaymentsUnavailable { detail: String },
    /// The GPU provider's rate limit (its 429): nothing failed, the same request works after
    /// `retry_after_secs` (sent as `Retry-After`).
    #[error("The GPU provider is busy right now; please retry after {retry_after_secs} seconds")]
    ProviderBusy { retry_after_secs: u32 },
    #[error("Internal error")]
    Internal(String),
}

impl ApiError {
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Unauthorized => StatusCode::UNAUTHORIZED,
            InsufficientScope { .. } => StatusCode::FORBIDDEN,
            InsufficientCredits { .. }
            | MonthlySpendLimitReached { .. }
            | InsufficientBudget { .. } => StatusCode::PAYMENT_REQUIRED,
            SshKeyNotFound { as_resource, .. } => {
                if *as_resource {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::BAD_REQUEST
                }
            }
            NoAvailableInstances { .. } => StatusCode::CONFLICT,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            MalformedJson(_) | Validation { .. } => StatusCode::BAD_REQUEST,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            NotFound(_) | RouteNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Conflict { .. } => StatusCode::CONFLICT,
            ProviderUnavailable { .. } | PaymentsUnavailable { .. } => StatusCode::BAD_GATEWAY,
            InvalidSignature(_) => StatusCode::BAD_REQUEST,
            ProviderBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            Unauthorized => "unauthorized",
            InsufficientScope { .. } => "insufficient_scope",
            InsufficientCredits { .. } => "insufficient_credits",
            MonthlySpendLimitReached { .. } => "monthly_spend_limit_reached",
            InsufficientBudget { .. } => "insufficient_budget",
            SshKeyNotFound { .. } => "ssh_key_not_found",
            NoAvailableInstances { .. } => "no_available_instances",
            UnsupportedMediaType => "unsupported_media_type",
            MalformedJson(_) => "malformed_json",
            Validation { .. } => "validation_error",
            PayloadTooLarge { .. } => "payload_too_large",
            NotFound(_) => "not_found",
            RouteNotFound => "route_not_found",
            MethodNotAllowed { .. } => "method_not_allowed",
            Conflict { code, .. } => code,
            ProviderUnavailable { .. } => "provider_unavailable",
            InvalidSignature(_) => "invalid_signature",
            PaymentsUnavailable { .. } => "payments_unavailable",
            ProviderBusy { .. } => "provider_busy",
            Internal(_) => "internal_error",
        }
    }

    /// Seconds after which retrying makes sense, for a `Retry-After` header.
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ApiError::Conflict {
                code: "idempotency_in_progress" | "busy",
                ..
            } => Some(1),
            ApiError::ProviderBusy { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }

    fn details(&self) -> Option<Value> {
        use ApiError::*;
        match self {
            InsufficientScope { required } => Some(json!({ "required_scope": required })),
            InsufficientCredits {
                required,
                available,
            } => Some(json!({ "required": required, "available": available })),
            MonthlySpendLimitReached {
                limit,
                spent,
                required,
            } => Some(json!({ "limit": limit, "spent": spent, "required": required })),
            InsufficientBudget { max_cost, minimum } => {
                Some(json!({ "field": "max_cost", "max_cost": max_cost, "minimum": minimum }))
            }
            SshKeyNotFound { id, .. } => Some(json!({ "ssh_key_id": id })),
            NoAvailableInstances {
                instance_type,
                location,
            } => Some(json!({ "instance_type": instance_type, "location": location })),
            Validation { field, .. } => Some(json!({ "field": field })),
            MethodNotAllowed { allowed } => Some(json!({ "allowed": allowed })),
            _ => None,
        }
    }

    /// The JSON body every error response carries.
    pub fn body(&self, request_id: &str) -> Value {
        let mut body = json!({
            "error": self.to_string(),
            "code": self.code(),
            "request_id": request_id,
        });
        if let Some(details) = self.details() {
            body["details"] = details;
        }
        body
    }
}

impl ApiError {
    /// A provider that could not serve a request: 503 `provider_busy` with its `Retry-After`
    /// when it was its rate limit, else 502 `provider_unavailable`.
    pub fn provider_unavailable(e: &crate::provider::ProviderError) -> Self {
        match e.retry_after() {
            Some(wait) => ApiError::ProviderBusy {
                // Whole seconds, at least one: retrying sooner is refused again.
                retry_after_secs: u32::try_from(wait.as_secs_f64().ceil() as u64)
                    .unwrap_or(u32::MAX)
                    .max(1),
            },
            None => ApiError::ProviderUnavailable {
                detail: e.to_string(),
            },
        }
    }
}

/// A provider failure as the API shows it: the provider's refusals are the caller's 409, its
/// rate limit a 503 with `Retry-After`, the rest a 502 that says to retry. Capacity is answered
/// by the callers that know the context.
impl From<crate::provider::ProviderError> for ApiError {
    fn from(e: crate::provider::ProviderError) -> Self {
        use crate::provider::ProviderError;
        match e {
            ProviderError::InvalidRequest(message) => ApiError::Conflict {
                code: "provider_rejected",
                message: format!("The GPU provider refused the request: {message}"),
            },
            other => ApiError::provider_unavailable(&other),
        }
    }
}

#[cfg(test)]
mod provider_error_tests {
    use super::*;
    use crate::provider::ProviderError;
    use std::time::Duration;

    #[test]
    fn a_provider_rate_limit_is_a_503_with_its_retry_after() {
        let e = ApiError::from(ProviderError::RateLimited {
            retry_after: Duration::from_millis(41_200),
        });
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "provider_busy");
        assert_eq!(e.retry_after_secs(), Some(42), "rounded up");
        let body = e.body("req-1");
        assert_eq!(body["code"], "provider_busy");
        assert!(body["error"].as_str().unwrap().contains("42 seconds"));

        let short = ApiError::from(ProviderError::RateLimited {
            retry_after: Duration::from_millis(10),
        });
        assert_eq!(short.retry_after_secs(), Some(1), "never Retry-After: 0");

        // Other outages stay 502 without Retry-After; refusals stay 409.
        let down = ApiError::from(ProviderError::Timeout);
        assert_eq!(down.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(down.code(), "provider_unavailable");
        assert_eq!(down.retry_after_secs(), None);
        let refused = ApiError::from(ProviderError::InvalidRequest("bad key".into()));
        assert_eq!(refused.code(), "provider_rejected");
    }
}
