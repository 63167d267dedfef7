//! Conformance to Lambda Cloud's OpenAPI document, with `fake_datacrunch`'s checker: in test
//! mode every `/api/v1` request is checked against its operation's request schema and every
//! response against the schema documented for its status (see `fake_datacrunch::conformance`).
//!
//! The document (v1.4.0, YAML) is read from `LAMBDA_OPENAPI` or, by default, from the steering
//! repository's `shared/docs/providers/lambda-cloud.openapi.yaml` beside this checkout: like
//! Verda's, a copy of the public document is not committed here. Without it the checks are off.
//!
//! Where newer API versions (and the fake) go beyond v1.4.0, the document is extended, and the
//! extensions are listed in [`DOC_GAPS`].

use std::sync::OnceLock;

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use fake_datacrunch::{
    conformance::{check_with, Dialect, Spec},
    state::AppState,
};
use serde_json::{json, Value};

use crate::error::{self, LambdaError};

pub const DEFAULT_DOCUMENT_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/docs/providers/lambda-cloud.openapi.yaml"
);

/// Differences from v1.4.0 the fake (and the client) follow, each from newer versions.
pub const DOC_GAPS: &[&str] = &[
    "launch takes user_data (a cloud-init script) in newer versions: added to the request",
    "instance status terminating and preempted exist in newer versions: added to the enum",
    "error codes global/quota-exceeded and global/duplicate exist in newer versions: added",
    "a 429 (the launch rate limit) is not documented: allowed on launch with the error envelope",
];

fn apply_doc_gaps(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    if let Some(Value::Object(props)) = schemas.pointer_mut("/launchInstance_request/properties") {
        props.insert(
            "user_data".into(),
            json!({ "type": "string", "maxLength": 1_048_576 }),
        );
    }
    if let Some(Value::Array(statuses)) = schemas.pointer_mut("/instance/properties/status/enum") {
        statuses.push(json!("terminating"));
        statuses.push(json!("preempted"));
    }
    if let Some(Value::Array(codes)) = schemas.pointer_mut("/errorCode/enum") {
        codes.push(json!(error::QUOTA_EXCEEDED));
        codes.push(json!(error::DUPLICATE));
    }
    if let Some(responses) = doc.pointer_mut("/paths/~1instance-operations~1launch/post/responses")
    {
        responses["429"] = json!({
            "description": "Too many launches.",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/errorResponseBody" } } },
        });
    }
}

/// The compiled document, once per process, if it can be found.
pub fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path =
            std::env::var("LAMBDA_OPENAPI").unwrap_or_else(|_| DEFAULT_DOCUMENT_PATH.into());
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(parse(&text).expect("Lambda's OpenAPI document compiles")),
            Err(e) => {
                tracing::warn!(%path, error = %e, "conformance checks are off: Lambda's OpenAPI document is not there");
                None
            }
        }
    })
    .as_ref()
}

pub fn parse(yaml: &str) -> Result<Spec, String> {
    let mut doc: Value = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    apply_doc_gaps(&mut doc);
    Spec::from_document(doc, "#/components/schemas/errorResponseBody")
}

fn refuse(status: StatusCode, message: String) -> Response {
    let code = if status == StatusCode::BAD_REQUEST {
        error::INVALID_PARAMETERS
    } else {
        error::UNKNOWN
    };
    LambdaError::new(status, code, message).into_response()
}

/// `/api/v1`; the document's paths are written below its server URL (`/instances`, …).
pub const LAMBDA: Dialect = Dialect {
    prefix: "/api/v1/",
    strip: "/api/v1",
    spec,
    refuse,
};

pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check_with(&LAMBDA, state, req, next).await
}
