//! `GET /jobs` and `GET /jobs/{id}`.

use crate::{job_id, App};
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::jobs::JobStatus;
use mimiry_shared::time::now_ms;
use serde_json::json;

pub async fn list(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let status = match ctx.query("status") {
        None => None,
        Some(s) => Some(JobStatus::parse(&s).ok_or_else(|| {
            ApiError::validation(
                "status",
                format!(
                    "Unknown status `{s}`; expected one of: {}",
                    JobStatus::ALL.map(JobStatus::as_str).join(", ")
                ),
            )
        })?),
    };
    let limit = ctx.page_limit()?;
    let cursor = ctx.query("cursor");
    let page = app
        .store
        .list_jobs(&ctx.caller().account_id, status, limit, cursor.as_deref())
        .await?;
    let now = now_ms();
    Ok(Reply::ok(json!({
        "jobs": page.jobs.iter().map(|j| j.view(now)).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

pub async fn get(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let id = job_id(ctx)?;
    let job = app
        .store
        .get_job(&ctx.caller().account_id, &id)
        .await?
        .ok_or(ApiError::NotFound("Job"))?;
    Ok(Reply::ok(job.view(now_ms())))
}
