//! Checks the ID and access tokens Cognito issues: RS256 signatures against the pool's JWKS
//! (fetched once and kept; fetched again only for an unknown `kid`, at most once a minute),
//! then `iss` (the pool), the audience (`aud` on ID tokens, `client_id` on access tokens: our
//! app client), `exp`, and `token_use` — an access token is never taken for an ID token.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Why a token was refused (logged, never shown: the person just signs in again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token or header: {0}")]
    Malformed(String),
    #[error("unknown signing key `{0}`")]
    UnknownKey(String),
    #[error("token refused: {0}")]
    Invalid(String),
    #[error("wrong token_use `{0}`")]
    WrongUse(String),
    #[error("token for another client")]
    WrongClient,
    #[error("the email address is not verified")]
    EmailNotVerified,
    #[error("could not fetch the pool's keys: {0}")]
    Jwks(String),
}

/// The person an ID token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// Cognito's stable user id.
    pub sub: String,
    pub email: String,
}

#[derive(Deserialize)]
struct IdClaims {
    sub: String,
    email: Option<String>,
    /// Absent in moto's tokens; real Cognito always sends it. Only `false` is refused.
    email_verified: Option<bool>,
    token_use: String,
}

#[derive(Deserialize)]
struct AccessClaims {
    sub: String,
    client_id: String,
    token_use: String,
}

/// Refetch the JWKS for an unknown `kid` at most this often (keys rotate rarely; a flood of
/// forged kids must not become a flood of fetches).
const REFETCH_EVERY: Duration = Duration::from_secs(60);

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

pub struct TokenVerifier {
    issuer: String,
    client_id: String,
    jwks_url: String,
    http: reqwest::Client,
    cache: RwLock<KeyCache>,
    /// Seconds of clock skew tolerated on `exp`.
    leeway: u64,
}

impl TokenVerifier {
    pub fn new(issuer: String, client_id: String, jwks_url: String) -> TokenVerifier {
        TokenVerifier {
            issuer,
            client_id,
            jwks_url,
            http: crate::tls::https_client()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a reqwest client with a timeout builds"),
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            }),
            leeway: 30,
        }
    }

    /// Starts with known keys (tests); the JWKS URL is still used for unknown kids.
    pub fn with_keys(mut self, keys: HashMap<String, DecodingKey>) -> TokenVerifier {
        self.cache = RwLock::new(KeyCache {
            keys,
            fetched_at: Some(Instant::now()),
        });
        self
    }

    /// Checks an ID token and answers the person it names.
    pub async fn verify_id_token(&self, token: &str) -> Result<Person, TokenError> {
        let mut validation = self.validation();
        validation.set_audience(&[&self.client_id]);
        let claims: IdClaims = self.decode(token, &validation).await?;
        if claims.token_use != "id" {
            return Err(TokenError::WrongUse(claims.token_use));
        }
        if claims.email_verified == Some(false) {
            return Err(TokenError::EmailNotVerified);
        }
        let email = claims
            .email
            .ok_or_else(|| TokenError::Invalid("no email claim".into()))?;
        Ok(Person {
            sub: claims.sub,
            email,
        })
    }

    /// Checks an access token; answers its `sub`.
    pub async fn verify_access_token(&self, token: &str) -> Result<String, TokenError> {
        let mut validation = self.validation();
        // Access tokens carry no `aud`; `client_id` says whose they are.
        validation.validate_aud = false;
        let claims: AccessClaims = self.decode(token, &validation).await?;
        if claims.token_use != "access" {
            return Err(TokenError::WrongUse(claims.token_use));
        }
        if claims.client_id != self.client_id {
            return Err(TokenError::WrongClient);
        }
        Ok(claims.sub)
    }

    fn validation(&self) -> Validation {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = self.leeway;
        validation
    }

    async fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<T, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(TokenError::Malformed(format!("alg {:?}", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Malformed("no kid".into()))?;
        let key = self.key(&kid).await?;
        let data =
            decode::<T>(token, &key, validation).map_err(|e| TokenError::Invalid(e.to_string()))?;
        Ok(data.claims)
    }

    /// The key for `kid`, fetching the JWKS when it is not known and the last fetch is old.
    async fn key(&self, kid: &str) -> Result<DecodingKey, TokenError> {
        let stale = {
            let cache = self.cache.read().expect("key cache lock");
            if let Some(key) = cache.keys.get(kid) {
                return Ok(key.clone());
            }
            cache
                .fetched_at
                .is_none_or(|t| t.elapsed() >= REFETCH_EVERY)
        };
        if !stale {
            return Err(TokenError::UnknownKey(kid.to_string()));
        }
        let keys = self.fetch().await?;
        let mut cache = self.cache.write().expect("key cache lock");
        cache.keys = keys;
        cache.fetched_at = Some(Instant::now());
        cache
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| TokenError::UnknownKey(kid.to_string()))
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, TokenError> {
        let jwks: JwkSet = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| TokenError::Jwks(e.to_string()))?
            .json()
            .await
            .map_err(|e| TokenError::Jwks(e.to_string()))?;
        Ok(jwks
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                DecodingKey::from_jwk(jwk).ok().map(|key| (kid, key))
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;
