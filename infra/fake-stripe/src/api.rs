//! The Stripe API routes Mimiry uses, form-encoded in and JSON out like Stripe's:
//! `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`, `POST /v1/refunds`,
//! `GET /v1/events/{id}`. Secret-key auth (Bearer, or Basic with the key as user name);
//! `Idempotency-Key` on POSTs; unknown parameters refused naming them, as Stripe does.

use crate::error::StripeError;
use crate::state::{new_id, now_secs, AppState, Charge, LineItem, Metadata, Session};
use crate::webhooks::emit;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Parameters as Stripe's form encoding carries them: `metadata[k]=v`,
/// `line_items[0][price_data][unit_amount]=2500`. Keys are kept flat.
pub type Params = BTreeMap<String, String>;

pub fn parse_form(body: &[u8]) -> Params {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Only the secret key opens the API. Stripe says what was wrong in plain words.
pub async fn auth(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let key = if let Some(k) = header.strip_prefix("Bearer ") {
        Some(k.trim().to_string())
    } else if let Some(b) = header.strip_prefix("Basic ") {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|s| s.split(':').next().map(str::to_string))
    } else {
        None
    };
    match key {
        None => StripeError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
        .into_response(),
        Some(k) if k != state.config.api_key => {
            let tail: String = k.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
            StripeError::unauthorized(format!("Invalid API Key provided: sk_test_****{tail}"))
                .into_response()
        }
        Some(_) => next.run(request).await,
    }
}

/// Runs a POST under Stripe's idempotency rules: the same key with the same parameters answers
/// the first response again (`Idempotent-Replayed: true`); with other parameters, a 400.
fn idempotent(
    state: &AppState,
    headers: &HeaderMap,
    route: &str,
    params: &Params,
    run: impl FnOnce() -> Result<Value, StripeError>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{route} {k}"));
    let fingerprint = serde_json::to_string(params).unwrap_or_default();
    if let Some(key) = &key {
        if let Some((seen, status, body)) = state.store().idempotency.get(key).cloned() {
            if seen != fingerprint {
                return StripeError::idempotency_mismatch().into_response();
            }
            let mut response = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                Json(body),
            )
                .into_response();
            response
                .headers_mut()
                .insert("idempotent-replayed", "true".parse().unwrap());
            return response;
        }
    }
    let (status, body) = match run() {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (e.status, e.body()),
    };
    let mut store = state.store();
    if let Some(key) = key {
        store
            .idempotency
            .insert(key, (fingerprint, status.as_u16(), body.clone()));
    }
    if store.lose_responses > 0 {
        store.lose_responses -= 1;
        return StripeError::api_error().into_response();
    }
    (status, Json(body)).into_response()
}

/// Takes the parameters under `prefix[…]` out as a map (`metadata[a]` → `a`).
fn take_map(params: &mut Params, prefix: &str) -> Result<Metadata, StripeError> {
    let keys: Vec<String> = params
        .keys()
        .filter(|k| k.starts_with(&format!("{prefix}[")))
        .cloned()
        .collect();
    let mut map = Metadata::new();
    for k in keys {
        let v = params.remove(&k).unwrap_or_default();
        let inner = &k[prefix.len() + 1..k.len().saturating_sub(1)];
        if !k.ends_with(']') || inner.is_empty() || inner.contains('[') {
            return Err(StripeError::invalid(format!("Invalid {prefix}: `{k}`")).param(k));
        }
        if inner.len() > 40 || v.len() > 500 {
            return Err(StripeError::invalid(
                "Metadata keys can be at most 40 characters and values at most 500 characters",
            )
            .param(k));
        }
        map.insert(inner.to_string(), v);
    }
    if map.len() > 50 {
        return Err(
            StripeError::invalid("Metadata can have at most 50 keys").param(prefix.to_string())
        );
    }
    Ok(map)
}

fn take_int(params: &mut Params, key: &str) -> Result<Option<i64>, StripeError> {
    params
        .remove(key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| StripeError::bad_value(key, format!("Invalid integer: {v}")))
        })
        .transpose()
}

