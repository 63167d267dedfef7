//! Money that comes from and goes back to Stripe: a paid Checkout Session adds credits; a
//! refund or a dispute takes them back.
//!
//! Exactly once, whatever Stripe's delivery does (it may send an event twice, late, out of
//! order, or several events for one payment): every change is one `TransactWriteItems` with
//!
//! - a marker of the event (`STRIPE_EVENT#{evt}`, put only if absent): the same event twice
//!   changes nothing;
//! - for a purchase, a marker of the Checkout Session (`CHECKOUT#{cs}`) and the payment record
//!   (`PAYMENT#{pi}`), both put only if absent: a session is credited once, whichever of its
//!   events (`completed` with `paid`, or `async_payment_succeeded`) arrives first;
//! - for a take-back, the payment record updated under its `version`: refunds follow the
//!   charge's cumulative `amount_refunded` (a late, smaller figure changes nothing) and each
//!   dispute id is taken once; the total taken back never exceeds what was credited;
//! - the account's balance and the ledger entry carrying the payment's ids.
//!
//! A take-back may leave the balance negative (the credits may already be spent): the account
//! then cannot submit (the hold needs a positive balance) and running jobs cannot extend their
//! holds, so they stop as they would at a zero balance.

use super::accounts::{LedgerEntry, ACCOUNT_SK};
use super::{account_pk, aws_err, cancelled_conditions, from_item, n, s, to_item, Store};
use crate::error::ApiError;
use crate::money::Micros;
use crate::time::{now_ms, Millis};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

/// How long a processed event's marker is kept. Stripe retries for up to three days and its
/// events can be resent for 30 days; later resends are still harmless (the session marker and
/// the cumulative refund figure stand forever), the marker only saves work.
const EVENT_MARKER_SECS: i64 = 90 * 24 * 3600;
/// Attempts of a take-back that lost a race with another one on the same payment.
const TAKE_BACK_ATTEMPTS: u32 = 5;

/// Stripe's ids of a ledger entry's payment: enough to find it in Stripe's Dashboard.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PaymentRef {
    pub event_id: String,
    pub checkout_session: Option<String>,
    pub payment_intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute: Option<String>,
}

/// One paid Checkout Session and what has been taken back from it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaymentRecord {
    pub account_id: String,
    pub checkout_session: String,
    pub payment_intent: Option<String>,
    pub credited_micros: i64,
    pub refunded_micros: i64,
    pub disputed_micros: i64,
    pub disputes: Vec<String>,
    /// What each dispute took (`disputed_micros` is their sum): what a won dispute gives back.
    #[serde(default)]
    pub dispute_taken: std::collections::BTreeMap<String, i64>,
    /// Disputes closed in the account's favour (their credits were given back), or closed
    /// before their `created` event arrived: either way nothing more happens for them.
    #[serde(default)]
    pub disputes_closed: Vec<String>,
    pub created_at: Millis,
    pub version: i64,
}

