//! Budgets (issue 11): an account's monthly spend limit, and the settings of its low-balance
//! notice.
//!
//! **A month's spend** is what was charged in that calendar month (UTC) plus the holds
//! outstanding now. Holds count: they are what running jobs may still be charged, and without
//! them any number of concurrent submits would each see the same spend and all pass the limit.
//!
//! It is kept on the account item as `spend_{YYYYMM}`, moved in the same update as the money
//! it follows ([`Store::money_items`](super::Store)): a hold, a charge or a release changes it
//! by what it takes from (or gives back to) the balance. The first money move of a month starts
//! the month's figure from the holds outstanding at that moment — `if_not_exists(spend_…,
//! held_micros)`, which DynamoDB evaluates on the item *before* the update — so nothing has
//! to run at midnight on the first and nothing is reset. Purchases, refunds and disputes do
//! not touch it (they are not spending).
//!
//! A submit's hold carries the condition "the month's spend plus this hold is within the
//! limit I read" in the same transaction as the hold itself, so concurrent submits cannot pass
//! the limit together. Running jobs are not stopped by the limit (they extend their holds as
//! the balance allows): it decides what new work may start.

use super::accounts::{Account, ACCOUNT_SK};
use super::{account_pk, aws_err, from_item, n, s, Store};
use crate::error::ApiError;
use crate::money::Micros;
use crate::time::Millis;
use aws_sdk_dynamodb::types::builders::UpdateBuilder;
use aws_sdk_dynamodb::types::AttributeValue;

/// The attribute holding the spend of the month `at` falls in: `spend_202611`.
pub fn spend_attribute(at: Millis) -> String {
    let t = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    format!("spend_{}", t.format("%Y%m"))
}

/// The `SET` clause moving the month's spend (see the module's description).
pub(super) const SPEND_SET: &str = "#spend = if_not_exists(#spend, held_micros) + :spend";

/// The month's spend attribute and how much it moves: for [`SPEND_SET`].
pub(super) fn spend_values(update: UpdateBuilder, delta: i64, at: Millis) -> UpdateBuilder {
    update
        .expression_attribute_names("#spend", spend_attribute(at))
        .expression_attribute_values(":spend", n(delta))
}

/// A submit's condition on the account: the limit it read is still the limit, and the month's
/// spend (with the holds outstanding if nothing moved yet this month) leaves room for `hold`.
/// With no limit, that there still is none. A hold larger than the limit never fits.
pub(super) fn limit_condition(
    update: UpdateBuilder,
    limit: Option<Micros>,
    hold: Micros,
) -> (UpdateBuilder, &'static str) {
    match limit {
        None => (update, "attribute_not_exists(monthly_spend_limit_micros)"),
        Some(limit) => (
            update
                .expression_attribute_values(":limit", n(limit.0))
                .expression_attribute_values(":room", n(limit.0 - hold.0)),
            "monthly_spend_limit_micros = :limit AND \
             ((attribute_not_exists(#spend) AND held_micros <= :room) OR #spend <= :room)",
        ),
    }
}

/// What the dashboard's Budgets form sets.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSettings {
    pub monthly_spend_limit: Option<Micros>,
    pub low_balance_threshold: Option<Micros>,
    /// Where the notice goes (the person saving the settings).
    pub notice_email: Option<String>,
}

impl Store {
    /// The account and its spend this month (at `at`).
    pub async fn account_and_spend(
        &self,
        account_id: &str,
        at: Millis,
    ) -> Result<Option<(Account, Micros)>, ApiError> {
        let Some(item) = self.get(account_pk(account_id), ACCOUNT_SK.into()).await? else {
            return Ok(None);
        };
        let spent = match item.get(&spend_attribute(at)) {
            Some(AttributeValue::N(v)) => v.parse().ok(),
            _ => None,
        };
        let account: Account = from_item(item)?;
        // Nothing moved this month yet: the spend is the holds carried over.
        let spent = Micros(spent.unwrap_or(account.held_micros));
        Ok(Some((account, spent)))
    }

