//! Test controls under `/admin` (no auth; the fake listens on loopback): the webhook endpoint
//! and its knobs (pause/hold, delay, retry schedule, secrets), the ways Stripe's delivery goes
//! wrong in real life — duplicated, replayed, reordered, delayed events — and the money
//! events a customer or a bank causes outside the API (paying without the page, a delayed
//! payment settling, a dispute).

use crate::checkout::{self, Method};
use crate::error::StripeError;
use crate::state::{event, new_id, now_secs, AppState};
use crate::webhooks::{deliver, deliver_in_order, emit};
use axum::extract::{Path, State};
use axum::Json;
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

pub async fn events(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "events": state.store().events }))
}

pub async fn deliveries(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "deliveries": state.store().deliveries }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    url: Option<String>,
    secrets: Option<Vec<String>>,
    paused: Option<bool>,
    delay_ms: Option<u64>,
    retry_delays_ms: Option<Vec<u64>>,
}

pub async fn get_webhook(State(state): State<AppState>) -> Json<Value> {
    Json(json!(*state.endpoint()))
}

pub async fn set_webhook(
    State(state): State<AppState>,
    Json(s): Json<WebhookSettings>,
) -> Result<Json<Value>, StripeError> {
    if s.retry_delays_ms.as_ref().is_some_and(|r| r.len() > 20) {
        return Err(StripeError::invalid("at most 20 retries"));
    }
    let mut e = state.endpoint();
    if let Some(url) = s.url {
        e.url = Some(url);
    }
    if let Some(secrets) = s.secrets {
        e.secrets = secrets;
    }
    if let Some(p) = s.paused {
        e.paused = p;
    }
    if let Some(d) = s.delay_ms {
        e.delay_ms = d;
    }
    if let Some(r) = s.retry_delays_ms {
        e.retry_delays_ms = r;
    }
    Ok(Json(json!(*e)))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Flush {
    /// `created` (oldest first, the default) or `reverse` (newest first: out of order).
    order: Option<String>,
}

/// Delivers the held events one after the other, in the order asked for (each one's first
/// try before the next; retries of a refused one follow in the background), and unpauses.
pub async fn flush(
    State(state): State<AppState>,
    body: Option<Json<Flush>>,
) -> Result<Json<Value>, StripeError> {
    let order = body
        .and_then(|b| b.0.order)
        .unwrap_or_else(|| "created".into());
    let mut held = std::mem::take(&mut state.store().held);
    match order.as_str() {
        "created" => {}
        "reverse" => held.reverse(),
        other => return Err(StripeError::invalid(format!("unknown order `{other}`"))),
    }
    state.endpoint().paused = false;
    let mut results = Vec::new();
    for id in held {
        let status = deliver_in_order(&state, &id, "event").await;
        results.push(json!({ "event": id, "status": status }));
    }
    Ok(Json(json!({ "delivered": results })))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Copies {
    copies: Option<usize>,
}

/// Sends the same event several times at once (Stripe may deliver an event more than once).
pub async fn duplicate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<Copies>>,
) -> Result<Json<Value>, StripeError> {
    let copies = body.and_then(|b| b.0.copies).unwrap_or(2).clamp(1, 50);
    known_event(&state, &id)?;
    let runs = (0..copies).map(|_| deliver(&state, &id, "duplicate"));
    Ok(Json(json!({ "statuses": join_all(runs).await })))
}

/// Sends an event again later, as a resend from the Dashboard or the CLI does.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StripeError> {
    known_event(&state, &id)?;
    let status = deliver(&state, &id, "replay").await;
    Ok(Json(json!({ "status": status })))
}

