//! A job's environment and an account's secrets (issue 15).
//!
//! - [`EnvName`] / [`JobEnv`]: the `env` of `POST /jobs` (plain values, kept in the job item)
//!   and the names of `secrets` it exposes; both become environment variables of the script.
//! - [`Vault`]: envelope encryption of secret values. KMS makes a fresh 256-bit data key per
//!   value (`GenerateDataKey`); the value is sealed locally with AES-256-GCM under it, bound
//!   to `account/name` as associated data (an item copied under another name or account does
//!   not open); only the data key's KMS-encrypted form is stored beside the ciphertext.
//!   Opening is one KMS `Decrypt`. One DynamoDB item per secret, no Secrets Manager secret
//!   per value ($0.40 a month each).
//! - [`mask`]: every secret value replaced by `***` in output we store.

use crate::error::ApiError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Variables one job may set (`env` and `secrets` together).
pub const MAX_VARS: usize = 64;
/// Bytes of names and values of one job's `env` together.
pub const MAX_ENV_BYTES: usize = 32 * 1024;
/// Bytes of one secret value.
pub const MAX_SECRET_BYTES: usize = 32 * 1024;
/// Secrets one account may keep.
pub const MAX_SECRETS_PER_ACCOUNT: usize = 100;
/// Characters of a variable or secret name.
pub const MAX_NAME_CHARS: usize = 128;
/// What a masked value reads as.
pub const MASK: &str = "***";

/// An environment variable's (or a secret's) name: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// [`MAX_NAME_CHARS`], and not `MIMIRY_…` (ours, for what the wrapper may set one day).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EnvName(String);

impl EnvName {
    /// `field` names the request field in the 400.
    pub fn parse(field: &str, name: &str) -> Result<EnvName, ApiError> {
        let mut chars = name.chars();
        let well_formed = name.len() <= MAX_NAME_CHARS
            && chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(ApiError::validation(
                field,
                format!(
                    "`{}` is not a valid variable name: use letters, digits and _, not starting with a digit, at most {MAX_NAME_CHARS} characters",
                    name.chars().take(MAX_NAME_CHARS).collect::<String>()
                ),
            ));
        }
        if name.to_ascii_uppercase().starts_with("MIMIRY_") {
            return Err(ApiError::validation(
                field,
                format!("`{name}`: names starting with MIMIRY_ are reserved"),
            ));
        }
        Ok(EnvName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EnvName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's `env` and `secrets`, checked: valid names, no name twice (an `env` name is not also
/// a secret's), at most [`MAX_VARS`] together, `env` at most [`MAX_ENV_BYTES`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnv {
    #[serde(default)]
    pub env: BTreeMap<EnvName, String>,
    /// Names of account secrets; their values are never in the job.
    #[serde(default)]
    pub secrets: Vec<EnvName>,
}

impl JobEnv {
    pub fn parse(
        env: Option<BTreeMap<String, serde_json::Value>>,
        secrets: Option<Vec<String>>,
    ) -> Result<JobEnv, ApiError> {
        let mut parsed = JobEnv::default();
        let mut bytes = 0;
        for (name, value) in env.unwrap_or_default() {
            let key = EnvName::parse("env", &name)?;
            let value = value.as_str().ok_or_else(|| {
                ApiError::validation("env", format!("env `{name}` must be a string"))
            })?;
            if value.contains('\0') {
                return Err(ApiError::validation(
                    "env",
                    format!("env `{name}` must not contain NUL (\\u0000) characters"),
                ));
            }
            bytes += name.len() + value.len();
            parsed.env.insert(key, value.to_string());
        }
        if bytes > MAX_ENV_BYTES {
            return Err(ApiError::validation(
                "env",
                format!("env holds {bytes} bytes of names and values; the limit is {MAX_ENV_BYTES} bytes (32 KiB)"),
            ));
        }
        for name in secrets.unwrap_or_default() {
            let key = EnvName::parse("secrets", &name)?;
            if parsed.env.contains_key(&key) {
                return Err(ApiError::validation(
                    "secrets",
                    format!("`{name}` is both in env and in secrets"),
                ));
            }
            if !parsed.secrets.contains(&key) {
                parsed.secrets.push(key);
            }
        }
        if parsed.env.len() + parsed.secrets.len() > MAX_VARS {
            return Err(ApiError::validation(
                "env",
                format!("at most {MAX_VARS} variables per job (env and secrets together)"),
            ));
        }
        Ok(parsed)
    }

    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.secrets.is_empty()
    }
}

