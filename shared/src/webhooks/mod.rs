//! Signed webhooks (issue 13): what an endpoint subscribes to, the events a job's state changes
//! make, how a delivery is signed (the Standard Webhooks convention), and the queue that carries
//! deliveries. The HTTP sending lives in `functions/webhooks`; the items in
//! `store::webhooks`; the URL rules (SSRF) in [`target`].

pub mod target;

use crate::error::ApiError;
use crate::jobs::{Job, JobStatus};
use crate::store::webhooks::Endpoint;
use crate::store::Store;
use crate::time::{now_ms, Millis};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Sha256;
use std::fmt;

/// Most endpoints one account may register.
pub const MAX_ENDPOINTS_PER_ACCOUNT: usize = 10;
/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest description accepted.
pub const MAX_DESCRIPTION_LEN: usize = 200;

/// A job event an endpoint can subscribe to: one per status a job reaches. Its `seq` orders a
/// job's events (a job only moves forward through them), and with the job id makes the
/// delivery's stable `webhook-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum EventType {
    #[serde(rename = "job.queued")]
    Queued,
    #[serde(rename = "job.provisioning")]
    Provisioning,
    #[serde(rename = "job.running")]
    Running,
    #[serde(rename = "job.completed")]
    Completed,
    #[serde(rename = "job.failed")]
    Failed,
    #[serde(rename = "job.cancelled")]
    Cancelled,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::Queued,
        EventType::Provisioning,
        EventType::Running,
        EventType::Completed,
        EventType::Failed,
        EventType::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Queued => "job.queued",
            EventType::Provisioning => "job.provisioning",
            EventType::Running => "job.running",
            EventType::Completed => "job.completed",
            EventType::Failed => "job.failed",
            EventType::Cancelled => "job.cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// Position in a job's life: queued 1, provisioning 2, running 3, the ending 4.
    pub fn seq(self) -> u32 {
        match self {
            EventType::Queued => 1,
            EventType::Provisioning => 2,
            EventType::Running => 3,
            _ => 4,
        }
    }

    fn of_status(status: JobStatus) -> EventType {
        match status {
            JobStatus::Queued => EventType::Queued,
            JobStatus::Provisioning => EventType::Provisioning,
            JobStatus::Running => EventType::Running,
            JobStatus::Completed => EventType::Completed,
            JobStatus::Failed => EventType::Failed,
            JobStatus::Cancelled => EventType::Cancelled,
        }
    }
}

/// The events a job has made so far, in order, read off its record (the record is the outbox:
/// see docs/decisions.md, "Signed webhooks"). A job that never ran has no `job.running`; one
/// cancelled while queued goes straight from `job.queued` to `job.cancelled`.
pub fn job_events(job: &Job) -> Vec<EventType> {
    let mut events = vec![EventType::Queued];
    let reached = |s: JobStatus| job.status == s;
    if job.deployed_at.is_some() || job.attempts > 0 || reached(JobStatus::Provisioning) {
        events.push(EventType::Provisioning);
    }
    if job.started_at.is_some() || reached(JobStatus::Running) {
        events.push(EventType::Running);
    }
    if job.status.is_terminal() {
        events.push(EventType::of_status(job.status));
    }
    events
}

/// What an endpoint wants: every event (`*`) or the listed ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventFilter(pub Vec<String>);

impl EventFilter {
    /// The request's `events`: a non-empty list of event types or `"*"`; anything else is a 400
    /// naming the field and the valid values.
    pub fn parse(events: &[String]) -> Result<EventFilter, ApiError> {
        if events.is_empty() {
            return Err(ApiError::validation(
                "events",
                "events must list at least one event type, or \"*\" for all",
            ));
        }
        let mut out: Vec<String> = Vec::new();
        for e in events {
            if e != "*" && EventType::parse(e).is_none() {
                return Err(ApiError::validation(
                    "events",
                    format!(
                        "unknown event type `{e}`; valid: *, {}",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    ),
                ));
            }
            if !out.contains(e) {
                out.push(e.clone());
            }
        }
        Ok(EventFilter(out))
    }

