//! Billing: `POST /billing/stripe-webhook` (Stripe, proving itself with `Stripe-Signature`;
//! the only way credits are bought) and `GET /account/ledger` (any valid key: every movement
//! of the account's credits, newest first, a page at a time).

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::billing::events::{self, Event};
use mimiry_shared::billing::{signature, Billing, BillingConfig};
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::money::Micros;
use mimiry_shared::notices::Notices;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::accounts::LedgerEntry;
use mimiry_shared::store::payments::{PurchaseOutcome, TakeBackOutcome};
use mimiry_shared::store::Store;
use mimiry_shared::time::{now_ms, rfc3339};
use mimiry_shared::wiring;
use serde_json::{json, Value};

pub const FUNCTION: &str = "billing";

pub struct App {
    pub store: Store,
    pub billing: Billing,
    /// Purchases re-arm the low-balance notice; take-backs may cross it.
    pub notices: Notices,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            billing: Billing::new(clients, BillingConfig::from_env()),
            notices: wiring::notices(clients, config),
        }
    }

    async fn handle(&self, request: Request) -> Response<Body> {
        handle(self, request).await
    }
}

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let ctx = match RequestCtx::begin(request, FUNCTION, &app.store).await {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let result = match ctx.route() {
        RouteName::GetLedger => ledger(app, &ctx).await,
        RouteName::StripeWebhook => stripe_webhook(app, &ctx).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

async fn ledger(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let limit = ctx.page_limit()?;
    let cursor = ctx.query("cursor");
    let page = app
        .store
        .ledger_page(&ctx.caller().account_id, limit, cursor.as_deref())
        .await?;
    Ok(Reply::ok(json!({
        "entries": page.entries.iter().map(entry_view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

fn entry_view(e: &LedgerEntry) -> Value {
    json!({
        "id": e.entry_id,
        "kind": e.kind,
        "amount": Micros(e.amount_micros).to_string(),
        "job_id": e.job_id,
        "note": e.note,
        "at": rfc3339(e.at),
        "payment": e.payment,
    })
}

/// Verifies the signature (400 when it does not prove Stripe sent the body), then applies the
/// event exactly once. A 2xx tells Stripe to stop; anything else makes it retry, which is
/// what a payment we cannot place yet needs.
async fn stripe_webhook(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let body = ctx.body_bytes()?;
    let secrets = app.billing.stripe.keys().await?.webhook_secrets();
    signature::verify(
        ctx.header("stripe-signature"),
        body,
        &secrets,
        now_ms() / 1000,
    )
    .map_err(|e| ApiError::InvalidSignature(e.to_string()))?;
    let parsed = events::parse(body)?;
    let result = match &parsed.event {
        Event::SessionPaid(p) => match app.store.credit_purchase(&parsed.purchase(p)).await? {
            PurchaseOutcome::Credited => {
                tracing::info!(event = %parsed.id, session = %p.checkout_session, account = %p.account_id, amount = %p.amount, "credits bought");
                app.notices
                    .after_balance_change(&app.store, &p.account_id)
                    .await;
                "credited"
            }
            PurchaseOutcome::AlreadyProcessed => "already_processed",
            PurchaseOutcome::UnknownAccount => {
                tracing::error!(event = %parsed.id, session = %p.checkout_session, account = %p.account_id, "a paid checkout session names no account");
                return Err(ApiError::Conflict {
                    code: "unknown_account",
                    message: "The session's account does not exist".into(),
                });
            }
        },
        Event::SessionAwaitingPayment { .. } => "awaiting_payment",
        Event::SessionPaymentFailed { .. } => "payment_failed",
        Event::TakeBack {
            payment_intent,
            what,
        } => match app
            .store
            .take_back(&parsed.id, payment_intent, &what.to_store())
            .await?
        {
            TakeBackOutcome::Taken(amount) => {
                tracing::info!(event = %parsed.id, kind = %parsed.kind, %payment_intent, %amount, "credits taken back");
                after_take_back(app, payment_intent).await;
                "taken_back"
            }
            TakeBackOutcome::Returned(amount) => {
                tracing::info!(event = %parsed.id, kind = %parsed.kind, %payment_intent, %amount, "dispute won: credits given back");
                after_take_back(app, payment_intent).await;
                "given_back"
            }
            TakeBackOutcome::NothingToTake => "nothing_to_take",
            TakeBackOutcome::UnknownPayment => {
                // The purchase's own event may not have arrived yet (Stripe does not keep
                // order): not 2xx, so Stripe retries this one later.
                return Err(ApiError::Conflict {
                    code: "payment_not_recorded",
                    message: "No credited payment has this payment intent yet".into(),
                });
            }
        },
        Event::Ignored { reason } => {
            tracing::info!(event = %parsed.id, kind = %parsed.kind, %reason, "event ignored");
            "ignored"
        }
    };
    Ok(Reply::ok(json!({
        "received": true,
        "event": parsed.id,
        "result": result,
    })))
}

/// The balance moved: the account's low-balance notice may be due (or re-armed).
async fn after_take_back(app: &App, payment_intent: &str) {
    match app.store.payment(payment_intent).await {
        Ok(Some(p)) => {
            app.notices
                .after_balance_change(&app.store, &p.account_id)
                .await
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(%payment_intent, error = %e, "reading a payment for its notice"),
    }
}
