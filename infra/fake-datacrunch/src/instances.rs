//! Instances: deploy, get, list and actions (`PUT /v1/instances`).
//!
//! The rules the client depends on are imitated closely: deploy answers the id as plain text
//! and is not idempotent; delete is refused while booting ("Can't discontinue a provisioning
//! instance") and on an already deleted instance; an unknown id is 404 "Invalid instance id";
//! deleted instances stay readable with status `discontinued` but leave the listing.

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
    lifecycle::{self, begin_shutdown, set_status},
    resources::plain_id,
    state::{AppState, Inner, Instance, Status},
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
/// provisioning timer. Answers 201 with the id as plain text.
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
    let description = required(req.description, "description")?;
    let location_code = required(req.location_code, "location_code")?;
    let location = catalog::location(&location_code)
        .ok_or_else(|| ApiError::invalid(format!("Invalid location code: {location_code}")))?;
    let ssh_key_ids = string_list(req.ssh_key_ids, "ssh_key_ids")?;
    let is_spot = req.is_spot.unwrap_or(false);
    let script_id = req
        .startup_script_id
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(size) = req.os_volume.as_ref().and_then(|v| v.get("size")) {
        if size.as_u64().is_none_or(|s| s == 0) {
            return Err(ApiError::invalid(
                "os_volume.size must be a positive integer",
            ));
        }
    }

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

    let id = uuid::Uuid::new_v4().to_string();
    let seq = g.next_seq;
    g.next_seq += 1;
    let fate = g.faults.take_fate();
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
        os_volume_id: None,
        price_per_hour: itype.hourly_price(is_spot),
        is_spot,
        image,
        startup_script_id: script_id,
        startup_script,
        ssh_key_ids,
        os_volume: req.os_volume,
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
    drop(g);
    lifecycle::schedule_provisioning(&state, id.clone(), 0);
    Ok(plain_id(StatusCode::CREATED, &id))
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

/// `GET /v1/instances[?status=]`: all non-deleted (and not vanished) instances.
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
            .filter(|i| i.visible() && !i.deleted())
            .filter(|i| wanted.as_deref().is_none_or(|w| i.status.as_str() == w))
            .map(Instance::to_json)
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
struct ActionRequest {
    id: Option<Value>,
    action: Option<String>,
    // `volume_ids` and `delete_permanently` are accepted and ignored: the fake has no volumes
    // beyond the OS volume, which goes with the instance.
}

/// `PUT /v1/instances` `{"id": [ids] | "id", "action", ...}` → 202.
///
/// With a single id an error is answered as such (the common case clients handle). With
/// several ids each is processed; if any failed the answer is 207 with per-instance results
/// `[{action, instanceId, status, error, statusCode}]`.
pub async fn action(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: ActionRequest = parse_json(&body)?;
    let ids = string_list(req.id, "id")?;
    if ids.is_empty() {
        return Err(ApiError::invalid("id is required"));
    }
    let action = required(req.action, "action")?;
    let mut g = state.lock();
    if ids.len() == 1 {
        apply_action(&state, &mut g, &ids[0], &action)?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let results: Vec<(String, Result<(), ApiError>)> = ids
        .iter()
        .map(|id| (id.clone(), apply_action(&state, &mut g, id, &action)))
        .collect();
    if results.iter().all(|(_, r)| r.is_ok()) {
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let body: Vec<Value> = results
        .into_iter()
        .map(|(id, r)| match r {
            Ok(()) => json!({
                "action": action, "instanceId": id, "status": "success",
                "error": null, "statusCode": 202,
            }),
            Err(e) => json!({
                "action": action, "instanceId": id, "status": "error",
                "error": e.body(), "statusCode": e.status.as_u16(),
            }),
        })
        .collect();
    Ok((StatusCode::MULTI_STATUS, Json(body)).into_response())
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
) -> Result<(), ApiError> {
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
        && status != Status::Discontinued
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
            if status == Status::Discontinued {
                return Err(refuse(action, status));
            }
            if status.is_booting() && action != "delete_stuck" {
                // The provider's wording is the same for every pre-running status.
                return Err(ApiError::forbidden(
                    "Can't discontinue a provisioning instance",
                ));
            }
            set_status(state, inst, Status::Discontinued);
        }
        "shutdown" => match status {
            Status::Running => begin_shutdown(state, inst),
            Status::Offline => {}
            s if s.is_booting() => {
                return Err(ApiError::forbidden(
                    "Can't shutdown a provisioning instance",
                ))
            }
            s => return Err(refuse(action, s)),
        },
        "force_shutdown" => match status {
            Status::Running => set_status(state, inst, Status::Offline),
            Status::Offline => {}
            s if s.is_booting() => {
                return Err(ApiError::forbidden(
                    "Can't shutdown a provisioning instance",
                ))
            }
            s => return Err(refuse(action, s)),
        },
        "start" | "boot" => match status {
            Status::Offline => set_status(state, inst, Status::Running),
            Status::Running => {}
            s => return Err(refuse(action, s)),
        },
        _ => unreachable!("filtered above"),
    }
    Ok(())
}
