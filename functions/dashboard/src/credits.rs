//! Buying credits and reading billing (issue 11): Add Credits starts a Stripe Checkout Session
//! and sends the browser to Stripe's page; the success page waits for the webhook (credits are
//! added only there, never by a redirect); the Billing page and its CSV show the ledger.

use crate::console::Me;
use crate::views::*;
use crate::web::{DashError, Flash, Out, Req, CSP};
use crate::{page, App};
use http::StatusCode;
use mimiry_shared::billing::{BillingConfig, PurchaseAmount};
use mimiry_shared::error::ApiError;
use mimiry_shared::money::Micros;
use mimiry_shared::store::accounts::LedgerEntry;
use mimiry_shared::time::rfc3339;

/// Ledger entries on one Billing page.
const ENTRIES_PER_PAGE: usize = 50;
/// The CSV holds the whole ledger, read in pages of the store's largest size, up to a bound
/// that keeps the answer well inside Lambda's 6 MB (about 200 bytes a row).
const CSV_PAGE: usize = 100;
const CSV_MAX_ENTRIES: usize = 20_000;

/// Where the checkout page lives: Stripe's hosted Checkout, or the fake's own origin locally.
/// The Add Credits page's CSP lets its forms go there (a POST answered by a redirect to
/// another origin is checked against `form-action`).
fn checkout_origin(config: &BillingConfig) -> String {
    let base = config.stripe_api_base.trim_end_matches('/');
    if base == "https://api.stripe.com" {
        return "https://checkout.stripe.com".into();
    }
    match base.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
        None => base.to_string(),
    }
}

/// The Add Credits page; `error` (with its status) when a custom amount was refused.
pub fn page_of(app: &App, mut c: Chrome, req: &Req, amount: &str, status: StatusCode) -> Out {
    if req.query("checkout") == Some("cancelled") {
        let f = Flash::CheckoutCancelled;
        c.flash = Some(FlashView {
            message: f.message(),
            success: f.is_success(),
        });
    }
    let mut out = page(
        status,
        &CreditsPage {
            c,
            presets: PurchaseAmount::PRESETS
                .iter()
                .map(|m| (m.0 / 1_000_000).to_string())
                .collect(),
            min: PurchaseAmount::MIN.to_string(),
            max: PurchaseAmount::MAX.to_string(),
            amount: amount.to_string(),
        },
    );
    let origin = checkout_origin(&app.billing.config);
    out.headers.push((
        "content-security-policy",
        CSP.replace(
            "form-action 'self'",
            &format!("form-action 'self' {origin}"),
        ),
    ));
    out
}

/// `POST /dashboard/credits`: a valid amount → a Checkout Session → 303 to its page.
pub async fn buy(app: &App, req: &Req, me: &Me, mut c: Chrome) -> Result<Out, DashError> {
    let raw = req.field("amount");
    let amount = match PurchaseAmount::parse(raw) {
        Ok(a) => a,
        Err(e) => {
            c.error = Some(amount_problem(e));
            return Ok(page_of(app, c, req, raw, StatusCode::BAD_REQUEST));
        }
    };
    let started = app.billing.start_checkout(me.id(), amount).await?;
    tracing::info!(account = %me.id(), session = %started.session_id, amount = %amount.micros(), "checkout started");
    Ok(Out::redirect(started.url))
}

/// The newtype's reason, always with the limits in it.
fn amount_problem(e: ApiError) -> String {
    let limits = format!(
        "Enter an amount from {} to {} credits, in whole cents (for example 25 or 12.50).",
        PurchaseAmount::MIN,
        PurchaseAmount::MAX
    );
    match e {
        ApiError::Validation { message, .. } if message.contains("credits") => {
            format!("{message}.")
        }
        ApiError::Validation { message, .. } => format!("{message}. {limits}"),
        _ => limits,
    }
}

