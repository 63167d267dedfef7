//! The Lambda Cloud client: [`LambdaCloudClient`] implements [`GpuProvider`] over Lambda's
//! REST API (`https://cloud.lambda.ai/api/v1`, API key as a bearer token).
//!
//! Facts relied on (Lambda's OpenAPI document, v1.4.0, and its public clients): every answer
//! is `{"data": …}`; errors are `{"error": {"code", "message", "suggestion"}}` with codes such
//! as `instance-operations/launch/insufficient-capacity`, `global/invalid-api-key`,
//! `global/object-does-not-exist`, `global/quota-exceeded`; launches are limited to about one
//! per 10 s per account (429 with `Retry-After`); a launch names exactly one SSH key.
//!
//! Transport, rate-limit pauses and retries are the shared ones (`http.rs`): reads and
//! terminates are retried on transient failures, a launch and a key creation are sent once.
//!
//! How Lambda's shapes map onto the trait (Lambda has no image, location or script
//! catalogue):
//! - **locations** are Lambda regions (`us-east-1`, …): those listed in
//!   `regions_with_capacity_available` of any type, the country read from the region name;
//! - **availability** is `regions_with_capacity_available`, per region;
//! - **images**: one fixed entry, [`LAMBDA_STACK_IMAGE`]; the deploy request's image is not
//!   sent (every instance runs Lambda Stack);
//! - **startup scripts** do not exist at Lambda: a script is `user_data` given at launch.
//!   `create_script` keeps the text in this client, under an id derived from its content, and
//!   `deploy` sends it; nothing is left at the provider to sweep (`list_scripts` is empty). A
//!   deploy from another process than the one that created the script fails with
//!   `InvalidRequest` (the caller creates the script again);
//! - **SSH keys**: a launch takes exactly one key *name*. The first of the request's keys is
//!   named; the others are added to `ubuntu`'s `authorized_keys` by a preamble of the
//!   `user_data`; with no key at all, [`ACCOUNT_KEY_NAME`] — a key pair Lambda generates once
//!   per account and whose private half Mimiry throws away — is named, so nobody can log in;
//! - **instances**: `name` carries Mimiry's hostname (what an unclear launch is found by);
//!   there is no description, so `description` is empty; statuses map as in [`status`];
//! - **volumes**: none (the disk goes with the instance): `list_volumes` is empty.

use super::http::{self, build_http, segment, Failure, Reply};
use super::parse::{items, lenient_string, lenient_u32, truncate};
use super::ratelimit::{Pauses, ProviderCall};
use super::retry::RetryPolicy;
use super::{
    DeleteOutcome, DeployRequest, GpuProvider, ImageInfo, InstanceInfo, InstanceStatus,
    InstanceTypeInfo, LocationAvailability, LocationInfo, ProviderError, ScriptInfo, VolumeInfo,
};
use crate::money::Micros;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The image every Lambda instance runs (Lambda does not take an image on launch in the API
/// version this client speaks).
pub const LAMBDA_STACK_IMAGE: &str = "lambda-stack-22.04";
/// The per-account key named by launches that carry no user key (Lambda requires one).
pub const ACCOUNT_KEY_NAME: &str = "mimiry-no-login";
/// Lambda's limit on an instance name.
const MAX_NAME: usize = 64;
const MAX_MESSAGE: usize = 300;
const LAUNCH_PATH: &str = "/instance-operations/launch";
const TERMINATE_PATH: &str = "/instance-operations/terminate";

/// Where the API key comes from.
#[derive(Clone)]
pub enum ApiKey {
    Static(String),
    /// A Secrets Manager secret holding `{"api_key": …}`, read on first use and cached.
    SecretsManager {
        client: aws_sdk_secretsmanager::Client,
        secret_id: String,
    },
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiKey::Static(_) => f.write_str("Static(<redacted>)"),
            ApiKey::SecretsManager { secret_id, .. } => f
                .debug_struct("SecretsManager")
                .field("secret_id", secret_id)
                .finish_non_exhaustive(),
        }
    }
}

