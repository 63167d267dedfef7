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
//! `GET /v1/volumes/{id}` (either).

use std::collections::HashMap;

use axum::{
    extract::{Path, Query, State},
    Json,
};
use chrono::Utc;
use serde_json::Value;

use crate::{
    error::ApiError,
    state::{AppState, Inner, Volume, VolumeState},
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