/// A secret's value as `POST /secrets` takes it: 1 to [`MAX_SECRET_BYTES`] bytes, no NUL (an
/// environment variable cannot hold one). Not `Debug`/`Display`: it is never printed.
pub struct SecretValue(String);

impl SecretValue {
    pub fn parse(value: String) -> Result<SecretValue, ApiError> {
        if value.is_empty() || value.len() > MAX_SECRET_BYTES {
            return Err(ApiError::validation(
                "value",
                format!("value must hold from 1 to {MAX_SECRET_BYTES} bytes"),
            ));
        }
        if value.contains('\0') {
            return Err(ApiError::validation(
                "value",
                "value must not contain NUL (\\u0000) characters",
            ));
        }
        Ok(SecretValue(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A value sealed by the [`Vault`]: what the secret's item stores (base64 fields).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealed {
    /// The data key, encrypted by KMS.
    pub encrypted_key: String,
    pub nonce: String,
    pub ciphertext: String,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// Envelope encryption under one KMS key (`SECRETS_KMS_KEY_ID`).
#[derive(Clone)]
pub struct Vault {
    kms: aws_sdk_kms::Client,
    key_id: String,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The associated data binding a sealed value to its account and name.
fn aad(account_id: &str, name: &EnvName) -> Vec<u8> {
    format!("mimiry-secret/{account_id}/{name}").into_bytes()
}

fn crypto_err(what: &str) -> ApiError {
    // No detail: nothing of a value or a key goes into an error.
    ApiError::Internal(format!("secret {what} failed"))
}

impl Vault {
    pub fn new(kms: aws_sdk_kms::Client, key_id: String) -> Vault {
        Vault { kms, key_id }
    }

    pub async fn seal(
        &self,
        account_id: &str,
        name: &EnvName,
        value: &SecretValue,
    ) -> Result<Sealed, ApiError> {
        let key = self
            .kms
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
            .send()
            .await
            .map_err(|e| ApiError::Internal(format!("KMS GenerateDataKey: {e}")))?;
        let plain_key = key.plaintext().ok_or_else(|| crypto_err("data key"))?;
        let encrypted_key = key
            .ciphertext_blob()
            .ok_or_else(|| crypto_err("data key"))?;
        let cipher =
            Aes256Gcm::new_from_slice(plain_key.as_ref()).map_err(|_| crypto_err("data key"))?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose().as_bytes(),
                    aad: &aad(account_id, name),
                },
            )
            .map_err(|_| crypto_err("encryption"))?;
        Ok(Sealed {
            encrypted_key: b64().encode(encrypted_key.as_ref()),
            nonce: b64().encode(nonce),
            ciphertext: b64().encode(ciphertext),
        })
    }

    pub async fn open(
        &self,
        account_id: &str,
        name: &EnvName,
        sealed: &Sealed,
    ) -> Result<String, ApiError> {
        let decode = |s: &str| b64().decode(s).map_err(|_| crypto_err("decoding"));
        let plain_key = self
            .kms
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(decode(
                &sealed.encrypted_key,
            )?))
            .send()
            .await
            .map_err(|e| ApiError::Internal(format!("KMS Decrypt: {e}")))?;
        let plain_key = plain_key
            .plaintext()
            .ok_or_else(|| crypto_err("data key"))?;
        let cipher =
            Aes256Gcm::new_from_slice(plain_key.as_ref()).map_err(|_| crypto_err("data key"))?;
        let nonce = decode(&sealed.nonce)?;
        if nonce.len() != 12 {
            return Err(crypto_err("decoding"));
        }
        let plain = cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &decode(&sealed.ciphertext)?,
                    aad: &aad(account_id, name),
                },
            )
            .map_err(|_| crypto_err("decryption"))?;
        String::from_utf8(plain).map_err(|_| crypto_err("decoding"))
    }
}

