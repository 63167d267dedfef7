//! `POST /jobs/{id}/report`: the instance's wrapper reports the script's exit code and the tail
//! of its output, with the per-job token instead of an API key. One report per job: the same
//! report again is fine (the wrapper retries), a different one is refused.

use crate::{job_token_caller, App};
use base64::Engine;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::jobs::env::masked;
use mimiry_shared::jobs::wrapper::OUTPUT_TAIL_BYTES;
use mimiry_shared::jobs::Report;
use mimiry_shared::queue::JobRef;
use mimiry_shared::store::jobs::SaveError;
use mimiry_shared::time::now_ms;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportRequest {
    exit_code: i32,
    /// The tail of the output, base64 (any bytes survive the trip).
    output_base64: Option<String>,
    /// Or as plain text.
    output: Option<String>,
    /// When the wrapper started the script (Unix milliseconds, the instance's clock).
    started_at_ms: Option<i64>,
    /// The retry-policy attempt whose script this is (wrappers before it omit it).
    attempt: Option<u32>,
}

/// The last `OUTPUT_TAIL_BYTES` of the output, cut on a character boundary.
fn tail(output: &str) -> String {
    let mut start = output.len().saturating_sub(OUTPUT_TAIL_BYTES);
    while !output.is_char_boundary(start) {
        start += 1;
    }
    output[start..].to_string()
}

pub async fn report(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let (account_id, id) = job_token_caller(app, ctx).await?;

    let input: ReportRequest = ctx.json()?;
    if !(0..=255).contains(&input.exit_code) {
        // A process exit status is one byte; anything else is not what a shell reports.
        return Err(ApiError::validation(
            "exit_code",
            format!("exit_code must be from 0 to 255, not {}", input.exit_code),
        ));
    }
    let output = match (input.output_base64, input.output) {
        (Some(b64), _) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|_| {
                    ApiError::validation("output_base64", "output_base64 is not valid base64")
                })?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        (None, Some(text)) => text,
        (None, None) => String::new(),
    };
    for _ in 0..5 {
        let job = app
            .store
            .get_job(&account_id, &id)
            .await?
            .ok_or(ApiError::NotFound("Job"))?;
        // An earlier attempt's report arriving late (its instance is being deleted) is not
        // this attempt's result.
        if let Some(attempt) = input.attempt.filter(|a| *a != job.attempt()) {
            return Err(ApiError::Conflict {
                code: "stale_attempt",
                message: format!(
                    "The report is for attempt {attempt}; the job is on attempt {}",
                    job.attempt()
                ),
            });
        }
        // Masked before it is kept (and compared: the wrapper's retry masks the same).
        let output_tail = tail(&masked(&app.store, &app.vault, &job, &output).await?);
        if let Some(existing) = &job.report {
            if existing.exit_code == input.exit_code && existing.output_tail == output_tail {
                return Ok(Reply::ok(json!({ "job_id": id, "recorded": true })));
            }
            return Err(ApiError::Conflict {
                code: "already_reported",
                message: "A different report was already recorded for this job".into(),
            });
        }
        if job.status.is_terminal() {
            return Err(ApiError::Conflict {
                code: "job_finished",
                message: format!("Job is already {}", job.status.as_str()),
            });
        }
        let report = Report {
            exit_code: input.exit_code,
            output_tail: output_tail.clone(),
            reported_at: now_ms(),
            script_started_at: input.started_at_ms,
        };
        match app.store.record_report(&job, &report).await {
            Ok(_) => {
                let job_ref = JobRef::new(account_id.clone(), id.clone());
                if let Err(e) = app.queue.send(&job_ref, 0).await {
                    tracing::warn!(job_id = %id, error = %e, "could not enqueue after a report; the next check will see it");
                }
                return Ok(Reply::ok(json!({ "job_id": id, "recorded": true })));
            }
            Err(SaveError::Conflict) => continue,
            Err(SaveError::Other(e)) => return Err(e),
        }
    }
    Err(ApiError::Conflict {
        code: "busy",
        message: "The job is changing right now; please retry".into(),
    })
}
