//! The request/response boundary every function shares: request ids, routing, authentication,
//! scope checks, JSON parsing with clear errors, and rendering (errors included) in one place.
//!
//! A function's handler is: `let ctx = RequestCtx::begin(req, "jobs", &store).await?` → match on
//! the route → call the domain → `ctx.finish(result)`.

use crate::auth::{bearer_key, Caller};
use crate::error::ApiError;
use crate::routes::{match_route, Access, Matched, RouteName};
use crate::store::Store;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::time::Instant;

/// Largest request body accepted. A job's startup script may be 64 KiB; JSON escaping can
/// double that, so 256 KiB leaves room without inviting abuse.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Items per page of a list route when the caller gives no `limit`, and the most it may ask.
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

/// A successful answer: status, JSON body, extra headers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub headers: Vec<(HeaderName, String)>,
}

impl Reply {
    pub fn ok(body: impl Serialize) -> Reply {
        Reply::with_status(StatusCode::OK, body)
    }
    pub fn created(body: impl Serialize) -> Reply {
        Reply::with_status(StatusCode::CREATED, body)
    }
    pub fn accepted(body: impl Serialize) -> Reply {
        Reply::with_status(StatusCode::ACCEPTED, body)
    }
    pub fn with_status(status: StatusCode, body: impl Serialize) -> Reply {
        Reply {
            status,
            body: serde_json::to_value(body).unwrap_or(Value::Null),
            headers: Vec::new(),
        }
    }
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

/// Everything a handler needs to know about the request it serves.
pub struct RequestCtx {
    pub request: Request,
    pub matched: Matched,
    pub request_id: String,
    caller: Option<Caller>,
    started: Instant,
}

impl RequestCtx {
    /// Routes, authenticates and authorizes the request for `function`. On failure the error is
    /// already rendered as the response to return.
    pub async fn begin(
        request: Request,
        function: &str,
        store: &Store,
    ) -> Result<RequestCtx, Response<Body>> {
        let started = Instant::now();
        let request_id = request_id_of(&request);
        let method = request.method().as_str().to_string();
        let path = request.uri().path().to_string();
        let fail = |e: ApiError| {
            log_outcome(&method, &path, None, &request_id, started, &Err(&e));
            for_method(&method, render_error(&e, &request_id))
        };
        let matched = match match_route(&method, &path) {
            Ok(m) if m.route.function == function => m,
            Ok(_) => return Err(fail(ApiError::RouteNotFound)),
            Err(e) => return Err(fail(e)),
        };
        let caller = match matched.route.access {
            // The dashboard checks its own session; a report proves itself with its token; Stripe
            // with its signature.
            access if !access.needs_api_key() => None,
            access => {
                let header = request
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                let caller = match bearer_key(header) {
                    Ok(key) => store.authenticate(&key).await,
                    Err(e) => Err(e),
                };
                let caller = match caller {
                    Ok(c) => c,
                    Err(e) => return Err(fail(e)),
                };
                if let Access::Scope(scope) = access {
                    if let Err(e) = caller.require(scope) {
                        return Err(fail(e));
                    }
                }
                Some(caller)
            }
        };
        if let Err(e) = only_query_params(&request, matched.route.query) {
            return Err(fail(e));
        }
        Ok(RequestCtx {
            request,
            matched,
            request_id,
            caller,
            started,
        })
    }

    pub fn route(&self) -> RouteName {
        self.matched.route.name
    }

    /// The authenticated caller. Only routes without an API key (`Access::needs_api_key`)
    /// have none.
    pub fn caller(&self) -> &Caller {
        self.caller
            .as_ref()
            .expect("route requires an API key, so begin() authenticated it")
    }

    pub fn path_param(&self, name: &str) -> &str {
        self.matched.param(name)
    }

    /// Header `name`. A header that is present but not visible ASCII is still present: its
    /// UTF-8 text, or U+FFFD when it is not UTF-8, so it fails validation instead of being
    /// taken for absent (an `Idempotency-Key: café` must be a 400, not silently ignored).
    pub fn header(&self, name: &str) -> Option<&str> {
        let value = self.request.headers().get(name)?;
        Some(std::str::from_utf8(value.as_bytes()).unwrap_or("\u{FFFD}"))
    }

    /// Query parameter `name`, percent-decoded (`begin` refused repeated parameters).
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.request.uri().query()?;
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .last()
    }

