//! Accounts and their money. Every balance change writes a ledger entry in the same
//! `TransactWriteItems`, so `added = balance + held + charged` holds at every instant.

use super::{account_pk, aws_err, from_item, n, s, to_item, Store};
use crate::error::ApiError;
use crate::money::Micros;
use crate::time::{now_ms, Millis};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub account_id: String,
    pub name: String,
    pub created_at: Millis,
    /// Credits free to spend.
    pub balance_micros: i64,
    /// Credits reserved by active jobs.
    pub held_micros: i64,
    /// Credits spent on finished metering.
    pub charged_micros: i64,
    /// Credits added (operator grants and purchases), net of what refunds and disputes took
    /// back: `added = balance + held + charged` holds with refunds too.
    pub added_micros: i64,
    /// The most the account may spend in a calendar month (UTC); none = no limit. See
    /// [`super::budgets`], which also keeps the month's spend beside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_spend_limit_micros: Option<i64>,
    /// Below this balance the account's owner is emailed once; none = no notice (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_balance_threshold_micros: Option<i64>,
    /// Where the low-balance notice goes: the person who set the threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice_email: Option<String>,
    /// Set when the notice for the current crossing was sent; cleared when the balance is back
    /// at or above the threshold (which re-arms it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_balance_notified_at: Option<Millis>,
}

/// One line of an account's ledger.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LedgerEntry {
    pub entry_id: String,
    /// `credit`, `purchase`, `hold`, `charge`, `release`, `refund`, `dispute` or `dispute_won`.
    pub kind: String,
    pub amount_micros: i64,
    pub job_id: Option<String>,
    pub note: String,
    pub at: Millis,
    /// The payment behind a purchase, refund or dispute (Stripe's ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<super::payments::PaymentRef>,
}

pub const ACCOUNT_SK: &str = "ACCOUNT";

impl Store {
    pub async fn create_account(&self, name: &str) -> Result<Account, ApiError> {
        let account = Account {
            account_id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            created_at: now_ms(),
            balance_micros: 0,
            held_micros: 0,
            charged_micros: 0,
            added_micros: 0,
            ..Account::default()
        };
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(
                &account,
                account_pk(&account.account_id),
                ACCOUNT_SK.into(),
            )?))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(aws_err)?;
        Ok(account)
    }

    pub async fn get_account(&self, account_id: &str) -> Result<Option<Account>, ApiError> {
        self.get(account_pk(account_id), ACCOUNT_SK.into())
            .await?
            .map(from_item)
            .transpose()
    }

    /// A ledger `Put` for use inside a balance-changing transaction.
    pub fn ledger_put(
        &self,
        account_id: &str,
        kind: &str,
        amount: Micros,
        job_id: Option<&str>,
        note: &str,
    ) -> Result<TransactWriteItem, ApiError> {
        let at = now_ms();
        self.ledger_entry_put(
            account_id,
            LedgerEntry {
                entry_id: uuid::Uuid::new_v4().to_string(),
                kind: kind.to_string(),
                amount_micros: amount.0,
                job_id: job_id.map(str::to_string),
                note: note.to_string(),
                at,
                payment: None,
            },
        )
    }

    /// A ledger `Put` for a complete entry (its sort key orders the ledger by time).
    pub fn ledger_entry_put(
        &self,
        account_id: &str,
        entry: LedgerEntry,
    ) -> Result<TransactWriteItem, ApiError> {
        let at = entry.at;
        let sk = format!("LEDGER#{at:013}#{}", entry.entry_id);
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(&entry, account_pk(account_id), sk)?))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .map_err(ApiError::internal)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Adds credits (an operator action until payments exist): balance and ledger together.
    pub async fn add_credits(
        &self,
        account_id: &str,
        amount: Micros,
        note: &str,
    ) -> Result<Account, ApiError> {
        if amount.0 <= 0 {
            return Err(ApiError::validation(
                "amount",
                "The amount must be positive",
            ));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key("PK", s(account_pk(account_id)))
            .key("SK", s(ACCOUNT_SK))
            .update_expression("ADD balance_micros :a, added_micros :a")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":a", n(amount.0))
            .build()
            .map_err(ApiError::internal)?;
        let result = self
            .transact(vec![
                TransactWriteItem::builder().update(update).build(),
                self.ledger_put(account_id, "credit", amount, None, note)?,
            ])
            .await;
        if let Err(e) = result {
            return Err(match super::cancelled_conditions(&e) {
                Some(failed) if failed.first() == Some(&true) => ApiError::NotFound("Account"),
                _ => aws_err(e),
            });
        }
        self.get_account(account_id)
            .await?
            .ok_or(ApiError::NotFound("Account"))
    }

    pub async fn ledger(&self, account_id: &str) -> Result<Vec<LedgerEntry>, ApiError> {
        self.query_prefix(account_pk(account_id), "LEDGER#")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }
}