fn take_url(params: &mut Params, key: &str) -> Result<Option<String>, StripeError> {
    match params.remove(key) {
        None => Ok(None),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(Some(u)),
        Some(_) => Err(StripeError::invalid("Not a valid URL")
            .code("url_invalid")
            .param(key)),
    }
}

fn line_items(params: &mut Params) -> Result<Vec<LineItem>, StripeError> {
    let mut items = Vec::new();
    for i in 0.. {
        let p = |f: &str| format!("line_items[{i}]{f}");
        if !params.keys().any(|k| k.starts_with(&p(""))) {
            break;
        }
        if params.contains_key(&p("[price]")) {
            // Mimiry never uses stored Prices; the fake has none.
            let id = params.remove(&p("[price]")).unwrap_or_default();
            return Err(StripeError::no_such("price", &id, &p("[price]")));
        }
        let currency = params
            .remove(&p("[price_data][currency]"))
            .ok_or_else(|| StripeError::missing(&p("[price_data][currency]")))?;
        let unit_amount = take_int(params, &p("[price_data][unit_amount]"))?
            .ok_or_else(|| StripeError::missing(&p("[price_data][unit_amount]")))?;
        if !(0..=99_999_999).contains(&unit_amount) {
            return Err(StripeError::invalid(
                "This value must be greater than or equal to 0 and less than or equal to 99999999.",
            )
            .code("parameter_invalid_integer")
            .param(p("[price_data][unit_amount]")));
        }
        let name = params
            .remove(&p("[price_data][product_data][name]"))
            .ok_or_else(|| StripeError::missing(&p("[price_data][product_data][name]")))?;
        params.remove(&p("[price_data][product_data][description]"));
        let quantity = take_int(params, &p("[quantity]"))?
            .ok_or_else(|| StripeError::missing(&p("[quantity]")))?;
        if quantity < 1 {
            return Err(StripeError::invalid("Quantity must be at least 1")
                .code("parameter_invalid_integer")
                .param(p("[quantity]")));
        }
        items.push(LineItem {
            name,
            unit_amount,
            quantity,
            currency: currency.to_lowercase(),
        });
    }
    Ok(items)
}

fn session_from(state: &AppState, mut params: Params) -> Result<Session, StripeError> {
    match params.remove("mode").as_deref() {
        None => return Err(StripeError::missing("mode")),
        Some("payment") => {}
        Some(other) => {
            return Err(StripeError::invalid(format!(
                "The fake supports mode=payment only, not `{other}`"
            ))
            .code("parameter_invalid_string")
            .param("mode"))
        }
    }
    let success_url =
        take_url(&mut params, "success_url")?.ok_or_else(|| StripeError::missing("success_url"))?;
    let cancel_url = take_url(&mut params, "cancel_url")?;
    let client_reference_id = params.remove("client_reference_id");
    if client_reference_id.as_ref().is_some_and(|c| c.len() > 200) {
        return Err(
            StripeError::invalid("client_reference_id is at most 200 characters")
                .param("client_reference_id"),
        );
    }
    let customer_email = params.remove("customer_email");
    let metadata = take_map(&mut params, "metadata")?;
    let payment_intent_metadata = take_map(&mut params, "payment_intent_data[metadata]")?;
    let items = line_items(&mut params)?;
    if items.is_empty() {
        return Err(StripeError::invalid(
            "You must provide at least one line item when mode is payment.",
        )
        .code("parameter_missing")
        .param("line_items"));
    }
    let currency = items[0].currency.clone();
    if items.iter().any(|i| i.currency != currency) {
        return Err(
            StripeError::invalid("All line items must use the same currency").param("line_items"),
        );
    }
    params.retain(|k, v| !(k.starts_with("payment_method_types[") && v == "card"));
    if let Some((unknown, _)) = params.iter().next() {
        return Err(StripeError::unknown_param(unknown));
    }
    let total: i64 = items.iter().map(|l| l.unit_amount * l.quantity).sum();
    if total < 50 && currency == "usd" {
        return Err(StripeError::invalid(
            "The Checkout Session's total amount due must add up to at least $0.50 usd",
        )
        .code("amount_too_small")
        .param("line_items"));
    }
    let id = new_id("cs_test_");
    let created = now_secs();
    Ok(Session {
        url: format!("{}/checkout/{id}", state.public_base),
        id,
        created,
        expires_at: created + 24 * 3600,
        success_url,
        cancel_url,
        client_reference_id,
        customer_email,
        metadata,
        payment_intent_metadata,
        line_items: items,
        currency,
        status: "open",
        payment_status: "unpaid",
        payment_intent: None,
        delayed: false,
    })
}

