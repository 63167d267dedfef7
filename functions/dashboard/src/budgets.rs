//! Budgets (issue 11): the account's monthly spend limit and its low-balance email notice,
//! both off until set. One plain form; the limits themselves are enforced by the shared store
//! (`store::budgets`, at submit) and `notices` (after a debit).

use crate::console::Me;
use crate::views::{Amount, BudgetsPage, Chrome};
use crate::web::{DashError, Flash, Out, Req};
use crate::App;
use crate::{page, Visitor};
use http::StatusCode;
use mimiry_shared::money::Micros;
use mimiry_shared::store::budgets::BudgetSettings;
use mimiry_shared::time::now_ms;

/// The largest limit or threshold accepted: far above any real month, small enough that a
/// mistyped extra digit is caught.
const MAX_CREDITS: i64 = 1_000_000;

/// An optional amount of credits from a form field: empty = off; else 0.00 to
/// [`MAX_CREDITS`] in whole cents.
fn optional_credits(label: &str, raw: &str) -> Result<Option<Micros>, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let problem = || {
        format!(
            "{label}: enter an amount from 0 to 1,000,000 credits in whole cents (for example 50 or 12.50), or leave it empty for none."
        )
    };
    let micros = Micros::parse_decimal(raw).map_err(|_| problem())?;
    if micros.0 % 10_000 != 0 || micros.0 > MAX_CREDITS * 1_000_000 {
        return Err(problem());
    }
    Ok(Some(micros))
}

/// What the form shows for a stored amount: plain decimals, empty when off.
fn field(micros: Option<i64>) -> String {
    micros.map(|m| Micros(m).to_string()).unwrap_or_default()
}

/// What was typed into a refused form, and which field was wrong (its `name`).
pub struct Typed<'a> {
    limit: &'a str,
    threshold: &'a str,
    invalid: &'static str,
}

/// `GET /dashboard/budgets` (or the form again, with what was typed and why it was refused).
pub async fn show(
    app: &App,
    me: &Me,
    c: Chrome,
    typed: Option<Typed<'_>>,
    status: StatusCode,
) -> Result<Out, DashError> {
    let spent = app
        .store
        .account_and_spend(me.id(), now_ms())
        .await?
        .map(|(_, spent)| spent)
        .unwrap_or(Micros::ZERO);
    let a = &me.account;
    let (limit, threshold, invalid) = match typed {
        Some(t) => (t.limit.to_string(), t.threshold.to_string(), t.invalid),
        None => (
            field(a.monthly_spend_limit_micros),
            field(a.low_balance_threshold_micros),
            "",
        ),
    };
    Ok(page(
        status,
        &BudgetsPage {
            c,
            spent: Amount::of(spent.0),
            limit_set: a.monthly_spend_limit_micros.is_some(),
            limit,
            threshold,
            invalid,
            notice_email: a.notice_email.clone(),
            notified: a.low_balance_notified_at.is_some(),
            mail_enabled: app.notices.is_enabled(),
        },
    ))
}

/// `POST /dashboard/budgets`: both settings at once; the notice goes to whoever saves them.
pub async fn save(
    app: &App,
    req: &Req,
    v: &Visitor,
    me: &Me,
    mut c: Chrome,
) -> Result<Out, DashError> {
    let (limit_raw, threshold_raw) = (
        req.field("monthly_limit"),
        req.field("low_balance_threshold"),
    );
    let parsed = optional_credits("Monthly spend limit", limit_raw)
        .map_err(|e| ("monthly_limit", e))
        .and_then(|limit| {
            optional_credits("Low-balance threshold", threshold_raw)
                .map(|t| (limit, t))
                .map_err(|e| ("low_balance_threshold", e))
        });
    let (monthly_spend_limit, low_balance_threshold) = match parsed {
        Ok(p) => p,
        Err((invalid, message)) => {
            c.error = Some(message);
            let typed = Typed {
                limit: limit_raw,
                threshold: threshold_raw,
                invalid,
            };
            return show(app, me, c, Some(typed), StatusCode::BAD_REQUEST).await;
        }
    };
    let email = v.session.as_ref().map(|s| s.email.clone());
    app.store
        .set_budgets(
            me.id(),
            &BudgetSettings {
                monthly_spend_limit,
                low_balance_threshold,
                notice_email: low_balance_threshold.and(email),
            },
        )
        .await?;
    tracing::info!(account = %me.id(), limit = ?monthly_spend_limit, threshold = ?low_balance_threshold, "budgets saved");
    // The new threshold may already be crossed: say so now rather than at the next charge.
    app.notices.after_balance_change(&app.store, me.id()).await;
    Ok(Out::redirect("/dashboard/budgets").flash(Flash::BudgetsSaved, v.secure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_optional_whole_cents_within_bounds() {
        assert_eq!(optional_credits("x", " "), Ok(None));
        assert_eq!(optional_credits("x", "12.50"), Ok(Some(Micros(12_500_000))));
        assert_eq!(optional_credits("x", "0"), Ok(Some(Micros(0))));
        for bad in ["-1", "1.005", "abc", "1000000.01", "1e3"] {
            assert!(optional_credits("x", bad).is_err(), "{bad}");
        }
    }
}
