//! Conformance to Verda's published OpenAPI document.
//!
//! The document is read at start-up from `VERDA_OPENAPI` or, by default, from the steering
//! repository's `shared/docs/providers/verda.openapi.json` beside this checkout: a copy of a
//! public document may not be committed to this repository. Without it the checks are off (a
//! WARN line says so) and the tests that need it are `#[ignore]`d with that reason.
//!
//! In test mode every `/v1` request the fake receives is checked against the request schema of
//! its operation (the path and method exist, required query and header parameters are there,
//! query values have the documented type, the JSON body validates), and every response the fake
//! sends is checked against the response schema documented for its status code. The point is
//! that the fake must not be more lenient than the real API (or the suite is green while
//! production breaks), nor answer anything the real API would not.
//!
//! Modes ([`ConformanceMode`]): `off`; `report` (a violation is logged at ERROR with the
//! `conformance:` prefix and counted in `GET /admin/state`, and the exchange goes on: for the
//! end-to-end suites, which run today's client); `strict` (the same, and a request violation is
//! answered 400 `invalid_request` naming it, a response violation replaced by a 500 naming it:
//! for the fake's own tests).
//!
//! OpenAPI specifics handled here rather than by hand-written checks: `$ref` into
//! `#/components/...` (each schema is compiled as a document that carries the whole
//! `components` object under the same pointer), `nullable: true` (OpenAPI 3.0 style, kept by
//! this 3.1 document: rewritten to `anyOf [schema, null]`), `format: uuid` (validated), query
//! values (text, coerced to the parameter's type before validation).
//!
//! Where the document and the real API are known to disagree, the fake follows the real API
//! and the deviation is listed once, in [`DOC_GAPS`], so that it stays visible.

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    sync::OnceLock,
};

use axum::{
    body::{to_bytes, Body, Bytes},
    extract::{Query, Request, State},
    http::{header::CONTENT_TYPE, HeaderMap, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jsonschema::{Draft, Validator};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{error::ApiError, state::AppState};

/// Where the provider's OpenAPI document is looked for when `VERDA_OPENAPI` is not set.
pub const DEFAULT_DOCUMENT_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/docs/providers/verda.openapi.json"
);

/// Why a test needs the document (for `#[ignore]`).
pub const NEEDS_DOCUMENT: &str =
    "needs Verda's OpenAPI document in ../shared/docs/providers/verda.openapi.json";

/// How the fake treats violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ConformanceMode {
    /// No checks.
    Off,
    /// Log and count violations; answer as if there were none.
    Report,
    /// Log and count; refuse a violating request (400), replace a violating response (500).
    Strict,
}

impl fmt::Display for ConformanceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConformanceMode::Off => "off",
            ConformanceMode::Report => "report",
            ConformanceMode::Strict => "strict",
        })
    }
}

/// Known differences between the document and the real API, applied to the document when it
/// is loaded. Each is backed by what the official SDKs do against the live API.
pub const DOC_GAPS: &[&str] = &[
    "GET /v1/ssh-keys/{id}, /v1/sshkeys/{id} and /v1/scripts/{id} answer a one-element array \
     (the official SDKs read element 0); the document says a bare object: both are accepted",
    "startup_script_id of an instance deployed without a script is null (nullable here)",
    "the error envelope's code enum lacks rate_limit_exceeded, which the document's error table \
     and rate-limit section use for 429: added",
];

/// Operations whose 200 body may be a one-element array of the documented object.
const ONE_ELEMENT_ARRAY_OPS: &[&str] = &[
    "SshkeysController_getKey",
    "DeprecatedSshkeysController_getKey",
    "ScriptsController_getScript",
];

/// Counters and the most recent violations, for `GET /admin/state`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ConformanceLog {
    pub requests_checked: u64,
    pub responses_checked: u64,
    pub violations: u64,
    /// Calls to operations the document marks deprecated (e.g. `/v1/sshkeys`): allowed, but
    /// a client should move off them; logged at WARN, not violations.
    pub deprecated_calls: BTreeMap<String, u64>,
    /// The last [`RECENT`] violations, oldest first.
    pub recent: VecDeque<Value>,
}

