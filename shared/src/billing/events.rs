//! Stripe events as the billing webhook acts on them, parsed from the (verified) body. Only
//! the fields we use are read; Stripe adds fields freely.

use crate::error::ApiError;
use crate::money::Micros;
use crate::store::payments::{Purchase, TakeBack};
use serde::Deserialize;
use std::collections::HashMap;

/// The metadata key (on the session and its payment intent) naming the account to credit.
pub const ACCOUNT_METADATA_KEY: &str = "account_id";
/// 1 credit = 1 USD: one cent is 10,000 micro-credits.
const MICROS_PER_CENT: i64 = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `checkout.session.completed` with `payment_status=paid`, or
    /// `checkout.session.async_payment_succeeded`: credit the account.
    SessionPaid(PurchaseEvent),
    /// `checkout.session.completed` still `unpaid` (a delayed method): wait for the async event.
    SessionAwaitingPayment { session: String },
    /// `checkout.session.async_payment_failed`: nothing was paid, nothing to credit.
    SessionPaymentFailed { session: String },
    /// `charge.refunded` / `charge.dispute.created`: take credits back.
    TakeBack {
        payment_intent: String,
        what: TakeBackEvent,
    },
    /// Anything else: another event type, or a session that is not one of ours.
    Ignored { reason: String },
}