    /// Saves the Budgets settings. A changed threshold re-arms the notice (the next crossing
    /// of the new threshold is news).
    pub async fn set_budgets(
        &self,
        account_id: &str,
        settings: &BudgetSettings,
    ) -> Result<(), ApiError> {
        let mut set = Vec::new();
        let mut remove = vec!["low_balance_notified_at"];
        let mut update = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(account_id)))
            .key("SK", s(ACCOUNT_SK))
            .condition_expression("attribute_exists(PK)");
        for (attribute, value) in [
            ("monthly_spend_limit_micros", settings.monthly_spend_limit),
            (
                "low_balance_threshold_micros",
                settings.low_balance_threshold,
            ),
        ] {
            match value {
                Some(v) => {
                    set.push(format!("{attribute} = :{attribute}"));
                    update = update.expression_attribute_values(format!(":{attribute}"), n(v.0));
                }
                None => remove.push(attribute),
            }
        }
        match &settings.notice_email {
            Some(email) => {
                set.push("notice_email = :notice_email".into());
                update = update.expression_attribute_values(":notice_email", s(email));
            }
            None => remove.push("notice_email"),
        }
        let mut expression = String::new();
        if !set.is_empty() {
            expression = format!("SET {} ", set.join(", "));
        }
        expression.push_str(&format!("REMOVE {}", remove.join(", ")));
        update
            .update_expression(expression)
            .send()
            .await
            .map_err(|e| {
                if super::is_condition_failure(&e) {
                    ApiError::NotFound("Account")
                } else {
                    aws_err(e)
                }
            })?;
        Ok(())
    }
}

/// Whether the low-balance notice may be sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeClaim {
    /// This caller marked the crossing as notified: it sends the email.
    Send,
    /// Not below the threshold, or someone else already claimed this crossing.
    Nothing,
}

impl Store {
    /// Marks the current crossing of the threshold as notified, only if the balance is below
    /// it and no notice went out since the last re-arm: of concurrent callers, one wins.
    pub async fn claim_low_balance_notice(
        &self,
        account_id: &str,
        at: Millis,
    ) -> Result<NoticeClaim, ApiError> {
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(account_id)))
            .key("SK", s(ACCOUNT_SK))
            .update_expression("SET low_balance_notified_at = :at")
            .condition_expression(
                "attribute_not_exists(low_balance_notified_at) \
                 AND balance_micros < low_balance_threshold_micros",
            )
            .expression_attribute_values(":at", n(at))
            .send()
            .await;
        match result {
            Ok(_) => Ok(NoticeClaim::Send),
            Err(e) if super::is_condition_failure(&e) => Ok(NoticeClaim::Nothing),
            Err(e) => Err(aws_err(e)),
        }
    }

    /// Re-arms the notice: clears the mark once the balance is back at or above the threshold
    /// (or when `always`, after a notice that could not be sent, so a later debit tries again).
    pub async fn rearm_low_balance_notice(
        &self,
        account_id: &str,
        always: bool,
    ) -> Result<(), ApiError> {
        let condition = if always {
            "attribute_exists(low_balance_notified_at)"
        } else {
            "attribute_exists(low_balance_notified_at) \
             AND (attribute_not_exists(low_balance_threshold_micros) \
                  OR balance_micros >= low_balance_threshold_micros)"
        };
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(account_id)))
            .key("SK", s(ACCOUNT_SK))
            .update_expression("REMOVE low_balance_notified_at")
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if super::is_condition_failure(&e) => Ok(()),
            Err(e) => Err(aws_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spend_attribute_names_the_utc_month() {
        // 2026-11-30T23:59:59.999Z and one millisecond later.
        assert_eq!(spend_attribute(1_796_083_199_999), "spend_202611");
        assert_eq!(spend_attribute(1_796_083_200_000), "spend_202612");
    }
}
