//! `Idempotency-Key` records: the first response to a POST, kept for 24 hours, written in the
//! same transaction as what the POST created so a retry can never create a second one.
//!
//! Racing requests with the same key all run; the creating transaction lets exactly one of them
//! write. Every other one then fails — on the record itself, or on what the winner created (the
//! same SSH key, the credits it held) — and [`Idempotency::settle`] turns any such failure into
//! the winner's answer: the record is written in the winner's transaction, so whatever failure
//! the winner caused comes with the record already readable.

use super::{account_pk, from_item, to_item, Store};
use crate::auth::hex_sha256;
use crate::error::ApiError;
use crate::http::{Reply, RequestCtx};
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

/// The hash that tells a retry (same route, same JSON) from a reuse of the key. Bodies are
/// compared as canonical JSON — keys sorted, no whitespace — so a client that re-serialises its
/// request is still retrying. A body that is not JSON is hashed as it is.
pub fn request_hash(route: &str, body: &[u8]) -> String {
    let mut bytes = route.as_bytes().to_vec();
    bytes.push(0);
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => canonical_json(&value, &mut bytes),
        Err(_) => bytes.extend_from_slice(body),
    }
    hex_sha256(&bytes)
}

/// Writes `value` with object keys sorted at every level (whatever serde_json's map order is).
fn canonical_json(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// The idempotency side of one creating POST: its key (if the caller sent one) and the hash
/// of what it asks.
pub struct Idempotency {
    account_id: String,
    key: Option<IdempotencyKey>,
    hash: String,
}

impl Idempotency {
    /// Reads the `Idempotency-Key` header (400 if malformed) and hashes the request as `route`.
    pub fn of(ctx: &RequestCtx, route: &str) -> Result<Idempotency, ApiError> {
        Ok(Idempotency {
            account_id: ctx.caller().account_id.clone(),
            key: IdempotencyKey::parse(ctx.header(HEADER))?,
            hash: request_hash(route, ctx.body_bytes()?),
        })
    }

    /// The answer already given to this key, if any: a replay, or 409 when the key was used
    /// for another request.
    pub async fn earlier_answer(&self, store: &Store) -> Result<Option<Reply>, ApiError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        match store.get_idempotency(&self.account_id, key).await? {
            Some(record) => record.replay(&self.hash).map(Some),
            None => Ok(None),
        }
    }

    /// The record to write in the creating transaction (none without a key).
    pub fn record(&self, reply: &Reply) -> Option<IdempotencyRecord> {
        self.key.as_ref().map(|k| k.record(&self.hash, reply))
    }

    /// The request's final answer: a failure may be the trace of a concurrent request with the
    /// same key that won the race, and then that request's answer is this one's too.
    pub async fn settle(
        &self,
        store: &Store,
        result: Result<Reply, ApiError>,
    ) -> Result<Reply, ApiError> {
        let error = match result {
            Ok(reply) => return Ok(reply),
            Err(e) => e,
        };
        // Validation and authorization failures never depend on a twin's writes.
        if self.key.is_none() || error.status().as_u16() < 402 {
            return Err(error);
        }
        match self.earlier_answer(store).await {
            Ok(Some(reply)) => Ok(reply),
            Err(conflict @ ApiError::Conflict { .. }) => Err(conflict),
            _ => Err(error),
        }
    }
}

/// The failure of a creating transaction whose idempotency record was taken by a twin that
/// has not become readable yet (it cannot happen with strongly consistent reads; kept honest).
pub fn in_progress() -> ApiError {
    ApiError::Conflict {
        code: "idempotency_in_progress",
        message: "A request with this Idempotency-Key is still in progress; retry it shortly"
            .into(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn re_serialised_bodies_hash_alike_and_other_values_do_not() {
        let a = request_hash("POST /jobs", br#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#);
        let b = request_hash(
            "POST /jobs",
            b"{ \"a\" : { \"x\" : \"s\", \"y\" : [ 1 , 2 ] },\n\t\"b\" : 1 }\n",
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            request_hash("POST /jobs", br#"{"b":1,"a":{"y":[2,1],"x":"s"}}"#)
        );
        assert_ne!(
            a,
            request_hash("POST /jobs", br#"{"b":2,"a":{"y":[1,2],"x":"s"}}"#)
        );
        assert_ne!(
            a,
            request_hash("POST /ssh-keys", br#"{"b":1,"a":{"y":[1,2],"x":"s"}}"#)
        );
        // Escapes that mean the same string are the same string.
        assert_eq!(
            request_hash("r", br#"{"k":"\u0041"}"#),
            request_hash("r", br#"{"k":"A"}"#)
        );
    }
}
