//! SSH key items. A second item per key, `SSHFP#{fingerprint}`, is written in the same
//! transaction so the same key cannot be added twice to one account, even by racing requests.

use super::idempotency::IdempotencyRecord;
use super::{account_pk, aws_err, cancelled_conditions, from_item, s, to_item, Store};
use crate::error::ApiError;
use crate::time::{rfc3339, Millis};
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SshKeyRecord {
    pub ssh_key_id: String,
    pub account_id: String,
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    pub algorithm: String,
    pub bits: u32,
    pub provider: String,
    pub provider_key_id: String,
    pub created_at: Millis,
}

impl SshKeyRecord {
    pub fn view(&self) -> Value {
        json!({
            "id": self.ssh_key_id,
            "name": self.name,
            "datacrunch_id": self.provider_key_id,
            "fingerprint": self.fingerprint,
            "algorithm": self.algorithm,
            "bits": self.bits,
            "public_key": self.public_key,
            "created_at": rfc3339(self.created_at),
        })
    }
}

fn key_sk(id: &str) -> String {
    format!("SSHKEY#{id}")
}

fn fingerprint_sk(fingerprint: &str) -> String {
    format!("SSHFP#{fingerprint}")
}

pub enum AddKeyError {
    Duplicate,
    IdempotencyKeyTaken,
    Other(ApiError),
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

    pub async fn add_ssh_key(
        &self,
        key: &SshKeyRecord,
        idempotency: Option<&IdempotencyRecord>,
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
        let build = || -> Result<Vec<TransactWriteItem>, ApiError> {
            let mut items = vec![
                put(to_item(key, pk.clone(), key_sk(&key.ssh_key_id))?)?,
                put(to_item(
                    &json!({ "ssh_key_id": key.ssh_key_id }),
                    pk.clone(),
                    fingerprint_sk(&key.fingerprint),
                )?)?,
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
                Some(failed) if failed.get(2) == Some(&true) => {
                    Err(AddKeyError::IdempotencyKeyTaken)
                }
                Some(failed) if failed.get(1) == Some(&true) => Err(AddKeyError::Duplicate),
                _ => Err(AddKeyError::Other(aws_err(e))),
            },
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

    pub async fn list_ssh_keys(&self, account_id: &str) -> Result<Vec<SshKeyRecord>, ApiError> {
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
        Ok(keys)
    }

    pub async fn delete_ssh_key(&self, key: &SshKeyRecord) -> Result<(), ApiError> {
        let pk = account_pk(&key.account_id);
        let delete = |sk: String| -> Result<TransactWriteItem, ApiError> {
            Ok(TransactWriteItem::builder()
                .delete(
                    Delete::builder()
                        .table_name(&self.table)
                        .key("PK", s(pk.clone()))
                        .key("SK", s(sk))
                        .build()
                        .map_err(ApiError::internal)?,
                )
                .build())
        };
        self.transact(vec![
            delete(key_sk(&key.ssh_key_id))?,
            delete(fingerprint_sk(&key.fingerprint))?,
        ])
        .await
        .map_err(aws_err)?;
        Ok(())
    }
}