    /// The `limit` query parameter of a list route: 1–[`MAX_PAGE`], [`DEFAULT_PAGE`] if absent.
    pub fn page_limit(&self) -> Result<usize, ApiError> {
        match self.query("limit") {
            None => Ok(DEFAULT_PAGE),
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    ApiError::validation(
                        "limit",
                        format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                    )
                }),
        }
    }

    /// Raw body bytes, after the size limit.
    pub fn body_bytes(&self) -> Result<&[u8], ApiError> {
        let bytes: &[u8] = self.request.body().as_ref();
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        Ok(bytes)
    }

    /// Parses a JSON body into `T` (which should `deny_unknown_fields`): 415 without
    /// `Content-Type: application/json`, 413 over the limit, 400 naming the field otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let content_type = self.header(CONTENT_TYPE.as_str()).unwrap_or("");
        let media = content_type.split(';').next().unwrap_or("").trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(self.body_bytes()?)
    }

    /// Renders the handler's result and logs one line for the request.
    pub fn finish(&self, result: Result<Reply, ApiError>) -> Response<Body> {
        let method = self.request.method().as_str();
        let path = self.matched.route.path;
        let account = self.caller.as_ref().map(|c| c.account_id.as_str());
        log_outcome(
            method,
            path,
            account,
            &self.request_id,
            self.started,
            &result.as_ref().map(|r| r.status),
        );
        let response = match result {
            Ok(reply) => render(reply, &self.request_id),
            Err(e) => render_error(&e, &self.request_id),
        };
        for_method(method, response)
    }
}