    pub fn wants(&self, event: EventType) -> bool {
        self.0.iter().any(|e| e == "*" || e == event.as_str())
    }
}

/// An endpoint's signing secret: `whsec_` + base64 of 32 random bytes, as Standard Webhooks
/// libraries expect. Shown once, at creation; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

pub const SECRET_PREFIX: &str = "whsec_";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(whsec_…)")
    }
}

impl Secret {
    pub fn generate() -> Secret {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Secret(format!("{SECRET_PREFIX}{}", B64.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> Vec<u8> {
        B64.decode(self.0.trim_start_matches(SECRET_PREFIX))
            .unwrap_or_default()
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the secret's bytes.
    pub fn sign(&self, id: &str, timestamp: i64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key()).expect("HMAC takes any key");
        mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
        format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
    }
}

/// The body of a delivery: `{type, timestamp, data: {job}}`.
pub fn payload(event: EventType, job: &Job, now: Millis) -> Value {
    json!({
        "type": event.as_str(),
        "timestamp": crate::time::rfc3339(now),
        "data": { "job": job.view(now) },
    })
}

/// The stable id of one event for one endpoint (the same on every retry, so a receiver can
/// drop duplicates).
pub fn message_id(endpoint_id: &str, job_id: &str, event: EventType) -> String {
    format!("msg_{}_{}_{}", endpoint_id, job_id, event.seq())
}

/// Webhook timers and rules, from the environment.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The deliveries queue (`WEBHOOKS_QUEUE_URL`); empty = webhooks are off.
    pub queue_url: String,
    /// `WEBHOOKS_ALLOW_LOOPBACK=1` (local stack and tests only): http:// and loopback
    /// addresses are accepted. Never set in production.
    pub allow_loopback: bool,
    /// First retry delay, doubled per attempt (`WEBHOOK_RETRY_BASE_SECONDS`, default 5).
    pub retry_base_secs: i64,
    /// Longest wait between attempts (`WEBHOOK_RETRY_MAX_SECONDS`, default 3600).
    pub retry_max_secs: i64,
    /// How long an event is retried before it is given up, and how long an endpoint may fail
    /// before it is disabled (`WEBHOOK_RETRY_WINDOW_SECONDS`, default 86400).
    pub retry_window_secs: i64,
    /// One delivery's timeout (`WEBHOOK_TIMEOUT_MS`, default 10000).
    pub timeout_ms: u64,
    /// Delay of the safety-net trigger queued before a job's final save
    /// (`WEBHOOK_SAFETY_NET_SECONDS`, default 120, at most SQS's 900): longer than any step
    /// takes from that send to the save, so the sender reads the saved final state.
    pub safety_net_secs: i64,
}

impl WebhookConfig {
    pub fn from_env() -> WebhookConfig {
        let num = |name: &str, default: i64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        WebhookConfig {
            queue_url: std::env::var("WEBHOOKS_QUEUE_URL").unwrap_or_default(),
            allow_loopback: std::env::var("WEBHOOKS_ALLOW_LOOPBACK").is_ok_and(|v| v == "1"),
            retry_base_secs: num("WEBHOOK_RETRY_BASE_SECONDS", 5).max(1),
            retry_max_secs: num("WEBHOOK_RETRY_MAX_SECONDS", 3600).max(1),
            retry_window_secs: num("WEBHOOK_RETRY_WINDOW_SECONDS", 86_400).max(1),
            timeout_ms: num("WEBHOOK_TIMEOUT_MS", 10_000).max(100) as u64,
            safety_net_secs: num("WEBHOOK_SAFETY_NET_SECONDS", 120)
                .clamp(1, crate::queue::MAX_DELAY_SECS),
        }
    }

    /// Wait before attempt `attempt + 1` (attempt ≥ 1): base · 2^(attempt-1), capped.
    pub fn backoff_secs(&self, attempt: u32) -> i64 {
        let factor = 1i64 << attempt.saturating_sub(1).min(30);
        self.retry_base_secs
            .saturating_mul(factor)
            .min(self.retry_max_secs)
    }
}

/// A message on the deliveries queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookMessage {
    /// A job's status changed: deliver what each of the account's endpoints has not had.
    JobChanged { account_id: String, job_id: String },
    /// Retry one endpoint's pending events of one job, not before `not_before` (a wait longer
    /// than SQS's 900 s delay is waited out in several hops).
    Retry {
        account_id: String,
        endpoint_id: String,
        job_id: String,
        attempt: u32,
        not_before: Millis,
    },
}

/// The deliveries queue.
#[derive(Clone, Debug)]
pub struct WebhookQueue {
    sqs: aws_sdk_sqs::Client,
    url: String,
    safety_net_secs: i64,
}

impl WebhookQueue {
    pub fn new(sqs: aws_sdk_sqs::Client, config: &WebhookConfig) -> WebhookQueue {
        WebhookQueue {
            sqs,
            url: config.queue_url.clone(),
            safety_net_secs: config.safety_net_secs,
        }
    }

