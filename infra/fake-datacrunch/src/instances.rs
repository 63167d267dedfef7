//! Instances: deploy, get, list and actions (`PUT /v1/instances`).
//!
//! The rules the client depends on are imitated closely: deploy answers 202 with the id as
//! plain text and is not idempotent; delete is refused while booting ("Can't discontinue a
//! provisioning instance"); an action on an instance already in the requested state answers
//! 204; an unknown id is 404 "Invalid instance id"; a deleted instance goes `deleting` →
//! `discontinued`, stays readable but leaves the listing; its OS volume goes where
//! `volume_ids` / `delete_permanently` say (see [`crate::volumes`]).

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    catalog,
    error::{parse_json, ApiError},
    lifecycle::{self, begin_delete, begin_shutdown, set_status},
    resources::plain_id,
    state::{AppState, Inner, Instance, Status, Volume, VolumeState},
    volumes::{self, VolumeDisposal, DEFAULT_OS_VOLUME_GB},
};

#[derive(Debug, Deserialize)]
struct DeployRequest {
    instance_type: Option<String>,
    image: Option<String>,
    hostname: Option<String>,
    description: Option<String>,
    location_code: Option<String>,
    /// The SDKs accept a single id or a list; so does the fake. `null` counts as empty.
    ssh_key_ids: Option<Value>,
    startup_script_id: Option<String>,
    os_volume: Option<Value>,
    is_spot: Option<bool>,
    contract: Option<String>,
    pricing: Option<String>,
}

fn required(v: Option<String>, field: &str) -> Result<String, ApiError> {
    v.map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid(format!("{field} is required")))
}

fn string_list(v: Option<Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Value::String(s) => Ok(s),
                _ => Err(ApiError::invalid(format!("{field} must be a list of ids"))),
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!("{field} must be a list of ids"))),
    }
}

/// `POST /v1/instances`: validates, applies the capacity checks (catalog availability, then
/// the `deploy_capacity_failures` fault), creates the instance in `ordered` and starts its
/// provisioning timer, with its OS volume (counted against the storage quota). Answers 202
/// with the id as plain text.
pub async fn deploy(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: DeployRequest = parse_json(&body)?;
    let type_name = required(req.instance_type, "instance_type")?;
    let itype = catalog::instance_type(&type_name)
        .ok_or_else(|| ApiError::invalid(format!("Invalid instance type: {type_name}")))?;
    let image_key = required(req.image, "image")?;
    let image = catalog::image(&image_key)
        .ok_or_else(|| ApiError::invalid(format!("Invalid image: {image_key}")))?;
    if !image.compatible_with(itype) {
        return Err(ApiError::invalid(
            "Operating system is not valid for this instance type",
        ));
    }
    let hostname = required(req.hostname, "hostname")?;
    let description = req.description.unwrap_or_default();
    let location_code = required(req.location_code, "location_code")?;
    let location = catalog::location(&location_code)
        .ok_or_else(|| ApiError::invalid(format!("Invalid location code: {location_code}")))?;
    let ssh_key_ids = string_list(req.ssh_key_ids, "ssh_key_ids")?;
    let is_spot = req.is_spot.unwrap_or(false);
    let script_id = req
        .startup_script_id
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let os_volume_gb = match req.os_volume.as_ref().and_then(|v| v.get("size")) {
        None => DEFAULT_OS_VOLUME_GB,
        Some(size) => size
            .as_u64()
            .filter(|s| *s > 0)
            .ok_or_else(|| ApiError::invalid("os_volume.size must be a positive integer"))?,
    };
    let os_volume_name = req
        .os_volume
        .as_ref()
        .and_then(|v| v.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);

    let mut g = state.lock();
    for k in &ssh_key_ids {
        if !g.ssh_keys.iter().any(|s| &s.id == k) {
            return Err(ApiError::invalid(format!("Invalid ssh key id: {k}")));
        }
    }
    let startup_script = match &script_id {
        None => None,
        Some(id) => Some(
            g.scripts
                .iter()
                .find(|s| &s.id == id)
                .map(|s| s.script.clone())
                .ok_or_else(|| ApiError::invalid(format!("Invalid startup script id: {id}")))?,
        ),
    };
    let capacity_error = || {
        ApiError::unavailable(format!(
            "Not enough resources to deploy a {} GPU instance type {} in {}",
            itype.gpus, itype.instance_type, location.code
        ))
    };
    if !location.has(itype.instance_type, is_spot) {
        return Err(capacity_error());
    }
    if g.faults.take_capacity_failure() {
        tracing::info!(%type_name, %location_code, "injected capacity failure");
        return Err(capacity_error());
    }
    g.purge_trash(state.config.trash_ttl_secs);
    let used = g.storage_used_gb();
    if used + os_volume_gb > state.config.storage_quota_gb {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_action",
            format!(
                "Storage quota exceeded: {used} GB of {} GB in use (volumes in trash count)",
                state.config.storage_quota_gb
            ),
        ));
    }

    let id = uuid::Uuid::new_v4().to_string();
    let seq = g.next_seq;
    g.next_seq += 1;
    let fate = g.faults.take_fate(is_spot);
    let volume = Volume {
        id: uuid::Uuid::new_v4().to_string(),
        name: os_volume_name.unwrap_or_else(|| format!("OS-NVMe-{}", &id[..8])),
        size_gb: os_volume_gb,
        instance_id: id.clone(),
        location: location.code.to_string(),
        ssh_key_ids: ssh_key_ids.clone(),
        created_at: Utc::now(),
        state: VolumeState::Attached,
        deleted_at: None,
    };
    let inst = Instance {
        id: id.clone(),
        seq,
        instance_type: itype,
        status: Status::Ordered,
        hostname,
        description,
        created_at: Utc::now(),
        location: location.code.to_string(),
        ip: None,
        os_volume_id: Some(volume.id.clone()),
        price_per_hour: itype.hourly_price(is_spot),
        is_spot,
        image,
        startup_script_id: script_id,
        startup_script,
        ssh_key_ids,
        os_volume: req.os_volume,
        jupyter_token: uuid::Uuid::new_v4().simple().to_string(),
        contract: req.contract,
        pricing: req.pricing,
        deleted_at: None,
        vanished_at: None,
        fate,
        epoch: 0,
        process: None,
    };
    tracing::info!(%id, instance_type = %type_name, location = %location_code, ?fate, "deployed");
    g.instances.insert(id.clone(), inst);
    g.volumes.push(volume);
    drop(g);
    lifecycle::schedule_provisioning(&state, id.clone(), 0);
    Ok(plain_id(StatusCode::ACCEPTED, &id))
}

