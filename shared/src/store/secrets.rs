//! Account secrets: one item per secret, `ACCOUNT#{id}` / `SECRET#{name}`, holding the value
//! sealed by the [`Vault`](crate::secrets::Vault) (never the value itself).

use super::{account_pk, aws_err, from_item, s, to_item, Store};
use crate::error::ApiError;
use crate::secrets::{EnvName, Sealed};
use crate::time::{rfc3339, Millis};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRecord {
    pub account_id: String,
    pub name: EnvName,
    pub sealed: Sealed,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl SecretRecord {
    /// What `GET /secrets` shows: never the value, sealed or not.
    pub fn view(&self) -> Value {
        json!({
            "name": self.name,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

fn secret_sk(name: &EnvName) -> String {
    format!("SECRET#{name}")
}

impl Store {
    /// Stores a secret, replacing the value of one of the same name (keeping its
    /// `created_at`).
    pub async fn put_secret(&self, record: &SecretRecord) -> Result<(), ApiError> {
        let item = to_item(
            record,
            account_pk(&record.account_id),
            secret_sk(&record.name),
        )?;
        self.db
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(aws_err)?;
        Ok(())
    }

    pub async fn get_secret(
        &self,
        account_id: &str,
        name: &EnvName,
    ) -> Result<Option<SecretRecord>, ApiError> {
        self.get(account_pk(account_id), secret_sk(name))
            .await?
            .map(from_item)
            .transpose()
    }

    /// The account's secrets, by name (at most `MAX_SECRETS_PER_ACCOUNT`: one query).
    pub async fn list_secrets(&self, account_id: &str) -> Result<Vec<SecretRecord>, ApiError> {
        self.query_prefix(account_pk(account_id), "SECRET#")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    /// Deletes a secret; `false` when there was none of that name.
    pub async fn delete_secret(&self, account_id: &str, name: &EnvName) -> Result<bool, ApiError> {
        let out = self
            .db
            .delete_item()
            .table_name(&self.table)
            .key("PK", s(account_pk(account_id)))
            .key("SK", s(secret_sk(name)))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(aws_err)?;
        Ok(out.attributes.is_some_and(|a| !a.is_empty()))
    }
}