    pub async fn send(&self, message: &WebhookMessage, delay_secs: i64) -> Result<(), ApiError> {
        if self.url.is_empty() {
            return Ok(());
        }
        let body = serde_json::to_string(message).map_err(ApiError::internal)?;
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(delay_secs.clamp(0, crate::queue::MAX_DELAY_SECS) as i32)
            .send()
            .await
            .map_err(|e| {
                ApiError::Internal(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }

    /// Called by the worker after a save it committed: when the job's status changed, asks the
    /// sender to deliver. Never fails the caller (delivery must not block the lifecycle); a
    /// lost message is made up by the job's next change, whose message delivers everything
    /// the endpoint has not had yet.
    pub async fn after_save(&self, before: &Job, after: &Job) {
        if before.status == after.status || self.url.is_empty() {
            return;
        }
        self.trigger(after, 0).await;
    }

    /// Called before saving a change that ends the job. A final change has no next change to
    /// make up for its lost trigger (a crash or a failed send between the save and
    /// [`after_save`](Self::after_save)), so one is queued first, delayed past the save: the
    /// sender then delivers whatever the endpoints have not had, which is nothing when the
    /// prompt trigger did its work or the save did not happen.
    pub async fn before_final_save(&self, before: &Job, after: &Job) {
        if before.status == after.status || !after.status.is_terminal() || self.url.is_empty() {
            return;
        }
        self.trigger(after, self.safety_net_secs).await;
    }

    async fn trigger(&self, job: &Job, delay_secs: i64) {
        let message = WebhookMessage::JobChanged {
            account_id: job.account_id.clone(),
            job_id: job.job_id.clone(),
        };
        if let Err(e) = self.send(&message, delay_secs).await {
            tracing::warn!(job_id = %job.job_id, error = %e, delay_secs, "could not queue the job's webhook deliveries");
        }
    }
}

fn description(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(text) = raw.map(|d| d.trim().to_string()).filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_DESCRIPTION_LEN || text.chars().any(char::is_control) {
        return Err(ApiError::validation(
            "description",
            format!(
                "description must be at most {MAX_DESCRIPTION_LEN} characters, without control characters"
            ),
        ));
    }
    Ok(Some(text))
}

/// What registering an endpoint means, for every front door (the API and the dashboard): the
/// URL checked (SSRF), the events and description parsed, the account's limit, a fresh
/// secret. The answer is the only place the secret is ever shown.
pub async fn register(
    store: &Store,
    config: &WebhookConfig,
    account_id: &str,
    url: &str,
    events: &[String],
    description_text: Option<String>,
) -> Result<(Endpoint, Secret), ApiError> {
    let target = target::check(url, config.allow_loopback).await?;
    let events = EventFilter::parse(events)?;
    let description = description(description_text)?;
    if store.list_webhooks(account_id).await?.len() >= MAX_ENDPOINTS_PER_ACCOUNT {
        return Err(ApiError::Conflict {
            code: "webhook_limit_reached",
            message: format!(
                "An account can have at most {MAX_ENDPOINTS_PER_ACCOUNT} webhook endpoints; delete one first"
            ),
        });
    }
    let secret = Secret::generate();
    let endpoint = Endpoint {
        endpoint_id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
        account_id: account_id.to_string(),
        url: target.url.to_string(),
        events,
        description,
        secret: secret.clone(),
        created_at: now_ms(),
        failing_since: None,
        disabled_at: None,
    };
    store.put_webhook(&endpoint).await?;
    tracing::info!(account = %account_id, endpoint_id = %endpoint.endpoint_id, "webhook endpoint registered");
    Ok((endpoint, secret))
}

/// One of the account's endpoints by id; another account's, like a malformed id, is
/// `Webhook not found`.
pub async fn find(store: &Store, account_id: &str, id: &str) -> Result<Endpoint, ApiError> {
    let not_found = || ApiError::NotFound("Webhook");
    if !id.starts_with("wh_") || id.len() > 64 {
        return Err(not_found());
    }
    store
        .get_webhook(account_id, id)
        .await?
        .ok_or_else(not_found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (and its reference libraries).
        let secret = Secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }

    #[test]
    fn filters_name_the_field_and_the_valid_values() {
        let f = EventFilter::parse(&["job.completed".into(), "job.failed".into()]).unwrap();
        assert!(f.wants(EventType::Completed) && !f.wants(EventType::Running));
        assert!(EventFilter::parse(&["*".into()])
            .unwrap()
            .wants(EventType::Queued));
        match EventFilter::parse(&["job.done".into()]) {
            Err(ApiError::Validation { field, message }) => {
                assert_eq!(field, "events");
                assert!(message.contains("job.done") && message.contains("job.cancelled"));
            }
            other => panic!("{other:?}"),
        }
        assert!(EventFilter::parse(&[]).is_err());
    }

    fn job(status: JobStatus) -> Job {
        let mut job: Job = serde_json::from_value(json!({
            "job_id": "job", "account_id": "acc", "name": "n", "status": "queued",
            "instance_type": "t", "image": "i", "ssh_key_ids": [],
            "provider_ssh_key_ids": [], "auto_shutdown": true, "provider": "datacrunch",
            "price_per_hour_micros": 1, "created_at": 1, "attempts": 0,
            "tried_locations": [], "retired_instances": [], "provider_errors": 0,
            "hold_micros": 0, "charged_micros": 0, "next_check_at": 1, "version": 1,
        }))
        .unwrap();
        job.status = status;
        job
    }

    #[test]
    fn a_jobs_events_follow_the_statuses_it_reached() {
        use EventType::*;
        assert_eq!(job_events(&job(JobStatus::Queued)), [Queued]);
        // Cancelled while queued: straight to the ending.
        assert_eq!(job_events(&job(JobStatus::Cancelled)), [Queued, Cancelled]);
        let mut failed = job(JobStatus::Failed);
        failed.attempts = 2;
        assert_eq!(job_events(&failed), [Queued, Provisioning, Failed]);
        let mut done = job(JobStatus::Completed);
        done.deployed_at = Some(2);
        done.started_at = Some(3);
        let events = job_events(&done);
        assert_eq!(events, [Queued, Provisioning, Running, Completed]);
        assert!(events.windows(2).all(|w| w[0].seq() < w[1].seq()));
        assert_eq!(
            message_id("wh_1", "job", Completed),
            message_id("wh_1", "job", Completed),
            "stable across retries"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut c = WebhookConfig::from_env();
        c.retry_base_secs = 5;
        c.retry_max_secs = 3600;
        assert_eq!(c.backoff_secs(1), 5);
        assert_eq!(c.backoff_secs(2), 10);
        assert_eq!(c.backoff_secs(4), 40);
        assert_eq!(c.backoff_secs(40), 3600);
    }
}