const RECENT: usize = 200;

impl ConformanceLog {
    fn record(&mut self, entry: Value) {
        self.violations += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(entry);
    }
}

struct QueryParam {
    name: String,
    required: bool,
    /// The parameter's `type` (query values arrive as text and are coerced to it).
    kind: String,
    validator: Validator,
}

struct Operation {
    id: String,
    deprecated: bool,
    method: Method,
    template: String,
    /// Path segments; `None` is a `{parameter}`.
    segments: Vec<Option<String>>,
    query: Vec<QueryParam>,
    /// Required header parameters, lower case.
    headers: Vec<String>,
    /// `(required, schema)` of the JSON request body.
    body: Option<(bool, Validator)>,
    /// Documented statuses; the validator of the JSON body when the document gives a schema.
    responses: BTreeMap<u16, Option<Validator>>,
}

/// The compiled document.
pub struct Spec {
    operations: Vec<Operation>,
    /// The error envelope, for error statuses an operation does not document.
    error: Validator,
}

/// The compiled document (compiled once per process), if it can be found.
pub fn spec() -> Option<&'static Spec> {
    static SPEC: OnceLock<Option<Spec>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = std::env::var("VERDA_OPENAPI").unwrap_or_else(|_| DEFAULT_DOCUMENT_PATH.into());
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(Spec::parse(&text).expect("the provider's OpenAPI document compiles")),
            Err(e) => {
                tracing::warn!(%path, error = %e, "conformance checks are off: the provider's OpenAPI document is not there");
                None
            }
        }
    })
    .as_ref()
}

/// Replaces a request body or response given as `$ref` to `#/components/requestBodies/…` or
/// `#/components/responses/…` (as Lambda's document writes them) by what it points to: the
/// checks read `content` directly. Schema `$ref`s stay (the validator resolves those).
fn inline_component_refs(doc: &mut Value) {
    let components = doc["components"].clone();
    let resolve = |v: &mut Value| {
        let target = v
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/components/"))
            .and_then(|p| components.pointer(&format!("/{p}")))
            .cloned();
        if let Some(t) = target {
            *v = t;
        }
    };
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            if let Some(rb) = op.get_mut("requestBody") {
                resolve(rb);
            }
            if let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) {
                responses.values_mut().for_each(resolve);
            }
        }
    }
}

/// Rewrites OpenAPI's `nullable: true` into JSON Schema.
fn desugar_nullable(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for child in m.values_mut() {
                desugar_nullable(child);
            }
            if m.remove("nullable") == Some(Value::Bool(true)) {
                let inner = Value::Object(std::mem::take(m));
                m.insert("anyOf".into(), json!([inner, { "type": "null" }]));
            }
        }
        Value::Array(items) => items.iter_mut().for_each(desugar_nullable),
        _ => {}
    }
}

/// Applies [`DOC_GAPS`] that are schema changes.
fn apply_doc_gaps(doc: &mut Value) {
    let schemas = &mut doc["components"]["schemas"];
    if let Some(s) =
        schemas.pointer_mut("/GetInstanceResponsePublicApiDto/properties/startup_script_id")
    {
        s["nullable"] = json!(true);
    }
    if let Some(Value::Array(codes)) =
        schemas.pointer_mut("/PublicApiErrorResponseDto/properties/code/enum")
    {
        codes.push(json!("rate_limit_exceeded"));
    }
}

impl Spec {
    /// Verda's document (JSON), with [`DOC_GAPS`] applied.
    pub fn parse(text: &str) -> Result<Spec, String> {
        let mut doc: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        apply_doc_gaps(&mut doc);
        Spec::from_document(doc, "#/components/schemas/PublicApiErrorResponseDto")
    }

