//! The Lambda Cloud routes under `/api/v1`, and the gate in front of them.
//!
//! Instances live in `fake_datacrunch`'s state (so its timers, execute mode, faults and admin
//! dump apply unchanged); this module only speaks Lambda's shapes over them:
//! - launch creates an instance in `ordered`, and the shared timers take it through
//!   `provisioning` to `running` (or `error`, or vanished, per the injected fate);
//! - statuses are shown in Lambda's vocabulary, see [`lambda_status`];
//! - `user_data` is the instance's startup script, which execute mode runs when it is active;
//! - SSH keys are the shared state's keys, referred to by name as Lambda does.

use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{
        header::{AUTHORIZATION, RETRY_AFTER},
        HeaderValue, Method, StatusCode,
    },
    middleware::Next,
    response::{IntoResponse, Response},
    Json,
};
use base64::Engine;
use chrono::Utc;
use fake_datacrunch::{
    catalog as dc_catalog, lifecycle,
    ratelimit::Verdict,
    resources::looks_like_public_key,
    state::{now_rfc3339, Instance, SshKey, Status},
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    catalog,
    error::{self, parse_json, LambdaError},
    LambdaApp,
};

pub const PREFIX: &str = "/api/v1";
pub const LAUNCH_PATH: &str = "/api/v1/instance-operations/launch";

/// Lambda's name for a status of the shared state machine.
///
/// `offline` (the machine powered itself off, e.g. a job's `shutdown -h now`) and the failed
/// boots (`error`, `installation_failed`) are all `unhealthy`: the instance exists and bills
/// but does not answer its health checks.
pub fn lambda_status(s: Status) -> &'static str {
    match s {
        Status::New | Status::Ordered | Status::Validating | Status::Pending => "booting",
        Status::Provisioning => "booting",
        Status::Running => "active",
        Status::Deleting => "terminating",
        Status::Discontinued => "terminated",
        _ => "unhealthy",
    }
}

/// The `instance` object.
pub fn instance_json(inst: &Instance) -> Value {
    let itype = catalog::instance_type(inst.instance_type.instance_type);
    let region = catalog::region(&inst.location);
    let name = (!inst.hostname.is_empty()).then_some(inst.hostname.as_str());
    json!({
        "id": inst.id,
        "name": name,
        "ip": inst.ip,
        "status": lambda_status(inst.status),
        "ssh_key_names": inst.ssh_key_ids,
        "file_system_names": [],
        "region": region.map(catalog::Region::to_json),
        "instance_type": itype.map(catalog::LambdaType::to_json),
        "hostname": inst.ip.as_ref().map(|ip| format!("{}.cloud.lambdalabs.com", ip.replace('.', "-"))),
        "jupyter_token": inst.jupyter_token,
        "jupyter_url": format!("https://jupyter-{}.lambdaspaces.com/?token={}", inst.id, inst.jupyter_token),
    })
}

fn data(v: Value) -> Json<Value> {
    Json(json!({ "data": v }))
}

/// Whether `header` carries `key`: `Bearer <key>`, `Basic base64(<key>:)` or `Basic <key>`
/// (the document's `securitySchemes`).
fn authorized(header: Option<&str>, key: &str) -> bool {
    let Some(h) = header else { return false };
    if let Some(token) = h.strip_prefix("Bearer ") {
        return token.trim() == key;
    }
    let Some(basic) = h.strip_prefix("Basic ") else {
        return false;
    };
    let basic = basic.trim();
    if basic == key {
        return true;
    }
    base64::engine::general_purpose::STANDARD
        .decode(basic)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .is_some_and(|s| s.strip_suffix(':').unwrap_or(&s) == key)
}

/// The route template of an `/api/v1` path, for the request counters.
fn route_key(path: &str) -> String {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // ["", "api", "v1", collection, id]
    if segs.len() == 5 && matches!(segs[3], "instances" | "ssh-keys") {
        format!("/api/v1/{}/{{id}}", segs[3])
    } else {
        segs.join("/")
    }
}

