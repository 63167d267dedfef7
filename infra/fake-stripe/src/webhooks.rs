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

/// One delivery of an event with Stripe's retries. Returns the last status seen.
pub async fn deliver(state: &AppState, event_id: &str, cause: &str) -> Option<u16> {
    let event = state
        .store()
        .events
        .iter()
        .find(|e| e["id"] == event_id)
        .cloned()?;
    let (url, secrets, delay_ms, retries) = {
        let e = state.endpoint();
        (
            e.url.clone(),
            e.secrets.clone(),
            e.delay_ms,
            e.retry_delays_ms.clone(),
        )
    };
    let url = url?;
    if delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
    }
    let payload = serde_json::to_vec_pretty(&event).unwrap_or_default();
    let mut last = None;
    // The first try, then one per retry delay: bounded by the schedule's length.
    for (attempt, wait) in std::iter::once(0).chain(retries).enumerate() {
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        // Signed at send time: a retry carries a fresh timestamp, as Stripe's do.
        let signature = signature_header(&secrets, now_secs(), &payload);
        let result = state
            .http
            .post(&url)
            .header("content-type", "application/json; charset=utf-8")
            .header("user-agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
            .header("stripe-signature", signature)
            .body(payload.clone())
            .send()
            .await;
        let (status, error) = match result {
            Ok(r) => (Some(r.status().as_u16()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        state.store().deliveries.push(Delivery {
            event_id: event_id.to_string(),
            event_type: event["type"].as_str().unwrap_or_default().to_string(),
            attempt: attempt as u32 + 1,
            cause: cause.to_string(),
            status,
            error,
            at_ms: now_ms(),
        });
        last = status;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return last;
        }
        tracing::info!(event = %event_id, attempt = attempt + 1, ?status, "delivery failed");
    }
    last
}
