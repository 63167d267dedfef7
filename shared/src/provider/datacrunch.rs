//! The DataCrunch (Verda) client: [`DataCrunchClient`] implements [`GpuProvider`] over HTTPS.
//!
//! - One `reqwest` client (rustls) per process; `DataCrunchClient` is cheap to clone.
//! - Every request has a per-attempt timeout (the one given to [`DataCrunchClient::new`]) and a
//!   connect timeout (`min(timeout, 5 s)` unless set with
//!   [`DataCrunchClient::with_connect_timeout`]).
//! - OAuth2 client credentials, cached and renewed ahead of expiry (see `token.rs`). A 401 on a
//!   cached token drops it and repeats the call once with a new token (the provider refused the
//!   request, so this is safe for every call, `deploy` included).
//! - Idempotent calls (GETs, deletes) are retried on 408/5xx, timeouts and transport errors
//!   per [`RetryPolicy`] (default 3 retries, full jitter, 200 ms base, 2 s cap). `deploy`,
//!   `create_ssh_key` and `create_script` are sent exactly once.
//! - A 429 pauses its path (or the project) for `Retry-After` (see `ratelimit.rs`). A call to a
//!   paused path waits in-process only when the pause ends within [`MAX_INLINE_WAIT`] (a
//!   refused request did nothing, so this holds for `deploy` too); otherwise it fails with
//!   [`ProviderError::RateLimited`] without being sent, and the caller defers its job.