    /// Any provider's OpenAPI document (3.0 or 3.1, as JSON): paths as the document writes
    /// them, `error_ref` the schema of an error body an operation does not document.
    pub fn from_document(mut doc: Value, error_ref: &str) -> Result<Spec, String> {
        inline_component_refs(&mut doc);
        desugar_nullable(&mut doc);
        let components = doc["components"].clone();
        let compile = |schema: &Value| -> Result<Validator, String> {
            let mut root = schema.clone();
            let Some(m) = root.as_object_mut() else {
                return Err(format!("schema is not an object: {schema}"));
            };
            m.insert("components".into(), components.clone());
            jsonschema::options()
                .with_draft(Draft::Draft202012)
                .should_validate_formats(true)
                .build(&root)
                .map_err(|e| format!("{e}: {schema}"))
        };
        let error = compile(&json!({ "$ref": error_ref }))?;
        let mut operations = Vec::new();
        let paths = doc["paths"].as_object().ok_or("no paths")?;
        for (template, item) in paths {
            let item = item.as_object().ok_or("path item is not an object")?;
            for (method, op) in item {
                let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .map_err(|e| e.to_string())?;
                let mut query = Vec::new();
                let mut headers = Vec::new();
                for p in op["parameters"].as_array().into_iter().flatten() {
                    let name = p["name"].as_str().unwrap_or_default().to_string();
                    let required = p["required"].as_bool().unwrap_or(false);
                    match p["in"].as_str() {
                        Some("query") => query.push(QueryParam {
                            kind: p["schema"]["type"].as_str().unwrap_or("string").into(),
                            validator: compile(&p["schema"])?,
                            name,
                            required,
                        }),
                        // `cf-connecting-ip` is set by the provider's own proxy (Cloudflare),
                        // never by a client.
                        Some("header") if required && name != "cf-connecting-ip" => {
                            headers.push(name.to_ascii_lowercase())
                        }
                        _ => {}
                    }
                }
                let body = match op.get("requestBody") {
                    None => None,
                    Some(rb) => Some((
                        rb["required"].as_bool().unwrap_or(false),
                        compile(&rb["content"]["application/json"]["schema"])?,
                    )),
                };
                let mut responses = BTreeMap::new();
                for (status, r) in op["responses"].as_object().into_iter().flatten() {
                    let status: u16 = status.parse().map_err(|_| format!("status {status}"))?;
                    let schema = r.pointer("/content/application~1json/schema");
                    responses.insert(status, schema.map(compile).transpose()?);
                }
                operations.push(Operation {
                    id: op["operationId"].as_str().unwrap_or_default().to_string(),
                    deprecated: op["deprecated"].as_bool().unwrap_or(false),
                    method,
                    template: template.clone(),
                    segments: template
                        .split('/')
                        .map(|s| (!s.starts_with('{')).then(|| s.to_string()))
                        .collect(),
                    query,
                    headers,
                    body,
                    responses,
                });
            }
        }
        Ok(Spec { operations, error })
    }

    /// The operation of `method path`: the documented path with the most literal segments that
    /// matches (so `/v1/volumes/trash` wins over `/v1/volumes/{volume_id}`).
    fn find(&self, method: &Method, path: &str) -> Option<&Operation> {
        let segs: Vec<&str> = path.split('/').collect();
        self.operations
            .iter()
            .filter(|op| op.method == method && op.segments.len() == segs.len())
            .filter(|op| {
                op.segments.iter().zip(&segs).all(|(t, s)| match t {
                    Some(lit) => lit == s,
                    None => !s.is_empty(),
                })
            })
            .max_by_key(|op| op.segments.iter().filter(|s| s.is_some()).count())
    }
}

/// The schema errors of `instance`, without the offending values: they go to logs and to
/// `/admin/state`, and a request body may hold a secret (the token endpoint's).
fn schema_errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at '{}'", e.masked(), e.instance_path()))
        .collect()
}