/// [`Purchase`] without the event id (kept beside it in [`Parsed`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PurchaseEvent {
    pub checkout_session: String,
    pub payment_intent: Option<String>,
    pub account_id: String,
    pub amount: Micros,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TakeBackEvent {
    Refund {
        charge: String,
        amount_refunded: Micros,
    },
    Dispute {
        charge: String,
        dispute: String,
        amount: Micros,
    },
    /// `charge.dispute.closed`: `won` (or an inquiry closed without a dispute) gives the
    /// credits back; `lost` keeps them taken.
    DisputeClosed {
        charge: String,
        dispute: String,
        amount: Micros,
        won: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub id: String,
    pub kind: String,
    pub event: Event,
}

impl Parsed {
    pub fn purchase(&self, p: &PurchaseEvent) -> Purchase {
        Purchase {
            event_id: self.id.clone(),
            checkout_session: p.checkout_session.clone(),
            payment_intent: p.payment_intent.clone(),
            account_id: p.account_id.clone(),
            amount: p.amount,
        }
    }
}

impl TakeBackEvent {
    pub fn to_store(&self) -> TakeBack {
        match self.clone() {
            TakeBackEvent::Refund {
                charge,
                amount_refunded,
            } => TakeBack::Refund {
                charge,
                amount_refunded,
            },
            TakeBackEvent::Dispute {
                charge,
                dispute,
                amount,
            } => TakeBack::Dispute {
                charge,
                dispute,
                amount,
            },
            TakeBackEvent::DisputeClosed {
                charge,
                dispute,
                amount,
                won,
            } => TakeBack::DisputeClosed {
                charge,
                dispute,
                amount,
                won,
            },
        }
    }
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct SessionObject {
    id: String,
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
    payment_intent: Option<String>,
    payment_status: String,
    amount_total: Option<i64>,
    currency: Option<String>,
}

#[derive(Deserialize)]
struct ChargeObject {
    id: String,
    payment_intent: Option<String>,
    amount_refunded: i64,
    currency: String,
}

#[derive(Deserialize)]
struct DisputeObject {
    id: String,
    charge: String,
    payment_intent: Option<String>,
    amount: i64,
    currency: String,
    /// On `charge.dispute.closed`: `won`, `lost` or `warning_closed` (an inquiry that never
    /// became a dispute).
    #[serde(default)]
    status: Option<String>,
}

fn object<T: serde::de::DeserializeOwned>(kind: &str, v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::validation("data.object", format!("a {kind} event's object: {e}")))
}

fn usd_micros(cents: i64, currency: &str) -> Option<Micros> {
    (currency.eq_ignore_ascii_case("usd") && cents >= 0).then(|| Micros(cents * MICROS_PER_CENT))
}

fn ignored(reason: impl Into<String>) -> Event {
    Event::Ignored {
        reason: reason.into(),
    }
}

fn session_event(kind: &str, s: SessionObject) -> Event {
    let account = s
        .metadata
        .as_ref()
        .and_then(|m| m.get(ACCOUNT_METADATA_KEY))
        .cloned();
    let account_id = match (account, &s.client_reference_id) {
        (Some(a), Some(c)) if &a == c => a,
        (Some(_), Some(_)) => return ignored("client_reference_id and metadata disagree"),
        _ => return ignored("not a Mimiry checkout session (no account in its metadata)"),
    };
    match (kind, s.payment_status.as_str()) {
        ("checkout.session.async_payment_succeeded", _)
        | ("checkout.session.completed", "paid") => {}
        ("checkout.session.completed", "unpaid") => {
            return Event::SessionAwaitingPayment { session: s.id }
        }
        ("checkout.session.completed", other) => return ignored(format!("payment_status {other}")),
        _ => return Event::SessionPaymentFailed { session: s.id },
    }
    let amount = match (s.amount_total, s.currency.as_deref()) {
        (Some(cents), Some(currency)) => usd_micros(cents, currency),
        _ => None,
    };
    match amount {
        Some(amount) if amount.0 > 0 => Event::SessionPaid(PurchaseEvent {
            checkout_session: s.id,
            payment_intent: s.payment_intent,
            account_id,
            amount,
        }),
        _ => ignored("not a positive USD amount"),
    }
}

/// Parses a verified event body.
pub fn parse(body: &[u8]) -> Result<Parsed, ApiError> {
    let raw: RawEvent = serde_json::from_slice(body)
        .map_err(|e| ApiError::MalformedJson(format!("not a Stripe event: {e}")))?;
    let event = match raw.kind.as_str() {
        "checkout.session.completed"
        | "checkout.session.async_payment_succeeded"
        | "checkout.session.async_payment_failed" => {
            session_event(&raw.kind, object(&raw.kind, raw.data.object)?)
        }
        "charge.refunded" => {
            let c: ChargeObject = object(&raw.kind, raw.data.object)?;
            match (c.payment_intent, usd_micros(c.amount_refunded, &c.currency)) {
                (Some(pi), Some(amount_refunded)) => Event::TakeBack {
                    payment_intent: pi,
                    what: TakeBackEvent::Refund {
                        charge: c.id,
                        amount_refunded,
                    },
                },
                _ => ignored("a charge without a payment intent, or not in USD"),
            }
        }
        "charge.dispute.created" | "charge.dispute.closed" => {
            let d: DisputeObject = object(&raw.kind, raw.data.object)?;
            let closed = raw.kind == "charge.dispute.closed";
            let won = match d.status.as_deref() {
                _ if !closed => None,
                Some("won" | "warning_closed") => Some(true),
                Some("lost") => Some(false),
                _ => {
                    return Ok(Parsed {
                        event: ignored(format!("a closed dispute with status {:?}", d.status)),
                        id: raw.id,
                        kind: raw.kind,
                    })
                }
            };
            match (d.payment_intent, usd_micros(d.amount, &d.currency)) {
                (Some(pi), Some(amount)) => Event::TakeBack {
                    payment_intent: pi,
                    what: match won {
                        None => TakeBackEvent::Dispute {
                            charge: d.charge,
                            dispute: d.id,
                            amount,
                        },
                        Some(won) => TakeBackEvent::DisputeClosed {
                            charge: d.charge,
                            dispute: d.id,
                            amount,
                            won,
                        },
                    },
                },
                _ => ignored("a dispute without a payment intent, or not in USD"),
            }
        }
        other => ignored(format!("event type {other} is not used")),
    };
    Ok(Parsed {
        id: raw.id,
        kind: raw.kind,
        event,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn session(status: &str, metadata: serde_json::Value, reference: &str) -> Vec<u8> {
        json!({"id": "evt_1", "object": "event", "type": "checkout.session.completed",
            "data": {"object": {"id": "cs_1", "object": "checkout.session",
                "client_reference_id": reference, "metadata": metadata,
                "payment_intent": "pi_1", "payment_status": status,
                "amount_total": 2500, "currency": "usd", "extra": [1, 2]}}})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_paid_session_of_ours_is_a_purchase_in_micros() {
        let p = parse(&session("paid", json!({"account_id": "a1"}), "a1")).unwrap();
        assert_eq!(p.id, "evt_1");
        assert_eq!(
            p.event,
            Event::SessionPaid(PurchaseEvent {
                checkout_session: "cs_1".into(),
                payment_intent: Some("pi_1".into()),
                account_id: "a1".into(),
                amount: Micros(25_000_000),
            })
        );
        assert_eq!(
            parse(&session("unpaid", json!({"account_id": "a1"}), "a1"))
                .unwrap()
                .event,
            Event::SessionAwaitingPayment {
                session: "cs_1".into()
            }
        );
    }

    #[test]
    fn sessions_not_ours_are_ignored() {
        for body in [
            session("paid", json!({}), "a1"),
            session("paid", json!({"account_id": "a2"}), "a1"),
            session("paid", json!(null), "a1"),
        ] {
            assert!(matches!(parse(&body).unwrap().event, Event::Ignored { .. }));
        }
    }

    #[test]
    fn refunds_and_disputes_name_the_payment_intent() {
        let refund = json!({"id": "evt_2", "type": "charge.refunded", "data": {"object": {
            "id": "ch_1", "object": "charge", "payment_intent": "pi_1", "amount": 2500,
            "amount_refunded": 1000, "currency": "usd"}}});
        assert_eq!(
            parse(refund.to_string().as_bytes()).unwrap().event,
            Event::TakeBack {
                payment_intent: "pi_1".into(),
                what: TakeBackEvent::Refund {
                    charge: "ch_1".into(),
                    amount_refunded: Micros(10_000_000)
                }
            }
        );
        let closed = |status: &str| {
            json!({"id": "evt_3", "type": "charge.dispute.closed", "data": {"object": {
                "id": "dp_1", "object": "dispute", "charge": "ch_1", "payment_intent": "pi_1",
                "amount": 2500, "currency": "usd", "status": status}}})
            .to_string()
        };
        for (status, won) in [("won", true), ("warning_closed", true), ("lost", false)] {
            assert_eq!(
                parse(closed(status).as_bytes()).unwrap().event,
                Event::TakeBack {
                    payment_intent: "pi_1".into(),
                    what: TakeBackEvent::DisputeClosed {
                        charge: "ch_1".into(),
                        dispute: "dp_1".into(),
                        amount: Micros(25_000_000),
                        won,
                    }
                },
                "{status}"
            );
        }
        assert!(matches!(
            parse(closed("under_review").as_bytes()).unwrap().event,
            Event::Ignored { .. }
        ));
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }
}
