//! SSH key items. A second item per key, `SSHFP#{fingerprint}`, is written in the same
//! transaction so the same key cannot be added twice to one account, even by racing requests;
//! the account item's `ssh_key_count` goes up and down in the same transactions, so the cap
//! holds under concurrency too.

use super::accounts::ACCOUNT_SK;
use super::cursor;
use super::idempotency::IdempotencyRecord;
use super::{account_pk, aws_err, cancelled_conditions, from_item, n, s, to_item, Store};
use crate::error::ApiError;
use crate::time::{rfc3339, Millis};
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SshKeyRecord {
    pub ssh_key_id: String,
    pub account_id: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub bits: u32,
    /// The provider the key was registered at when it was added, and its id there.
    pub provider: String,
    pub provider_key_id: String,
    /// Its ids at other providers, registered lazily by the worker when a job of the key goes
    /// there (provider id → the provider's key id). Written once per provider, conditionally.
    #[serde(default)]
    pub provider_ids: BTreeMap<String, String>,
    pub created_at: Millis,
}

impl SshKeyRecord {
    /// The key's id at `provider`, if it is registered there.
    pub fn id_at(&self, provider: &str) -> Option<&str> {
        if provider == self.provider {
            Some(&self.provider_key_id)
        } else {
            self.provider_ids.get(provider).map(String::as_str)
        }
    }

    pub fn provider_name(&self) -> String {
        provider_key_name(&self.name, &self.ssh_key_id)
    }

    pub fn view(&self) -> Value {
        let mut ids = self.provider_ids.clone();
        ids.insert(self.provider.clone(), self.provider_key_id.clone());
        json!({
            "id": self.ssh_key_id,
            "name": self.name,
            // The guide's field: the id at the provider the key was added at (DataCrunch).
            "datacrunch_id": self.provider_key_id,
            "provider_ids": ids,
            "fingerprint": self.fingerprint,
            "algorithm": self.algorithm,
            "bits": self.bits,
            "public_key": self.public_key,
            "created_at": rfc3339(self.created_at),
        })
    }
}

/// The provider-side name of a key: our id in it finds the key again if the provider's answer
/// to its creation is lost.
pub fn provider_key_name(name: &str, ssh_key_id: &str) -> String {
    format!("{name} (mimiry-{ssh_key_id})")
}

fn key_sk(id: &str) -> String {
    format!("SSHKEY#{id}")
}

fn fingerprint_sk(fingerprint: &str) -> String {
    format!("SSHFP#{fingerprint}")
}

/// Most SSH keys one account may hold: a job takes at most 10, and a provider's per-project
/// quota is shared by every account.
pub const MAX_SSH_KEYS_PER_ACCOUNT: u32 = 100;

/// The account item's attribute counting its SSH keys (absent = 0).
const COUNT_ATTR: &str = "ssh_key_count";

pub enum AddKeyError {
    Duplicate,
    LimitReached,
    IdempotencyKeyTaken,
    Other(ApiError),
}

/// One page of an account's SSH keys, oldest first.
pub struct SshKeyPage {
    pub keys: Vec<SshKeyRecord>,
    pub next_cursor: Option<String>,
}

/// A cursor is the (created_at, id) of the last key shown, so a key deleted between two pages
/// does not lose the place.
fn cursor_encode(key: &SshKeyRecord) -> String {
    cursor::encode(&format!("{}:{}", key.created_at, key.ssh_key_id))
}

fn cursor_decode(c: &str) -> Result<(i64, String), ApiError> {
    let position = cursor::decode(c)?;
    let (at, id) = position.split_once(':').ok_or_else(cursor::invalid)?;
    Ok((at.parse().map_err(|_| cursor::invalid())?, id.to_string()))
}

impl Store {
    pub async fn ssh_key_with_fingerprint(
        &self,
        account_id: &str,
        fingerprint: &str,
    ) -> Result<bool, ApiError> {
        Ok(self
            .get(account_pk(account_id), fingerprint_sk(fingerprint))
            .await?
            .is_some())
    }

    /// How many SSH keys the account holds.
    pub async fn ssh_key_count(&self, account_id: &str) -> Result<u32, ApiError> {
        let account = self.get(account_pk(account_id), ACCOUNT_SK.into()).await?;
        Ok(match account.as_ref().and_then(|a| a.get(COUNT_ATTR)) {
            Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
            _ => 0,
        })
    }

    /// Stores the key, its fingerprint marker, the account's count (at most `max`) and the
    /// idempotency record in one transaction.
    pub async fn add_ssh_key(
        &self,
        key: &SshKeyRecord,
        idempotency: Option<&IdempotencyRecord>,
        max: u32,
    ) -> Result<(), AddKeyError> {
        let pk = account_pk(&key.account_id);
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
        let count = || -> Result<TransactWriteItem, ApiError> {
            Ok(TransactWriteItem::builder()
                .update(
                    Update::builder()
                        .table_name(&self.table)
                        .key("PK", s(pk.clone()))
                        .key("SK", s(ACCOUNT_SK))
                        .update_expression("SET #c = if_not_exists(#c, :zero) + :one")
                        .condition_expression(
                            "attribute_exists(PK) AND (attribute_not_exists(#c) OR #c < :max)",
                        )
                        .expression_attribute_names("#c", COUNT_ATTR)
                        .expression_attribute_values(":zero", n(0))
                        .expression_attribute_values(":one", n(1))
                        .expression_attribute_values(":max", n(max))
                        .build()
                        .map_err(ApiError::internal)?,
                )
                .build())
        };
        let build = || -> Result<Vec<TransactWriteItem>, ApiError> {
            let mut items = vec![
                put(to_item(key, pk.clone(), key_sk(&key.ssh_key_id))?)?,
                put(to_item(
                    &json!({ "ssh_key_id": key.ssh_key_id }),
                    pk.clone(),
                    fingerprint_sk(&key.fingerprint),
                )?)?,
                count()?,
            ];
            if let Some(record) = idempotency {
                items.push(self.idempotency_put(&key.account_id, record)?);
            }
            Ok(items)
        };
        let items = build().map_err(AddKeyError::Other)?;
        match self.transact(items).await {
            Ok(_) => Ok(()),
            Err(e) => match cancelled_conditions(&e) {
                // The twin's record first: its answer is this request's too.
                Some(failed) if failed.get(3) == Some(&true) => {
                    Err(AddKeyError::IdempotencyKeyTaken)
                }
                Some(failed) if failed.get(1) == Some(&true) => Err(AddKeyError::Duplicate),
                Some(failed) if failed.get(2) == Some(&true) => Err(AddKeyError::LimitReached),
                _ => Err(AddKeyError::Other(aws_err(e))),
            },
        }
    }