/// In front of every `/api/v1` route: count, injected server error, API key, the launch rate
/// limit, the handler, then injected slowness (after the handler, so a slow launch has still
/// launched — the case a client must not blindly retry).
pub async fn gate(State(app): State<LambdaApp>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (slow, injected, ok, verdict) = {
        let mut g = app.dc.lock();
        g.requests_total += 1;
        *g.requests_by_route
            .entry(format!("{method} {}", route_key(&path)))
            .or_default() += 1;
        let slow = g.faults.take_slow();
        let injected = g.faults.take_server_error(&path);
        let ok = authorized(header.as_deref(), &app.api_key);
        // Lambda documents a limit on launches (one per ~10 s per account); the shared
        // limiter's per-(method, path) budget is that limit, asked for launches only.
        let verdict = (ok && injected.is_none() && method == Method::POST && path == LAUNCH_PATH)
            .then(|| g.rate.admit(&method, &path));
        (slow, injected, ok, verdict)
    };
    let response = if let Some(status) = injected {
        tracing::info!(%path, status = status.as_u16(), "injected server error");
        LambdaError::new(status, error::UNKNOWN, "Injected server error").into_response()
    } else if !ok {
        LambdaError::unauthorized().into_response()
    } else if let Some(Verdict::Limited { retry_after_secs }) = verdict {
        tracing::info!(%path, retry_after_secs, "launch rate limited");
        let mut r = LambdaError::new(
            StatusCode::TOO_MANY_REQUESTS,
            error::QUOTA_EXCEEDED,
            "Too many requests: launches are limited to one every few seconds.",
        )
        .into_response();
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
        r
    } else {
        next.run(req).await
    };
    if let Some(delay) = slow {
        tokio::time::sleep(delay).await;
    }
    response
}

/// `GET /instance-types`: every type, keyed by name, with the regions that have capacity.
pub async fn instance_types() -> Json<Value> {
    let map: serde_json::Map<String, Value> = catalog::TYPES
        .iter()
        .map(|t| (t.name().to_string(), t.listing_json()))
        .collect();
    data(Value::Object(map))
}

/// `launchInstance_request` plus `user_data` (newer API versions): unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    region_name: String,
    instance_type_name: String,
    ssh_key_names: Vec<String>,
    #[serde(default)]
    file_system_names: Vec<String>,
    quantity: Option<u32>,
    name: Option<String>,
    user_data: Option<String>,
}

