//! Stripe's error envelope: `{"error": {"type", "code", "message", "param"}}` with the status
//! Stripe uses (400 invalid request, 401 bad key, 402 card error, 404 missing resource).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

#[derive(Debug, Clone)]
pub struct StripeError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub message: String,
    pub param: Option<String>,
}

impl StripeError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        StripeError {
            status,
            kind,
            code: None,
            message: message.into(),
            param: None,
        }
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn missing(param: &str) -> Self {
        Self::invalid(format!("Missing required param: {param}."))
            .code("parameter_missing")
            .param(param)
    }

    pub fn unknown_param(param: &str) -> Self {
        Self::invalid(format!("Received unknown parameter: {param}"))
            .code("parameter_unknown")
            .param(param)
    }

    pub fn bad_value(param: &str, message: impl Into<String>) -> Self {
        Self::invalid(message)
            .code("parameter_invalid_integer")
            .param(param)
    }

    /// 401: Stripe answers a missing or wrong key with an `invalid_request_error` and no code.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
    }

    /// 404 `resource_missing`, e.g. "No such checkout.session: 'cs_…'".
    pub fn no_such(object: &str, id: &str, param: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("No such {object}: '{id}'"),
        )
        .code("resource_missing")
        .param(param)
    }

    /// 402 `card_error` (a declined card).
    pub fn card_declined() -> Self {
        Self::new(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "Your card was declined.",
        )
        .code("card_declined")
    }

    /// 500 `api_error`: something went wrong on Stripe's end.
    pub fn api_error() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "An unknown error occurred",
        )
    }

    pub fn idempotency_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "idempotency_error",
            "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than the one used for the original request.",
        )
    }

    pub fn body(&self) -> Value {
        let mut error = Map::new();
        error.insert("type".into(), json!(self.kind));
        error.insert("message".into(), json!(self.message));
        if let Some(code) = self.code {
            error.insert("code".into(), json!(code));
            error.insert(
                "doc_url".into(),
                json!(format!(
                    "https://stripe.com/docs/error-codes/{}",
                    code.replace('_', "-")
                )),
            );
        }
        if let Some(param) = &self.param {
            error.insert("param".into(), json!(param));
        }
        json!({ "error": error })
    }
}

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

pub async fn route_not_found(uri: axum::http::Uri) -> StripeError {
    StripeError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!("Unrecognized request URL (GET: {}).", uri.path()),
    )
}
