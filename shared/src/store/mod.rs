//! DynamoDB access: one table, `PK`/`SK`, a sparse `GSI1` over active jobs, TTL on `expires_at`.
//!
//! | item | PK | SK |
//! |---|---|---|
//! | account | `ACCOUNT#{id}` | `ACCOUNT` |
//! | API key | `KEY#{sha256}` | `KEY` |
//! | key listing | `ACCOUNT#{id}` | `KEYREF#{key_id}` |
//! | SSH key | `ACCOUNT#{id}` | `SSHKEY#{id}` |
//! | job | `ACCOUNT#{id}` | `JOB#{uuidv7}` |
//! | idempotency record | `ACCOUNT#{id}` | `IDEM#{key}` |
//! | job log chunk / byte count | `JOBLOG#{account}#{job}` | `CHUNK#{seq:010}` / `META` |
//! | ledger entry | `ACCOUNT#{id}` | `LEDGER#{time}#{id}` |
//! | Stripe payment (by payment intent) | `PAYMENT#{pi}` | `PAYMENT` |
//! | Stripe Checkout Session credited | `CHECKOUT#{cs}` | `CHECKOUT` |
//! | Stripe event processed | `STRIPE_EVENT#{evt}` | `EVENT` |
//! | person → account (Cognito `sub`) | `USER#{sub}` | `USER` |
//! | operator's email link | `EMAIL#{email}` | `LINK` |
//! | webhook endpoint, its progress and delivery log | see [`webhooks`] | |

pub mod accounts;
pub mod budgets;
pub mod cursor;
pub mod idempotency;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod logs;
pub mod payments;
pub mod secrets;
pub mod ssh_keys;
pub mod users;
pub mod webhooks;

use crate::error::ApiError;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

/// The table and the client to reach it; cheap to clone (clones share the key cache).
#[derive(Clone, Debug)]
pub struct Store {
    pub db: aws_sdk_dynamodb::Client,
    pub table: String,
    /// Verified API keys, kept for a short time in the container (off unless
    /// [`Store::with_key_cache`] turned it on).
    keys: std::sync::Arc<keys::KeyCache>,
}

pub fn account_pk(account_id: &str) -> String {
    format!("ACCOUNT#{account_id}")
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Serializes `value` and adds the item's keys.
pub fn to_item<T: Serialize>(value: &T, pk: String, sk: String) -> Result<Item, ApiError> {
    let mut item: Item = serde_dynamo::to_item(value).map_err(ApiError::internal)?;
    item.insert("PK".into(), s(pk));
    item.insert("SK".into(), s(sk));
    Ok(item)
}

pub fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, ApiError> {
    serde_dynamo::from_item(item).map_err(ApiError::internal)
}

/// Any AWS SDK failure is an internal error, logged with its full context.
pub fn aws_err<E, R>(e: SdkError<E, R>) -> ApiError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    ApiError::Internal(DisplayErrorContext(e).to_string())
}

/// True when a write failed only because its condition did not hold (single-item writes).
pub fn is_condition_failure<E, R>(e: &SdkError<E, R>) -> bool
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .and_then(|se| se.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

/// For a failed `TransactWriteItems`: which of its items failed their condition.
pub fn cancelled_conditions(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>,
) -> Option<Vec<bool>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(tc)) => Some(
            tc.cancellation_reasons()
                .iter()
                .map(|r| r.code() == Some("ConditionalCheckFailed"))
                .collect(),
        ),
        _ => None,
    }
}

pub type TransactError =
    SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError>;

/// True when DynamoDB cancelled a transaction only because another one touched the same items
/// at the same moment: worth retrying as is.
pub fn is_transaction_conflict(e: &TransactError) -> bool {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    match e.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(tc)) => {
            let reasons = tc.cancellation_reasons();
            reasons
                .iter()
                .any(|r| r.code() == Some("TransactionConflict"))
                && !reasons
                    .iter()
                    .any(|r| r.code() == Some("ConditionalCheckFailed"))
        }
        Some(TransactWriteItemsError::TransactionInProgressException(_)) => true,
        _ => false,
    }
}

/// Attempts of a transaction that keeps colliding with concurrent ones (same account item).
const TRANSACTION_ATTEMPTS: u32 = 4;

impl Store {
    /// `TransactWriteItems`, retried (with jitter) when it collided with a concurrent
    /// transaction; the SDK does not retry those, and a 500 for a busy account would be wrong.
    pub async fn transact(
        &self,
        items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
    ) -> Result<(), TransactError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .db
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await;
            match result {
                Err(e) if attempt < TRANSACTION_ATTEMPTS && is_transaction_conflict(&e) => {
                    use rand::Rng;
                    let ms = rand::thread_rng().gen_range(5..(20u64 << attempt));
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                }
                other => return other.map(|_| ()),
            }
        }
    }

    pub fn new(db: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Store {
        Store {
            db,
            table: table.into(),
            keys: std::sync::Arc::new(keys::KeyCache::new(std::time::Duration::ZERO)),
        }
    }

    /// Keeps verified API keys for `ttl` (at most [`keys::MAX_KEY_CACHE_TTL`]): a warm
    /// container then answers a request without reading its key. A revoked key keeps working
    /// in a warm container until its entry expires.
    pub fn with_key_cache(mut self, ttl: std::time::Duration) -> Store {
        self.keys = std::sync::Arc::new(keys::KeyCache::new(ttl));
        self
    }

    /// Strongly consistent read of one item.
    pub async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, ApiError> {
        let out = self
            .db
            .get_item()
            .table_name(&self.table)
            .key("PK", s(pk))
            .key("SK", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(aws_err)?;
        Ok(out.item)
    }

    /// Every item of a partition whose sort key starts with `prefix`, in key order.
    pub async fn query_prefix(&self, pk: String, prefix: &str) -> Result<Vec<Item>, ApiError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .db
                .query()
                .table_name(&self.table)
                .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
                .expression_attribute_values(":pk", s(pk.clone()))
                .expression_attribute_values(":p", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(aws_err)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }
}