/// `POST /instance-operations/launch`.
pub async fn launch(State(app): State<LambdaApp>, body: Bytes) -> Result<Json<Value>, LambdaError> {
    let req: LaunchRequest = parse_json(&body)?;
    let region = catalog::region(&req.region_name)
        .ok_or_else(|| LambdaError::invalid(format!("Invalid region: {}", req.region_name)))?;
    let itype = catalog::instance_type(&req.instance_type_name).ok_or_else(|| {
        LambdaError::not_found(format!(
            "Instance type {} does not exist",
            req.instance_type_name
        ))
    })?;
    if req.ssh_key_names.len() != 1 {
        return Err(LambdaError::invalid(
            "Exactly one SSH key must be specified in ssh_key_names",
        ));
    }
    if !req.file_system_names.is_empty() {
        return Err(LambdaError::invalid("This fake attaches no file systems"));
    }
    if req.quantity.unwrap_or(1) != 1 {
        return Err(LambdaError::invalid("quantity must be 1"));
    }
    if let Some(n) = &req.name {
        if n.is_empty() || n.chars().count() > 64 {
            return Err(LambdaError::invalid("name must be 1 to 64 characters"));
        }
    }
    let key_name = req.ssh_key_names[0].clone();
    let state = &app.dc;
    let mut g = state.lock();
    if !g.ssh_keys.iter().any(|k| k.name == key_name) {
        return Err(LambdaError::not_found(format!(
            "SSH key {key_name} does not exist"
        )));
    }
    if !itype.has_capacity_in(region.name) {
        return Err(LambdaError::insufficient_capacity());
    }
    if g.faults.take_capacity_failure() {
        tracing::info!(
            instance_type = itype.name(),
            region = region.name,
            "injected capacity failure"
        );
        return Err(LambdaError::insufficient_capacity());
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let seq = g.next_seq;
    g.next_seq += 1;
    let fate = g.faults.take_fate(false);
    let inst = Instance {
        id: id.clone(),
        seq,
        instance_type: &itype.hw,
        status: Status::Ordered,
        hostname: req.name.unwrap_or_default(),
        description: String::new(),
        created_at: Utc::now(),
        location: region.name.to_string(),
        ip: None,
        os_volume_id: None,
        price_per_hour: itype.price_cents_per_hour as f64 / 100.0,
        is_spot: false,
        // Lambda's images are not modelled (every instance runs Lambda Stack).
        image: &dc_catalog::IMAGES[0],
        startup_script_id: None,
        startup_script: req.user_data,
        ssh_key_ids: vec![key_name],
        os_volume: None,
        jupyter_token: uuid::Uuid::new_v4().simple().to_string(),
        contract: None,
        pricing: None,
        deleted_at: None,
        vanished_at: None,
        fate,
        epoch: 0,
        process: None,
    };
    tracing::info!(%id, instance_type = itype.name(), region = region.name, ?fate, "launched");
    g.instances.insert(id.clone(), inst);
    drop(g);
    lifecycle::schedule_provisioning(state, id.clone(), 0);
    Ok(data(json!({ "instance_ids": [id] })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminateRequest {
    instance_ids: Vec<String>,
}

/// `POST /instance-operations/terminate`: all ids must exist (else nothing is done);
/// instances already terminating or terminated are answered as they are.
pub async fn terminate(
    State(app): State<LambdaApp>,
    body: Bytes,
) -> Result<Json<Value>, LambdaError> {
    let req: TerminateRequest = parse_json(&body)?;
    if req.instance_ids.is_empty() {
        return Err(LambdaError::invalid("instance_ids must not be empty"));
    }
    let state = &app.dc;
    let mut g = state.lock();
    if let Some(missing) = req
        .instance_ids
        .iter()
        .find(|id| g.visible_instance(id).is_none())
    {
        return Err(LambdaError::not_found(format!(
            "Instance {missing} does not exist"
        )));
    }
    let mut out = Vec::new();
    for id in &req.instance_ids {
        let inst = g.instances.get_mut(id).expect("checked above");
        if !inst.deleted() {
            lifecycle::begin_delete(state, inst);
        }
        out.push(instance_json(inst));
    }
    Ok(data(json!({ "terminated_instances": out })))
}

/// `GET /instances`: every instance not yet terminated.
pub async fn list_instances(State(app): State<LambdaApp>) -> Json<Value> {
    let g = app.dc.lock();
    let list: Vec<Value> = g
        .instances_sorted()
        .into_iter()
        .filter(|i| i.visible() && i.status != Status::Discontinued)
        .map(instance_json)
        .collect();
    data(Value::Array(list))
}

/// `GET /instances/{id}`: terminated ones answer `terminated`; unknown or vanished → 404.
pub async fn get_instance(
    State(app): State<LambdaApp>,
    Path(id): Path<String>,
) -> Result<Json<Value>, LambdaError> {
    let g = app.dc.lock();
    let inst = g
        .visible_instance(&id)
        .ok_or_else(|| LambdaError::not_found(format!("Instance {id} does not exist")))?;
    Ok(data(instance_json(inst)))
}

fn ssh_key_json(k: &SshKey) -> Value {
    json!({ "id": k.id, "name": k.name, "public_key": k.key })
}

/// `GET /ssh-keys`.
pub async fn list_ssh_keys(State(app): State<LambdaApp>) -> Json<Value> {
    let g = app.dc.lock();
    data(Value::Array(g.ssh_keys.iter().map(ssh_key_json).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddSshKey {
    name: String,
    public_key: Option<String>,
}

/// `POST /ssh-keys`: registers `public_key`, or generates a pair and answers the private key
/// once (the fake's "pair" is random bytes in the right wrapping: nothing ever uses it).
pub async fn add_ssh_key(
    State(app): State<LambdaApp>,
    body: Bytes,
) -> Result<Json<Value>, LambdaError> {
    let req: AddSshKey = parse_json(&body)?;
    if req.name.trim().is_empty() || req.name.chars().count() > 64 {
        return Err(LambdaError::invalid("name must be 1 to 64 characters"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let (public_key, private_key) = match req.public_key {
        Some(k) if looks_like_public_key(&k) && k.len() <= 4096 => (k.trim().to_string(), None),
        Some(_) => return Err(LambdaError::invalid("Invalid public key")),
        None => {
            let raw: [u8; 32] = rand_bytes();
            (
                format!("ssh-ed25519 {} generated", b64.encode(raw)),
                Some(format!(
                    "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                    b64.encode(rand_bytes::<48>())
                )),
            )
        }
    };
    let mut g = app.dc.lock();
    if g.ssh_keys.iter().any(|k| k.name == req.name) {
        return Err(LambdaError::new(
            StatusCode::BAD_REQUEST,
            error::DUPLICATE,
            format!("An SSH key named {} already exists", req.name),
        ));
    }
    let key = SshKey {
        id: uuid::Uuid::new_v4().simple().to_string(),
        name: req.name,
        key: public_key,
        created_at: now_rfc3339(),
        fingerprint: None,
        created_by_user_id: None,
    };
    let mut v = ssh_key_json(&key);
    v["private_key"] = json!(private_key);
    g.ssh_keys.push(key);
    Ok(data(v))
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        let r = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&r.as_bytes()[..chunk.len()]);
    }
    out
}

/// `DELETE /ssh-keys/{id}`: refused while a live instance uses the key; unknown → 404.
pub async fn delete_ssh_key(
    State(app): State<LambdaApp>,
    Path(id): Path<String>,
) -> Result<StatusCode, LambdaError> {
    let mut g = app.dc.lock();
    let key = g
        .ssh_keys
        .iter()
        .find(|k| k.id == id)
        .cloned()
        .ok_or_else(|| LambdaError::not_found(format!("SSH key {id} does not exist")))?;
    let in_use = g
        .instances
        .values()
        .any(|i| i.visible() && !i.deleted() && i.ssh_key_ids.contains(&key.name));
    if in_use {
        return Err(LambdaError::new(
            StatusCode::BAD_REQUEST,
            error::KEY_IN_USE,
            format!("SSH key {} is in use by an instance", key.name),
        ));
    }
    g.ssh_keys.retain(|k| k.id != id);
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_schemes() {
        let b64 = base64::engine::general_purpose::STANDARD;
        assert!(authorized(Some("Bearer k1"), "k1"));
        assert!(authorized(Some("Basic k1"), "k1"));
        assert!(authorized(
            Some(&format!("Basic {}", b64.encode("k1:"))),
            "k1"
        ));
        assert!(!authorized(Some("Bearer k2"), "k1"));
        assert!(!authorized(
            Some(&format!("Basic {}", b64.encode("k2:"))),
            "k1"
        ));
        assert!(!authorized(None, "k1"));
    }

    #[test]
    fn statuses_and_routes() {
        assert_eq!(lambda_status(Status::Ordered), "booting");
        assert_eq!(lambda_status(Status::Running), "active");
        assert_eq!(lambda_status(Status::Offline), "unhealthy");
        assert_eq!(lambda_status(Status::Error), "unhealthy");
        assert_eq!(lambda_status(Status::Deleting), "terminating");
        assert_eq!(lambda_status(Status::Discontinued), "terminated");
        assert_eq!(route_key("/api/v1/instances/abc"), "/api/v1/instances/{id}");
        assert_eq!(route_key("/api/v1/instances"), "/api/v1/instances");
    }
}