fn known_event(state: &AppState, id: &str) -> Result<(), StripeError> {
    if state.store().events.iter().any(|e| e["id"] == id) {
        Ok(())
    } else {
        Err(StripeError::no_such("event", id, "id"))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Pay {
    /// `card` (default) or `delayed`.
    method: Option<String>,
}

/// What the Pay buttons do, without a browser; answers where the page would redirect.
pub async fn pay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Option<Json<Pay>>,
) -> Result<Json<Value>, StripeError> {
    let method = match body.and_then(|b| b.0.method).as_deref() {
        None | Some("card") => Method::Card,
        Some("delayed") => Method::Delayed,
        Some(other) => return Err(StripeError::invalid(format!("unknown method `{other}`"))),
    };
    let url = checkout::complete(&state, &id, method)?;
    Ok(Json(json!({ "redirect": url })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settle {
    succeed: bool,
}

pub async fn settle(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(s): Json<Settle>,
) -> Result<Json<Value>, StripeError> {
    checkout::settle(&state, &id, s.succeed).map(Json)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyBack {
    payment_intent: String,
    amount: Option<i64>,
}

/// A refund made in the Dashboard (same as `POST /v1/refunds`).
pub async fn refund(
    State(state): State<AppState>,
    Json(r): Json<MoneyBack>,
) -> Result<Json<Value>, StripeError> {
    crate::api::refund(&state, Some(r.payment_intent), None, r.amount).map(Json)
}

/// The cardholder disputes the payment: `charge.dispute.created` for `amount` (default all).
pub async fn dispute(
    State(state): State<AppState>,
    Json(r): Json<MoneyBack>,
) -> Result<Json<Value>, StripeError> {
    let dispute = {
        let mut store = state.store();
        let charge_id = store
            .payment_intents
            .get(&r.payment_intent)
            .map(|p| p.charge.clone())
            .ok_or_else(|| {
                StripeError::no_such("payment_intent", &r.payment_intent, "payment_intent")
            })?;
        let charge = store
            .charges
            .get_mut(&charge_id)
            .ok_or_else(|| StripeError::no_such("charge", &charge_id, "charge"))?;
        charge.disputed = true;
        let dispute = json!({
            "id": new_id("dp_"),
            "object": "dispute",
            "amount": r.amount.unwrap_or(charge.amount),
            "charge": charge.id,
            "created": now_secs(),
            "currency": charge.currency,
            "livemode": false,
            "metadata": {},
            "payment_intent": charge.payment_intent,
            "reason": "fraudulent",
            "status": "needs_response",
        });
        store.disputes.insert(
            dispute["id"].as_str().unwrap_or_default().to_string(),
            dispute.clone(),
        );
        dispute
    };
    emit(&state, event("charge.dispute.created", dispute.clone()));
    Ok(Json(dispute))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisputeOutcome {
    /// `won`, `lost` or `warning_closed`, as Stripe's `dispute.status` says at the end.
    status: String,
}

/// The bank decides: `charge.dispute.closed` with the dispute's final `status`. Closing a
/// closed dispute is Stripe's 400.
pub async fn close_dispute(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(o): Json<DisputeOutcome>,
) -> Result<Json<Value>, StripeError> {
    if !matches!(o.status.as_str(), "won" | "lost" | "warning_closed") {
        return Err(StripeError::bad_value(
            "status",
            "must be won, lost or warning_closed",
        ));
    }
    let dispute = {
        let mut store = state.store();
        let dispute = store
            .disputes
            .get_mut(&id)
            .ok_or_else(|| StripeError::no_such("dispute", &id, "id"))?;
        if matches!(
            dispute["status"].as_str(),
            Some("won" | "lost" | "warning_closed")
        ) {
            return Err(StripeError::invalid("This dispute is already closed."));
        }
        dispute["status"] = json!(o.status);
        dispute.clone()
    };
    emit(&state, event("charge.dispute.closed", dispute.clone()));
    Ok(Json(dispute))
}

pub async fn sessions(State(state): State<AppState>) -> Json<Value> {
    let store = state.store();
    let mut sessions: Vec<Value> = store.sessions.values().map(|s| s.to_json()).collect();
    sessions.sort_by_key(|s| s["created"].as_i64());
    Json(json!({ "sessions": sessions }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    lose_responses: u32,
}

/// `{"lose_responses": N}`: the next N API POSTs are carried out but answered 500.
pub async fn set_faults(State(state): State<AppState>, Json(f): Json<Faults>) -> Json<Value> {
    state.store().lose_responses = f.lose_responses.min(100);
    Json(json!({ "lose_responses": state.store().lose_responses }))
}
