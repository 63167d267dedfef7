//! The fake's memory: sessions, payment intents, charges, refunds, disputes, events and webhook
//! deliveries, behind one mutex (nothing here is held across an await).

use crate::FakeConfig;
use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub type Metadata = BTreeMap<String, String>;

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `prefix` + 24 random alphanumerics, the shape of Stripe's ids (`cs_test_a1B2…`).
pub fn new_id(prefix: &str) -> String {
    let tail: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

#[derive(Debug, Clone)]
pub struct LineItem {
    pub name: String,
    pub unit_amount: i64,
    pub quantity: i64,
    pub currency: String,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub created: i64,
    pub expires_at: i64,
    pub success_url: String,
    pub cancel_url: Option<String>,
    pub client_reference_id: Option<String>,
    pub customer_email: Option<String>,
    pub metadata: Metadata,
    pub payment_intent_metadata: Metadata,
    pub line_items: Vec<LineItem>,
    pub currency: String,
    /// `open`, `complete` or `expired`.
    pub status: &'static str,
    /// `unpaid` or `paid`.
    pub payment_status: &'static str,
    pub payment_intent: Option<String>,
    /// Paid with a delayed method: the payment settles later (async events).
    pub delayed: bool,
    pub url: String,
}

impl Session {
    pub fn amount_total(&self) -> i64 {
        self.line_items
            .iter()
            .map(|l| l.unit_amount * l.quantity)
            .sum()
    }

    /// The Checkout Session object as Stripe's API shows it (the fields Mimiry reads, and the
    /// common ones around them).
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "checkout.session",
            "amount_subtotal": self.amount_total(),
            "amount_total": self.amount_total(),
            "cancel_url": self.cancel_url,
            "client_reference_id": self.client_reference_id,
            "created": self.created,
            "currency": self.currency,
            "customer": null,
            "customer_email": self.customer_email,
            "expires_at": self.expires_at,
            "livemode": false,
            "metadata": self.metadata,
            "mode": "payment",
            "payment_intent": self.payment_intent,
            "payment_method_types": ["card"],
            "payment_status": self.payment_status,
            "status": self.status,
            "success_url": self.success_url,
            // Stripe clears the URL once the session is no longer open.
            "url": (self.status == "open").then_some(&self.url),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Charge {
    pub id: String,
    pub payment_intent: String,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    pub metadata: Metadata,
    pub disputed: bool,
    pub created: i64,
}

impl Charge {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "charge",
            "amount": self.amount,
            "amount_captured": self.amount,
            "amount_refunded": self.amount_refunded,
            "captured": true,
            "created": self.created,
            "currency": self.currency,
            "disputed": self.disputed,
            "livemode": false,
            "metadata": self.metadata,
            "paid": true,
            "payment_intent": self.payment_intent,
            "refunded": self.amount_refunded == self.amount,
            "status": "succeeded",
        })
    }
}

#[derive(Debug, Clone)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    pub currency: String,
    pub charge: String,
    pub session: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub event_id: String,
    pub event_type: String,
    /// 1 for the first try of a delivery, 2… for Stripe's automatic retries.
    pub attempt: u32,
    /// Why this delivery happened: `event`, `duplicate`, `replay`.
    pub cause: String,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub at_ms: u64,
}

/// Where events go, and the test knobs on their way.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub url: Option<String>,
    /// Each is used to sign every delivery (one `v1=` per secret), as during a secret roll.
    #[serde(skip_serializing)]
    pub secrets: Vec<String>,
    /// Held events wait in `held` until `POST /admin/webhook/flush`.
    pub paused: bool,
    /// Wait before a delivery's first try.
    pub delay_ms: u64,
    /// Waits before the retries of a failed delivery; their count bounds the attempts.
    pub retry_delays_ms: Vec<u64>,
}

#[derive(Default)]
pub struct Store {
    pub sessions: HashMap<String, Session>,
    pub payment_intents: HashMap<String, PaymentIntent>,
    pub charges: HashMap<String, Charge>,
    pub refunds: HashMap<String, Value>,
    pub disputes: HashMap<String, Value>,
    /// Every event, oldest first.
    pub events: Vec<Value>,
    pub deliveries: Vec<Delivery>,
    /// Events waiting while the endpoint is paused.
    pub held: Vec<String>,
    /// Idempotency-Key → (request fingerprint, status, body).
    pub idempotency: HashMap<String, (String, u16, Value)>,
    /// Fault: this many API POSTs are carried out but answered 500, as when Stripe's answer
    /// is lost on the way; a retry with the same Idempotency-Key gets the real answer.
    pub lose_responses: u32,
}

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<FakeConfig>,
    /// `http://ADDR` this fake is reachable at (hosted checkout page URLs).
    pub public_base: Arc<String>,
    pub store: Arc<Mutex<Store>>,
    pub endpoint: Arc<Mutex<Endpoint>>,
    pub http: reqwest::Client,
}

impl AppState {
    pub fn new(config: FakeConfig, public_base: String) -> AppState {
        let endpoint = Endpoint {
            url: config.webhook_url.clone(),
            secrets: config.webhook_secrets.clone(),
            paused: false,
            delay_ms: 0,
            retry_delays_ms: config.retry_delays_ms.clone(),
        };
        AppState {
            config: Arc::new(config),
            public_base: Arc::new(public_base),
            store: Arc::new(Mutex::new(Store::default())),
            endpoint: Arc::new(Mutex::new(endpoint)),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .expect("a reqwest client with a timeout always builds"),
        }
    }

    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn endpoint(&self) -> std::sync::MutexGuard<'_, Endpoint> {
        self.endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An event object as Stripe sends it: `data.object` is a snapshot of the object at the time.
pub fn event(kind: &str, object: Value) -> Value {
    let mut event = Map::new();
    event.insert("id".into(), json!(new_id("evt_")));
    event.insert("object".into(), json!("event"));
    event.insert("api_version".into(), json!(crate::API_VERSION));
    event.insert("created".into(), json!(now_secs()));
    event.insert("data".into(), json!({ "object": object }));
    event.insert("livemode".into(), json!(false));
    event.insert("pending_webhooks".into(), json!(1));
    event.insert(
        "request".into(),
        json!({ "id": null, "idempotency_key": null }),
    );
    event.insert("type".into(), json!(kind));
    Value::Object(event)
}
