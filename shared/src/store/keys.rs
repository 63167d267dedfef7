//! API key records. The key item (`KEY#{sha256}`) answers authentication in one `GetItem`; the
//! `KEYREF#` item under the account lists and revokes keys without a scan.

use super::{account_pk, aws_err, from_item, n, s, to_item, Store};
use crate::auth::{ApiKey, Caller, Scope};
use crate::error::ApiError;
use crate::time::{now_ms, Millis};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};

/// `last_used_at` is refreshed at most this often per key, never on every request.
pub const LAST_USED_RESOLUTION_MS: Millis = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub key_id: String,
    pub account_id: String,
    pub name: String,
    /// `mky_AbCd`: enough to tell keys apart, useless to an attacker.
    pub prefix: String,
    pub scopes: Vec<Scope>,
    pub key_hash: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
}

fn key_pk(hash: &str) -> String {
    format!("KEY#{hash}")
}

fn keyref_sk(key_id: &str) -> String {
    format!("KEYREF#{key_id}")
}

impl Store {
    /// Creates a key; the plaintext is returned once and never stored.
    pub async fn create_key(
        &self,
        account_id: &str,
        name: &str,
        scopes: Vec<Scope>,
    ) -> Result<(ApiKey, KeyRecord), ApiError> {
        if self.get_account(account_id).await?.is_none() {
            return Err(ApiError::NotFound("Account"));
        }
        let key = ApiKey::generate();
        let mut scopes = scopes;
        scopes.sort();
        scopes.dedup();
        let record = KeyRecord {
            key_id: uuid::Uuid::new_v4().to_string(),
            account_id: account_id.to_string(),
            name: name.to_string(),
            prefix: key.display_prefix(),
            scopes,
            key_hash: key.hash(),
            created_at: now_ms(),
            revoked_at: None,
            last_used_at: None,
        };
        let put = |pk: String, sk: String| -> Result<TransactWriteItem, ApiError> {
            Ok(TransactWriteItem::builder()
                .put(
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(to_item(&record, pk, sk)?))
                        .condition_expression("attribute_not_exists(PK)")
                        .build()
                        .map_err(ApiError::internal)?,
                )
                .build())
        };
        self.transact(vec![
            put(key_pk(&record.key_hash), "KEY".into())?,
            put(account_pk(account_id), keyref_sk(&record.key_id))?,
        ])
        .await
        .map_err(aws_err)?;
        Ok((key, record))
    }

    /// One `GetItem`; a stale `last_used_at` costs one conditional update at most once a minute.
    pub async fn authenticate(&self, key: &ApiKey) -> Result<Caller, ApiError> {
        let hash = key.hash();
        let item = self
            .get(key_pk(&hash), "KEY".into())
            .await?
            .ok_or(ApiError::Unauthorized)?;
        let record: KeyRecord = from_item(item)?;
        if record.revoked_at.is_some() {
            return Err(ApiError::Unauthorized);
        }
        let now = now_ms();
        if record
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS)
        {
            self.touch_key(&hash, now).await;
        }
        Ok(Caller {
            account_id: record.account_id,
            key_id: record.key_id,
            key_name: record.name,
            key_prefix: record.prefix,
            scopes: record.scopes,
        })
    }

    /// Best effort: a failure to record the last use must not fail the request. The condition
    /// keeps concurrent requests from writing it more than once a minute.
    async fn touch_key(&self, hash: &str, now: Millis) {
        let result = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(key_pk(hash)))
            .key("SK", s("KEY"))
            .update_expression("SET last_used_at = :now")
            .condition_expression(
                "attribute_exists(PK) AND (attribute_not_exists(last_used_at) OR last_used_at < :cutoff OR attribute_type(last_used_at, :null))",
            )
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":cutoff", n(now - LAST_USED_RESOLUTION_MS))
            .expression_attribute_values(":null", s("NULL"))
            .send()
            .await;
        if let Err(e) = result {
            if !super::is_condition_failure(&e) {
                tracing::warn!(error = %aws_sdk_dynamodb::error::DisplayErrorContext(e), "could not record key use");
            }
        }
    }

    pub async fn list_keys(&self, account_id: &str) -> Result<Vec<KeyRecord>, ApiError> {
        let mut keys: Vec<KeyRecord> = self
            .query_prefix(account_pk(account_id), "KEYREF#")
            .await?
            .into_iter()
            .map(from_item)
            .collect::<Result<_, _>>()?;
        // The listing copy does not track use; the key item does.
        for k in &mut keys {
            if let Some(item) = self.get(key_pk(&k.key_hash), "KEY".into()).await? {
                let live: KeyRecord = from_item(item)?;
                k.last_used_at = live.last_used_at;
            }
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    /// Revokes a key of the account; revoking twice is fine.
    pub async fn revoke_key(&self, account_id: &str, key_id: &str) -> Result<KeyRecord, ApiError> {
        let item = self
            .get(account_pk(account_id), keyref_sk(key_id))
            .await?
            .ok_or(ApiError::NotFound("API key"))?;
        let mut record: KeyRecord = from_item(item)?;
        if record.revoked_at.is_some() {
            return Ok(record);
        }
        let now = now_ms();
        let update = |pk: String, sk: String| -> Result<TransactWriteItem, ApiError> {
            Ok(TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .key("PK", s(pk))
                        .key("SK", s(sk))
                        .update_expression("SET revoked_at = :now")
                        .condition_expression("attribute_exists(PK)")
                        .expression_attribute_values(":now", n(now))
                        .build()
                        .map_err(ApiError::internal)?,
                )
                .build())
        };
        self.transact(vec![
            update(key_pk(&record.key_hash), "KEY".into())?,
            update(account_pk(account_id), keyref_sk(key_id))?,
        ])
        .await
        .map_err(aws_err)?;
        record.revoked_at = Some(now);
        Ok(record)
    }
}