/// A `HEAD` answer is the `GET` answer without its body: same status and headers, with the
/// `Content-Length` the body would have had (RFC 9110 §9.3.2).
pub fn for_method(method: &str, mut response: Response<Body>) -> Response<Body> {
    if method.eq_ignore_ascii_case("HEAD") {
        let length = response.body().as_ref().len();
        *response.body_mut() = Body::Empty;
        response
            .headers_mut()
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Rejects query parameters the route does not know, naming them.
fn only_query_params(request: &Request, allowed: &[&str]) -> Result<(), ApiError> {
    let Some(query) = request.uri().query() else {
        return Ok(());
    };
    let mut seen = std::collections::HashSet::new();
    for (k, _) in form_urlencoded::parse(query.as_bytes()) {
        if allowed.contains(&k.as_ref()) && !seen.insert(k.clone()) {
            // `?status=a&status=b` is ambiguous: refuse it rather than pick one silently.
            return Err(ApiError::validation(
                k.to_string(),
                format!("Query parameter `{k}` is given more than once; give it once"),
            ));
        }
        if !allowed.contains(&k.as_ref()) {
            let expected = if allowed.is_empty() {
                "this route takes none".to_string()
            } else {
                format!("expected one of: {}", allowed.join(", "))
            };
            return Err(ApiError::validation(
                k.to_string(),
                format!("Unknown query parameter `{k}`; {expected}"),
            ));
        }
    }
    Ok(())
}

/// Parses JSON into `T`, turning serde's message into one that names the offending field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::MalformedJson("the body is empty".into()));
    };
    if first != b'{' {
        // serde would map an array onto a struct's fields by position: refuse every body that
        // is not an object, naming what it is.
        return Err(match json_kind(first, bytes) {
            Ok(kind) => ApiError::validation(
                "body",
                format!("The request body must be a JSON object, not {kind}"),
            ),
            Err(e) => ApiError::MalformedJson(strip_position(&e.to_string())),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut *de).map_err(|err| {
        use serde_json::error::Category;
        let path = err.path().to_string();
        let e = err.into_inner();
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedJson(strip_position(&e.to_string()))
            }
            Category::Data => {
                let msg = without_type_names(&strip_position(&e.to_string()));
                // For a missing or unknown field serde names it in backticks; the path then
                // points at its parent object.
                let named = backticked(&msg).filter(|_| {
                    msg.starts_with("missing field") || msg.starts_with("unknown field")
                });
                let field = match (named, path.as_str()) {
                    (Some(f), "." | "") => f,
                    (Some(f), p) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
                    (Some(f), parent) => format!("{parent}.{f}"),
                    (None, "." | "") => "body".to_string(),
                    (None, p) => p.to_string(),
                };
                ApiError::validation(field.clone(), format!("Invalid field `{field}`: {msg}"))
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(strip_position(&e.to_string())))?;
    Ok(value)
}

/// What the JSON `body` (starting with `first`) is, when it is a JSON value but not an object.
/// An array is known by its first byte however deep or broken the rest (serde_json's recursion
/// limit would otherwise call a deeply nested one malformed); a scalar must parse whole.
fn json_kind(first: u8, body: &[u8]) -> Result<&'static str, serde_json::Error> {
    if first == b'[' {
        return Ok("an array");
    }
    Ok(match serde_json::from_slice::<Value>(body)? {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    })
}

/// serde names the Rust type it wanted (`expected struct SubmitRequest`, `expected enum X`):
/// say "a JSON object" / "one of the documented values" instead; our types are not the API.
fn without_type_names(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("struct ").or_else(|| rest.find("enum ")) {
        let (kind_len, replacement) = if rest[i..].starts_with("struct ") {
            (7, "a JSON object")
        } else {
            (5, "one of the documented values")
        };
        out.push_str(&rest[..i]);
        out.push_str(replacement);
        let after = &rest[i + kind_len..];
        // Skip the type name and a trailing " with N elements".
        let name_end = after
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        rest = &after[name_end..];
        if let Some(tail) = rest.strip_prefix(" with ") {
            if let Some(end) = tail.find(" element") {
                let after_word = &tail[end + " element".len()..];
                rest = after_word.strip_prefix('s').unwrap_or(after_word);
            }
        }
    }
    out.push_str(rest);
    out
}

fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let end = msg[start..].find('`')? + start;
    Some(msg[start..end].to_string())
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// API Gateway's request id when there is one, else a fresh one (local server, tests).
pub fn request_id_of(request: &Request) -> String {
    use lambda_http::request::RequestContext;
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

fn log_outcome(
    method: &str,
    route: &str,
    account: Option<&str>,
    request_id: &str,
    started: Instant,
    outcome: &Result<StatusCode, &ApiError>,
) {
    let ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(status) => tracing::info!(
            request_id,
            method,
            route,
            account,
            status = status.as_u16(),
            ms,
            "request"
        ),
        Err(ApiError::Internal(detail)) => {
            tracing::error!(request_id, method, route, account, status = 500, ms, detail = %detail, "request failed")
        }
        Err(e) => tracing::info!(
            request_id,
            method,
            route,
            account,
            status = e.status().as_u16(),
            code = e.code(),
            ms,
            "request refused"
        ),
    }
}

fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    response
}

pub fn render(reply: Reply, request_id: &str) -> Response<Body> {
    let mut response = json_response(reply.status, &reply.body, request_id);
    for (name, value) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    response
}

pub fn render_error(e: &ApiError, request_id: &str) -> Response<Body> {
    let mut response = json_response(e.status(), &e.body(request_id), request_id);
    if let ApiError::MethodNotAllowed { allowed } = e {
        if let Ok(v) = HeaderValue::from_str(allowed) {
            response.headers_mut().insert(http::header::ALLOW, v);
        }
    }
    if let Some(secs) = e.retry_after_secs() {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        tags: Option<Vec<String>>,
    }

    fn field_of(r: Result<Body, ApiError>) -> String {
        match r {
            Err(ApiError::Validation { field, .. }) => field,
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(field_of(parse_json(br#"{}"#)), "name");
        assert_eq!(field_of(parse_json(br#"{"name":"a","color":1}"#)), "color");
        let e: Result<Body, _> = parse_json(br#"{"name": 5}"#);
        assert!(e.unwrap_err().to_string().contains("invalid type"));
        assert_eq!(
            field_of(parse_json(br#"{"name":"a","tags":["x",1]}"#)),
            "tags[1]"
        );
        assert!(matches!(
            parse_json::<Body>(b"{"),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(b""),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Body>(br#"{"name":"a"} x"#),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(parse_json::<Body>(br#"{"name":"a","tags":["x"]}"#).is_ok());
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused_naming_it() {
        for (body, kind) in [
            (&br#"["a", ["x"]]"#[..], "an array"),
            (b"[]", "an array"),
            (b" \"a\"", "a string"),
            (b"7", "a number"),
            (b"null", "null"),
            (b"false", "a boolean"),
        ] {
            match parse_json::<Body>(body) {
                Err(ApiError::Validation { field, message }) => {
                    assert_eq!(field, "body");
                    assert_eq!(
                        message,
                        format!("The request body must be a JSON object, not {kind}")
                    );
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        for malformed in [
            &b"<xml/>"[..],
            b"name=k&public_key=x",
            b"nul",
            b"12abc",
            b"\"open",
        ] {
            assert!(
                matches!(
                    parse_json::<Body>(malformed),
                    Err(ApiError::MalformedJson(_))
                ),
                "{:?}",
                String::from_utf8_lossy(malformed)
            );
        }
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(matches!(
            parse_json::<Body>(deep.as_bytes()),
            Err(ApiError::Validation { .. })
        ));
    }

    #[test]
    fn serde_type_names_never_reach_a_message() {
        assert_eq!(
            without_type_names(
                "invalid type: sequence, expected struct SubmitRequest with 8 elements"
            ),
            "invalid type: sequence, expected a JSON object"
        );
        assert_eq!(
            without_type_names("invalid type: string \"x\", expected struct Inner"),
            "invalid type: string \"x\", expected a JSON object"
        );
        assert_eq!(
            without_type_names("unknown variant `x`, expected enum Kind"),
            "unknown variant `x`, expected one of the documented values"
        );
        assert_eq!(
            without_type_names("missing field `name`"),
            "missing field `name`"
        );
    }
}
