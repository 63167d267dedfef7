//! Webhook items (issue 13).
//!
//! | item | PK | SK |
//! |---|---|---|
//! | endpoint | `ACCOUNT#{id}` | `WEBHOOK#{endpoint}` |
//! | an endpoint's progress through one job's events | `WEBHOOK#{endpoint}` | `JOB#{job}` |
//! | one delivery attempt (the delivery log) | `WEBHOOK#{endpoint}` | `DELIVERY#{ms:013}#{uuid}` |
//!
//! Progress and log items expire ([`LOG_RETENTION_SECS`], TTL on `expires_at`); deleting an
//! endpoint leaves them to expire.

use super::{account_pk, aws_err, from_item, is_condition_failure, n, s, to_item, Store};
use crate::error::ApiError;
use crate::time::{rfc3339, rfc3339_opt, Millis};
use crate::webhooks::{EventFilter, Secret};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How long the delivery log and the per-job progress are kept.
pub const LOG_RETENTION_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub endpoint_id: String,
    pub account_id: String,
    pub url: String,
    pub events: EventFilter,
    pub description: Option<String>,
    /// Stored as is; never shown after creation and never logged (`Secret`'s `Debug`).
    pub secret: Secret,
    pub created_at: Millis,
    /// Since when every attempt failed (none = the last one succeeded). Absent, not NULL,
    /// when none: the health updates test `if_not_exists` / `attribute_not_exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Millis>,
    /// Disabled after failing for the retry window; nothing is sent to it any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<Millis>,
}

impl Endpoint {
    /// The public view: everything but the secret.
    pub fn view(&self) -> Value {
        json!({
            "id": self.endpoint_id,
            "url": self.url,
            "events": self.events.0,
            "description": self.description,
            "enabled": self.disabled_at.is_none(),
            "disabled_at": rfc3339_opt(self.disabled_at),
            "failing_since": rfc3339_opt(self.failing_since),
            "created_at": rfc3339(self.created_at),
        })
    }
}

/// An endpoint's progress through one job's events.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Bumped by every save: the condition of the next.
    pub version: u32,
    /// The last event seq delivered or given up.
    pub done_seq: u32,
    /// The attempt a queued retry will make (0 = no retry pending).
    pub retry_attempt: u32,
    /// When the queued retry is due.
    pub retry_at: Option<Millis>,
    /// When the first failed attempt of the pending event was (for the give-up window).
    pub first_failure_at: Option<Millis>,
}

/// One delivery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub message_id: String,
    pub event: String,
    pub job_id: String,
    pub attempt: u32,
    pub at: Millis,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// `delivered`, `failed` (will be retried) or `given_up`.
    pub outcome: String,
}

impl Delivery {
    pub fn view(&self) -> Value {
        json!({
            "message_id": self.message_id,
            "event": self.event,
            "job_id": self.job_id,
            "attempt": self.attempt,
            "at": rfc3339(self.at),
            "status_code": self.status_code,
            "latency_ms": self.latency_ms,
            "error": self.error,
            "outcome": self.outcome,
        })
    }
}

fn endpoint_sk(id: &str) -> String {
    format!("WEBHOOK#{id}")
}

fn endpoint_pk(id: &str) -> String {
    format!("WEBHOOK#{id}")
}

fn expires(now: Millis) -> i64 {
    now / 1000 + LOG_RETENTION_SECS
}

impl Store {
    pub async fn list_webhooks(&self, account_id: &str) -> Result<Vec<Endpoint>, ApiError> {
        let mut all: Vec<Endpoint> = self
            .query_prefix(account_pk(account_id), "WEBHOOK#")
            .await?
            .into_iter()
            .map(from_item)
            .collect::<Result<_, _>>()?;
        all.sort_by(|a, b| (a.created_at, &a.endpoint_id).cmp(&(b.created_at, &b.endpoint_id)));
        Ok(all)
    }

