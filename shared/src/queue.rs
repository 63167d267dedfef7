//! The jobs queue: one message = "look at this job now (or after a delay)".

use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// SQS's longest message delay.
pub const MAX_DELAY_SECS: i64 = 900;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRef {
    pub account_id: String,
    pub job_id: String,
    /// Look at the job even if its next check is not due yet (the reconciler saw its instance
    /// in trouble). Otherwise a message for a job that is not due is a duplicate, dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub look_now: bool,
    /// With an alert: when the reconciler's instance list last showed the job's instance
    /// alive — what an instance found gone is billed until (docs/decisions.md, "Exact
    /// billing"), instead of the worker's own last look, up to a running poll back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_alive: Option<SeenAlive>,
}

/// An instance the provider listed alive, and when the list was asked for (the list shows it
/// as it was at some moment after that: billing to then never passes its life).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeenAlive {
    pub instance_id: String,
    pub at: crate::time::Millis,
}

impl JobRef {
    pub fn new(account_id: impl Into<String>, job_id: impl Into<String>) -> JobRef {
        JobRef {
            account_id: account_id.into(),
            job_id: job_id.into(),
            look_now: false,
            seen_alive: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct JobQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
}

impl JobQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, url: impl Into<String>) -> JobQueue {
        JobQueue {
            sqs,
            url: url.into(),
        }
    }

    /// Asks the worker to look at the job after `delay_secs` (clamped to what SQS allows).
    pub async fn send(&self, job: &JobRef, delay_secs: i64) -> Result<(), ApiError> {
        let body = serde_json::to_string(job).map_err(ApiError::internal)?;
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_secs.clamp(0, MAX_DELAY_SECS) as i32)
            .send()
            .await
            .map_err(|e| {
                ApiError::Internal(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }
}
