//! Admin routes (no auth, under `/admin`): fault injection, reset, forced transitions and a
//! full dump of the state for assertions. They are not part of the provider API and are never
//! counted in `requests`.

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{parse_json, parse_json_or_default, ApiError},
    execute,
    faults::{Faults, FaultsPatch},
    lifecycle::{begin_shutdown, set_status, vanish},
    ratelimit::{RateLimits, RateLimitsPatch},
    state::{AppState, Inner, Status, VolumeState},
};

/// `POST /admin/faults`: merge a partial patch; answers the resulting settings.
pub async fn set_faults(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Faults>, ApiError> {
    let patch: FaultsPatch = parse_json_or_default(&body)?;
    let mut g = state.lock();
    g.faults.apply(patch)?;
    tracing::info!(faults = ?g.faults, "faults updated");
    Ok(Json(g.faults.clone()))
}

/// `GET /admin/faults`: the current settings.
pub async fn get_faults(State(state): State<AppState>) -> Json<Faults> {
    Json(state.lock().faults.clone())
}

#[derive(Debug, Default, Deserialize)]
struct ResetRequest {
    /// Also revoke issued tokens. Off by default: a client under test keeps its cached token
    /// across test cases, as it would keep it across a real provider's data changes.
    #[serde(default)]
    tokens: bool,
}

/// `POST /admin/reset` `[{"tokens": true}]`: kill every script, forget instances, volumes, keys,
/// scripts, faults, counters and conformance findings; rate limits go back to the start-up
/// settings (the command line's).
pub async fn reset(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: ResetRequest = parse_json_or_default(&body)?;
    let mut g = state.lock();
    for inst in g.instances.values_mut() {
        execute::discard(inst, true);
    }
    let mut fresh = Inner::new(&state.config);
    if !req.tokens {
        fresh.access_tokens = std::mem::take(&mut g.access_tokens);
        fresh.refresh_tokens = std::mem::take(&mut g.refresh_tokens);
    }
    *g = fresh;
    tracing::info!(revoke_tokens = req.tokens, "state reset");
    Ok(Json(json!({ "reset": true })))
}

#[derive(Debug, Deserialize)]
struct ForceStatus {
    status: String,
}

/// `POST /admin/instances/{id}/status` `{"status": "..."}`: force a status, with the same side
/// effects as a natural transition (ip on running, script killed when leaving running,
/// `discontinued` counts as deleted). Cancels any pending timer of the instance.
pub async fn force_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: ForceStatus = parse_json(&body)?;
    let status = Status::parse(&req.status)
        .ok_or_else(|| ApiError::invalid(format!("Unknown status: {}", req.status)))?;
    let mut g = state.lock();
    let inst = g
        .instances
        .get_mut(&id)
        .ok_or_else(ApiError::invalid_instance_id)?;
    set_status(&state, inst, status);
    Ok(Json(inst.to_admin_json()))
}

/// `POST /admin/instances/{id}/vanish`: the provider loses the instance (404 from now on).
pub async fn force_vanish(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut g = state.lock();
    let inst = g
        .instances
        .get_mut(&id)
        .ok_or_else(ApiError::invalid_instance_id)?;
    vanish(inst);
    Ok(Json(inst.to_admin_json()))
}

/// `POST /admin/instances/{id}/shutdown`: what the execute-mode `shutdown` shim calls; the
/// same as a `shutdown` action (running → offline after `shutdown_ms`). 202 when scheduled,
/// 200 if already offline, 400 `forbidden_action` in any other status.
pub async fn shutdown(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mut g = state.lock();
    let inst = g
        .instances
        .get_mut(&id)
        .filter(|i| i.visible())
        .ok_or_else(ApiError::invalid_instance_id)?;
    match inst.status {
        Status::Running => {
            tracing::info!(%id, "shutdown requested from the instance");
            begin_shutdown(&state, inst);
            Ok((StatusCode::ACCEPTED, Json(inst.to_admin_json())))
        }
        Status::Offline => Ok((StatusCode::OK, Json(inst.to_admin_json()))),
        s => Err(ApiError::forbidden(format!(
            "Can't shutdown a {} instance",
            s.as_str()
        ))),
    }
}

/// `POST /admin/rate-limits`: merge a partial patch (`enabled`, `project`, `endpoint`, `list`,
/// `window_ms`) and start fresh windows; answers the resulting limits.
pub async fn set_rate_limits(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<RateLimits>, ApiError> {
    let patch: RateLimitsPatch = parse_json_or_default(&body)?;
    let mut g = state.lock();
    g.rate.limits.apply(patch)?;
    g.rate.clear();
    tracing::info!(limits = ?g.rate.limits, "rate limits updated");
    Ok(Json(g.rate.limits.clone()))
}

/// `GET /admin/rate-limits`.
pub async fn get_rate_limits(State(state): State<AppState>) -> Json<RateLimits> {
    Json(state.lock().rate.limits.clone())
}

/// `GET /admin/state`: everything, including deleted and vanished instances, volumes in trash,
/// and the counts the leak checks need: `leaked_volumes` (every volume still existing: attached,
/// detached or in trash; attached ones belong to live instances, so after the last instance is
/// deleted it should be 0), `volumes_in_trash`, `storage_used_gb`, `scripts_count` (alias
/// `leaked_scripts`); and the
/// conformance findings (`conformance_violations`, `conformance.recent`).
pub async fn dump(State(state): State<AppState>) -> Json<Value> {
    let mut g = state.lock();
    g.purge_trash(state.config.trash_ttl_secs);
    let instances: Vec<Value> = g
        .instances_sorted()
        .into_iter()
        .map(|i| i.to_admin_json())
        .collect();
    let scripts: Vec<Value> = g
        .scripts
        .iter()
        .map(|s| json!({ "id": s.id, "name": s.name }))
        .collect();
    let volumes: Vec<Value> = g.volumes.iter().map(|v| v.to_admin_json()).collect();
    let in_trash = g
        .volumes
        .iter()
        .filter(|v| v.state == VolumeState::Trash)
        .count();
    Json(json!({
        "instances": instances,
        "scripts": scripts,
        "scripts_count": g.scripts.len(),
        // The same count under the name the leak checks use (every script still held).
        "leaked_scripts": g.scripts.len(),
        "volumes": volumes,
        "leaked_volumes": g.volumes.len(),
        "volumes_in_trash": in_trash,
        "storage_used_gb": g.storage_used_gb(),
        "conformance_violations": g.conformance.violations,
        "conformance": {
            "mode": state.config.conformance,
            "requests_checked": g.conformance.requests_checked,
            "responses_checked": g.conformance.responses_checked,
            "violations": g.conformance.violations,
            "deprecated_calls": g.conformance.deprecated_calls,
            "recent": g.conformance.recent,
        },
        "rate_limits": g.rate.limits,
        "rate_limited": g.rate.throttled,
        "ssh_keys": g.ssh_keys,
        "requests": { "total": g.requests_total, "by_route": g.requests_by_route },
        "tokens_issued": g.tokens_issued,
        "faults": g.faults,
    }))
}
