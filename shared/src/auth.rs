//! API keys and scopes.
//!
//! A key is `mky_` followed by 43 base62 characters (≥ 256 random bits). Only its SHA-256 is
//! stored; the plaintext is shown once, when it is created. Looking a key up is one `GetItem`.

use crate::error::ApiError;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

pub const KEY_PREFIX: &str = "mky_";
/// 43 base62 characters carry 43·log2(62) ≈ 256 bits.
const KEY_BODY_LEN: usize = 43;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Scope {
    #[serde(rename = "jobs:read")]
    JobsRead,
    #[serde(rename = "jobs:write")]
    JobsWrite,
    #[serde(rename = "instances:read")]
    InstancesRead,
    #[serde(rename = "ssh_keys:read")]
    SshKeysRead,
    #[serde(rename = "ssh_keys:write")]
    SshKeysWrite,
    /// Issue 13's extension of the guide's five: reading and managing webhook endpoints.
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Issue 15, beyond the guide's five: list account secrets (names only).
    #[serde(rename = "secrets:read")]
    SecretsRead,
    /// Issue 15: add, replace and delete account secrets.
    #[serde(rename = "secrets:write")]
    SecretsWrite,
}

impl Scope {
    pub const ALL: [Scope; 9] = [
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::InstancesRead,
        Scope::SshKeysRead,
        Scope::SshKeysWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::SecretsRead,
        Scope::SecretsWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::InstancesRead => "instances:read",
            Scope::SshKeysRead => "ssh_keys:read",
            Scope::SshKeysWrite => "ssh_keys:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::SecretsRead => "secrets:read",
            Scope::SecretsWrite => "secrets:write",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scope `{s}`; valid scopes: {}",
                    Scope::ALL.map(Scope::as_str).join(", ")
                )
            })
    }
}

/// A syntactically valid API key. The plaintext never leaves this type except through
/// [`ApiKey::expose`], which only the one-time display of a new key uses.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

impl ApiKey {
    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        let body: String = (0..KEY_BODY_LEN)
            .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
            .collect();
        ApiKey(format!("{KEY_PREFIX}{body}"))
    }

    /// Accepts exactly `mky_` + 43 base62 characters.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_prefix(KEY_PREFIX)?;
        (body.len() == KEY_BODY_LEN && body.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| ApiKey(s.to_string()))
    }

    /// Hex SHA-256 of the whole key: the only form that is stored.
    pub fn hash(&self) -> String {
        hex_sha256(self.0.as_bytes())
    }

    /// What is safe to show later to tell keys apart: `mky_AbCd`.
    pub fn display_prefix(&self) -> String {
        self.0[..KEY_PREFIX.len() + 4].to_string()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads `Authorization: Bearer mky_…`; anything else is the same 401.
pub fn bearer_key(authorization: Option<&str>) -> Result<ApiKey, ApiError> {
    let value = authorization.ok_or(ApiError::Unauthorized)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(ApiError::Unauthorized)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::Unauthorized);
    }
    ApiKey::parse(token.trim()).ok_or(ApiError::Unauthorized)
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account_id: String,
    pub key_id: String,
    pub key_name: String,
    pub key_prefix: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope {
                required: scope.as_str(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_hash_stably() {
        let key = ApiKey::generate();
        assert!(key.expose().starts_with("mky_"));
        assert_eq!(key.expose().len(), 4 + KEY_BODY_LEN);
        let again = ApiKey::parse(key.expose()).unwrap();
        assert_eq!(again.hash(), key.hash());
        assert_eq!(key.hash().len(), 64);
        assert_ne!(ApiKey::generate().hash(), key.hash());
        assert!(!format!("{key:?}").contains(&key.expose()[8..]));
    }

    #[test]
    fn rejects_malformed_keys_and_schemes() {
        let key = ApiKey::generate();
        let good = format!("Bearer {}", key.expose());
        assert!(bearer_key(Some(&good)).is_ok());
        assert!(bearer_key(Some(&format!("bearer {}", key.expose()))).is_ok());
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Basic abc"),
            Some(key.expose()),
            Some("Token mky_x"),
            Some("Bearer mky_short"),
            Some("Bearer sk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        ] {
            assert!(
                matches!(bearer_key(bad), Err(ApiError::Unauthorized)),
                "{bad:?}"
            );
        }
        let with_symbol = format!("Bearer {}!", &key.expose()[..key.expose().len() - 1]);
        assert!(bearer_key(Some(&with_symbol)).is_err());
    }

    #[test]
    fn scopes_round_trip() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), s);
        }
        assert!("jobs:admin".parse::<Scope>().is_err());
    }
}
