//! Read-only catalog routes, SSH keys, startup scripts and balance.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{Path, Query, State},
    http::{header::CONTENT_TYPE, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    catalog::{self, IMAGES, INSTANCE_TYPES, LOCATIONS},
    error::{parse_json, ApiError},
    state::{now_rfc3339, AppState, Script, SshKey},
};

type Params = Query<HashMap<String, String>>;

/// A created resource's id, answered as plain text like the real API does.
pub fn plain_id(status: StatusCode, id: &str) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        id.to_string(),
    )
        .into_response()
}

fn truthy(v: Option<&String>) -> bool {
    matches!(
        v.map(|s| s.trim().to_ascii_lowercase()).as_deref(),
        Some("true" | "1" | "yes")
    )
}

/// The spot flag of availability queries; SDKs disagree on its spelling, accept both.
fn spot_param(q: &HashMap<String, String>) -> bool {
    truthy(q.get("is_spot")) || truthy(q.get("isSpot"))
}

/// `GET /v1/instance-types?currency=usd|eur`.
pub async fn instance_types(Query(q): Params) -> Result<Json<Value>, ApiError> {
    let currency = q
        .get("currency")
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "usd".to_string());
    // A fixed rate: prices only need to be plausible and deterministic.
    let rate = match currency.as_str() {
        "usd" => 1.0,
        "eur" => 0.92,
        other => return Err(ApiError::invalid(format!("Invalid currency: {other}"))),
    };
    Ok(Json(Value::Array(
        INSTANCE_TYPES
            .iter()
            .map(|t| t.to_json(&currency, rate))
            .collect(),
    )))
}

/// `GET /v1/instance-availability[?location_code=&is_spot=]`.
pub async fn availability(Query(q): Params) -> Json<Value> {
    let spot = spot_param(&q);
    let wanted = q.get("location_code").map(|s| s.trim());
    let list: Vec<Value> = LOCATIONS
        .iter()
        .filter(|l| wanted.is_none_or(|w| w.eq_ignore_ascii_case(l.code)))
        .map(|l| json!({ "location_code": l.code, "availabilities": l.inventory(spot) }))
        .collect();
    Json(Value::Array(list))
}

/// `GET /v1/instance-availability/{instance_type}[?location_code=&is_spot=]` → a JSON boolean.
pub async fn availability_of(Path(instance_type): Path<String>, Query(q): Params) -> Json<bool> {
    let spot = spot_param(&q);
    let wanted = q.get("location_code").map(|s| s.trim());
    Json(
        LOCATIONS
            .iter()
            .filter(|l| wanted.is_none_or(|w| w.eq_ignore_ascii_case(l.code)))
            .any(|l| l.has(&instance_type, spot)),
    )
}

/// `GET /v1/locations`.
pub async fn locations() -> Json<Value> {
    Json(Value::Array(
        LOCATIONS
            .iter()
            .map(|l| json!({ "code": l.code, "name": l.name, "country_code": l.country_code }))
            .collect(),
    ))
}

/// `GET /v1/images[?instance_type=]`: with the filter, only compatible images (an unknown type
/// has none).
pub async fn images(Query(q): Params) -> Json<Value> {
    let list: Vec<Value> = match q.get("instance_type").filter(|s| !s.trim().is_empty()) {
        None => IMAGES.iter().map(|i| i.to_json(None)).collect(),
        Some(name) => match catalog::instance_type(name.trim()) {
            None => Vec::new(),
            Some(t) => IMAGES
                .iter()
                .filter(|i| i.compatible_with(t))
                .map(|i| i.to_json(Some(t)))
                .collect(),
        },
    };
    Json(Value::Array(list))
}

/// `GET /v1/balance`.
pub async fn balance() -> Json<Value> {
    Json(json!({ "amount": 50.5, "currency": "usd" }))
}

// ---- SSH keys ----

#[derive(Deserialize)]
struct NewSshKey {
    name: Option<String>,
    key: Option<String>,
}

/// Public key formats accepted by the provider (OpenSSH one-line form).
pub fn looks_like_public_key(key: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "ssh-ed25519 ",
        "ssh-rsa ",
        "ssh-dss ",
        "ecdsa-sha2-",
        "sk-ssh-ed25519@openssh.com ",
        "sk-ecdsa-sha2-",
    ];
    let key = key.trim();
    PREFIXES.iter().any(|p| key.starts_with(p)) && key.split_whitespace().count() >= 2
}

