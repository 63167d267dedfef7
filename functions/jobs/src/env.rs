//! `GET /jobs/{id}/env`: the wrapper, at boot, fetches the job's environment variables and
//! its secrets' values (job token). Answered only while the job provisions or runs; the
//! values travel nowhere else (not the job item, not the provider's startup script).

use crate::{job_token_caller, App};
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::jobs::env::env_for_instance;
use serde_json::json;

pub async fn env(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let (account_id, id) = job_token_caller(app, ctx).await?;
    let job = app
        .store
        .get_job(&account_id, &id)
        .await?
        .ok_or(ApiError::NotFound("Job"))?;
    let lines = env_for_instance(&app.store, &app.vault, &job).await?;
    // One string the wrapper cuts out with sed: `NAME BASE64` lines, `\n`-separated (JSON
    // escapes the line breaks; names and base64 hold no quote or backslash).
    Ok(Reply::ok(json!({ "job_id": id, "lines": lines })))
}