/// A paid Checkout Session to credit.
#[derive(Debug, Clone)]
pub struct Purchase {
    pub event_id: String,
    pub checkout_session: String,
    pub payment_intent: Option<String>,
    pub account_id: String,
    pub amount: Micros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurchaseOutcome {
    Credited,
    /// This event, or another one for the same session, was processed before.
    AlreadyProcessed,
    /// The session names an account that does not exist.
    UnknownAccount,
}

/// What Stripe says was taken back from a payment.
#[derive(Debug, Clone)]
pub enum TakeBack {
    /// `charge.refunded`: the charge's cumulative refunded amount.
    Refund {
        charge: String,
        amount_refunded: Micros,
    },
    /// `charge.dispute.created`.
    Dispute {
        charge: String,
        dispute: String,
        amount: Micros,
    },
    /// `charge.dispute.closed`: `won` gives back what the dispute took; lost, it stays taken
    /// (and is taken now if its `created` event has not arrived).
    DisputeClosed {
        charge: String,
        dispute: String,
        amount: Micros,
        won: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeBackOutcome {
    Taken(Micros),
    /// A won dispute gave these credits back.
    Returned(Micros),
    /// Already applied (this event, an earlier one with the same figure, or the same dispute).
    NothingToTake,
    /// No credited payment has this payment intent (yet): the purchase's event may still be on
    /// its way, so the caller should let Stripe retry.
    UnknownPayment,
}

fn payment_pk(key: &str) -> String {
    format!("PAYMENT#{key}")
}

fn event_marker(store: &Store, event_id: &str) -> Result<TransactWriteItem, ApiError> {
    let now = now_ms();
    let put = Put::builder()
        .table_name(&store.table)
        .item("PK", s(format!("STRIPE_EVENT#{event_id}")))
        .item("SK", s("EVENT"))
        .item("at", n(now))
        .item("expires_at", n(now / 1000 + EVENT_MARKER_SECS))
        .condition_expression("attribute_not_exists(PK)")
        .build()
        .map_err(ApiError::internal)?;
    Ok(TransactWriteItem::builder().put(put).build())
}

fn account_delta(
    store: &Store,
    account_id: &str,
    delta: Micros,
) -> Result<TransactWriteItem, ApiError> {
    let update = Update::builder()
        .table_name(&store.table)
        .key("PK", s(account_pk(account_id)))
        .key("SK", s(ACCOUNT_SK))
        .update_expression("ADD balance_micros :a, added_micros :a")
        .condition_expression("attribute_exists(PK)")
        .expression_attribute_values(":a", n(delta.0))
        .build()
        .map_err(ApiError::internal)?;
    Ok(TransactWriteItem::builder().update(update).build())
}

impl Store {
    /// Credits a paid Checkout Session once (see the module's description).
    pub async fn credit_purchase(&self, p: &Purchase) -> Result<PurchaseOutcome, ApiError> {
        if p.amount.0 <= 0 {
            return Err(ApiError::internal("a purchase must have a positive amount"));
        }
        let record = PaymentRecord {
            account_id: p.account_id.clone(),
            checkout_session: p.checkout_session.clone(),
            payment_intent: p.payment_intent.clone(),
            credited_micros: p.amount.0,
            refunded_micros: 0,
            disputed_micros: 0,
            disputes: Vec::new(),
            dispute_taken: Default::default(),
            disputes_closed: Vec::new(),
            created_at: now_ms(),
            version: 0,
        };
        // Looked up by payment intent (refunds and disputes name it); a session without one
        // (never for a paid mode=payment session) is keyed by itself.
        let key = p.payment_intent.as_deref().unwrap_or(&p.checkout_session);
        let put_if_absent = |item| -> Result<TransactWriteItem, ApiError> {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .map_err(ApiError::internal)?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        let session_marker = put_if_absent(
            [
                (
                    "PK".to_string(),
                    s(format!("CHECKOUT#{}", p.checkout_session)),
                ),
                ("SK".to_string(), s("CHECKOUT")),
                ("payment_key".to_string(), s(key)),
            ]
            .into_iter()
            .collect(),
        )?;
        let entry = LedgerEntry {
            entry_id: uuid::Uuid::new_v4().to_string(),
            kind: "purchase".into(),
            amount_micros: p.amount.0,
            job_id: None,
            note: "credits bought with Stripe Checkout".into(),
            at: now_ms(),
            payment: Some(PaymentRef {
                event_id: p.event_id.clone(),
                checkout_session: Some(p.checkout_session.clone()),
                payment_intent: p.payment_intent.clone(),
                charge: None,
                dispute: None,
            }),
        };
        let items = vec![
            event_marker(self, &p.event_id)?,
            session_marker,
            put_if_absent(to_item(&record, payment_pk(key), "PAYMENT".into())?)?,
            account_delta(self, &p.account_id, p.amount)?,
            self.ledger_entry_put(&p.account_id, entry)?,
        ];
        match self.transact(items).await {
            Ok(()) => Ok(PurchaseOutcome::Credited),
            Err(e) => match cancelled_conditions(&e) {
                Some(failed) if failed.iter().take(3).any(|f| *f) => {
                    Ok(PurchaseOutcome::AlreadyProcessed)
                }
                Some(failed) if failed.get(3) == Some(&true) => Ok(PurchaseOutcome::UnknownAccount),
                _ => Err(aws_err(e)),
            },
        }
    }

    /// The payment a Checkout Session was credited as, once its webhook landed: what the
    /// dashboard's success page asks ("payment received, credits arriving" until then). The
    /// caller must check `account_id` is the viewer's.
    pub async fn purchase_of_session(
        &self,
        checkout_session: &str,
    ) -> Result<Option<PaymentRecord>, ApiError> {
        let Some(marker) = self
            .get(format!("CHECKOUT#{checkout_session}"), "CHECKOUT".into())
            .await?
        else {
            return Ok(None);
        };
        match marker.get("payment_key") {
            Some(aws_sdk_dynamodb::types::AttributeValue::S(key)) => self.payment(key).await,
            _ => Ok(None),
        }
    }

    pub async fn payment(&self, payment_intent: &str) -> Result<Option<PaymentRecord>, ApiError> {
        self.get(payment_pk(payment_intent), "PAYMENT".into())
            .await?
            .map(from_item)
            .transpose()
    }

    /// Takes back what a refund or dispute of `payment_intent` says, once (see the module's
    /// description). The balance may go negative.
    pub async fn take_back(
        &self,
        event_id: &str,
        payment_intent: &str,
        what: &TakeBack,
    ) -> Result<TakeBackOutcome, ApiError> {
        for _ in 0..TAKE_BACK_ATTEMPTS {
            let Some(record) = self.payment(payment_intent).await? else {
                return Ok(TakeBackOutcome::UnknownPayment);
            };
            let mut new = record.clone();
            new.version += 1;
            let left = record.credited_micros - record.refunded_micros - record.disputed_micros;
            let (delta, kind, charge, dispute) = match what {
                TakeBack::Refund {
                    charge,
                    amount_refunded,
                } => {
                    let target = amount_refunded
                        .0
                        .min(record.credited_micros - record.disputed_micros);
                    new.refunded_micros = target.max(record.refunded_micros);
                    (target - record.refunded_micros, "refund", charge, None)
                }
                TakeBack::Dispute {
                    charge,
                    dispute,
                    amount,
                }
                | TakeBack::DisputeClosed {
                    charge,
                    dispute,
                    amount,
                    won: false,
                } => {
                    if record.disputes.contains(dispute) {
                        return Ok(TakeBackOutcome::NothingToTake);
                    }
                    let delta = amount.0.min(left).max(0);
                    new.disputed_micros += delta;
                    new.disputes.push(dispute.clone());
                    new.dispute_taken.insert(dispute.clone(), delta);
                    (delta, "dispute", charge, Some(dispute.clone()))
                }
                TakeBack::DisputeClosed {
                    charge,
                    dispute,
                    amount,
                    won: true,
                } => {
                    if record.disputes_closed.contains(dispute) {
                        return Ok(TakeBackOutcome::NothingToTake);
                    }
                    new.disputes_closed.push(dispute.clone());
                    // Won before its `created` arrived: mark it, so that event takes nothing.
                    if !record.disputes.contains(dispute) {
                        new.disputes.push(dispute.clone());
                        new.dispute_taken.insert(dispute.clone(), 0);
                    }
                    // Records from before `dispute_taken` existed: the dispute's amount, never
                    // more than all disputes took.
                    let taken = record
                        .dispute_taken
                        .get(dispute)
                        .copied()
                        .unwrap_or(amount.0)
                        .min(record.disputed_micros)
                        .max(0);
                    new.disputed_micros -= taken;
                    (-taken, "dispute_won", charge, Some(dispute.clone()))
                }
            };
            if delta == 0 {
                // Still worth recording (a won dispute seen before its `created`).
                if new.disputes != record.disputes {
                    self.put_payment(payment_intent, &record, &new).await?;
                }
                return Ok(TakeBackOutcome::NothingToTake);
            }
            if delta < 0 && kind != "dispute_won" {
                return Ok(TakeBackOutcome::NothingToTake);
            }
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(to_item(
                    &new,
                    payment_pk(payment_intent),
                    "PAYMENT".into(),
                )?))
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(record.version))
                .build()
                .map_err(ApiError::internal)?;
            let entry = LedgerEntry {
                entry_id: uuid::Uuid::new_v4().to_string(),
                kind: kind.into(),
                job_id: None,
                note: match kind {
                    "refund" => "payment refunded: credits taken back".into(),
                    "dispute_won" => "dispute won: credits given back".into(),
                    _ => "payment disputed: credits taken back".into(),
                },
                amount_micros: delta.abs(),
                at: now_ms(),
                payment: Some(PaymentRef {
                    event_id: event_id.to_string(),
                    checkout_session: Some(record.checkout_session.clone()),
                    payment_intent: Some(payment_intent.to_string()),
                    charge: Some(charge.clone()),
                    dispute,
                }),
            };
            let items = vec![
                event_marker(self, event_id)?,
                TransactWriteItem::builder().put(put).build(),
                account_delta(self, &record.account_id, Micros(-delta))?,
                self.ledger_entry_put(&record.account_id, entry)?,
            ];
            match self.transact(items).await {
                Ok(()) if delta < 0 => return Ok(TakeBackOutcome::Returned(Micros(-delta))),
                Ok(()) => return Ok(TakeBackOutcome::Taken(Micros(delta))),
                Err(e) => match cancelled_conditions(&e) {
                    Some(failed) if failed.first() == Some(&true) => {
                        return Ok(TakeBackOutcome::NothingToTake)
                    }
                    // Another event changed the payment first: read it again.
                    Some(failed) if failed.get(1) == Some(&true) => continue,
                    _ => return Err(aws_err(e)),
                },
            }
        }
        Err(ApiError::Conflict {
            code: "busy",
            message: "The payment is being changed by other events; retry".into(),
        })
    }

    /// Saves a payment record under its version, moving no money (a busy payment makes Stripe
    /// retry the event).
    async fn put_payment(
        &self,
        payment_intent: &str,
        old: &PaymentRecord,
        new: &PaymentRecord,
    ) -> Result<(), ApiError> {
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(
                new,
                payment_pk(payment_intent),
                "PAYMENT".into(),
            )?))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(old.version))
            .send()
            .await
            .map_err(|e| {
                if super::is_condition_failure(&e) {
                    ApiError::Conflict {
                        code: "busy",
                        message: "The payment is being changed by other events; retry".into(),
                    }
                } else {
                    aws_err(e)
                }
            })?;
        Ok(())
    }
}
