//! `POST /jobs/{id}/logs` (the instance's wrapper ships a chunk of output, with the job token)
//! and `GET /jobs/{id}/logs` (`jobs:read`: lines after a cursor, the last N, or a long poll).

use crate::{job_id, job_token_caller, App};
use base64::Engine;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::jobs::env::masked;
use mimiry_shared::jobs::logs::{
    read as read_log, LogQuery, Position, CHUNK_BYTES, DEFAULT_LINES, MAX_LINES, MAX_SEQ,
    MAX_WAIT_SECS,
};
use mimiry_shared::store::logs::Stored;
use mimiry_shared::time::now_ms;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipRequest {
    /// The chunk's number: 0, 1, 2… in the order of the output.
    seq: u64,
    /// Raw output bytes, base64 (any bytes survive the trip; stored as UTF-8, invalid
    /// sequences replaced).
    data_base64: String,
}

pub async fn ship(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let (account_id, id) = job_token_caller(app, ctx).await?;
    let input: ShipRequest = ctx.json()?;
    if input.seq > MAX_SEQ {
        return Err(ApiError::validation(
            "seq",
            format!("seq must be from 0 to {MAX_SEQ}"),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(input.data_base64.trim())
        .map_err(|_| ApiError::validation("data_base64", "data_base64 is not valid base64"))?;
    if bytes.is_empty() || bytes.len() > CHUNK_BYTES {
        return Err(ApiError::validation(
            "data_base64",
            format!("A chunk holds from 1 to {CHUNK_BYTES} bytes of output"),
        ));
    }
    let text = String::from_utf8_lossy(&bytes);
    // The job is read for its secrets: their values are masked before anything is stored
    // (one read per chunk, and a quiet job ships no chunk).
    let job = app
        .store
        .get_job(&account_id, &id)
        .await?
        .ok_or(ApiError::NotFound("Job"))?;
    let text = masked(&app.store, &app.vault, &job, &text).await?;
    let stored = app
        .store
        .put_log_chunk(&account_id, &id, input.seq, &text, now_ms())
        .await?;
    Ok(Reply::ok(json!({
        "job_id": id,
        "stored": stored == Stored::Stored,
        "truncated": stored == Stored::Truncated,
    })))
}

/// A whole-number query parameter within `range`; `None` when absent.
fn number(
    ctx: &RequestCtx,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ApiError> {
    ctx.query(name)
        .map(|v| {
            v.parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| {
                    ApiError::validation(
                        name,
                        format!(
                            "{name} must be a whole number from {} to {}",
                            range.start(),
                            range.end()
                        ),
                    )
                })
        })
        .transpose()
}

pub async fn read(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let id = job_id(ctx)?;
    let account_id = &ctx.caller().account_id;
    let max = MAX_LINES as u64;
    let limit = number(ctx, "limit", 1..=max)?.map_or(DEFAULT_LINES, |n| n as usize);
    let wait = number(ctx, "wait", 0..=MAX_WAIT_SECS)?.unwrap_or(0);
    let tail_lines = number(ctx, "tail", 1..=max)?.map(|n| n as usize);
    let after = ctx
        .query("after")
        .map(|c| Position::from_cursor(&c))
        .transpose()?;
    let answer = read_log(
        &app.store,
        account_id,
        &id,
        LogQuery {
            after,
            tail: tail_lines,
            limit,
            wait_secs: wait,
        },
    )
    .await?;
    Ok(Reply::ok(answer.to_json(&id)))
}