pub async fn create_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_form(&body);
    idempotent(&state, &headers, "checkout.sessions", &params, || {
        let session = session_from(&state, params.clone())?;
        let json = session.to_json();
        state.store().sessions.insert(session.id.clone(), session);
        Ok(json)
    })
}

pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StripeError> {
    let store = state.store();
    let session = store
        .sessions
        .get(&id)
        .ok_or_else(|| StripeError::no_such("checkout.session", &id, "session"))?;
    Ok(Json(session.to_json()))
}

pub async fn get_event(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, StripeError> {
    let store = state.store();
    store
        .events
        .iter()
        .find(|e| e["id"] == id.as_str())
        .cloned()
        .map(Json)
        .ok_or_else(|| StripeError::no_such("event", &id, "id"))
}

/// `POST /v1/refunds` with `payment_intent` or `charge`, `amount` (default: what is left).
pub async fn create_refund(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = parse_form(&body);
    idempotent(&state, &headers, "refunds", &params, || {
        let mut params = params.clone();
        let amount = take_int(&mut params, "amount")?;
        let payment_intent = params.remove("payment_intent");
        let charge = params.remove("charge");
        params.remove("reason");
        take_map(&mut params, "metadata")?;
        if let Some((unknown, _)) = params.iter().next() {
            return Err(StripeError::unknown_param(unknown));
        }
        refund(&state, payment_intent, charge, amount)
    })
}

/// Refunds (part of) a charge and emits `charge.refunded`; also used by the admin routes.
pub fn refund(
    state: &AppState,
    payment_intent: Option<String>,
    charge: Option<String>,
    amount: Option<i64>,
) -> Result<Value, StripeError> {
    let (refund, charge_json) = {
        let mut store = state.store();
        let charge_id = match (&payment_intent, &charge) {
            (_, Some(c)) => c.clone(),
            (Some(pi), None) => store
                .payment_intents
                .get(pi)
                .map(|p| p.charge.clone())
                .ok_or_else(|| StripeError::no_such("payment_intent", pi, "payment_intent"))?,
            (None, None) => {
                return Err(StripeError::invalid(
                    "One of the following params should be provided for this request: payment_intent or charge.",
                )
                .code("parameter_missing"))
            }
        };
        let charge: &mut Charge = store
            .charges
            .get_mut(&charge_id)
            .ok_or_else(|| StripeError::no_such("charge", &charge_id, "charge"))?;
        let left = charge.amount - charge.amount_refunded;
        if left == 0 {
            return Err(StripeError::invalid(format!(
                "Charge {} has already been refunded.",
                charge.id
            ))
            .code("charge_already_refunded"));
        }
        let amount = amount.unwrap_or(left);
        if amount <= 0 || amount > left {
            return Err(StripeError::invalid(format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
            ))
            .code("amount_too_large")
            .param("amount"));
        }
        charge.amount_refunded += amount;
        let refund = json!({
            "id": new_id("re_"),
            "object": "refund",
            "amount": amount,
            "charge": charge.id,
            "created": now_secs(),
            "currency": charge.currency,
            "metadata": {},
            "payment_intent": charge.payment_intent,
            "reason": null,
            "status": "succeeded",
        });
        let charge_json = charge.to_json();
        store.refunds.insert(
            refund["id"].as_str().unwrap_or_default().to_string(),
            refund.clone(),
        );
        (refund, charge_json)
    };
    emit(state, crate::state::event("charge.refunded", charge_json));
    Ok(refund)
}

pub async fn not_allowed() -> StripeError {
    StripeError::invalid("Unrecognized request URL or method.")
}