/// `POST /v1/ssh-keys` (and the deprecated `/v1/sshkeys`) `{name,key}` → 201, the id as plain text. Names need not be unique.
pub async fn create_ssh_key(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewSshKey = parse_json(&body)?;
    let name = req
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let key = req
        .key
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("key is required"))?;
    if !looks_like_public_key(&key) {
        return Err(ApiError::invalid("Invalid SSH public key"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    state.lock().ssh_keys.push(SshKey {
        id: id.clone(),
        name,
        key: key.trim().to_string(),
        created_at: now_rfc3339(),
        fingerprint: None,
        created_by_user_id: None,
    });
    Ok(plain_id(StatusCode::CREATED, &id))
}

/// `GET /v1/sshkeys`.
pub async fn list_ssh_keys(State(state): State<AppState>) -> Json<Vec<SshKey>> {
    Json(state.lock().ssh_keys.clone())
}

/// `GET /v1/sshkeys/{id}` → a one-element array.
pub async fn get_ssh_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<SshKey>>, ApiError> {
    let g = state.lock();
    let key = g
        .ssh_keys
        .iter()
        .find(|k| k.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("Invalid ssh key id"))?;
    Ok(Json(vec![key]))
}

/// `DELETE /v1/sshkeys/{id}`: missing is not an error.
pub async fn delete_ssh_key(State(state): State<AppState>, Path(id): Path<String>) -> StatusCode {
    state.lock().ssh_keys.retain(|k| k.id != id);
    StatusCode::OK
}

#[derive(Deserialize)]
struct DeleteSshKeys {
    keys: Vec<String>,
}

/// `DELETE /v1/sshkeys` `{"keys":[ids]}`.
pub async fn delete_ssh_keys(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: DeleteSshKeys = parse_json(&body)?;
    state.lock().ssh_keys.retain(|k| !req.keys.contains(&k.id));
    Ok(StatusCode::OK)
}

// ---- startup scripts ----

#[derive(Deserialize)]
struct NewScript {
    name: Option<String>,
    script: Option<String>,
}

/// `POST /v1/scripts` `{name,script}` → 201, the id as plain text; refused with 403
/// `forbidden_action` once the project holds `script_quota` scripts (100 by default).
pub async fn create_script(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewScript = parse_json(&body)?;
    let name = req
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("name is required"))?;
    let script = req
        .script
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("script is required"))?;
    let id = uuid::Uuid::new_v4().to_string();
    let mut g = state.lock();
    if g.scripts.len() >= state.config.script_quota {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden_action",
            format!(
                "Startup scripts quota exceeded: the project holds {} of {} scripts",
                g.scripts.len(),
                state.config.script_quota
            ),
        ));
    }
    let seq = g.next_seq;
    g.next_seq += 1;
    g.scripts.push(Script {
        id: id.clone(),
        name,
        script,
        created_at: now_rfc3339(),
        seq,
    });
    Ok(plain_id(StatusCode::CREATED, &id))
}

/// The query of `GET /v1/scripts`, parsed: out-of-range values are refused rather than
/// clamped, so that a client relying on more than the documented maximum finds out.
struct ScriptPage {
    page: usize,
    page_size: usize,
    name: Option<String>,
    ascending: bool,
}

impl ScriptPage {
    fn parse(q: &HashMap<String, String>) -> Result<ScriptPage, ApiError> {
        let number = |key: &str, default: usize, max: usize| -> Result<usize, ApiError> {
            match q.get(key) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(format!("{key} must be an integer from 1 to {max}"))
                    }),
            }
        };
        let ascending = match q.get("orderDirection").map(String::as_str) {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "orderDirection must be asc or desc, not {other}"
                )))
            }
        };
        if let Some(by) = q.get("orderBy").filter(|b| b.as_str() != "created_at") {
            return Err(ApiError::invalid(format!(
                "orderBy must be created_at, not {by}"
            )));
        }
        Ok(ScriptPage {
            page: number("page", 1, usize::MAX)?,
            page_size: number("pageSize", 10, 100)?,
            name: q.get("name").map(|n| n.to_lowercase()),
            ascending,
        })
    }
}

/// `GET /v1/scripts[?page=&pageSize=&name=&orderBy=created_at&orderDirection=]`: one page
/// (default 10, at most 100), newest first unless asked otherwise, the totals in `X-Page`,
/// `X-Page-Size` and `X-Total-Count`. `name` matches part of the name.
pub async fn list_scripts(
    State(state): State<AppState>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let p = ScriptPage::parse(&q)?;
    let g = state.lock();
    let mut matching: Vec<&Script> = g
        .scripts
        .iter()
        .filter(|s| {
            p.name
                .as_deref()
                .is_none_or(|n| s.name.to_lowercase().contains(n))
        })
        .collect();
    matching.sort_by_key(|s| s.seq);
    if !p.ascending {
        matching.reverse();
    }
    let total = matching.len();
    let page: Vec<&Script> = matching
        .into_iter()
        .skip((p.page - 1).saturating_mul(p.page_size))
        .take(p.page_size)
        .collect();
    let headers = [
        ("x-page", p.page.to_string()),
        ("x-page-size", p.page_size.to_string()),
        ("x-total-count", total.to_string()),
    ];
    Ok((headers, Json(page)).into_response())
}

/// `GET /v1/scripts/{id}` → a one-element array.
pub async fn get_script(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<Script>>, ApiError> {
    let g = state.lock();
    let s = g
        .scripts
        .iter()
        .find(|s| s.id == id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("Invalid script id"))?;
    Ok(Json(vec![s]))
}

/// `DELETE /v1/scripts/{id}`: missing is not an error.
pub async fn delete_script(State(state): State<AppState>, Path(id): Path<String>) -> StatusCode {
    state.lock().scripts.retain(|s| s.id != id);
    StatusCode::OK
}

#[derive(Deserialize)]
struct DeleteScripts {
    scripts: Vec<String>,
}

/// `DELETE /v1/scripts` `{"scripts":[ids]}`.
pub async fn delete_scripts(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let req: DeleteScripts = parse_json(&body)?;
    state
        .lock()
        .scripts
        .retain(|s| !req.scripts.contains(&s.id));
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_check() {
        assert!(looks_like_public_key(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG user@host"
        ));
        assert!(looks_like_public_key("ecdsa-sha2-nistp256 AAAAE2Vj"));
        assert!(!looks_like_public_key("not a key"));
        assert!(!looks_like_public_key("ssh-ed25519"));
    }
}
