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

    /// Messages ready to be received now (neither delayed nor in flight), as SQS estimates it.
    pub async fn backlog(&self) -> Result<u64, ApiError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|e| {
                ApiError::Internal(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(out
            .attributes
            .and_then(|a| {
                a.get(&QueueAttributeName::ApproximateNumberOfMessages)
                    .and_then(|n| n.parse().ok())
            })
            .unwrap_or(0))
    }

    /// Sends many messages, ten per `SendMessageBatch` call (SQS's maximum). Returns how many
    /// were accepted; an entry SQS refused is logged and left to the next reconciler run.
    pub async fn send_many(&self, messages: &[(JobRef, i64)]) -> Result<usize, ApiError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        let mut sent = 0;
        for chunk in messages.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, (job, delay_secs)) in chunk.iter().enumerate() {
                let body = serde_json::to_string(job).map_err(ApiError::internal)?;
                entries.push(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .delay_seconds((*delay_secs).clamp(0, MAX_DELAY_SECS) as i32)
                        .build()
                        .map_err(ApiError::internal)?,
                );
            }
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    ApiError::Internal(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                })?;
            for failed in &out.failed {
                tracing::warn!(code = %failed.code, message = ?failed.message, "a batched job message was refused");
            }
            sent += chunk.len() - out.failed.len();
        }
        Ok(sent)
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