fn coerce(kind: &str, values: &[String]) -> Result<Value, String> {
    let one = |s: &str| -> Result<Value, String> {
        match kind {
            "number" | "integer" => s
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .ok_or_else(|| format!("'{s}' is not a number")),
            "boolean" => match s {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                _ => Err(format!("'{s}' is not a boolean")),
            },
            _ => Ok(Value::String(s.to_string())),
        }
    };
    if kind == "array" {
        return Ok(Value::Array(
            values.iter().map(|s| Value::String(s.clone())).collect(),
        ));
    }
    one(values.last().map(String::as_str).unwrap_or_default())
}

impl Operation {
    fn name(&self) -> String {
        format!("{} {} ({})", self.method, self.template, self.id)
    }

    fn check_request(
        &self,
        headers: &HeaderMap,
        query: &[(String, String)],
        body: &Bytes,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for h in &self.headers {
            if !headers.contains_key(h.as_str()) {
                errors.push(format!("required header '{h}' is missing"));
            }
        }
        for (name, _) in query {
            if !self.query.iter().any(|p| &p.name == name) {
                errors.push(format!("query parameter '{name}' is not documented"));
            }
        }
        for p in &self.query {
            let values: Vec<String> = query
                .iter()
                .filter(|(n, _)| n == &p.name)
                .map(|(_, v)| v.clone())
                .collect();
            if values.is_empty() {
                if p.required {
                    errors.push(format!("required query parameter '{}' is missing", p.name));
                }
                continue;
            }
            match coerce(&p.kind, &values) {
                Err(e) => errors.push(format!("query parameter '{}': {e}", p.name)),
                Ok(v) => errors.extend(
                    schema_errors(&p.validator, &v)
                        .into_iter()
                        .map(|e| format!("query parameter '{}': {e}", p.name)),
                ),
            }
        }
        let empty = body.iter().all(u8::is_ascii_whitespace);
        match &self.body {
            None if !empty => errors.push("a request body is not documented here".into()),
            None => {}
            Some((true, _)) if empty => errors.push("the request body is required".into()),
            Some((_, _)) if empty => {}
            Some((_, validator)) => {
                let json_type = headers
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with("application/json"));
                if !json_type {
                    errors.push("Content-Type must be application/json".into());
                }
                match serde_json::from_slice::<Value>(body) {
                    Err(e) => errors.push(format!("the body is not JSON: {e}")),
                    Ok(v) => errors.extend(
                        schema_errors(validator, &v)
                            .into_iter()
                            .map(|e| format!("body: {e}")),
                    ),
                }
            }
        }
        errors
    }

    fn check_response(
        &self,
        spec: &Spec,
        status: StatusCode,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Vec<String> {
        let code = status.as_u16();
        let parsed = || serde_json::from_slice::<Value>(body);
        let mut errors = Vec::new();
        if code == 429 && !headers.contains_key("retry-after") {
            errors.push("a 429 must carry Retry-After".into());
        }
        match self.responses.get(&code) {
            Some(Some(validator)) => match parsed() {
                Err(e) => errors.push(format!("status {code}: the body is not JSON: {e}")),
                Ok(v) => {
                    let v = match v {
                        Value::Array(mut items)
                            if items.len() == 1
                                && ONE_ELEMENT_ARRAY_OPS.contains(&self.id.as_str()) =>
                        {
                            items.pop().expect("one element")
                        }
                        v => v,
                    };
                    errors.extend(
                        schema_errors(validator, &v)
                            .into_iter()
                            .map(|e| format!("status {code} body: {e}")),
                    );
                }
            },
            Some(None) if code == 204 && !body.is_empty() => {
                errors.push("a 204 must have no body".into())
            }
            Some(None) if code < 400 => {}
            // An error status, documented without a schema or not documented: the envelope.
            _ if code >= 400 => match parsed() {
                Err(e) => errors.push(format!("status {code}: the error body is not JSON: {e}")),
                Ok(v) => errors.extend(
                    schema_errors(&spec.error, &v)
                        .into_iter()
                        .map(|e| format!("status {code} error body: {e}")),
                ),
            },
            _ => errors.push(format!(
                "status {code} is not documented for this operation"
            )),
        }
        errors
    }
}

