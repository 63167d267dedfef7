//! People (Cognito users) and their accounts. `USER#{sub}` holds the account a person's
//! sign-in opens; it is written once, with a condition, in the same transaction that creates a
//! self-service account (and its sign-up credit), so concurrent first sign-ins create one
//! account. `EMAIL#{email}` is an operator's link (`mimiry-admin link-user`): the person who
//! signs in with that verified email opens that account instead.

use super::accounts::{Account, ACCOUNT_SK};
use super::{account_pk, aws_err, cancelled_conditions, from_item, to_item, Store};
use crate::error::ApiError;
use crate::money::Micros;
use crate::time::{now_ms, Millis};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserLink {
    pub account_id: String,
    pub email: String,
    pub linked_at: Millis,
}

fn user_pk(sub: &str) -> String {
    format!("USER#{sub}")
}

/// Emails compare case-insensitively (Cognito keeps them as typed).
fn email_pk(email: &str) -> String {
    format!("EMAIL#{}", email.trim().to_lowercase())
}

const USER_SK: &str = "USER";
const LINK_SK: &str = "LINK";
/// Transaction attempts when a concurrent first sign-in of the same person is mid-write.
const ATTEMPTS: usize = 3;

impl Store {
    /// The account of the person `sub` (verified `email`), created on their first sign-in with
    /// `signup_credit` (a ledger entry in the same transaction).
    pub async fn account_for_person(
        &self,
        sub: &str,
        email: &str,
        signup_credit: Micros,
    ) -> Result<Account, ApiError> {
        for _ in 0..ATTEMPTS {
            // An operator's link wins over what the person had before.
            if let Some(link) = self.get_link(&email_pk(email), LINK_SK).await? {
                let mine = self.get_link(&user_pk(sub), USER_SK).await?;
                if mine.as_ref().map(|m| &m.account_id) != Some(&link.account_id) {
                    self.put_user(sub, &link.account_id, email).await?;
                }
                return self.existing_account(&link.account_id).await;
            }
            if let Some(mine) = self.get_link(&user_pk(sub), USER_SK).await? {
                return self.existing_account(&mine.account_id).await;
            }
            match self.create_person_account(sub, email, signup_credit).await {
                Ok(account) => return Ok(account),
                // Another first sign-in of this person won: read what it wrote.
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        Err(ApiError::Conflict {
            code: "busy",
            message: "Your account is being set up; please retry".into(),
        })
    }

    /// `Err(None)`: the person's mapping exists already (a concurrent sign-in).
    async fn create_person_account(
        &self,
        sub: &str,
        email: &str,
        credit: Micros,
    ) -> Result<Account, Option<ApiError>> {
        let credit = credit.max(Micros(0));
        let account = Account {
            account_id: uuid::Uuid::new_v4().to_string(),
            name: email.to_string(),
            created_at: now_ms(),
            balance_micros: credit.0,
            held_micros: 0,
            charged_micros: 0,
            added_micros: credit.0,
            ..Account::default()
        };
        let put = |item| -> Result<TransactWriteItem, ApiError> {
            Ok(TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .condition_expression("attribute_not_exists(PK)")
                        .build()
                        .map_err(ApiError::internal)?,
                )
                .build())
        };
        let link = UserLink {
            account_id: account.account_id.clone(),
            email: email.to_string(),
            linked_at: account.created_at,
        };
        let mut items = vec![
            put(to_item(&link, user_pk(sub), USER_SK.into())?)?,
            put(to_item(
                &account,
                account_pk(&account.account_id),
                ACCOUNT_SK.into(),
            )?)?,
        ];
        if credit.0 > 0 {
            items.push(self.ledger_put(
                &account.account_id,
                "credit",
                credit,
                None,
                "sign-up credit",
            )?);
        }
        match self.transact(items).await {
            Ok(()) => Ok(account),
            Err(e) => match cancelled_conditions(&e) {
                Some(failed) if failed.first() == Some(&true) => Err(None),
                _ => Err(Some(aws_err(e))),
            },
        }
    }

    async fn existing_account(&self, account_id: &str) -> Result<Account, ApiError> {
        self.get_account(account_id).await?.ok_or_else(|| {
            ApiError::Internal(format!(
                "a person is linked to account {account_id}, which is gone"
            ))
        })
    }

    async fn get_link(&self, pk: &str, sk: &str) -> Result<Option<UserLink>, ApiError> {
        self.get(pk.to_string(), sk.to_string())
            .await?
            .map(from_item)
            .transpose()
    }

    async fn put_user(&self, sub: &str, account_id: &str, email: &str) -> Result<(), ApiError> {
        let link = UserLink {
            account_id: account_id.to_string(),
            email: email.to_string(),
            linked_at: now_ms(),
        };
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&link, user_pk(sub), USER_SK.into())?))
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    /// An operator's link: whoever signs in with `email` (verified) opens `account_id`, also
    /// if they had signed in before and have an account of their own.
    pub async fn link_email(&self, account_id: &str, email: &str) -> Result<UserLink, ApiError> {
        if !email.contains('@') {
            return Err(ApiError::validation("email", "Not an email address"));
        }
        self.existing_account(account_id)
            .await
            .map_err(|_| ApiError::NotFound("Account"))?;
        let link = UserLink {
            account_id: account_id.to_string(),
            email: email.trim().to_string(),
            linked_at: now_ms(),
        };
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&link, email_pk(email), LINK_SK.into())?))
            .send()
            .await
            .map_err(aws_err)?;
        Ok(link)
    }
}
