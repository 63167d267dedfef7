//! OAuth2 access tokens for the DataCrunch API.
//!
//! - The client secret is read lazily (Secrets Manager or static) and cached; it is dropped
//!   and re-read after the provider rejects it, so a rotated secret is picked up.
//! - The access token is cached behind a tokio mutex (one fetch at a time; concurrent callers
//!   wait for it) and renewed `margin` before `expires_in` runs out, where the margin is the
//!   configured one (30 s by default) but never more than a quarter of the token's lifetime.
//! - Renewal tries the `refresh_token` grant first and falls back to `client_credentials`
//!   when the refresh is rejected.
//! - If renewal fails transiently while the old token has not actually expired, the old token
//!   is used.
//!
//! Tokens and secrets are never logged and never put into error messages.

use super::datacrunch::{Credentials, DataCrunchClient};
use super::parse::{self, lenient_string, lenient_u32};
use super::ProviderError;
use serde_json::{json, Value};
use std::fmt;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Token lifetime assumed when a token response has no readable `expires_in`.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub(crate) struct ClientSecret {
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSecret")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

struct Access {
    token: String,
    /// When the provider will stop accepting it (measured from before the request was sent).
    expires_at: Instant,
    /// When we renew it.
    refresh_at: Instant,
}

#[derive(Default)]
struct TokenState {
    access: Option<Access>,
    refresh_token: Option<String>,
}

/// A token to send, and whether it was obtained by this very call (a 401 with a fresh token
/// is not worth another try).
pub(crate) struct Bearer {
    pub(crate) token: String,
    pub(crate) fresh: bool,
}

pub(crate) struct TokenManager {
    credentials: Credentials,
    secret: Mutex<Option<ClientSecret>>,
    state: Mutex<TokenState>,
}

/// How a token grant failed.
enum GrantError {
    /// 400/401/403: the grant itself was refused.
    Rejected(String),
    Other(ProviderError),
}

impl TokenManager {
    pub(crate) fn new(credentials: Credentials) -> Self {
        TokenManager {
            credentials,
            secret: Mutex::new(None),
            state: Mutex::new(TokenState::default()),
        }
    }

    /// A usable access token, fetching or renewing one if needed.
    pub(crate) async fn bearer(&self, client: &DataCrunchClient) -> Result<Bearer, ProviderError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if let Some(a) = &state.access {
            if now < a.refresh_at {
                return Ok(Bearer {
                    token: a.token.clone(),
                    fresh: false,
                });
            }
        }
        let old = state.access.take();
        match self.obtain(client, &mut state).await {
            Ok(access) => {
                let token = access.token.clone();
                state.access = Some(access);
                Ok(Bearer { token, fresh: true })
            }
            Err(e) if e.is_transient() => match old {
                Some(old) if Instant::now() < old.expires_at => {
                    tracing::warn!(error = %e, "provider token renewal failed; using the current token until it expires");
                    let token = old.token.clone();
                    state.access = Some(old);
                    Ok(Bearer {
                        token,
                        fresh: false,
                    })
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Forgets `token` after the provider refused it (unless a newer one already replaced it).
    pub(crate) async fn invalidate(&self, token: &str) {
        let mut state = self.state.lock().await;
        if state.access.as_ref().is_some_and(|a| a.token == token) {
            state.access = None;
        }
    }

    async fn obtain(
        &self,
        client: &DataCrunchClient,
        state: &mut TokenState,
    ) -> Result<Access, ProviderError> {
        if let Some(refresh_token) = state.refresh_token.take() {
            let body = json!({"grant_type": "refresh_token", "refresh_token": refresh_token});
            match self.grant(client, &body).await {
                Ok((access, new_refresh)) => {
                    state.refresh_token = new_refresh.or(Some(refresh_token));
                    tracing::debug!("provider access token refreshed");
                    return Ok(access);
                }
                Err(GrantError::Rejected(_)) => {
                    tracing::debug!("provider refresh token rejected; using client credentials");
                }
                Err(GrantError::Other(e)) => {
                    state.refresh_token = Some(refresh_token);
                    return Err(e);
                }
            }
        }

        let secret = self.secret().await?;
        let body = json!({
            "grant_type": "client_credentials",
            "client_id": secret.client_id,
            "client_secret": secret.client_secret,
        });
        match self.grant(client, &body).await {
            Ok((access, refresh)) => {
                state.refresh_token = refresh;
                tracing::debug!("provider access token obtained");
                Ok(access)
            }
            Err(GrantError::Rejected(message)) => {
                // Re-read the secret next time: it may have been rotated.
                if matches!(self.credentials, Credentials::SecretsManager { .. }) {
                    *self.secret.lock().await = None;
                }
                Err(ProviderError::Auth(format!(
                    "client credentials rejected: {message}"
                )))
            }
            Err(GrantError::Other(e)) => Err(e),
        }
    }

    /// One grant request, retried on transient failures (getting a token has no side effects).
    async fn grant(
        &self,
        client: &DataCrunchClient,
        body: &Value,
    ) -> Result<(Access, Option<String>), GrantError> {
        let url = client.url("/oauth2/token");
        let policy = client.retry_policy();
        let mut retry = 0;
        let (sent_at, status, text) = loop {
            let sent_at = Instant::now();
            let result = client
                .send_raw(reqwest::Method::POST, &url, &[], None, Some(body))
                .await
                .and_then(|(status, text)| {
                    if (200..300).contains(&status) || matches!(status, 400 | 401 | 403) {
                        Ok((status, text))
                    } else {
                        Err(parse::classify(status, &text, parse::CallKind::Other))
                    }
                });
            match result {
                Ok((status, text)) => break (sent_at, status, text),
                Err(e) if e.is_transient() && retry < policy.max_retries => {
                    let wait = policy.backoff(retry);
                    tracing::warn!(error = %e, retry = retry + 1, wait_ms = wait.as_millis() as u64, "retrying provider token request");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(ProviderError::Auth(m)) => return Err(GrantError::Rejected(m)),
                Err(e) => return Err(GrantError::Other(e)),
            }
        };
        if !(200..300).contains(&status) {
            let (code, message) = parse::error_body(&text);
            let message = if code.is_empty() {
                format!("HTTP {status}: {message}")
            } else {
                format!("HTTP {status} {code}: {message}")
            };
            return Err(GrantError::Rejected(message));
        }

        let v: Value = serde_json::from_str(&text).map_err(|_| {
            GrantError::Other(ProviderError::Server {
                status,
                message: "unreadable token response".into(),
            })
        })?;
        let Some(token) = lenient_string(v.get("access_token")) else {
            return Err(GrantError::Other(ProviderError::Server {
                status,
                message: "token response without access_token".into(),
            }));
        };
        let ttl = lenient_u32(v.get("expires_in"))
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(DEFAULT_TTL);
        let margin = client.refresh_margin().min(ttl / 4);
        let access = Access {
            token,
            expires_at: sent_at + ttl,
            refresh_at: sent_at + ttl.saturating_sub(margin),
        };
        Ok((access, lenient_string(v.get("refresh_token"))))
    }

    /// The client id and secret, read once and cached.
    async fn secret(&self) -> Result<ClientSecret, ProviderError> {
        match &self.credentials {
            Credentials::Static {
                client_id,
                client_secret,
            } => Ok(ClientSecret {
                client_id: client_id.clone(),
                client_secret: client_secret.clone(),
            }),
            Credentials::SecretsManager { client, secret_id } => {
                let mut cached = self.secret.lock().await;
                if let Some(s) = cached.as_ref() {
                    return Ok(s.clone());
                }
                let raw = crate::aws::secret_string(client, secret_id)
                    .await
                    .map_err(secret_read_error)?;
                let parsed = parse_secret(&raw).ok_or_else(|| {
                    ProviderError::Auth(format!(
                        "secret {secret_id} must be JSON with string fields client_id and client_secret"
                    ))
                })?;
                *cached = Some(parsed.clone());
                Ok(parsed)
            }
        }
    }
}

/// `{"client_id": …, "client_secret": …}` (other fields ignored).
pub(crate) fn parse_secret(raw: &str) -> Option<ClientSecret> {
    let v: Value = serde_json::from_str(raw).ok()?;
    Some(ClientSecret {
        client_id: lenient_string(v.get("client_id"))?,
        client_secret: lenient_string(v.get("client_secret"))?,
    })
}

/// A missing secret or a denied read is configuration (Auth); anything else may pass.
pub(crate) fn secret_read_error(message: String) -> ProviderError {
    let permanent = [
        "ResourceNotFoundException",
        "AccessDenied",
        "has no string value",
        "InvalidParameterException",
        "InvalidRequestException",
        "DecryptionFailure",
    ];
    if permanent.iter().any(|p| message.contains(p)) {
        ProviderError::Auth(message)
    } else {
        ProviderError::Transport(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_json_parsing_and_redaction() {
        let s = parse_secret(r#"{"client_id":"id1","client_secret":"s3cr3t","note":"x"}"#).unwrap();
        assert_eq!(s.client_id, "id1");
        assert_eq!(s.client_secret, "s3cr3t");
        assert!(!format!("{s:?}").contains("s3cr3t"));
        assert!(parse_secret(r#"{"client_id":"id1"}"#).is_none());
        assert!(parse_secret("not json").is_none());
    }

    #[test]
    fn secret_read_errors_are_typed() {
        assert!(matches!(
            secret_read_error("reading secret x: ResourceNotFoundException: nope".into()),
            ProviderError::Auth(_)
        ));
        assert!(secret_read_error("reading secret x: dispatch failure".into()).is_transient());
    }
}
