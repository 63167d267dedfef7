//! The browser session, as signed cookies (no session table): `mimiry_session` says who is
//! signed in until when, `mimiry_sid` identifies the visitor before sign-in, and every form's
//! CSRF token is an HMAC of the visitor's session id. The key comes from Secrets Manager, once
//! per container, so a cold start logs nobody out.
//!
//! Revocation: a session cookie lives as long as the Cognito access token it was made from
//! (1 h); then it is renewed from the refresh token (`mimiry_refresh`), which Log out revokes
//! at Cognito (global sign-out) — so a stolen session cookie is good for at most an hour.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub const SESSION_COOKIE: &str = "mimiry_session";
pub const SID_COOKIE: &str = "mimiry_sid";
pub const REFRESH_COOKIE: &str = "mimiry_refresh";
pub const FLASH_COOKIE: &str = "mimiry_flash";
/// Cookies are sent only to the dashboard's pages, never to the API.
pub const COOKIE_PATH: &str = "/dashboard";
/// Cognito's refresh tokens last 30 days by default; so does their cookie.
pub const REFRESH_MAX_AGE_SECS: i64 = 30 * 24 * 3600;

/// Who is signed in. Signed, not encrypted: it holds nothing the person may not see.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    /// The visitor's session id: CSRF tokens are bound to it; a new one at every sign-in.
    pub sid: String,
    pub sub: String,
    pub email: String,
    pub account_id: String,
    /// Unix seconds; the access token's expiry.
    pub exp: i64,
    /// Cognito's access token, for the global sign-out at Log out.
    pub access_token: String,
}

/// The HMAC key of sessions and CSRF tokens.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl Signer {
    pub fn new(key: &[u8]) -> Signer {
        Signer { key: key.to_vec() }
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        // Domain separation: a CSRF token can never pass for a session signature.
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(data);
        mac
    }

    /// `payload.signature`, both base64url.
    pub fn seal(&self, session: &Session) -> String {
        let payload = B64.encode(serde_json::to_vec(session).expect("a session serializes"));
        let tag = self
            .mac("session", payload.as_bytes())
            .finalize()
            .into_bytes();
        format!("{payload}.{}", B64.encode(tag))
    }

    /// The session in a cookie value, if its signature is ours (expiry is the caller's).
    pub fn open(&self, value: &str) -> Option<Session> {
        let (payload, tag) = value.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        self.mac("session", payload.as_bytes())
            .verify_slice(&tag)
            .ok()?;
        serde_json::from_slice(&B64.decode(payload).ok()?).ok()
    }

    pub fn csrf_token(&self, sid: &str) -> String {
        B64.encode(self.mac("csrf", sid.as_bytes()).finalize().into_bytes())
    }

    /// Constant-time check of a form's token against the visitor's session id.
    pub fn csrf_ok(&self, sid: &str, token: Option<&str>) -> bool {
        let Some(tag) = token.and_then(|t| B64.decode(t).ok()) else {
            return false;
        };
        !sid.is_empty() && self.mac("csrf", sid.as_bytes()).verify_slice(&tag).is_ok()
    }
}

/// 128 random bits, base64url.
pub fn new_sid() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// A `Set-Cookie` value. `max_age` 0 deletes the cookie; `None` makes it a browser-session one.
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> String {
    let mut cookie = format!("{name}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Lax");
    if secure {
        cookie.push_str("; Secure");
    }
    if let Some(age) = max_age {
        cookie.push_str(&format!("; Max-Age={age}"));
    }
    cookie
}

pub fn clear_cookie(name: &str, secure: bool) -> String {
    set_cookie(name, "", Some(0), secure)
}

/// `Secure` cookies everywhere but plain http on this machine (the local stack): a browser
/// would not send them back over http to another host.
pub fn secure_cookies(dashboard_url: &str) -> bool {
    let local = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    !local.iter().any(|p| dashboard_url.starts_with(p))
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            sid: new_sid(),
            sub: "s".into(),
            email: "a@b.c".into(),
            account_id: "acc".into(),
            exp: 1,
            access_token: "t".into(),
        }
    }

    #[test]
    fn sessions_open_only_with_our_signature() {
        let signer = Signer::new(b"key one");
        let s = session();
        let sealed = signer.seal(&s);
        assert_eq!(signer.open(&sealed), Some(s.clone()));
        assert_eq!(Signer::new(b"key two").open(&sealed), None);
        // A payload changed to another account, with the old signature.
        let (_, tag) = sealed.split_once('.').unwrap();
        let mut other = s;
        other.account_id = "victim".into();
        let forged = format!("{}.{tag}", B64.encode(serde_json::to_vec(&other).unwrap()));
        assert_eq!(signer.open(&forged), None);
        assert_eq!(signer.open("garbage"), None);
    }

    #[test]
    fn csrf_tokens_are_bound_to_the_session_id() {
        let signer = Signer::new(b"k");
        let token = signer.csrf_token("sid-1");
        assert!(signer.csrf_ok("sid-1", Some(&token)));
        assert!(!signer.csrf_ok("sid-2", Some(&token)));
        assert!(!signer.csrf_ok("sid-1", None));
        assert!(!signer.csrf_ok("sid-1", Some("")));
        assert!(!signer.csrf_ok("", Some(&signer.csrf_token(""))));
        // A session signature is no CSRF token.
        assert!(!Signer::new(b"k").csrf_ok("sid-1", Some(&B64.encode([0u8; 32]))));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_off_loopback() {
        let c = set_cookie("a", "b", None, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(secure_cookies("https://mimiry.example"));
        assert!(secure_cookies("http://mimiry.example"));
        assert!(!secure_cookies("http://127.0.0.1:3000"));
    }
}