/// `GET /dashboard/credits/success?session_id=…`: Stripe's redirect after paying. It adds
/// nothing: it shows the purchase once the webhook has recorded it, and until then says the
/// credits are on their way (app.js reloads the page, as on a running job's page).
pub async fn success(app: &App, req: &Req, me: &Me, mut c: Chrome) -> Result<Out, DashError> {
    let session = req
        .query("session_id")
        .filter(|s| {
            s.len() <= 255
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
        .ok_or_else(|| DashError::BadRequest("This link has no valid checkout session.".into()))?;
    let credited = match app.store.purchase_of_session(session).await? {
        // Someone else's session is none of this account's business.
        Some(p) if p.account_id != me.id() => return Err(ApiError::NotFound("Payment").into()),
        Some(p) => Some(Micros(p.credited_micros).to_string()),
        None => None,
    };
    if credited.is_some() {
        c.title = "Credits added";
    }
    Ok(page(
        StatusCode::OK,
        &CreditsSuccessPage {
            c,
            balance: Amount::of(me.account.balance_micros),
            credited,
        },
    ))
}

/// `GET /dashboard/billing?cursor=…`: the ledger, newest first.
pub async fn billing(app: &App, req: &Req, me: &Me, c: Chrome) -> Result<Out, DashError> {
    let found = app
        .store
        .ledger_page(me.id(), ENTRIES_PER_PAGE, req.query("cursor"))
        .await?;
    Ok(page(
        StatusCode::OK,
        &BillingPage {
            c,
            balance: Amount::of(me.account.balance_micros),
            held: Amount::of(me.account.held_micros),
            entries: found.entries.iter().map(LedgerRow::of).collect(),
            next_cursor: found.next_cursor.map(|cursor| {
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("cursor", &cursor)
                    .finish()
            }),
            first_page: req.query("cursor").is_none(),
        },
    ))
}

/// `GET /dashboard/billing.csv`: every ledger entry (newest first) as a download.
pub async fn billing_csv(app: &App, me: &Me) -> Result<Out, DashError> {
    let mut entries: Vec<LedgerEntry> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let found = app
            .store
            .ledger_page(me.id(), CSV_PAGE, cursor.as_deref())
            .await?;
        entries.extend(found.entries);
        cursor = found.next_cursor;
        if cursor.is_none() {
            break;
        }
        if entries.len() >= CSV_MAX_ENTRIES {
            tracing::warn!(account = %me.id(), "billing CSV cut at {CSV_MAX_ENTRIES} entries");
            break;
        }
    }
    let body = ledger_csv(&entries).map_err(ApiError::internal)?;
    let mut out = Out::html(StatusCode::OK, body);
    out.content_type = "text/csv; charset=utf-8";
    out.headers.push((
        "content-disposition",
        "attachment; filename=\"mimiry-billing.csv\"".into(),
    ));
    Ok(out)
}

/// The CSV columns: what the Billing page shows, with exact amounts and Stripe's ids.
pub fn ledger_csv(entries: &[LedgerEntry]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "date",
        "type",
        "amount",
        "balance_effect",
        "job_id",
        "description",
        "checkout_session",
        "payment_intent",
        "charge",
        "dispute",
        "entry_id",
    ])?;
    for e in entries {
        let p = e.payment.clone().unwrap_or_default();
        w.write_record([
            rfc3339(e.at),
            e.kind.clone(),
            Micros(e.amount_micros).to_string(),
            effect(&e.kind, e.amount_micros),
            e.job_id.clone().unwrap_or_default(),
            e.note.clone(),
            p.checkout_session.unwrap_or_default(),
            p.payment_intent.unwrap_or_default(),
            p.charge.unwrap_or_default(),
            p.dispute.unwrap_or_default(),
            e.entry_id.clone(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("csv writes the UTF-8 it was given"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csv_quotes_what_needs_quoting() {
        let entry = LedgerEntry {
            entry_id: "e1".into(),
            kind: "credit".into(),
            amount_micros: 1_500_000,
            job_id: None,
            note: "a \"quoted\", comma\nnote".into(),
            at: 0,
            payment: None,
        };
        let csv = ledger_csv(&[entry]).unwrap();
        let mut lines = csv.splitn(2, '\n');
        assert!(lines.next().unwrap().starts_with("date,type,amount,"));
        assert_eq!(
            lines.next().unwrap(),
            "1970-01-01T00:00:00Z,credit,1.50,+1.50,,\"a \"\"quoted\"\", comma\nnote\",,,,,e1\n"
        );
    }

    #[test]
    fn the_checkout_origin_is_stripes_or_the_fakes() {
        let mut config = BillingConfig::from_env();
        config.stripe_api_base = "https://api.stripe.com".into();
        assert_eq!(checkout_origin(&config), "https://checkout.stripe.com");
        config.stripe_api_base = "http://127.0.0.1:4242/".into();
        assert_eq!(checkout_origin(&config), "http://127.0.0.1:4242");
    }
}
