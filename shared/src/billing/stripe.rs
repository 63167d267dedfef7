//! The Stripe API client: creating Checkout Sessions (form-encoded, as Stripe's API takes
//! them) with an `Idempotency-Key` reused across our retries, so a retried call never creates
//! a second session; and the keys from Secrets Manager.

use crate::error::ApiError;
use serde::Deserialize;
use std::time::Duration;

/// Attempts of one API call (network errors, 429, 5xx; the same idempotency key each time).
const ATTEMPTS: u32 = 3;

/// What the Stripe secret holds: `{"api_key": "sk_…", "webhook_secret": "whsec_…"}`, or
/// `"webhook_secrets": [...]` to accept the old and the new signing secret during a roll.
#[derive(Clone, Deserialize)]
pub struct StripeKeys {
    pub api_key: String,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    webhook_secrets: Vec<String>,
}

impl std::fmt::Debug for StripeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StripeKeys { .. }")
    }
}

impl StripeKeys {
    pub fn webhook_secrets(&self) -> Vec<String> {
        self.webhook_secret
            .iter()
            .chain(&self.webhook_secrets)
            .filter(|s| !s.is_empty())
            .cloned()
            .collect()
    }
}

/// A created Checkout Session: where to send the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutStart {
    pub session_id: String,
    pub url: String,
}

#[derive(Deserialize)]
struct SessionAnswer {
    id: String,
    url: Option<String>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secrets: aws_sdk_secretsmanager::Client,
    secret_id: String,
    keys: tokio::sync::OnceCell<StripeKeys>,
}

impl StripeClient {
    pub fn new(
        secrets: aws_sdk_secretsmanager::Client,
        secret_id: impl Into<String>,
        api_base: impl Into<String>,
        timeout: Duration,
    ) -> StripeClient {
        StripeClient {
            http: crate::tls::https_client()
                .timeout(timeout)
                .build()
                .expect("a reqwest client with a timeout always builds"),
            api_base: api_base.into().trim_end_matches('/').to_string(),
            secrets,
            secret_id: secret_id.into(),
            keys: tokio::sync::OnceCell::new(),
        }
    }

    /// The keys, read from Secrets Manager on first use and kept for the container's life.
    pub async fn keys(&self) -> Result<&StripeKeys, ApiError> {
        self.keys
            .get_or_try_init(|| async {
                let text = crate::aws::secret_string(&self.secrets, &self.secret_id)
                    .await
                    .map_err(ApiError::Internal)?;
                serde_json::from_str::<StripeKeys>(&text).map_err(|e| {
                    ApiError::Internal(format!("secret {} is not Stripe keys: {e}", self.secret_id))
                })
            })
            .await
    }

    /// `POST /v1/checkout/sessions` with `params`; `idempotency_key` makes retries safe.
    pub async fn create_checkout_session(
        &self,
        params: &[(String, String)],
        idempotency_key: &str,
    ) -> Result<CheckoutStart, ApiError> {
        let api_key = self.keys().await?.api_key.clone();
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let url = format!("{}/v1/checkout/sessions", self.api_base);
        let mut last_error = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&api_key)
                .header("Idempotency-Key", idempotency_key)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    last_error = format!("sending to Stripe: {e}");
                    continue;
                }
            };
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                let session: SessionAnswer =
                    serde_json::from_str(&text).map_err(|e| ApiError::PaymentsUnavailable {
                        detail: format!("Stripe's session answer: {e}"),
                    })?;
                let url = session.url.ok_or_else(|| ApiError::PaymentsUnavailable {
                    detail: format!("Stripe session {} has no url", session.id),
                })?;
                return Ok(CheckoutStart {
                    session_id: session.id,
                    url,
                });
            }
            let detail = serde_json::from_str::<ErrorAnswer>(&text)
                .map(|e| {
                    format!(
                        "{} {}: {}",
                        status.as_u16(),
                        e.error.kind.unwrap_or_default(),
                        e.error.message.unwrap_or_default()
                    )
                })
                .unwrap_or_else(|_| format!("{} (no Stripe error body)", status.as_u16()));
            // 409: a concurrent request with the same key is still running; 429 and 5xx:
            // Stripe asks us to come back. Anything else will not change by retrying.
            let retry =
                status.as_u16() == 409 || status.as_u16() == 429 || status.is_server_error();
            if !retry {
                return Err(ApiError::PaymentsUnavailable { detail });
            }
            last_error = detail;
        }
        Err(ApiError::PaymentsUnavailable { detail: last_error })
    }
}
