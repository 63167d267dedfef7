//! API key records. The key item (`KEY#{sha256}`) answers authentication in one `GetItem`; the
//! `KEYREF#` item under the account lists and revokes keys without a scan.

use super::{account_pk, aws_err, from_item, n, s, to_item, Store};
use crate::auth::{ApiKey, Caller, Scope};
use crate::error::ApiError;
use crate::time::{now_ms, Millis};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest a verified key may be reused without reading it: the revocation delay users
/// are promised (docs/decisions.md).
pub const MAX_KEY_CACHE_TTL: Duration = Duration::from_secs(60);
/// Entries one container keeps; beyond it, expired ones go, and if none has, all of them
/// (a flood of distinct valid keys is not a case worth a smarter eviction).
const KEY_CACHE_MAX_ENTRIES: usize = 10_000;

/// Verified, unrevoked key records by key hash, each reused for `ttl` after it was read.
/// Unknown and revoked keys are never kept: only a key that worked can skip the read.
#[derive(Debug)]
pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, KeyRecord)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl: ttl.min(MAX_KEY_CACHE_TTL),
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, KeyRecord)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record read for `hash` less than `ttl` before `now`.
    fn fresh(&self, hash: &str, now: Instant) -> Option<KeyRecord> {
        let entries = self.lock();
        let (read_at, record) = entries.get(hash)?;
        (now.duration_since(*read_at) < self.ttl).then(|| record.clone())
    }

    fn keep(&self, hash: &str, record: &KeyRecord, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= KEY_CACHE_MAX_ENTRIES {
            entries.retain(|_, (read_at, _)| now.duration_since(*read_at) < self.ttl);
            if entries.len() >= KEY_CACHE_MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(hash.to_string(), (now, record.clone()));
    }

    /// Remembers a `last_used_at` just written, so the next request does not write it again.
    fn used(&self, hash: &str, at: Millis) {
        if let Some((_, record)) = self.lock().get_mut(hash) {
            record.last_used_at = Some(at);
        }
    }

    /// Drops a key this container revoked, so that it stops working here at once.
    fn forget(&self, hash: &str) {
        self.lock().remove(hash);
    }
}

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

    /// One `GetItem`, none while the container's cache holds the key; a stale `last_used_at`
    /// costs one conditional update at most once a minute.
    pub async fn authenticate(&self, key: &ApiKey) -> Result<Caller, ApiError> {
        let hash = key.hash();
        let record = match self.keys.fresh(&hash, Instant::now()) {
            Some(record) => record,
            None => {
                let item = self
                    .get(key_pk(&hash), "KEY".into())
                    .await?
                    .ok_or(ApiError::Unauthorized)?;
                let record: KeyRecord = from_item(item)?;
                if record.revoked_at.is_some() {
                    return Err(ApiError::Unauthorized);
                }
                self.keys.keep(&hash, &record, Instant::now());
                record
            }
        };
        let now = now_ms();
        if record
            .last_used_at
            .is_none_or(|t| now - t >= LAST_USED_RESOLUTION_MS)
        {
            self.touch_key(&hash, now).await;
            self.keys.used(&hash, now);
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
        self.keys.forget(&record.key_hash);
        record.revoked_at = Some(now);
        Ok(record)
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn record(name: &str) -> KeyRecord {
        KeyRecord {
            key_id: format!("id-{name}"),
            account_id: "acct".into(),
            name: name.into(),
            prefix: "mky_AbCd".into(),
            scopes: vec![Scope::JobsRead],
            key_hash: format!("hash-{name}"),
            created_at: 0,
            revoked_at: None,
            last_used_at: None,
        }
    }

    #[test]
    fn a_key_is_reused_only_within_the_ttl() {
        let cache = KeyCache::new(Duration::from_secs(30));
        let t0 = Instant::now();
        cache.keep("h", &record("a"), t0);
        assert_eq!(
            cache.fresh("h", t0 + Duration::from_secs(29)),
            Some(record("a"))
        );
        assert_eq!(
            cache.fresh("h", t0 + Duration::from_secs(30)),
            None,
            "expired"
        );
        assert_eq!(cache.fresh("other", t0), None);
    }

    #[test]
    fn a_zero_ttl_keeps_nothing_and_the_ttl_is_capped() {
        let off = KeyCache::new(Duration::ZERO);
        let t0 = Instant::now();
        off.keep("h", &record("a"), t0);
        assert_eq!(off.fresh("h", t0), None);
        let long = KeyCache::new(Duration::from_secs(3600));
        long.keep("h", &record("a"), t0);
        assert!(long.fresh("h", t0 + Duration::from_secs(59)).is_some());
        assert_eq!(
            long.fresh("h", t0 + MAX_KEY_CACHE_TTL),
            None,
            "never past 60 s"
        );
    }

    #[test]
    fn forgetting_and_recording_use_change_the_entry() {
        let cache = KeyCache::new(Duration::from_secs(30));
        let t0 = Instant::now();
        cache.keep("h", &record("a"), t0);
        cache.used("h", 1234);
        assert_eq!(cache.fresh("h", t0).unwrap().last_used_at, Some(1234));
        cache.forget("h");
        assert_eq!(cache.fresh("h", t0), None);
    }

    #[test]
    fn a_full_cache_drops_expired_entries_first() {
        let cache = KeyCache::new(Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..KEY_CACHE_MAX_ENTRIES {
            cache.keep(&format!("old{i}"), &record("a"), t0);
        }
        let later = t0 + Duration::from_secs(31);
        cache.keep("new", &record("b"), later);
        assert_eq!(cache.lock().len(), 1, "only the new entry is left");
        assert!(cache.fresh("new", later).is_some());
    }
}
