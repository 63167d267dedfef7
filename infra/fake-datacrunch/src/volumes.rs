//! Volumes. Only OS volumes exist in the fake: one per instance, created with it (its id is the
//! instance's `os_volume_id`). What happens to it when the instance is deleted follows Verda's
//! OpenAPI document (`PUT /v1/instances`):
//! - no `volume_ids` (absent or `null`): the OS volume is deleted *into trash*, where it stays
//!   96 hours and counts against the storage quota;
//! - `volume_ids` naming it: deleted, permanently if `delete_permanently` is true, else into
//!   trash;
//! - `volume_ids` not naming it (`[]` included): detached and kept.
//!
//! Routes: `GET /v1/volumes[?status=]` (not in trash), `GET /v1/volumes/trash`,
//! `GET /v1/volumes/{id}` (either), `DELETE /v1/volumes/{id}` `{"is_permanent": bool}` (into
//! trash, or for good; a volume already in trash can be deleted for good too — an assumption:
//! Verda's console offers it, its OpenAPI does not say). Deleting a volume attached to an
//! instance that is up (booting or running) is refused, as the SDK documents ("they need to be
//! shut-down"); one whose instance is gone — deleted, or lost by the provider — is not.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    Json,
};
use chrono::Utc;
use serde::Deserialize;
use serde_json::Value;

use crate::{
    error::{parse_json_or_default, ApiError},
    state::{AppState, Inner, Status, Volume, VolumeState},
};

/// Size of an OS volume when the deploy does not give one (GB).
pub const DEFAULT_OS_VOLUME_GB: u64 = 50;

/// What a delete asks for the instance's volumes.
#[derive(Debug, Clone, Default)]
pub struct VolumeDisposal {
    /// `None`: the field was absent or null.
    pub volume_ids: Option<Vec<String>>,
    pub permanently: bool,
}

/// Applies `disposal` to the OS volume `volume_id` of a deleted instance.
pub fn dispose(g: &mut Inner, volume_id: &str, disposal: &VolumeDisposal) {
    let named = disposal
        .volume_ids
        .as_ref()
        .map(|ids| ids.iter().any(|v| v == volume_id));
    match named {
        Some(true) if disposal.permanently => {
            g.volumes.retain(|v| v.id != volume_id);
            tracing::info!(%volume_id, "OS volume deleted permanently");
        }
        None | Some(true) => {
            if let Some(v) = g.volumes.iter_mut().find(|v| v.id == volume_id) {
                v.state = VolumeState::Trash;
                v.deleted_at = Some(Utc::now());
                tracing::info!(%volume_id, "OS volume moved to trash");
            }
        }
        Some(false) => {
            if let Some(v) = g.volumes.iter_mut().find(|v| v.id == volume_id) {
                v.state = VolumeState::Detached;
                tracing::info!(%volume_id, "OS volume detached and kept");
            }
        }
    }
}

fn listed(state: &AppState, keep: impl Fn(&Volume) -> bool) -> Json<Value> {
    let mut g = state.lock();
    g.purge_trash(state.config.trash_ttl_secs);
    Json(Value::Array(
        g.volumes
            .iter()
            .filter(|v| keep(v))
            .map(Volume::to_json)
            .collect(),
    ))
}

/// `GET /v1/volumes[?status=]`: volumes not in trash.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let wanted = q.get("status").cloned();
    listed(&state, |v| {
        v.state != VolumeState::Trash
            && wanted.as_deref().is_none_or(|w| v.to_json()["status"] == w)
    })
}

/// `GET /v1/volumes/trash`.
pub async fn trash(State(state): State<AppState>) -> Json<Value> {
    listed(&state, |v| v.state == VolumeState::Trash)
}

/// `GET /v1/volumes/{id}`.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut g = state.lock();
    g.purge_trash(state.config.trash_ttl_secs);
    g.volumes
        .iter()
        .find(|v| v.id == id)
        .map(|v| Json(v.to_json()))
        .ok_or_else(|| ApiError::not_found("Volume not found"))
}

#[derive(Debug, Default, Deserialize)]
struct DeleteRequest {
    #[serde(default)]
    is_permanent: bool,
}

/// `DELETE /v1/volumes/{id}` `{"is_permanent": bool}`: 202, 404 if unknown, 400
/// `forbidden_action` while its instance is up.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: DeleteRequest = parse_json_or_default(&body)?;
    let mut g = state.lock();
    g.purge_trash(state.config.trash_ttl_secs);
    let volume = g
        .volumes
        .iter()
        .find(|v| v.id == id)
        .ok_or_else(|| ApiError::not_found("Volume not found"))?;
    if volume.state == VolumeState::Attached {
        let up = g
            .visible_instance(&volume.instance_id)
            .filter(|i| !i.deleted())
            .map(|i| i.status)
            .filter(|s| *s == Status::Running || s.is_booting());
        if let Some(status) = up {
            return Err(ApiError::forbidden(format!(
                "Can't delete a volume attached to a {} instance",
                status.as_str()
            )));
        }
    }
    if req.is_permanent {
        g.volumes.retain(|v| v.id != id);
        tracing::info!(volume_id = %id, "volume deleted permanently");
    } else if let Some(v) = g.volumes.iter_mut().find(|v| v.id == id) {
        if v.state != VolumeState::Trash {
            v.state = VolumeState::Trash;
            v.deleted_at = Some(Utc::now());
            tracing::info!(volume_id = %id, "volume moved to trash");
        }
    }
    Ok(StatusCode::ACCEPTED)
}
