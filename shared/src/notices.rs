//! Notices by email (Amazon SES): the low-balance notice (issue 11).
//!
//! Sent once per crossing: when a debit (a hold, a charge, a refund or dispute taking credits
//! back) leaves the balance below the threshold the account set, the account item is marked
//! (`low_balance_notified_at`, a conditional write, so concurrent debits send one email) and
//! the email goes out; the mark is cleared — the notice re-armed — once the balance is back at
//! or above the threshold (a purchase, released holds, a new threshold). Call
//! [`Notices::after_balance_change`] after any write that moved the balance: it never fails
//! the caller (a notice is not worth failing a job or a webhook for); problems are logged.

use crate::money::Micros;
use crate::store::budgets::NoticeClaim;
use crate::store::Store;
use crate::time::now_ms;
use aws_sdk_ses::types::{Body, Content, Destination, Message};

/// The SES client (built once in `main`) and the configured sender.
#[derive(Clone, Debug)]
pub struct Notices {
    ses: aws_sdk_ses::Client,
    /// `NOTICE_FROM_EMAIL`; none = notices are off for this installation.
    from: Option<String>,
    dashboard_url: String,
}

/// The low-balance email, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct LowBalanceEmail {
    pub to: String,
    pub subject: String,
    pub text: String,
}

impl LowBalanceEmail {
    pub fn new(to: &str, balance: Micros, threshold: Micros, dashboard_url: &str) -> Self {
        let base = dashboard_url.trim_end_matches('/');
        LowBalanceEmail {
            to: to.to_string(),
            subject: format!("Your Mimiry balance is below {threshold} credits"),
            text: format!(
                "Your Mimiry credit balance is {balance} credits, below the {threshold} credits \
                 you asked to be told about.\n\n\
                 New jobs need credits to start. Add credits: {base}/dashboard/credits\n\n\
                 This email is sent once each time your balance falls below the threshold. \
                 Change or turn it off under Budgets: {base}/dashboard/budgets\n"
            ),
        }
    }
}

impl Notices {
    pub fn new(ses: aws_sdk_ses::Client, from: Option<String>, dashboard_url: &str) -> Notices {
        Notices {
            ses,
            from,
            dashboard_url: dashboard_url.to_string(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.from.is_some()
    }

    /// Sends the low-balance notice if this change crossed the threshold, or re-arms it if the
    /// balance is back above. Never fails; logs what went wrong.
    pub async fn after_balance_change(&self, store: &Store, account_id: &str) {
        if let Err(e) = self.low_balance(store, account_id).await {
            tracing::warn!(account = %account_id, error = %e, "low-balance notice check failed");
        }
    }

    async fn low_balance(&self, store: &Store, account_id: &str) -> Result<(), String> {
        let Some(from) = &self.from else {
            return Ok(());
        };
        let account = store
            .get_account(account_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such account")?;
        let Some(threshold) = account.low_balance_threshold_micros else {
            return Ok(());
        };
        let below = account.balance_micros < threshold;
        match (below, account.low_balance_notified_at) {
            (false, Some(_)) => store
                .rearm_low_balance_notice(account_id, false)
                .await
                .map_err(|e| e.to_string()),
            (true, None) => {
                let Some(to) = account.notice_email.as_deref() else {
                    return Ok(());
                };
                if store
                    .claim_low_balance_notice(account_id, now_ms())
                    .await
                    .map_err(|e| e.to_string())?
                    == NoticeClaim::Nothing
                {
                    return Ok(());
                }
                let email = LowBalanceEmail::new(
                    to,
                    Micros(account.balance_micros),
                    Micros(threshold),
                    &self.dashboard_url,
                );
                match self.send(from, &email).await {
                    Ok(id) => {
                        tracing::info!(account = %account_id, message_id = %id, "low-balance notice sent");
                        Ok(())
                    }
                    Err(e) => {
                        // Not sent: un-mark, so the next debit below the threshold tries again.
                        let _ = store.rearm_low_balance_notice(account_id, true).await;
                        Err(format!("sending the low-balance notice: {e}"))
                    }
                }
            }
            _ => Ok(()),
        }
    }

    /// Sends any notice to the account's notice address (none set, or notices off: nothing).
    /// The webhooks sender's "endpoint disabled" email uses it.
    pub async fn send_to_account(
        &self,
        store: &Store,
        account_id: &str,
        subject: &str,
        text: &str,
    ) -> Result<(), String> {
        let Some(from) = &self.from else {
            return Ok(());
        };
        let account = store
            .get_account(account_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("no such account")?;
        let Some(to) = account.notice_email else {
            return Ok(());
        };
        let email = LowBalanceEmail {
            to,
            subject: subject.to_string(),
            text: text.to_string(),
        };
        self.send(from, &email).await.map(|_| ())
    }

    pub fn dashboard_url(&self) -> &str {
        &self.dashboard_url
    }

    async fn send(&self, from: &str, email: &LowBalanceEmail) -> Result<String, String> {
        let content = |text: &str| {
            Content::builder()
                .data(text)
                .charset("UTF-8")
                .build()
                .map_err(|e| e.to_string())
        };
        let out = self
            .ses
            .send_email()
            .source(from)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .message(
                Message::builder()
                    .subject(content(&email.subject)?)
                    .body(Body::builder().text(content(&email.text)?).build())
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_sdk_ses::error::DisplayErrorContext(e).to_string())?;
        Ok(out.message_id().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_names_the_balance_the_threshold_and_where_to_act() {
        let e = LowBalanceEmail::new(
            "ada@example.com",
            Micros(4_250_000),
            Micros(5_000_000),
            "https://mimiry.example/",
        );
        assert_eq!(e.subject, "Your Mimiry balance is below 5.00 credits");
        assert!(e
            .text
            .starts_with("Your Mimiry credit balance is 4.25 credits, below the 5.00"));
        assert!(e
            .text
            .contains("https://mimiry.example/dashboard/credits\n"));
        assert!(e
            .text
            .contains("https://mimiry.example/dashboard/budgets\n"));
    }
}
