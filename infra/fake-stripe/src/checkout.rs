//! The hosted checkout page a session's `url` points at: the order, and plain HTML forms to
//! Pay (a card: paid at once), Pay by bank debit (completes `unpaid`, settles later with
//! `checkout.session.async_payment_succeeded` or `…_failed`), Decline (the card is refused;
//! the session stays open, as on Stripe) and Cancel (back to `cancel_url`).

use crate::error::StripeError;
use crate::state::{event, new_id, now_secs, AppState, Charge, PaymentIntent};
use crate::webhooks::emit;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use std::time::Duration;

/// How the customer pays on the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Card,
    /// A delayed-notification method (bank debit): the session completes unpaid.
    Delayed,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn money(cents: i64, currency: &str) -> String {
    format!(
        "{}.{:02} {}",
        cents / 100,
        cents % 100,
        currency.to_uppercase()
    )
}

fn page(state: &AppState, id: &str, notice: Option<&str>) -> Result<String, StripeError> {
    let store = state.store();
    let s = store
        .sessions
        .get(id)
        .ok_or_else(|| StripeError::no_such("checkout.session", id, "session"))?;
    if s.status != "open" {
        return Ok(document(
            "Checkout",
            &format!(
                "<h1>This Checkout Session is no longer active.</h1><p id=\"status\">{}</p>",
                escape(s.status)
            ),
        ));
    }
    let items: String = s
        .line_items
        .iter()
        .map(|l| {
            format!(
                "<li>{} × {} — {}</li>",
                escape(&l.name),
                l.quantity,
                money(l.unit_amount * l.quantity, &l.currency)
            )
        })
        .collect();
    let form = |action: &str, label: &str| {
        format!(
            "<form method=\"post\" action=\"/checkout/{}/{action}\"><button id=\"{action}\" type=\"submit\" name=\"action\" value=\"{action}\">{label}</button></form>",
            escape(id)
        )
    };
    let total = money(s.amount_total(), &s.currency);
    Ok(document(
        "Checkout — fake Stripe",
        &format!(
            "<h1>Pay <span id=\"total\">{total}</span></h1>\
             <p class=\"test\">Test mode (fake Stripe): no card data is asked for.</p>\
             {notice}<ul id=\"items\">{items}</ul><div class=\"actions\">{pay}{delayed}{decline}{cancel}</div>",
            notice = notice
                .map(|n| format!("<p id=\"notice\" role=\"alert\">{}</p>", escape(n)))
                .unwrap_or_default(),
            pay = form("pay", "Pay"),
            delayed = form("pay-delayed", "Pay by bank debit (settles later)"),
            decline = form("decline", "Decline"),
            cancel = form("cancel", "Cancel"),
        ),
    ))
}

/// A whole page: a language, a viewport for phones, a `main` landmark and legible contrast,
/// so the page a browser test walks through passes axe like our own pages.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>"
    )
}

const STYLE: &str = "body{margin:0;font:16px/1.5 system-ui,sans-serif;background:#f6f9fc;color:#1a1f36}\
main{max-width:440px;margin:40px auto;padding:24px;background:#fff;border-radius:8px;box-shadow:0 2px 8px rgba(0,0,0,.08)}\
h1{font-size:1.5em;margin:0 0 8px}.test{background:#fff4d6;color:#5c4400;padding:6px 10px;border-radius:6px}\
#notice{background:#fde8e8;color:#8a1c1c;padding:6px 10px;border-radius:6px}ul{padding-left:20px}\
.actions{display:flex;flex-direction:column;gap:10px}.actions form{margin:0}\
button{width:100%;padding:10px;border:1px solid #c2c8d0;border-radius:6px;background:#fff;color:#1a1f36;font:inherit;cursor:pointer}\
#pay{background:#4f46e5;border-color:#4f46e5;color:#fff;font-weight:600}";

fn html_error(e: StripeError) -> Response {
    (
        e.status,
        Html(format!("<!doctype html><p>{}</p>", escape(&e.message))),
    )
        .into_response()
}

pub async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match page(&state, &id, None) {
        Ok(html) => Html(html).into_response(),
        Err(e) => html_error(e),
    }
}

pub async fn pay(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    redirect(complete(&state, &id, Method::Card))
}

pub async fn pay_delayed(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    redirect(complete(&state, &id, Method::Delayed))
}