fn report(
    state: &AppState,
    direction: &str,
    method: &Method,
    uri: &str,
    op: Option<&Operation>,
    errors: &[String],
) {
    let op_name = op.map(Operation::name).unwrap_or_default();
    tracing::error!(
        "conformance: {direction} {method} {uri} {op_name}: {}",
        errors.join("; ")
    );
    state.lock().conformance.record(json!({
        "direction": direction,
        "method": method.as_str(),
        "uri": uri,
        "operation": op.map(|o| o.id.clone()),
        "errors": errors,
    }));
}

/// Largest body buffered for checking (far above anything the provider API carries).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What differs between providers in the checks: which requests are the provider API's, how
/// their paths are written in the document, where the document is, and the provider's own error
/// envelope for the fake's refusals.
pub struct Dialect {
    /// Requests under this prefix are checked.
    pub prefix: &'static str,
    /// Removed from the request path before looking it up (the document's server URL part).
    pub strip: &'static str,
    pub spec: fn() -> Option<&'static Spec>,
    /// A refusal: 400 for a request violation, 500 for a response violation.
    pub refuse: fn(StatusCode, String) -> Response,
}

fn verda_refusal(status: StatusCode, message: String) -> Response {
    if status == StatusCode::BAD_REQUEST {
        ApiError::invalid(message).into_response()
    } else {
        ApiError::server_error(status, message).into_response()
    }
}

/// Verda's API: `/v1`, paths written with `/v1` in the document.
pub const VERDA: Dialect = Dialect {
    prefix: "/v1/",
    strip: "",
    spec,
    refuse: verda_refusal,
};

/// Middleware around the whole router; checks `/v1` exchanges only.
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check_with(&VERDA, state, req, next).await
}

