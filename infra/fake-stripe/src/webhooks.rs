//! Signed webhook delivery, the way Stripe does it: the event's JSON is POSTed to the endpoint
//! with `Stripe-Signature: t=TIMESTAMP,v1=HEX` (HMAC-SHA256 of `TIMESTAMP.PAYLOAD` keyed with
//! the endpoint secret; one `v1` per active secret while a secret is rolled). A delivery that
//! does not get a 2xx is retried after each of `retry_delays_ms` (Stripe: exponential backoff
//! for up to three days live, three times over a few hours in test mode; here the schedule is
//! short and configurable so tests can watch it), then given up.

use crate::state::{now_ms, now_secs, AppState, Delivery};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::time::Duration;

/// `t=…,v1=…[,v1=…]` for `payload` signed at `timestamp` with each of `secrets`.
pub fn signature_header(secrets: &[String], timestamp: i64, payload: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        header.push_str(",v1=");
        header.push_str(&hex::encode(mac.finalize().into_bytes()));
    }
    header
}

/// Records `event` and sends it to the endpoint (or holds it while the endpoint is paused).
pub fn emit(state: &AppState, event: Value) {
    let id = event["id"].as_str().unwrap_or_default().to_string();
    tracing::info!(event = %id, kind = %event["type"], "event");
    state.store().events.push(event);
    if state.endpoint().paused {
        state.store().held.push(id);
    } else {
        spawn_delivery(state, id, "event");
    }
}

pub fn spawn_delivery(state: &AppState, event_id: String, cause: &'static str) {
    let state = state.clone();
    tokio::spawn(async move { deliver(&state, &event_id, cause).await });
}

/// One delivery of an event with Stripe's retries, all awaited. Returns the last status seen.
pub async fn deliver(state: &AppState, event_id: &str, cause: &str) -> Option<u16> {
    let (first, retry) = first_attempt(state, event_id, cause).await?;
    match retry {
        Some(retry) => retry.run(state).await,
        None => first,
    }
}

/// The first try of a delivery, awaited; its retries (if it failed) go on in the background.
/// Used to deliver held events in a chosen order without one's retries holding up the next.
pub async fn deliver_in_order(state: &AppState, event_id: &str, cause: &str) -> Option<u16> {
    let (first, retry) = first_attempt(state, event_id, cause).await?;
    if let Some(retry) = retry {
        let state = state.clone();
        tokio::spawn(async move { retry.run(&state).await });
    }
    first
}

/// What is left of a failed delivery: its retries.
struct Retry {
    attempt: Attempt,
    delays: Vec<u64>,
}

impl Retry {
    async fn run(self, state: &AppState) -> Option<u16> {
        let mut last = None;
        for (n, wait) in self.delays.into_iter().enumerate() {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            last = self.attempt.send(state, n as u32 + 2).await;
            if last.is_some_and(|s| (200..300).contains(&s)) {
                break;
            }
        }
        last
    }
}

/// Everything one try needs.
struct Attempt {
    event_id: String,
    event_type: String,
    cause: String,
    url: String,
    secrets: Vec<String>,
    payload: Vec<u8>,
}

impl Attempt {
    async fn send(&self, state: &AppState, attempt: u32) -> Option<u16> {
        // Signed at send time: a retry carries a fresh timestamp, as Stripe's do.
        let signature = signature_header(&self.secrets, now_secs(), &self.payload);
        let result = state
            .http
            .post(&self.url)
            .header("content-type", "application/json; charset=utf-8")
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header("stripe-signature", signature)
            .body(self.payload.clone())
            .send()
            .await;
        let (status, error) = match result {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        state.store().deliveries.push(Delivery {
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            attempt,
            cause: self.cause.clone(),
            status,
            error,
            at_ms: now_ms(),
        });
        if !status.is_some_and(|s| (200..300).contains(&s)) {
            tracing::info!(event = %self.event_id, attempt, ?status, "delivery failed");
        }
        status
    }
}

/// Sends the first try (after the endpoint's delay); answers its status and, if it failed,
/// the retries to make. `None` when the event is unknown or no endpoint is set.
async fn first_attempt(
    state: &AppState,
    event_id: &str,
    cause: &str,
) -> Option<(Option<u16>, Option<Retry>)> {
    let event = state
        .store()
        .events
        .iter()
        .find(|e| e["id"] == event_id)
        .cloned()?;
    let (url, secrets, delay_ms, delays) = {
        let e = state.endpoint();
        (
            e.url.clone(),
            e.secrets.clone(),
            e.delay_ms,
            e.retry_delays_ms.clone(),
        )
    };
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let attempt = Attempt {
        event_id: event_id.to_string(),
        event_type: event["type"].as_str().unwrap_or_default().to_string(),
        cause: cause.to_string(),
        url: url?,
        secrets,
        payload: serde_json::to_vec_pretty(&event).unwrap_or_default(),
    };
    let status = attempt.send(state, 1).await;
    let failed = !status.is_some_and(|s| (200..300).contains(&s));
    let retry = (failed && !delays.is_empty()).then_some(Retry { attempt, delays });
    Some((status, retry))
}