use super::http::{self, build_http, segment, Failure, Reply};
use super::parse::{self, CallKind};
use super::ratelimit::{Pauses, ProviderCall};
use super::retry::RetryPolicy;
use super::token::TokenManager;
use super::{
    DeleteOutcome, DeployRequest, GpuProvider, ImageInfo, InstanceInfo, InstanceTypeInfo,
    LocationAvailability, LocationInfo, ProviderError, ScriptInfo, VolumeInfo,
};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Where the OAuth2 client id and secret come from.
#[derive(Clone)]
pub enum Credentials {
    Static {
        client_id: String,
        client_secret: String,
    },
    /// A Secrets Manager secret holding `{"client_id": …, "client_secret": …}`, read on first
    /// use and cached.
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Static { client_id, .. } => f
                .debug_struct("Static")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .finish(),
            Credentials::SecretsManager { secret_id, .. } => f
                .debug_struct("SecretsManager")
                .field("secret_id", secret_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Default renewal margin before a token's `expires_in` runs out.
const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// Connect-timeout ceiling.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub use super::http::MAX_INLINE_WAIT;
/// `GET /scripts` page size: the provider's maximum.
const SCRIPTS_PAGE_SIZE: usize = 100;
/// Pages read at most: the provider's hard script quota (10 000) over the page size.
const MAX_SCRIPT_PAGES: usize = 100;
/// The name prefix of every script (`owner_tag`) and OS volume (`{hostname}-os`) Mimiry
/// creates, used as the list filter.
const NAME_PREFIX: &str = "mimiry-";

/// The DataCrunch API client. Build once per process and clone freely.
#[derive(Clone)]
pub struct DataCrunchClient {
    http: reqwest::Client,
    base: Arc<str>,
    timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    refresh_margin: Duration,
    tokens: Arc<TokenManager>,
    pauses: Arc<Pauses>,
}

impl fmt::Debug for DataCrunchClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataCrunchClient")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl DataCrunchClient {
    /// `base_url` is the API root including `/v1` (e.g. `https://api.verda.com/v1`);
    /// `timeout` bounds each HTTP attempt (connect + request + body).
    pub fn new(base_url: &str, credentials: Credentials, timeout: Duration) -> Self {
        let connect_timeout = timeout.min(MAX_CONNECT_TIMEOUT);
        DataCrunchClient {
            http: build_http(timeout, connect_timeout),
            base: Arc::from(base_url.trim().trim_end_matches('/')),
            timeout,
            connect_timeout,
            retry: RetryPolicy::default(),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            tokens: Arc::new(TokenManager::new(credentials)),
            pauses: Arc::new(Pauses::default()),
        }
    }

    /// Replaces the retry policy for idempotent calls (default: [`RetryPolicy::default`]).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long before expiry a token is renewed (default 30 s; never more than a quarter of
    /// the token's lifetime).
    pub fn with_token_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Replaces the connect timeout (default `min(timeout, 5 s)`).
    pub fn with_connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self.http = build_http(self.timeout, connect_timeout);
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    pub(crate) fn refresh_margin(&self) -> Duration {
        self.refresh_margin
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// One HTTP exchange: status and body text. Never logs headers.
    pub(crate) async fn send_raw(
        &self,
        method: Method,
        url: &str,
        query: &[(&str, &str)],
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, String), ProviderError> {
        let reply = http::send(&self.http, self.timeout, method, url, query, bearer, body).await?;
        Ok((reply.status, reply.text))
    }

    /// An authenticated API call returning the success status and body; errors are typed.
    /// `idempotent` calls are retried on transient failures.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotent: bool,
        kind: CallKind,
    ) -> Result<(u16, String), ProviderError> {
        let reply = self
            .call_reply(method, path, query, body, idempotent, kind)
            .await?;
        Ok((reply.status, reply.text))
    }

    /// [`Self::call`] with the response headers.
    async fn call_reply(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        idempotent: bool,
        kind: CallKind,
    ) -> Result<Reply, ProviderError> {
        let url = self.url(path);
        http::with_retries(&self.pauses, self.retry, &method, path, idempotent, || {
            self.call_once(&method, &url, query, body, kind)
        })
        .await
    }

    async fn call_once(
        &self,
        method: &Method,
        url: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        kind: CallKind,
    ) -> Result<Reply, Failure> {
        let bearer = self.tokens.bearer(self).await.map_err(Failure::Token)?;
        let mut reply = http::send(
            &self.http,
            self.timeout,
            method.clone(),
            url,
            query,
            Some(&bearer.token),
            body,
        )
        .await
        .map_err(Failure::Call)?;
        if reply.status == 401 && !bearer.fresh {
            tracing::info!("provider refused a cached token; renewing it and repeating the call");
            self.tokens.invalidate(&bearer.token).await;
            let bearer = self.tokens.bearer(self).await.map_err(Failure::Token)?;
            reply = http::send(
                &self.http,
                self.timeout,
                method.clone(),
                url,
                query,
                Some(&bearer.token),
                body,
            )
            .await
            .map_err(Failure::Call)?;
        }
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else if reply.status == 429 {
            Err(Failure::Limited(reply.headers))
        } else {
            Err(Failure::Call(parse::classify(
                reply.status,
                &reply.text,
                kind,
            )))
        }
    }

    async fn get_json(
        &self,
        what: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, ProviderError> {
        let (status, text) = self
            .call(Method::GET, path, query, None, true, CallKind::Other)
            .await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        parse::json_body(status, what, &text)
    }

    /// A create call (sent once) whose response is the new id.
    async fn create(&self, what: &str, path: &str, body: &Value) -> Result<String, ProviderError> {
        let (status, text) = self
            .call(Method::POST, path, &[], Some(body), false, CallKind::Other)
            .await?;
        id_from(status, what, &text)
    }

    /// A delete of a key or script: sent with retries; a missing object is success.
    async fn delete_simple(&self, path: &str, body: Option<&Value>) -> Result<(), ProviderError> {
        match self
            .call(Method::DELETE, path, &[], body, true, CallKind::Other)
            .await
        {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(ProviderError::InvalidRequest(m)) if says_missing(&m) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn id_from(status: u16, what: &str, body: &str) -> Result<String, ProviderError> {
    parse::parse_id(body).ok_or_else(|| ProviderError::Server {
        status,
        message: format!(
            "{what} response carries no id: {}",
            parse::truncate(body.trim(), 120)
        ),
    })
}

/// A 4xx message that means "no such object".
fn says_missing(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found")
        || m.contains("does not exist")
        || (m.contains("invalid") && m.contains(" id"))
}

/// The JSON body of `POST /instances`.
fn deploy_body(req: &DeployRequest) -> Value {
    json!({
        "instance_type": req.instance_type,
        "image": req.image,
        "hostname": req.hostname,
        "description": req.description,
        "ssh_key_ids": req.ssh_key_ids,
        "location_code": req.location_code,
        "startup_script_id": req.startup_script_id,
        "os_volume": {
            "name": format!("{}-os", req.hostname),
            "size": req.os_volume_size_gb,
        },
        "is_spot": req.is_spot,
        "existing_volumes": [],
        "volumes": [],
    })
}

/// Maps a failed delete to its outcome: gone, try later, or a real error.
fn delete_outcome_from_error(e: ProviderError) -> Result<DeleteOutcome, ProviderError> {
    match e {
        ProviderError::NotFound(_) => Ok(DeleteOutcome::AlreadyGone),
        ProviderError::InvalidRequest(m) => {
            let l = m.to_ascii_lowercase();
            if l.contains("discontinued") || l.contains("invalid instance id") {
                Ok(DeleteOutcome::AlreadyGone)
            } else if l.contains("forbidden_action") || l.contains("provisioning") {
                Ok(DeleteOutcome::NotYet)
            } else {
                Err(ProviderError::InvalidRequest(m))
            }
        }
        other => Err(other),
    }
}

/// A 2xx delete may carry per-instance results — Verda's `InstanceActionResultDto`
/// `[{id, status: success|error, error: "<message>"}]`, older `[{action, instanceId, status,
/// error, statusCode}]`; an error in ours decides the outcome.
fn delete_outcome_from_body(id: &str, body: &str) -> Result<DeleteOutcome, ProviderError> {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Ok(DeleteOutcome::Accepted);
    };
    let results: Vec<Value> = parse::items(v)
        .into_iter()
        .filter(|r| r.is_object())
        .collect();
    let ours = results
        .iter()
        .find(|r| {
            parse::lenient_string(
                r.get("instanceId")
                    .or_else(|| r.get("instance_id"))
                    .or_else(|| r.get("id")),
            )
            .is_some_and(|i| i == id)
        })
        .or(if results.len() == 1 {
            results.first()
        } else {
            None
        });
    let Some(r) = ours else {
        return Ok(DeleteOutcome::Accepted);
    };
    let status_code = parse::lenient_u32(r.get("statusCode").or_else(|| r.get("status_code")))
        .and_then(|c| u16::try_from(c).ok());
    // `error` is a message string, or the usual `{"code","message"}` envelope.
    let (code, message) = match r.get("error") {
        Some(Value::Object(_)) => {
            let e = &r["error"];
            (
                parse::lenient_string(e.get("code")),
                parse::lenient_string(e.get("message")),
            )
        }
        other => (
            parse::lenient_string(r.get("code")),
            parse::lenient_string(other),
        ),
    };
    let failed = status_code.is_some_and(|c| c >= 400)
        || code.is_some()
        || message.is_some()
        || parse::lenient_string(r.get("status")).is_some_and(|s| s.eq_ignore_ascii_case("error"));
    if !failed {
        return Ok(DeleteOutcome::Accepted);
    }
    let inner = json!({
        "code": code,
        "message": message.unwrap_or_else(|| "delete refused".into()),
    });
    delete_outcome_from_error(parse::classify(
        status_code.unwrap_or(400),
        &inner.to_string(),
        CallKind::Other,
    ))
}

#[async_trait::async_trait]
impl GpuProvider for DataCrunchClient {
    fn id(&self) -> &'static str {
        "datacrunch"
    }

    fn name(&self) -> &'static str {
        "DataCrunch (Verda)"
    }

    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, ProviderError> {
        let v = self
            .get_json("instance types", "/instance-types", &[("currency", "usd")])
            .await?;
        Ok(parse::instance_types(v))
    }

    async fn availability(
        &self,
        location: Option<&str>,
    ) -> Result<Vec<LocationAvailability>, ProviderError> {
        let query: Vec<(&str, &str)> = location.map(|l| ("location_code", l)).into_iter().collect();
        let v = self
            .get_json("availability", "/instance-availability", &query)
            .await?;
        let mut list = parse::availability(v);
        if let Some(l) = location {
            list.retain(|a| a.location_code.eq_ignore_ascii_case(l));
        }
        Ok(list)
    }

    async fn spot_availability(&self) -> Result<Vec<LocationAvailability>, ProviderError> {
        let v = self
            .get_json(
                "spot availability",
                "/instance-availability",
                &[("is_spot", "true")],
            )
            .await?;
        Ok(parse::availability(v))
    }

    async fn locations(&self) -> Result<Vec<LocationInfo>, ProviderError> {
        let v = self.get_json("locations", "/locations", &[]).await?;
        Ok(parse::locations(v))
    }

    async fn images(&self, instance_type: Option<&str>) -> Result<Vec<ImageInfo>, ProviderError> {
        let query: Vec<(&str, &str)> = instance_type
            .map(|t| ("instance_type", t))
            .into_iter()
            .collect();
        let v = self.get_json("images", "/images", &query).await?;
        Ok(parse::images(v))
    }

    async fn create_ssh_key(&self, name: &str, public_key: &str) -> Result<String, ProviderError> {
        self.create(
            "ssh key",
            "/ssh-keys",
            &json!({"name": name, "key": public_key.trim()}),
        )
        .await
    }

    async fn delete_ssh_key(&self, id: &str) -> Result<(), ProviderError> {
        self.delete_simple(&format!("/ssh-keys/{}", segment(id)), None)
            .await
    }

    async fn create_script(&self, name: &str, script: &str) -> Result<String, ProviderError> {
        self.create(
            "script",
            "/scripts",
            &json!({"name": name, "script": script}),
        )
        .await
    }

    async fn delete_script(&self, id: &str) -> Result<(), ProviderError> {
        self.delete_simple(&format!("/scripts/{}", segment(id)), None)
            .await
    }

    async fn list_scripts(&self) -> Result<Vec<ScriptInfo>, ProviderError> {
        // Paginated (default 10 a page, newest first; totals in `X-Total-Count`), with a
        // partial-name filter: ask for ours, 100 a page, until a short page or the total.
        // A server that ignores the paging answers everything at once, without the headers.
        let size = SCRIPTS_PAGE_SIZE.to_string();
        let mut all: Vec<ScriptInfo> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for page in 1..=MAX_SCRIPT_PAGES {
            let page_no = page.to_string();
            let query = [
                ("page", page_no.as_str()),
                ("pageSize", size.as_str()),
                ("name", NAME_PREFIX),
            ];
            let reply = self
                .call_reply(Method::GET, "/scripts", &query, None, true, CallKind::Other)
                .await?;
            let v = if reply.text.trim().is_empty() {
                Value::Null
            } else {
                parse::json_body(reply.status, "scripts", &reply.text)?
            };
            let items = parse::scripts(v);
            let count = items.len();
            all.extend(items.into_iter().filter(|s| seen.insert(s.id.clone())));
            let total = header_u64(&reply.headers, "x-total-count");
            let paged = reply.headers.contains_key("x-page") || total.is_some();
            let done = !paged
                || count < SCRIPTS_PAGE_SIZE
                || total.is_some_and(|t| (page * SCRIPTS_PAGE_SIZE) as u64 >= t);
            if done {
                return Ok(all);
            }
        }
        tracing::warn!(
            pages = MAX_SCRIPT_PAGES,
            "stopped listing scripts at the page bound"
        );
        Ok(all)
    }

    async fn list_ssh_keys(&self) -> Result<Vec<ScriptInfo>, ProviderError> {
        // Same `[{id, name, …}]` shape as scripts; not paginated (Verda's OpenAPI).
        let v = self.get_json("ssh keys", "/ssh-keys", &[]).await?;
        Ok(parse::scripts(v))
    }

    async fn deploy(&self, req: &DeployRequest) -> Result<String, ProviderError> {
        let body = deploy_body(req);
        let (status, text) = self
            .call(
                Method::POST,
                "/instances",
                &[],
                Some(&body),
                false,
                CallKind::Deploy,
            )
            .await?;
        let id = id_from(status, "deploy", &text)?;
        tracing::info!(instance_id = %id, instance_type = %req.instance_type,
            location = %req.location_code, hostname = %req.hostname, "provider instance deployed");
        Ok(id)
    }

    async fn get_instance(&self, id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
        let v = match self
            .get_json("instance", &format!("/instances/{}", segment(id)), &[])
            .await
        {
            Ok(v) => v,
            Err(ProviderError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let list = parse::instances(v);
        let found = list.iter().position(|i| i.id == id).unwrap_or(0);
        Ok(list.into_iter().nth(found))
    }

    async fn list_instances(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let v = self.get_json("instances", "/instances", &[]).await?;
        Ok(parse::instances(v))
    }

    async fn delete_instance(
        &self,
        id: &str,
        os_volume_id: Option<&str>,
    ) -> Result<DeleteOutcome, ProviderError> {
        // Without `volume_ids` the OS volume goes to the trash for 96 h, counted against the
        // storage quota; named, `delete_permanently` removes it. Unknown: read the instance
        // (a per-id path) unless the delete path is paused anyway.
        let looked_up;
        let os_volume_id = match os_volume_id {
            Some(v) => Some(v),
            None => {
                if let Some(wait) = self.rate_limit_wait(ProviderCall::DeleteInstance) {
                    return Err(ProviderError::RateLimited { retry_after: wait });
                }
                match self.get_instance(id).await? {
                    // Unknown or discontinued: nothing to delete, no PUT spent on it.
                    None => return Ok(DeleteOutcome::AlreadyGone),
                    Some(info) if info.status.is_gone() => return Ok(DeleteOutcome::AlreadyGone),
                    Some(info) => {
                        looked_up = info.os_volume_id;
                        looked_up.as_deref()
                    }
                }
            }
        };
        let body = delete_body(id, os_volume_id);
        let outcome = match self
            .call(
                Method::PUT,
                "/instances",
                &[],
                Some(&body),
                true,
                CallKind::Other,
            )
            .await
        {
            // 204: already in the requested state (deleted).
            Ok((204, _)) => Ok(DeleteOutcome::AlreadyGone),
            Ok((_, text)) => delete_outcome_from_body(id, &text),
            Err(e) => delete_outcome_from_error(e),
        }?;
        tracing::info!(instance_id = %id, os_volume_id, outcome = ?outcome, "provider instance delete");
        Ok(outcome)
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ProviderError> {
        // Not paginated (Verda's OpenAPI); the trash is its own list.
        let live = self.get_json("volumes", "/volumes", &[]).await?;
        let trash = self
            .get_json("volumes in trash", "/volumes/trash", &[])
            .await?;
        let mut all = parse::volumes(live, false);
        all.extend(parse::volumes(trash, true));
        all.retain(|v| v.name.starts_with(NAME_PREFIX));
        Ok(all)
    }

    async fn delete_volume(&self, id: &str) -> Result<(), ProviderError> {
        // `is_permanent`: past the trash (the official SDK's `delete_by_id`).
        self.delete_simple(
            &format!("/volumes/{}", segment(id)),
            Some(&json!({"is_permanent": true})),
        )
        .await?;
        tracing::info!(volume_id = %id, "provider volume deleted permanently");
        Ok(())
    }

    fn rate_limit_wait(&self, call: ProviderCall) -> Option<Duration> {
        let (method, path) = call.key();
        self.pauses.wait(method, path)
    }
}

/// The body of the delete action: the OS volume named (when known) so that
/// `delete_permanently` applies to it; without an id the field is left out (the provider then
/// trashes the OS volume — better than detaching it, which an empty list would do).
fn delete_body(id: &str, os_volume_id: Option<&str>) -> Value {
    let mut body = json!({
        "id": [id],
        "action": "delete",
        "delete_permanently": true,
    });
    if let Some(v) = os_volume_id {
        body["volume_ids"] = json!([v]);
    }
    body
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn deploy_body_shape() {
        let req = DeployRequest {
            instance_type: "1V100.6V".into(),
            image: "ubuntu-22.04-cuda-12.0-docker".into(),
            hostname: "mj-abc".into(),
            description: "mj-abc".into(),
            ssh_key_ids: vec![],
            location_code: "FIN-01".into(),
            startup_script_id: None,
            startup_script: None,
            os_volume_size_gb: 50,
            is_spot: false,
        };
        let b = deploy_body(&req);
        assert_eq!(b["ssh_key_ids"], json!([]));
        assert_eq!(b["existing_volumes"], json!([]));
        assert_eq!(b["volumes"], json!([]));
        assert_eq!(b["is_spot"], json!(false));
        assert_eq!(b["startup_script_id"], Value::Null);
        assert_eq!(b["os_volume"], json!({"name": "mj-abc-os", "size": 50}));
        assert_eq!(b["location_code"], json!("FIN-01"));
        // A spot job's deploy asks for spot capacity (issue 15).
        let spot = deploy_body(&DeployRequest {
            is_spot: true,
            ..req
        });
        assert_eq!(spot["is_spot"], json!(true));
    }

    #[test]
    fn delete_outcomes() {
        use DeleteOutcome::*;
        let inv = |m: &str| ProviderError::InvalidRequest(m.into());
        assert_eq!(
            delete_outcome_from_error(inv(
                "forbidden_action: Can't discontinue a provisioning instance"
            )),
            Ok(NotYet)
        );
        assert_eq!(
            delete_outcome_from_error(inv(
                "forbidden_action: Can't discontinue a discontinued instance"
            )),
            Ok(AlreadyGone)
        );
        assert_eq!(
            delete_outcome_from_error(ProviderError::NotFound("Invalid instance id".into())),
            Ok(AlreadyGone)
        );
        assert!(delete_outcome_from_error(inv("invalid_request: bad body")).is_err());
        assert!(delete_outcome_from_error(ProviderError::Timeout).is_err());

        assert_eq!(delete_outcome_from_body("i1", ""), Ok(Accepted));
        assert_eq!(
            delete_outcome_from_body(
                "i1",
                r#"[{"action":"delete","instanceId":"i1","status":"success","statusCode":202}]"#
            ),
            Ok(Accepted)
        );
        assert_eq!(
            delete_outcome_from_body(
                "i1",
                r#"[{"action":"delete","instanceId":"i0","status":"success"},
                    {"action":"delete","instanceId":"i1","status":"error","statusCode":400,
                     "code":"forbidden_action","error":"Can't discontinue a provisioning instance"}]"#
            ),
            Ok(NotYet)
        );
        assert_eq!(
            delete_outcome_from_body(
                "i1",
                r#"[{"instanceId":"i1","error":"Invalid instance id","statusCode":"404"}]"#
            ),
            Ok(AlreadyGone)
        );
        // The envelope form of `error`.
        assert_eq!(
            delete_outcome_from_body(
                "i1",
                r#"[{"action":"delete","instanceId":"i1","status":"error","statusCode":400,
                     "error":{"code":"forbidden_action","message":"Can't discontinue a discontinued instance"}}]"#
            ),
            Ok(AlreadyGone)
        );
        assert_eq!(
            delete_outcome_from_body(
                "i1",
                r#"[{"instanceId":"i1","status":"success","error":null,"statusCode":202}]"#
            ),
            Ok(Accepted)
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("abc-123_x.y~z"), "abc-123_x.y~z");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn credentials_debug_redacts() {
        let c = Credentials::Static {
            client_id: "id".into(),
            client_secret: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
