//! The per-job token an instance presents to `POST /jobs/{id}/report` instead of an API key:
//! `{account_id}.{hex HMAC-SHA256(key, "{account_id}:{job_id}")}`. It names the account so the
//! report route finds the job with one `GetItem`, and it is worthless for any other job.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The signing key, read from Secrets Manager on first use and kept for the container's life.
pub struct SigningKey {
    secrets: aws_sdk_secretsmanager::Client,
    secret_id: String,
    key: tokio::sync::OnceCell<Vec<u8>>,
}

impl SigningKey {
    pub fn new(
        secrets: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
    ) -> SigningKey {
        SigningKey {
            secrets,
            secret_id: secret_id.into(),
            key: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn get(&self) -> Result<&[u8], crate::error::ApiError> {
        self.key
            .get_or_try_init(|| async {
                crate::aws::secret_string(&self.secrets, &self.secret_id)
                    .await
                    .map(String::into_bytes)
                    .map_err(crate::error::ApiError::Internal)
            })
            .await
            .map(Vec::as_slice)
    }
}

fn mac(signing_key: &[u8], account_id: &str, job_id: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(signing_key).expect("HMAC takes any key length");
    mac.update(account_id.as_bytes());
    mac.update(b":");
    mac.update(job_id.as_bytes());
    mac
}

pub fn issue(signing_key: &[u8], account_id: &str, job_id: &str) -> String {
    let tag = mac(signing_key, account_id, job_id).finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{account_id}.{hex}")
}

/// The account id the token is valid for, if it is valid for `job_id`. Constant-time compare.
pub fn verify(signing_key: &[u8], token: &str, job_id: &str) -> Option<String> {
    let (account_id, hex) = token.split_once('.')?;
    if hex.len() != 64 || uuid::Uuid::parse_str(account_id).is_err() {
        return None;
    }
    let tag: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    mac(signing_key, account_id, job_id)
        .verify_slice(&tag)
        .ok()
        .map(|_| account_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_job_and_key() {
        let account = uuid::Uuid::new_v4().to_string();
        let token = issue(b"secret", &account, "job-1");
        assert_eq!(verify(b"secret", &token, "job-1"), Some(account.clone()));
        assert_eq!(verify(b"secret", &token, "job-2"), None);
        assert_eq!(verify(b"other", &token, "job-1"), None);
        let other_account = uuid::Uuid::new_v4().to_string();
        let forged = format!("{other_account}.{}", token.split_once('.').unwrap().1);
        assert_eq!(verify(b"secret", &forged, "job-1"), None);
        assert_eq!(verify(b"secret", "garbage", "job-1"), None);
        assert_eq!(verify(b"secret", &format!("{account}.zz"), "job-1"), None);
    }
}