/// Stores `value` under `name` for the account, sealed: a new secret (`true`) or a new value
/// for an existing one (`false`, its `created_at` kept). What `POST /secrets` and the
/// dashboard's Secrets page both do.
pub async fn put(
    store: &crate::store::Store,
    vault: &Vault,
    account_id: &str,
    name: EnvName,
    value: &SecretValue,
) -> Result<(crate::store::secrets::SecretRecord, bool), ApiError> {
    let existing = store.get_secret(account_id, &name).await?;
    if existing.is_none() && store.list_secrets(account_id).await?.len() >= MAX_SECRETS_PER_ACCOUNT
    {
        return Err(ApiError::Conflict {
            code: "secret_limit_reached",
            message: format!(
                "An account keeps at most {MAX_SECRETS_PER_ACCOUNT} secrets: delete one first"
            ),
        });
    }
    let now = crate::time::now_ms();
    let record = crate::store::secrets::SecretRecord {
        account_id: account_id.to_string(),
        sealed: vault.seal(account_id, &name, value).await?,
        name,
        created_at: existing.as_ref().map_or(now, |e| e.created_at),
        updated_at: now,
    };
    store.put_secret(&record).await?;
    Ok((record, existing.is_none()))
}

/// Deletes the account's secret `name`: 404 `Secret not found` when there is none (a name
/// that is not a valid one cannot exist).
pub async fn delete(
    store: &crate::store::Store,
    account_id: &str,
    name: &str,
) -> Result<EnvName, ApiError> {
    let name = EnvName::parse("name", name).map_err(|_| ApiError::NotFound("Secret"))?;
    if !store.delete_secret(account_id, &name).await? {
        return Err(ApiError::NotFound("Secret"));
    }
    Ok(name)
}

/// `text` with every one of `values` replaced by [`MASK`], longest first (a value inside
/// another is not left half-shown). Empty values are skipped.
pub fn mask(text: &str, values: &[String]) -> String {
    let mut sorted: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
    sorted.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in sorted {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_shell_rule_and_leave_ours_alone() {
        for ok in ["A", "_x", "HF_TOKEN", "a1_b2"] {
            assert!(EnvName::parse("env", ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "É", "MIMIRY_X", "mimiry_job"] {
            assert!(EnvName::parse("env", bad).is_err(), "{bad}");
        }
        assert!(EnvName::parse("env", &"A".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn env_limits_and_clashes_are_400s_naming_the_field() {
        let env = |pairs: &[(&str, serde_json::Value)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        };
        let field = |e: ApiError| match e {
            ApiError::Validation { field, .. } => field,
            other => panic!("{other:?}"),
        };
        let ok = JobEnv::parse(
            env(&[("A", json!("1"))]),
            Some(vec!["TOKEN".into(), "TOKEN".into()]),
        )
        .unwrap();
        assert_eq!(ok.secrets.len(), 1, "a repeated secret counts once");
        assert_eq!(
            field(JobEnv::parse(env(&[("A", json!(1))]), None).unwrap_err()),
            "env"
        );
        assert_eq!(
            field(JobEnv::parse(env(&[("A", json!("x"))]), Some(vec!["A".into()])).unwrap_err()),
            "secrets"
        );
        assert_eq!(
            field(JobEnv::parse(None, Some(vec!["no-dash".into()])).unwrap_err()),
            "secrets"
        );
        let big = json!("x".repeat(MAX_ENV_BYTES));
        assert!(JobEnv::parse(env(&[("A", big)]), None).is_err());
        let many: Vec<(String, serde_json::Value)> = (0..=MAX_VARS)
            .map(|i| (format!("V{i}"), json!("v")))
            .collect();
        assert!(JobEnv::parse(Some(many.into_iter().collect()), None).is_err());
    }

    #[test]
    fn masking_hides_every_occurrence_longest_first() {
        let values = vec!["abc".to_string(), "abcdef".to_string(), String::new()];
        assert_eq!(
            mask("x abcdef y abc z", &values),
            "x *** y *** z",
            "the longer value is masked whole"
        );
        assert_eq!(mask("nothing here", &values), "nothing here");
    }
}