    pub async fn get_webhook(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<Endpoint>, ApiError> {
        self.get(account_pk(account_id), endpoint_sk(id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// Stores a new endpoint (never overwrites one).
    pub async fn put_webhook(&self, endpoint: &Endpoint) -> Result<(), ApiError> {
        let item = to_item(
            endpoint,
            account_pk(&endpoint.account_id),
            endpoint_sk(&endpoint.endpoint_id),
        )?;
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    pub async fn delete_webhook(&self, account_id: &str, id: &str) -> Result<(), ApiError> {
        self.db
            .delete_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(account_id)))
            .key("SK", s(endpoint_sk(id)))
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    /// Records that an attempt failed (keeps the earliest `failing_since`) or succeeded
    /// (clears it). Only touches an endpoint that still exists.
    pub async fn note_webhook_health(
        &self,
        endpoint: &Endpoint,
        failed_at: Option<Millis>,
    ) -> Result<(), ApiError> {
        let update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(&endpoint.account_id)))
            .key("SK", s(endpoint_sk(&endpoint.endpoint_id)));
        let update = match failed_at {
            Some(at) => update
                .update_expression("SET failing_since = if_not_exists(failing_since, :at)")
                .expression_attribute_values(":at", n(at)),
            None => update.update_expression("REMOVE failing_since"),
        };
        match update
            .condition_expression("attribute_exists(PK)")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(aws_err(e)),
        }
    }

    /// Disables the endpoint; true if this call did it (so one email is sent).
    pub async fn disable_webhook(&self, endpoint: &Endpoint, at: Millis) -> Result<bool, ApiError> {
        match self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(&endpoint.account_id)))
            .key("SK", s(endpoint_sk(&endpoint.endpoint_id)))
            .update_expression("SET disabled_at = :at")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(disabled_at)")
            .expression_attribute_values(":at", n(at))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(aws_err(e)),
        }
    }

    pub async fn webhook_progress(
        &self,
        endpoint_id: &str,
        job_id: &str,
    ) -> Result<Progress, ApiError> {
        Ok(self
            .get(endpoint_pk(endpoint_id), format!("JOB#{job_id}"))
            .await?
            .map(from_item)
            .transpose()?
            .unwrap_or_default())
    }

    /// Replaces the progress if it is still `old` (two senders racing: one wins, the other
    /// re-reads). False = someone else moved it.
    pub async fn save_webhook_progress(
        &self,
        endpoint_id: &str,
        job_id: &str,
        old: &Progress,
        new: &Progress,
        now: Millis,
    ) -> Result<bool, ApiError> {
        let mut new = new.clone();
        new.version = old.version + 1;
        let mut item = to_item(&new, endpoint_pk(endpoint_id), format!("JOB#{job_id}"))?;
        item.insert("expires_at".into(), n(expires(now)));
        let result = self
            .db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR version = :v")
            .expression_attribute_values(":v", n(old.version))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(aws_err(e)),
        }
    }

    pub async fn log_webhook_delivery(
        &self,
        endpoint_id: &str,
        delivery: &Delivery,
    ) -> Result<(), ApiError> {
        let sk = format!(
            "DELIVERY#{:013}#{}",
            delivery.at,
            uuid::Uuid::new_v4().simple()
        );
        let mut item = to_item(delivery, endpoint_pk(endpoint_id), sk)?;
        item.insert("expires_at".into(), n(expires(delivery.at)));
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    /// The endpoint's latest deliveries, newest first.
    pub async fn recent_webhook_deliveries(
        &self,
        endpoint_id: &str,
        limit: i32,
    ) -> Result<Vec<Delivery>, ApiError> {
        let out = self
            .db
            .query()
            .table_name(&self.table)
            .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
            .expression_attribute_values(":pk", s(endpoint_pk(endpoint_id)))
            .expression_attribute_values(":p", s("DELIVERY#"))
            .scan_index_forward(false)
            .limit(limit)
            .send()
            .await
            .map_err(aws_err)?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(from_item)
            .collect()
    }
}
