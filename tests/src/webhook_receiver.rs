//! A webhook receiver for the tests: listens on 127.0.0.1, records every delivery with its
//! Standard Webhooks headers, and checks signatures itself as the specification says.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The event types that end a job.
pub const FINAL_EVENTS: [&str; 3] = ["job.completed", "job.failed", "job.cancelled"];

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    /// What the receiver answered.
    pub answered: u16,
}

#[derive(Clone, Default)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// While set, every delivery is answered 500.
    pub down: Arc<AtomicBool>,
}

impl Receiver {
    /// Listens on 127.0.0.1; answers 204, or 500 while `down`.
    pub async fn start() -> (Receiver, String) {
        let receiver = Receiver::default();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// The accepted deliveries' event types for `job_id`, in arrival order; a duplicate
    /// (at least once: the same `webhook-id` again) is dropped, as a receiver does.
    pub fn accepted_types(&self, job_id: &str) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        self.all()
            .iter()
            .filter(|r| r.answered < 300 && seen.insert(r.id.clone()))
            .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
            .filter(|b| b["data"]["job"]["id"] == job_id)
            .map(|b| b["type"].as_str().unwrap().to_string())
            .collect()
    }

    /// Waits (bounded) until `job_id`'s accepted events end with a final one.
    pub async fn wait_final(&self, job_id: &str, limit: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let types = self.accepted_types(job_id);
            if types.iter().any(|t| FINAL_EVENTS.contains(&t.as_str())) {
                return types;
            }
            assert!(
                started.elapsed() < limit,
                "no final event for {job_id} within {limit:?}; got {types:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let status = if receiver.down.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    receiver.got.lock().unwrap().push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
        answered: status.as_u16(),
    });
    status
}

/// The receiver's own check, as the Standard Webhooks specification says: HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` keyed with the base64-decoded part of `whsec_…`, base64, after
/// `v1,` (several space-separated signatures may come; one must match).
pub fn verify(secret: &str, r: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("the secret is base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", r.id, r.timestamp, r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    r.signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
}
