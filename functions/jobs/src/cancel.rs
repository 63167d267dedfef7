//! `DELETE /jobs/{id}`: cancel (`mimiry_shared::jobs::cancel`, which the dashboard calls too).
//! 200 with the job `cancelled` when nothing was ever sent to the provider, else 202.

use crate::{job_id, App};
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::jobs::cancel::{cancel as cancel_job, Cancelled};
use mimiry_shared::time::now_ms;

pub async fn cancel(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let id = job_id(ctx)?;
    let now = now_ms();
    Ok(
        match cancel_job(
            &app.store,
            &app.queue,
            &app.webhooks,
            &ctx.caller().account_id,
            &id,
        )
        .await?
        {
            Cancelled::Now(job) => Reply::ok(job.view(now)),
            Cancelled::Requested(job) => Reply::accepted(job.view(now)),
        },
    )
}