/// The Lambda Cloud API client. Build once per process and clone freely.
#[derive(Clone)]
pub struct LambdaCloudClient {
    http: reqwest::Client,
    base: Arc<str>,
    timeout: Duration,
    retry: RetryPolicy,
    source: ApiKey,
    key: Arc<tokio::sync::Mutex<Option<String>>>,
    pauses: Arc<Pauses>,
    /// Script id → text (see the module doc: Lambda has no scripts, only `user_data`).
    scripts: Arc<Mutex<HashMap<String, String>>>,
}

impl fmt::Debug for LambdaCloudClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LambdaCloudClient")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl LambdaCloudClient {
    /// `base_url` is the API root including `/api/v1`; `timeout` bounds each HTTP attempt.
    pub fn new(base_url: &str, key: ApiKey, timeout: Duration) -> Self {
        LambdaCloudClient {
            http: build_http(timeout, timeout.min(Duration::from_secs(5))),
            base: Arc::from(base_url.trim().trim_end_matches('/')),
            timeout,
            retry: RetryPolicy::default(),
            source: key,
            key: Arc::new(tokio::sync::Mutex::new(None)),
            pauses: Arc::new(Pauses::default()),
            scripts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn api_key(&self) -> Result<String, ProviderError> {
        match &self.source {
            ApiKey::Static(k) => Ok(k.clone()),
            ApiKey::SecretsManager { client, secret_id } => {
                let mut cached = self.key.lock().await;
                if let Some(k) = cached.as_ref() {
                    return Ok(k.clone());
                }
                let raw = crate::aws::secret_string(client, secret_id)
                    .await
                    .map_err(super::token::secret_read_error)?;
                let key = parse_key_secret(&raw).ok_or_else(|| {
                    ProviderError::Auth(format!(
                        "secret {secret_id} must be JSON with a string field api_key"
                    ))
                })?;
                *cached = Some(key.clone());
                Ok(key)
            }
        }
    }

    /// One authenticated exchange; a refused key is dropped so a rotated secret is re-read.
    async fn once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
        launch: bool,
    ) -> Result<Reply, Failure> {
        let key = self.api_key().await.map_err(Failure::Token)?;
        let reply = http::send(
            &self.http,
            self.timeout,
            method.clone(),
            url,
            &[],
            Some(&key),
            body,
        )
        .await
        .map_err(Failure::Call)?;
        match reply.status {
            200..=299 => Ok(reply),
            429 => Err(Failure::Limited(reply.headers)),
            status => {
                let e = classify(status, &reply.text, launch);
                if matches!(e, ProviderError::Auth(_)) {
                    *self.key.lock().await = None;
                }
                Err(Failure::Call(e))
            }
        }
    }

    /// An API call returning the `data` of its answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.base);
        let launch = path == LAUNCH_PATH;
        let reply = http::with_retries(&self.pauses, self.retry, &method, path, idempotent, || {
            self.once(&method, &url, body, launch)
        })
        .await?;
        if reply.text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let v: Value = serde_json::from_str(&reply.text).map_err(|_| ProviderError::Server {
            status: reply.status,
            message: format!(
                "unreadable answer to {method} {path}: {}",
                truncate(reply.text.trim(), 120)
            ),
        })?;
        Ok(v.get("data").cloned().unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Result<Value, ProviderError> {
        self.call(Method::GET, path, None, true).await
    }

    /// `GET /instance-types`: `{name: {instance_type, regions_with_capacity_available}}`.
    async fn offers(&self) -> Result<Vec<Offer>, ProviderError> {
        let data = self.get("/instance-types").await?;
        let Value::Object(map) = data else {
            return Ok(Vec::new());
        };
        Ok(map.values().filter_map(offer).collect())
    }

    /// The registered keys with their public halves.
    async fn keys(&self) -> Result<Vec<Key>, ProviderError> {
        let data = self.get("/ssh-keys").await?;
        Ok(items(data)
            .iter()
            .filter_map(|k| {
                Some(Key {
                    id: lenient_string(k.get("id"))?,
                    name: lenient_string(k.get("name"))?,
                    public_key: lenient_string(k.get("public_key")).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The name of the account's no-login key, generated at Lambda the first time.
    async fn account_key(&self, keys: &[Key]) -> Result<String, ProviderError> {
        if keys.iter().any(|k| k.name == ACCOUNT_KEY_NAME) {
            return Ok(ACCOUNT_KEY_NAME.to_string());
        }
        // Without `public_key` Lambda generates a pair and answers the private key once; it
        // is dropped here on purpose.
        match self
            .call(
                Method::POST,
                "/ssh-keys",
                Some(&json!({ "name": ACCOUNT_KEY_NAME })),
                false,
            )
            .await
        {
            Ok(_) => Ok(ACCOUNT_KEY_NAME.to_string()),
            // Another process made it meanwhile.
            Err(ProviderError::InvalidRequest(m)) if m.starts_with("global/duplicate") => {
                Ok(ACCOUNT_KEY_NAME.to_string())
            }
            Err(e) => Err(e),
        }
    }

    fn script(&self, id: &str) -> Option<String> {
        self.scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }
}

/// `{"api_key": …}` (other fields ignored).
fn parse_key_secret(raw: &str) -> Option<String> {
    let v: Value = serde_json::from_str(raw).ok()?;
    lenient_string(v.get("api_key"))
}

struct Key {
    id: String,
    name: String,
    public_key: String,
}

/// One type of `GET /instance-types`.
struct Offer {
    info: InstanceTypeInfo,
    /// (name, description) of the regions with capacity now.
    regions: Vec<(String, String)>,
}

/// The GPU count and model of a Lambda type: from the description (`8x A100 (80 GB SXM4)`),
/// else from the name (`gpu_8x_a100_80gb_sxm4`). `(0, "")` for anything else (CPU types).
pub fn gpu_of(name: &str, description: &str) -> (u32, String) {
    if let Some((count, rest)) = description.split_once("x ") {
        if let Ok(n) = count.trim().parse::<u32>() {
            let model = rest.split(" (").next().unwrap_or(rest).trim();
            return (n, model.to_string());
        }
    }
    let mut parts = name.split('_');
    if parts.next() == Some("gpu") {
        if let Some(n) = parts
            .next()
            .and_then(|c| c.strip_suffix('x'))
            .and_then(|c| c.parse().ok())
        {
            let model = parts.next().unwrap_or_default().to_ascii_uppercase();
            return (n, model);
        }
    }
    (0, String::new())
}

/// GPU memory in GB per GPU from a description (`(80 GB SXM4)`), if it says.
fn gpu_memory_of(description: &str) -> Option<u32> {
    let inner = description.split_once('(')?.1;
    let gb = inner.split_once(" GB")?.0;
    gb.trim().parse().ok()
}

fn offer(v: &Value) -> Option<Offer> {
    let t = v.get("instance_type")?;
    let name = lenient_string(t.get("name"))?;
    let Some(cents) = t.get("price_cents_per_hour").and_then(lenient_i64) else {
        tracing::warn!(%name, "skipping a Lambda type without a readable price");
        return None;
    };
    let description = lenient_string(t.get("description")).unwrap_or_default();
    let specs = t.get("specs");
    let spec = |k: &str| lenient_u32(specs.and_then(|s| s.get(k)));
    let (gpus, model) = gpu_of(&name, &description);
    let cores = spec("vcpus").unwrap_or(0);
    let storage_gb = spec("storage_gib");
    let info = InstanceTypeInfo {
        instance_type: name,
        price_per_hour: Micros(cents.saturating_mul(10_000)),
        spot_price: None,
        gpu_description: if gpus == 0 {
            String::new()
        } else {
            format!("{gpus}x {model}")
        },
        gpu_count: gpus,
        gpu_memory_gb: gpu_memory_of(&description).map(|g| g * gpus),
        cpu_description: format!("{cores} vCPU"),
        cpu_cores: cores,
        memory_gb: spec("memory_gib"),
        storage_description: storage_gb.map(|g| format!("{g} GiB")).unwrap_or_default(),
        storage_gb,
        description,
    };
    let regions = v
        .get("regions_with_capacity_available")
        .map(|r| items(r.clone()))
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            Some((
                lenient_string(r.get("name"))?,
                lenient_string(r.get("description")).unwrap_or_default(),
            ))
        })
        .collect();
    Some(Offer { info, regions })
}

fn lenient_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// ISO country of a Lambda region, from its name's prefix; empty when unknown.
fn country_of(region: &str) -> &'static str {
    const PREFIXES: &[(&str, &str)] = &[
        ("us-", "US"),
        ("europe-central-", "DE"),
        ("asia-northeast-1", "JP"),
        ("asia-northeast-2", "KR"),
        ("asia-south-", "IN"),
        ("me-west-", "IL"),
    ];
    PREFIXES
        .iter()
        .find(|(p, _)| region.starts_with(p))
        .map(|(_, c)| *c)
        .unwrap_or("")
}

/// Lambda's status in the trait's terms:
/// - `booting` → `provisioning`; `active` → `running`;
/// - `unhealthy` with an address → `offline` (it came up, then stopped answering — a job that
///   powered itself off looks like this): billed, ended after the offline grace;
/// - `unhealthy` without an address → `error`: it never came up, so fail over;
/// - `terminating` → `deleting`; `terminated` and `preempted` → `discontinued`.
pub fn status(s: &str, has_ip: bool) -> InstanceStatus {
    match s.trim().to_ascii_lowercase().as_str() {
        "booting" => InstanceStatus::Provisioning,
        "active" => InstanceStatus::Running,
        "unhealthy" if has_ip => InstanceStatus::Offline,
        "unhealthy" => InstanceStatus::Error,
        "terminating" => InstanceStatus::Deleting,
        "terminated" | "preempted" => InstanceStatus::Discontinued,
        _ => InstanceStatus::Unknown(s.trim().to_string()),
    }
}

fn instance(v: &Value) -> Option<InstanceInfo> {
    let id = lenient_string(v.get("id"))?;
    let ip = lenient_string(v.get("ip"));
    let t = v.get("instance_type");
    Some(InstanceInfo {
        status: status(
            &lenient_string(v.get("status")).unwrap_or_default(),
            ip.is_some(),
        ),
        instance_type: lenient_string(t.and_then(|t| t.get("name"))).unwrap_or_default(),
        hostname: lenient_string(v.get("name")).unwrap_or_default(),
        description: String::new(),
        location: lenient_string(v.get("region").and_then(|r| r.get("name"))).unwrap_or_default(),
        ip,
        created_at: None,
        startup_script_id: None,
        price_per_hour: t
            .and_then(|t| t.get("price_cents_per_hour"))
            .and_then(lenient_i64)
            .map(|c| Micros(c.saturating_mul(10_000))),
        os_volume_id: None,
        id,
    })
}

/// The typed error of a non-success answer.
fn classify(status: u16, body: &str, launch: bool) -> ProviderError {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let e = v.get("error");
    let code = lenient_string(e.and_then(|e| e.get("code"))).unwrap_or_default();
    let message = lenient_string(e.and_then(|e| e.get("message")))
        .unwrap_or_else(|| format!("HTTP {status}: {}", truncate(body.trim(), 120)));
    let message = truncate(&message, MAX_MESSAGE);
    match code.as_str() {
        _ if status == 429 => ProviderError::RateLimited {
            retry_after: Duration::from_secs(10),
        },
        "global/invalid-api-key" | "global/account-inactive" => ProviderError::Auth(message),
        _ if status == 401 || status == 403 => ProviderError::Auth(message),
        "instance-operations/launch/insufficient-capacity" if launch => {
            ProviderError::NoCapacity(message)
        }
        "global/quota-exceeded" => ProviderError::QuotaExceeded(message),
        "global/object-does-not-exist" => ProviderError::NotFound(message),
        _ if status == 404 => ProviderError::NotFound(message),
        _ if status == 408 || status >= 500 => ProviderError::Server { status, message },
        "" => ProviderError::InvalidRequest(message),
        _ => ProviderError::InvalidRequest(format!("{code}: {message}")),
    }
}

/// Quotes `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The launch's `user_data`: the script, preceded (for a bash script or none) by the lines
/// that add the keys a launch cannot name. Best effort, silent: the script runs regardless.
fn user_data(script: Option<&str>, extra_keys: &[&str]) -> Option<String> {
    if extra_keys.is_empty() {
        return script.map(str::to_string);
    }
    let mut out = String::from("#!/bin/bash\n# Mimiry: SSH keys beyond the one a Lambda launch names.\n{\n  install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh\n");
    for k in extra_keys {
        out.push_str(&format!(
            "  printf '%s\\n' {} >> /home/ubuntu/.ssh/authorized_keys\n",
            shell_quote(k.trim())
        ));
    }
    out.push_str(
        "  chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys\n} >/dev/null 2>&1 || true\n",
    );
    // The script's own `#!/bin/bash` line, if any, is a comment from here on.
    out.push_str(script.unwrap_or(""));
    Some(out)
}

fn launch_call(call: ProviderCall) -> Option<(&'static str, &'static str)> {
    match call {
        ProviderCall::Deploy => Some(("POST", LAUNCH_PATH)),
        ProviderCall::DeleteInstance => Some(("POST", TERMINATE_PATH)),
        ProviderCall::ListInstances => Some(("GET", "/instances")),
        ProviderCall::CreateScript => None,
    }
}

#[async_trait::async_trait]
impl GpuProvider for LambdaCloudClient {
    fn id(&self) -> &'static str {
        "lambda"
    }

    fn image_is_fixed(&self) -> bool {
        true
    }

    fn keeps_descriptions(&self) -> bool {
        false
    }

    fn name(&self) -> &'static str {
        "Lambda Cloud"
    }

    async fn instance_types(&self) -> Result<Vec<InstanceTypeInfo>, ProviderError> {
        let mut list: Vec<InstanceTypeInfo> =
            self.offers().await?.into_iter().map(|o| o.info).collect();
        list.sort_by(|a, b| a.instance_type.cmp(&b.instance_type));
        Ok(list)
    }

    async fn availability(
        &self,
        location: Option<&str>,
    ) -> Result<Vec<LocationAvailability>, ProviderError> {
        let mut by_region: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for o in self.offers().await? {
            for (region, _) in o.regions {
                by_region
                    .entry(region)
                    .or_default()
                    .push(o.info.instance_type.clone());
            }
        }
        Ok(by_region
            .into_iter()
            .filter(|(r, _)| location.is_none_or(|l| l.eq_ignore_ascii_case(r)))
            .map(|(location_code, mut instance_types)| {
                instance_types.sort();
                LocationAvailability {
                    location_code,
                    instance_types,
                }
            })
            .collect())
    }

    async fn locations(&self) -> Result<Vec<LocationInfo>, ProviderError> {
        let mut regions: BTreeMap<String, String> = BTreeMap::new();
        for o in self.offers().await? {
            regions.extend(o.regions);
        }
        Ok(regions
            .into_iter()
            .map(|(code, name)| LocationInfo {
                country_code: country_of(&code).to_string(),
                name: if name.is_empty() { code.clone() } else { name },
                code,
            })
            .collect())
    }

    async fn images(&self, _instance_type: Option<&str>) -> Result<Vec<ImageInfo>, ProviderError> {
        Ok(vec![ImageInfo {
            id: LAMBDA_STACK_IMAGE.to_string(),
            name: "Lambda Stack (Ubuntu 22.04, CUDA, PyTorch, Docker)".to_string(),
            image_type: LAMBDA_STACK_IMAGE.to_string(),
            details: vec!["Ubuntu 22.04".into(), "Lambda Stack".into()],
            is_default: true,
        }])
    }

    async fn create_ssh_key(&self, name: &str, public_key: &str) -> Result<String, ProviderError> {
        let data = self
            .call(
                Method::POST,
                "/ssh-keys",
                Some(&json!({ "name": name, "public_key": public_key.trim() })),
                false,
            )
            .await?;
        lenient_string(data.get("id")).ok_or_else(|| ProviderError::Server {
            status: 200,
            message: "ssh key answer carries no id".into(),
        })
    }

    async fn delete_ssh_key(&self, id: &str) -> Result<(), ProviderError> {
        match self
            .call(
                Method::DELETE,
                &format!("/ssh-keys/{}", segment(id)),
                None,
                true,
            )
            .await
        {
            Ok(_) | Err(ProviderError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn create_script(&self, _name: &str, script: &str) -> Result<String, ProviderError> {
        let digest = Sha256::digest(script.as_bytes());
        let id = format!("user-data-{}", hex::encode(&digest[..16]));
        self.scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), script.to_string());
        Ok(id)
    }

    async fn delete_script(&self, id: &str) -> Result<(), ProviderError> {
        self.scripts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(())
    }

    async fn list_scripts(&self) -> Result<Vec<ScriptInfo>, ProviderError> {
        Ok(Vec::new())
    }

    async fn list_ssh_keys(&self) -> Result<Vec<ScriptInfo>, ProviderError> {
        Ok(self
            .keys()
            .await?
            .into_iter()
            .map(|k| ScriptInfo {
                id: k.id,
                name: k.name,
            })
            .collect())
    }

    async fn deploy(&self, req: &DeployRequest) -> Result<String, ProviderError> {
        let script = match (&req.startup_script, &req.startup_script_id) {
            (Some(text), _) => Some(text.clone()),
            (None, None) => None,
            (None, Some(id)) => Some(self.script(id).ok_or_else(|| {
                ProviderError::InvalidRequest(format!(
                    "startup script {id} is not held by this client; create it again"
                ))
            })?),
        };
        if let Some(wait) = self.rate_limit_wait(ProviderCall::Deploy) {
            return Err(ProviderError::RateLimited { retry_after: wait });
        }
        let keys = self.keys().await?;
        let mut wanted = Vec::new();
        for id in &req.ssh_key_ids {
            let k = keys.iter().find(|k| &k.id == id).ok_or_else(|| {
                ProviderError::InvalidRequest(format!("unknown Lambda SSH key id {id}"))
            })?;
            wanted.push(k);
        }
        let (named, extra): (String, Vec<&str>) = match wanted.split_first() {
            Some((first, rest)) => (
                first.name.clone(),
                rest.iter().map(|k| k.public_key.as_str()).collect(),
            ),
            None => (self.account_key(&keys).await?, Vec::new()),
        };
        let mut body = json!({
            "region_name": req.location_code,
            "instance_type_name": req.instance_type,
            "ssh_key_names": [named],
            "name": req.hostname.chars().take(MAX_NAME).collect::<String>(),
            "quantity": 1,
        });
        if let Some(data) = user_data(script.as_deref(), &extra) {
            body["user_data"] = json!(data);
        }
        let data = self
            .call(Method::POST, LAUNCH_PATH, Some(&body), false)
            .await?;
        let id = data
            .get("instance_ids")
            .and_then(|ids| ids.get(0))
            .and_then(|i| lenient_string(Some(i)))
            .ok_or_else(|| ProviderError::Server {
                status: 200,
                message: "launch answer carries no instance id".into(),
            })?;
        tracing::info!(instance_id = %id, instance_type = %req.instance_type,
            region = %req.location_code, hostname = %req.hostname, "Lambda instance launched");
        Ok(id)
    }

    async fn get_instance(&self, id: &str) -> Result<Option<InstanceInfo>, ProviderError> {
        match self.get(&format!("/instances/{}", segment(id))).await {
            Ok(v) => Ok(instance(&v)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn list_instances(&self) -> Result<Vec<InstanceInfo>, ProviderError> {
        let data = self.get("/instances").await?;
        Ok(items(data)
            .iter()
            .filter_map(instance)
            .filter(|i| !i.status.is_gone())
            .collect())
    }

    async fn delete_instance(
        &self,
        id: &str,
        _os_volume_id: Option<&str>,
    ) -> Result<DeleteOutcome, ProviderError> {
        // Terminating twice is harmless, so the call is retried like a read.
        let outcome = match self
            .call(
                Method::POST,
                TERMINATE_PATH,
                Some(&json!({ "instance_ids": [id] })),
                true,
            )
            .await
        {
            // Terminating answers each instance as it now is: one already `terminated` was
            // deleted by an earlier call (one whose answer a crash lost), so its billing ended
            // then, not now.
            Ok(answer) if already_terminated(&answer, id) => DeleteOutcome::AlreadyGone,
            Ok(_) => DeleteOutcome::Accepted,
            Err(ProviderError::NotFound(_)) => DeleteOutcome::AlreadyGone,
            Err(e) => return Err(e),
        };
        tracing::info!(instance_id = %id, outcome = ?outcome, "Lambda instance terminate");
        Ok(outcome)
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, ProviderError> {
        Ok(Vec::new())
    }

    async fn delete_volume(&self, _id: &str) -> Result<(), ProviderError> {
        Ok(())
    }

    fn rate_limit_wait(&self, call: ProviderCall) -> Option<Duration> {
        let (method, path) = launch_call(call)?;
        self.pauses.wait(method, path)
    }
}

/// Whether a terminate answer lists instance `id` as terminated already.
fn already_terminated(answer: &Value, id: &str) -> bool {
    answer["data"]["terminated_instances"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|i| i["id"] == id && i["status"] == "terminated")
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn an_instance_terminated_before_the_call_is_already_gone() {
        let answer = |status: &str| json!({ "data": { "terminated_instances": [ { "id": "i1", "status": status } ] } });
        assert!(already_terminated(&answer("terminated"), "i1"));
        assert!(!already_terminated(&answer("terminating"), "i1"));
        assert!(!already_terminated(&answer("terminated"), "i2"));
        assert!(!already_terminated(&json!({}), "i1"));
    }

    #[test]
    fn gpu_model_and_count() {
        assert_eq!(
            gpu_of("gpu_8x_a100_80gb_sxm4", "8x A100 (80 GB SXM4)"),
            (8, "A100".into())
        );
        assert_eq!(
            gpu_of("gpu_1x_gh200", "1x GH200 (96 GB)"),
            (1, "GH200".into())
        );
        assert_eq!(gpu_of("gpu_2x_h100_sxm5", ""), (2, "H100".into()));
        assert_eq!(gpu_of("cpu_4x_general", "CPU"), (0, String::new()));
        assert_eq!(gpu_memory_of("8x A100 (80 GB SXM4)"), Some(80));
        assert_eq!(gpu_memory_of("8x Tesla V100"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(status("booting", false), InstanceStatus::Provisioning);
        assert_eq!(status("active", true), InstanceStatus::Running);
        assert_eq!(status("unhealthy", true), InstanceStatus::Offline);
        assert_eq!(status("unhealthy", false), InstanceStatus::Error);
        assert_eq!(status("terminating", true), InstanceStatus::Deleting);
        assert_eq!(status("terminated", false), InstanceStatus::Discontinued);
        assert_eq!(
            status("migrating", false),
            InstanceStatus::Unknown("migrating".into())
        );
    }

    #[test]
    fn errors_are_typed() {
        let body = |code: &str| json!({"error": {"code": code, "message": "m"}}).to_string();
        assert!(matches!(
            classify(
                400,
                &body("instance-operations/launch/insufficient-capacity"),
                true
            ),
            ProviderError::NoCapacity(_)
        ));
        assert!(matches!(
            classify(401, &body("global/invalid-api-key"), false),
            ProviderError::Auth(_)
        ));
        assert!(matches!(
            classify(404, &body("global/object-does-not-exist"), false),
            ProviderError::NotFound(_)
        ));
        assert!(matches!(
            classify(400, &body("global/quota-exceeded"), true),
            ProviderError::QuotaExceeded(_)
        ));
        assert!(matches!(
            classify(503, "<html>", false),
            ProviderError::Server { status: 503, .. }
        ));
        assert_eq!(
            classify(400, &body("global/invalid-parameters"), true),
            ProviderError::InvalidRequest("global/invalid-parameters: m".into())
        );
    }

    #[test]
    fn extra_keys_go_into_user_data() {
        assert_eq!(
            user_data(Some("#!/bin/bash\necho hi\n"), &[]).unwrap(),
            "#!/bin/bash\necho hi\n"
        );
        assert_eq!(user_data(None, &[]), None);
        let u = user_data(Some("#!/bin/bash\necho hi\n"), &["ssh-ed25519 AAAA it's"]).unwrap();
        assert!(u.starts_with("#!/bin/bash\n"));
        assert!(u.contains(r"'ssh-ed25519 AAAA it'\''s'"), "{u}");
        assert!(u.ends_with("#!/bin/bash\necho hi\n"));
    }

    #[test]
    fn countries_and_secret() {
        assert_eq!(country_of("us-east-1"), "US");
        assert_eq!(country_of("europe-central-1"), "DE");
        assert_eq!(country_of("mars-1"), "");
        assert_eq!(parse_key_secret(r#"{"api_key":"k"}"#), Some("k".into()));
        assert_eq!(parse_key_secret(r#"{"key":"k"}"#), None);
        assert!(!format!("{:?}", ApiKey::Static("hunter2".into())).contains("hunter2"));
    }
}
