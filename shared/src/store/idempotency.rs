//! `Idempotency-Key` records: the first response to a POST, kept for 24 hours, written in the
//! same transaction as what the POST created so a retry can never create a second one.

use super::{account_pk, from_item, to_item, Store};
use crate::auth::hex_sha256;
use crate::error::ApiError;
use crate::http::Reply;
use crate::time::{now_ms, Millis};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use http::StatusCode;
use serde::{Deserialize, Serialize};

pub const RETENTION_SECS: i64 = 24 * 3600;
pub const HEADER: &str = "idempotency-key";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IdempotencyRecord {
    pub key: String,
    /// Route and body hash: the same key with another request is a conflict.
    pub request_hash: String,
    pub status: u16,
    pub body: String,
    pub created_at: Millis,
    /// DynamoDB TTL (epoch seconds).
    pub expires_at: i64,
}

/// A validated `Idempotency-Key` header value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: Option<&str>) -> Result<Option<IdempotencyKey>, ApiError> {
        let Some(v) = value else { return Ok(None) };
        let v = v.trim();
        if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::validation(
                "Idempotency-Key",
                "The Idempotency-Key header must be 1 to 255 visible ASCII characters",
            ));
        }
        Ok(Some(IdempotencyKey(v.to_string())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The record to store with the created resource.
    pub fn record(&self, request_hash: &str, reply: &Reply) -> IdempotencyRecord {
        let now = now_ms();
        IdempotencyRecord {
            key: self.0.clone(),
            request_hash: request_hash.to_string(),
            status: reply.status.as_u16(),
            body: reply.body.to_string(),
            created_at: now,
            expires_at: now / 1000 + RETENTION_SECS,
        }
    }
}

pub fn request_hash(route: &str, body: &[u8]) -> String {
    let mut bytes = route.as_bytes().to_vec();
    bytes.push(0);
    bytes.extend_from_slice(body);
    hex_sha256(&bytes)
}

fn sk(key: &str) -> String {
    format!("IDEM#{key}")
}

impl IdempotencyRecord {
    /// The original response again, or 409 when the key was used for another request.
    pub fn replay(&self, request_hash: &str) -> Result<Reply, ApiError> {
        if self.request_hash != request_hash {
            return Err(ApiError::Conflict {
                code: "idempotency_key_reused",
                message: "This Idempotency-Key was already used with a different request".into(),
            });
        }
        let body = serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null);
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        Ok(Reply::with_status(status, body)
            .header(http::HeaderName::from_static("idempotent-replayed"), "true"))
    }
}

impl Store {
    pub async fn get_idempotency(
        &self,
        account_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, ApiError> {
        let record: Option<IdempotencyRecord> = self
            .get(account_pk(account_id), sk(key.as_str()))
            .await?
            .map(from_item)
            .transpose()?;
        // DynamoDB deletes expired items lazily: treat them as gone.
        Ok(record.filter(|r| r.expires_at > now_ms() / 1000))
    }

    /// A `Put` of the record for the creating transaction; fails if the key is taken.
    pub fn idempotency_put(
        &self,
        account_id: &str,
        record: &IdempotencyRecord,
    ) -> Result<TransactWriteItem, ApiError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(
                record,
                account_pk(account_id),
                sk(&record.key),
            )?))
            .condition_expression("attribute_not_exists(PK) OR expires_at < :now")
            .expression_attribute_values(":now", super::n(now_ms() / 1000))
            .build()
            .map_err(ApiError::internal)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }
}