/// [`check`] for any provider's API served over this state.
pub async fn check_with(dialect: &Dialect, state: AppState, req: Request, next: Next) -> Response {
    let mode = state.config.conformance;
    if mode == ConformanceMode::Off || !req.uri().path().starts_with(dialect.prefix) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let body = match to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return (dialect.refuse)(StatusCode::BAD_REQUEST, format!("Unreadable body: {e}"))
        }
    };
    let uri = parts.uri.to_string();
    let query: Vec<(String, String)> = Query::try_from_uri(&parts.uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let Some(spec) = (dialect.spec)() else {
        return next.run(Request::from_parts(parts, Body::from(body))).await;
    };
    let path = parts.uri.path();
    let op = spec.find(
        &parts.method,
        path.strip_prefix(dialect.strip).unwrap_or(path),
    );
    let errors = match op {
        None => vec!["no such operation in the provider's OpenAPI document".to_string()],
        Some(op) => op.check_request(&parts.headers, &query, &body),
    };
    {
        let mut g = state.lock();
        g.conformance.requests_checked += 1;
        if let Some(op) = op.filter(|op| op.deprecated) {
            tracing::warn!("conformance: deprecated operation {}", op.name());
            *g.conformance.deprecated_calls.entry(op.name()).or_default() += 1;
        }
    }
    if !errors.is_empty() {
        report(&state, "request", &parts.method, &uri, op, &errors);
        if mode == ConformanceMode::Strict {
            return (dialect.refuse)(
                StatusCode::BAD_REQUEST,
                format!("conformance: {}", errors.join("; ")),
            );
        }
    }
    let method = parts.method.clone();
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let Some(op) = op else {
        return response;
    };
    let (rparts, rbody) = response.into_parts();
    let rbody = match to_bytes(rbody, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return (dialect.refuse)(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    state.lock().conformance.responses_checked += 1;
    let errors = op.check_response(spec, rparts.status, &rparts.headers, &rbody);
    if !errors.is_empty() {
        report(&state, "response", &method, &uri, Some(op), &errors);
        if mode == ConformanceMode::Strict {
            return (dialect.refuse)(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("conformance: response: {}", errors.join("; ")),
            );
        }
    }
    Response::from_parts(rparts, Body::from(rbody))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(method: Method, path: &str) -> &'static Operation {
        spec()
            .expect(NEEDS_DOCUMENT)
            .find(&method, path)
            .unwrap_or_else(|| panic!("{method} {path}"))
    }

    #[test]
    #[ignore = "needs Verda\'s OpenAPI document in ../shared/docs/providers/verda.openapi.json"]
    fn the_document_compiles_and_paths_match() {
        assert_eq!(
            op(Method::GET, "/v1/volumes/trash").id,
            "VolumesController_getVolumesInTrash"
        );
        assert_eq!(
            op(Method::GET, "/v1/volumes/abc").id,
            "VolumesController_getVolumeById"
        );
        assert_eq!(
            op(Method::PUT, "/v1/instances").id,
            "InstancesController_performActions"
        );
        assert!(spec()
            .expect(NEEDS_DOCUMENT)
            .find(&Method::PATCH, "/v1/instances")
            .is_none());
        assert!(spec()
            .expect(NEEDS_DOCUMENT)
            .find(&Method::GET, "/v1/nothing")
            .is_none());
    }

    fn body_errors(method: Method, path: &str, body: Value) -> Vec<String> {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert("user-agent", "t".parse().unwrap());
        op(method, path).check_request(&h, &[], &Bytes::from(body.to_string()))
    }

    #[test]
    #[ignore = "needs Verda\'s OpenAPI document in ../shared/docs/providers/verda.openapi.json"]
    fn delete_with_null_volume_ids_is_refused() {
        let id = uuid::Uuid::new_v4().to_string();
        let ok =
            json!({"id": [id], "action": "delete", "volume_ids": [id], "delete_permanently": true});
        assert!(body_errors(Method::PUT, "/v1/instances", ok).is_empty());
        let bad =
            json!({"id": [id], "action": "delete", "volume_ids": null, "delete_permanently": true});
        let errs = body_errors(Method::PUT, "/v1/instances", bad);
        assert!(errs.iter().any(|e| e.contains("volume_ids")), "{errs:?}");
        let not_uuid = json!({"id": "x", "action": "delete"});
        assert!(!body_errors(Method::PUT, "/v1/instances", not_uuid).is_empty());
    }

    #[test]
    #[ignore = "needs Verda\'s OpenAPI document in ../shared/docs/providers/verda.openapi.json"]
    fn nullable_and_query_types() {
        let o = op(Method::GET, "/v1/scripts");
        let q = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let h = HeaderMap::new();
        assert!(o
            .check_request(&h, &q("pageSize", "100"), &Bytes::new())
            .is_empty());
        assert!(!o
            .check_request(&h, &q("pageSize", "ten"), &Bytes::new())
            .is_empty());
        assert!(!o
            .check_request(&h, &q("orderDirection", "up"), &Bytes::new())
            .is_empty());
        assert!(!o
            .check_request(&h, &q("limit", "5"), &Bytes::new())
            .is_empty());
        let keys = op(Method::GET, "/v1/ssh-keys");
        let key = json!([{"id": "a", "name": "n", "key": "k", "fingerprint": null, "created_by_user_id": null}]);
        let errs = keys.check_response(
            spec().expect(NEEDS_DOCUMENT),
            StatusCode::OK,
            &HeaderMap::new(),
            &Bytes::from(key.to_string()),
        );
        assert!(errs.is_empty(), "{errs:?}");
        let missing = json!([{"id": "a", "name": "n", "key": "k"}]);
        let errs = keys.check_response(
            spec().expect(NEEDS_DOCUMENT),
            StatusCode::OK,
            &HeaderMap::new(),
            &Bytes::from(missing.to_string()),
        );
        assert!(!errs.is_empty());
    }
}