pub async fn decline(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match page(&state, &id, Some("Your card was declined.")) {
        Ok(html) => (StatusCode::PAYMENT_REQUIRED, Html(html)).into_response(),
        Err(e) => html_error(e),
    }
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let store = state.store();
    match store.sessions.get(&id) {
        None => html_error(StripeError::no_such("checkout.session", &id, "session")),
        Some(s) => match &s.cancel_url {
            Some(url) => see_other(url),
            None => Html("<!doctype html><p>Cancelled.</p>".to_string()).into_response(),
        },
    }
}

fn see_other(url: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response()
}

fn redirect(result: Result<String, StripeError>) -> Response {
    match result {
        Ok(url) => see_other(&url),
        Err(e) => html_error(e),
    }
}

/// The customer completes the session: it becomes `complete` (paid now for a card, unpaid
/// until it settles for a delayed method) and `checkout.session.completed` is sent. Answers the
/// success URL to redirect to.
pub fn complete(state: &AppState, id: &str, method: Method) -> Result<String, StripeError> {
    let (session_json, success_url) = {
        let mut store = state.store();
        let s = store
            .sessions
            .get_mut(id)
            .ok_or_else(|| StripeError::no_such("checkout.session", id, "session"))?;
        if s.status != "open" {
            return Err(StripeError::invalid(format!(
                "This Checkout Session is no longer active ({}).",
                s.status
            )));
        }
        let pi = new_id("pi_");
        s.status = "complete";
        s.payment_intent = Some(pi.clone());
        s.delayed = method == Method::Delayed;
        s.payment_status = match method {
            Method::Card => "paid",
            Method::Delayed => "unpaid",
        };
        let (amount, currency) = (s.amount_total(), s.currency.clone());
        let metadata = s.payment_intent_metadata.clone();
        let json = s.to_json();
        let url = s.success_url.replace("{CHECKOUT_SESSION_ID}", &s.id);
        let charge = new_id("ch_");
        store.payment_intents.insert(
            pi.clone(),
            PaymentIntent {
                id: pi.clone(),
                amount,
                currency: currency.clone(),
                charge: charge.clone(),
                session: id.to_string(),
            },
        );
        if method == Method::Card {
            store.charges.insert(
                charge.clone(),
                Charge {
                    id: charge,
                    payment_intent: pi,
                    amount,
                    amount_refunded: 0,
                    currency,
                    metadata,
                    disputed: false,
                    created: now_secs(),
                },
            );
        }
        (json, url)
    };
    emit(state, event("checkout.session.completed", session_json));
    if method == Method::Delayed && state.config.async_settle_ms > 0 {
        let (state, id) = (state.clone(), id.to_string());
        let wait = Duration::from_millis(state.config.async_settle_ms);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = settle(&state, &id, true);
        });
    }
    Ok(success_url)
}

/// A delayed payment settles: `checkout.session.async_payment_succeeded` (the session is now
/// paid, and its charge exists) or `…_failed`.
pub fn settle(state: &AppState, id: &str, succeed: bool) -> Result<serde_json::Value, StripeError> {
    let json = {
        let mut store = state.store();
        let s = store
            .sessions
            .get_mut(id)
            .ok_or_else(|| StripeError::no_such("checkout.session", id, "session"))?;
        if !(s.delayed && s.payment_status == "unpaid" && s.status == "complete") {
            return Err(StripeError::invalid(
                "This session has no delayed payment waiting to settle",
            ));
        }
        if succeed {
            s.payment_status = "paid";
        } else {
            // Stripe leaves it unpaid; the payment intent fails.
            s.delayed = false;
        }
        let json = s.to_json();
        let pi = s.payment_intent.clone().unwrap_or_default();
        let metadata = s.payment_intent_metadata.clone();
        if succeed {
            if let Some(p) = store.payment_intents.get(&pi).cloned() {
                store.charges.insert(
                    p.charge.clone(),
                    Charge {
                        id: p.charge,
                        payment_intent: p.id,
                        amount: p.amount,
                        amount_refunded: 0,
                        currency: p.currency,
                        metadata,
                        disputed: false,
                        created: now_secs(),
                    },
                );
            }
        }
        json
    };
    let kind = if succeed {
        "checkout.session.async_payment_succeeded"
    } else {
        "checkout.session.async_payment_failed"
    };
    emit(state, event(kind, json.clone()));
    Ok(json)
}
