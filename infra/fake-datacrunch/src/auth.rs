//! OAuth2 token endpoint and bearer-token checking.
//!
//! Tokens are random strings kept in memory with their expiry, so a test can make a token
//! expire (`token_ttl_secs`) and check that the client re-authenticates. Refresh tokens are
//! single use: a refresh grant rotates both tokens, as most OAuth2 servers do, so a client that
//! keeps reusing an old refresh token finds out.

use std::time::{Duration, Instant};

use axum::{body::Bytes, extract::State, Json};
use rand::{distributions::Alphanumeric, Rng};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    error::{parse_json, ApiError},
    state::{AppState, Inner},
};

pub const TOKEN_PATH: &str = "/v1/oauth2/token";

#[derive(Debug, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

fn random_token(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// `POST /v1/oauth2/token`: `client_credentials` and `refresh_token` grants.
pub async fn token(State(state): State<AppState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: TokenRequest = parse_json(&body)?;
    let mut g = state.lock();
    match req.grant_type.as_deref() {
        Some("client_credentials") => {
            let ok = req.client_id.as_deref() == Some(state.config.client_id.as_str())
                && req.client_secret.as_deref() == Some(state.config.client_secret.as_str());
            if !ok {
                return Err(ApiError::unauthorized("Invalid client credentials"));
            }
        }
        Some("refresh_token") => {
            let presented = req.refresh_token.unwrap_or_default();
            if !g.refresh_tokens.remove(&presented) {
                return Err(ApiError::unauthorized("Invalid refresh token"));
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Unsupported grant_type: {other}"
            )))
        }
        None => return Err(ApiError::invalid("grant_type is required")),
    }
    Ok(Json(issue(&mut g)))
}

/// Issues a fresh access/refresh token pair with the current TTL.
fn issue(g: &mut Inner) -> Value {
    let now = Instant::now();
    // Forget expired tokens so the map does not grow without bound in a long-running fake.
    g.access_tokens.retain(|_, exp| *exp > now);
    let ttl = g.faults.token_ttl_secs;
    let access = random_token(48);
    let refresh = random_token(48);
    g.access_tokens
        .insert(access.clone(), now + Duration::from_secs(ttl));
    g.refresh_tokens.insert(refresh.clone());
    g.tokens_issued += 1;
    json!({
        "access_token": access,
        "refresh_token": refresh,
        "scope": "cloud-api-v1",
        "token_type": "Bearer",
        "expires_in": ttl,
    })
}

/// Checks an `Authorization` header value against the issued, unexpired tokens.
pub fn check_bearer(g: &Inner, header: Option<&str>) -> Result<(), ApiError> {
    let header = header.ok_or_else(|| ApiError::unauthorized("Missing access token"))?;
    let (scheme, token) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Invalid access token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::unauthorized("Invalid access token"));
    }
    match g.access_tokens.get(token.trim()) {
        Some(exp) if *exp > Instant::now() => Ok(()),
        Some(_) => Err(ApiError::unauthorized("Access token expired")),
        None => Err(ApiError::unauthorized("Invalid access token")),
    }
}