/// `GET /v1/instances/{id}`: deleted ones answer `discontinued`; unknown or vanished → 404.
pub async fn get_instance(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let g = state.lock();
    let inst = g
        .visible_instance(&id)
        .ok_or_else(ApiError::invalid_instance_id)?;
    Ok(Json(inst.to_json()))
}

/// `GET /v1/instances[?status=]`: all instances not `discontinued` (`deleting` ones included)
/// and not vanished.
pub async fn list_instances(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let wanted = q
        .get("status")
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let g = state.lock();
    Json(Value::Array(
        g.instances_sorted()
            .into_iter()
            .filter(|i| i.visible() && i.status != Status::Discontinued)
            .filter(|i| wanted.as_deref().is_none_or(|w| i.status.as_str() == w))
            .map(Instance::to_json)
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct ActionRequest {
    id: Option<Value>,
    action: Option<String>,
    /// Volumes to delete with the instance; absent or `null` means "the OS volume, into trash".
    volume_ids: Option<Value>,
    delete_permanently: Option<bool>,
}

/// The outcome of one action that was not refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// The instance already is (or is going) where the action would take it.
    AlreadyInState,
}

/// `PUT /v1/instances` `{"id": [ids] | "id", "action", "volume_ids", "delete_permanently"}`.
///
/// As documented: with a single id, 202 and the one-element result array, 204 if it already is
/// in the requested state, or the error itself (400 refused, 404 unknown). With several ids,
/// 202 with the per-instance results `[{instanceId, action, status, error?, statusCode?}]` if
/// all succeeded, 207 with them if some failed.
pub async fn action(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ActionRequest = parse_json(&body)?;
    let ids = string_list(req.id, "id")?;
    if ids.is_empty() {
        return Err(ApiError::invalid("id is required"));
    }
    let action = required(req.action, "action")?;
    let disposal = VolumeDisposal {
        volume_ids: match req.volume_ids {
            None | Some(Value::Null) => None,
            v => Some(string_list(v, "volume_ids")?),
        },
        permanently: req.delete_permanently.unwrap_or(false),
    };
    let mut g = state.lock();
    let results: Vec<(String, Result<Applied, ApiError>)> = ids
        .iter()
        .map(|id| {
            let r = apply_action(&state, &mut g, id, &action, &disposal);
            (id.clone(), r)
        })
        .collect();
    if let [(_, single)] = results.as_slice() {
        match single {
            Err(e) => return Err(e.clone()),
            Ok(Applied::AlreadyInState) => return Ok(StatusCode::NO_CONTENT.into_response()),
            Ok(Applied::Done) => {}
        }
    }
    let all_ok = results.iter().all(|(_, r)| r.is_ok());
    let body: Vec<Value> = results
        .into_iter()
        .map(|(id, r)| match r {
            Ok(_) => json!({ "action": action, "instanceId": id, "status": "success" }),
            Err(e) => json!({
                "action": action, "instanceId": id, "status": "error",
                "error": e.message, "statusCode": e.status.as_u16(),
            }),
        })
        .collect();
    let status = if all_ok {
        StatusCode::ACCEPTED
    } else {
        StatusCode::MULTI_STATUS
    };
    Ok((status, Json(body)).into_response())
}

/// The verb used in refusal messages, as the provider words them.
fn verb(action: &str) -> &'static str {
    match action {
        "delete" | "discontinue" | "delete_stuck" => "discontinue",
        "shutdown" | "force_shutdown" => "shutdown",
        _ => "start",
    }
}

fn refuse(action: &str, status: Status) -> ApiError {
    ApiError::forbidden(format!(
        "Can't {} a {} instance",
        verb(action),
        status.as_str()
    ))
}

/// Applies one action to one instance; the caller holds the lock.
pub fn apply_action(
    state: &AppState,
    g: &mut Inner,
    id: &str,
    action: &str,
    disposal: &VolumeDisposal,
) -> Result<Applied, ApiError> {
    let action = action.trim();
    let known = [
        "delete",
        "discontinue",
        "delete_stuck",
        "shutdown",
        "force_shutdown",
        "start",
        "boot",
        "hibernate",
        "restore",
    ];
    if !known.contains(&action) {
        return Err(ApiError::invalid(format!("Invalid action: {action}")));
    }
    if matches!(action, "hibernate" | "restore") {
        return Err(ApiError::invalid(format!(
            "Action {action} is not supported by this instance type"
        )));
    }
    if g.visible_instance(id).is_none() {
        return Err(ApiError::invalid_instance_id());
    }
    // The delete-refusal fault only consumes a count when the delete would otherwise succeed.
    let status = g.instances[id].status;
    let would_delete = matches!(action, "delete" | "discontinue")
        && !matches!(status, Status::Discontinued | Status::Deleting)
        && !status.is_booting();
    if would_delete {
        if let Some(message) = g.faults.take_delete_refusal() {
            tracing::info!(%id, "injected delete refusal");
            return Err(ApiError::forbidden(message));
        }
    }
    let inst = g.instances.get_mut(id).expect("checked above");
    let status = inst.status;
    match action {
        "delete" | "discontinue" | "delete_stuck" => {
            if matches!(status, Status::Discontinued | Status::Deleting) {
                return Ok(Applied::AlreadyInState);
            }
            if status.is_booting() && action != "delete_stuck" {
                // The provider's wording is the same for every pre-running status.
                return Err(ApiError::forbidden(
                    "Can't discontinue a provisioning instance",
                ));
            }
            begin_delete(state, inst);
            if let Some(volume_id) = inst.os_volume_id.clone() {
                volumes::dispose(g, &volume_id, disposal);
            }
        }
        "shutdown" => match status {
            Status::Running => begin_shutdown(state, inst),
            Status::Offline => return Ok(Applied::AlreadyInState),
            s if s.is_booting() => {
                return Err(ApiError::forbidden(
                    "Can't shutdown a provisioning instance",
                ))
            }
            s => return Err(refuse(action, s)),
        },
        "force_shutdown" => match status {
            Status::Running => set_status(state, inst, Status::Offline),
            Status::Offline => return Ok(Applied::AlreadyInState),
            s if s.is_booting() => {
                return Err(ApiError::forbidden(
                    "Can't shutdown a provisioning instance",
                ))
            }
            s => return Err(refuse(action, s)),
        },
        "start" | "boot" => match status {
            Status::Offline => set_status(state, inst, Status::Running),
            Status::Running => return Ok(Applied::AlreadyInState),
            s => return Err(refuse(action, s)),
        },
        _ => unreachable!("filtered above"),
    }
    Ok(Applied::Done)
}