    /// Records the key's id at `provider`, unless one is recorded already (a racing worker
    /// registered it first): `Ok(None)` when ours was stored, `Ok(Some(theirs))` otherwise,
    /// `Err(NotFound)` when the key was deleted meanwhile.
    pub async fn set_ssh_key_provider_id(
        &self,
        key: &SshKeyRecord,
        provider: &str,
        provider_key_id: &str,
    ) -> Result<Option<String>, ApiError> {
        let (pk, sk) = (account_pk(&key.account_id), key_sk(&key.ssh_key_id));
        // Records from before the map existed lack it; a nested path needs it to exist.
        self.db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(pk.clone()))
            .key("SK", s(sk.clone()))
            .update_expression("SET provider_ids = if_not_exists(provider_ids, :empty)")
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_values(":empty", AttributeValue::M(Default::default()))
            .send()
            .await
            .map_err(|e| {
                if super::is_condition_failure(&e) {
                    ApiError::NotFound("SSH key")
                } else {
                    aws_err(e)
                }
            })?;
        let stored = self
            .db
            .update_item()
            .table_name(&self.table)
            .key("PK", s(pk))
            .key("SK", s(sk))
            .update_expression("SET provider_ids.#p = :id")
            .condition_expression("attribute_exists(PK) AND attribute_not_exists(provider_ids.#p)")
            .expression_attribute_names("#p", provider)
            .expression_attribute_values(":id", s(provider_key_id))
            .send()
            .await;
        match stored {
            Ok(_) => Ok(None),
            Err(e) if super::is_condition_failure(&e) => {
                let now = self
                    .get_ssh_key(&key.account_id, &key.ssh_key_id)
                    .await?
                    .ok_or(ApiError::NotFound("SSH key"))?;
                Ok(now.id_at(provider).map(str::to_string))
            }
            Err(e) => Err(aws_err(e)),
        }
    }

    pub async fn get_ssh_key(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<SshKeyRecord>, ApiError> {
        self.get(account_pk(account_id), key_sk(id))
            .await?
            .map(from_item)
            .transpose()
    }

    /// A page of the account's keys, oldest first, after `cursor`. An account holds at most
    /// [`MAX_SSH_KEYS_PER_ACCOUNT`] keys, so one query reads them all and the page is cut here.
    pub async fn list_ssh_keys(
        &self,
        account_id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<SshKeyPage, ApiError> {
        let after = cursor.map(cursor_decode).transpose()?;
        let mut keys: Vec<SshKeyRecord> = self
            .query_prefix(account_pk(account_id), "SSHKEY#")
            .await?
            .into_iter()
            .map(from_item)
            .collect::<Result<_, _>>()?;
        keys.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.ssh_key_id.cmp(&b.ssh_key_id))
        });
        if let Some((at, id)) = after {
            keys.retain(|k| (k.created_at, k.ssh_key_id.as_str()) > (at, id.as_str()));
        }
        let more = keys.len() > limit;
        keys.truncate(limit);
        let next_cursor = if more {
            keys.last().map(cursor_encode)
        } else {
            None
        };
        Ok(SshKeyPage { keys, next_cursor })
    }

    /// Removes the key, its fingerprint marker and one from the account's count. A key
    /// already removed (a racing delete) is not counted twice.
    pub async fn delete_ssh_key(&self, key: &SshKeyRecord) -> Result<(), ApiError> {
        let pk = account_pk(&key.account_id);
        let delete = |sk: String, condition: Option<&str>| -> Result<TransactWriteItem, ApiError> {
            Ok(TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .key("PK", s(pk.clone()))
                        .key("SK", s(sk))
                        .set_condition_expression(condition.map(str::to_string))
                        .build()
                        .map_err(ApiError::internal)?,
                )
                .build())
        };
        let uncount = Update::builder()
            .table_name(&self.table)
            .key("PK", s(pk.clone()))
            .key("SK", s(ACCOUNT_SK))
            .update_expression("SET #c = #c - :one")
            .condition_expression("#c > :zero")
            .expression_attribute_names("#c", COUNT_ATTR)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(ApiError::internal)?;
        let mut items = vec![
            delete(key_sk(&key.ssh_key_id), Some("attribute_exists(PK)"))?,
            delete(fingerprint_sk(&key.fingerprint), None)?,
        ];
        if self.ssh_key_count(&key.account_id).await? > 0 {
            // Keys stored before the count existed are not in it: never count below zero.
            items.push(TransactWriteItem::builder().update(uncount).build());
        }
        match self.transact(items).await {
            Ok(_) => Ok(()),
            Err(e) => match cancelled_conditions(&e) {
                Some(failed) if failed.first() == Some(&true) => Ok(()),
                _ => Err(aws_err(e)),
            },
        }
    }
}
