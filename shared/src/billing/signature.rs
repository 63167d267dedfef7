//! Verifying `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX…][,v0=…]`: HMAC-SHA256 of
//! `TIMESTAMP.` + the raw body, keyed with the endpoint's signing secret (the whole `whsec_…`
//! string, as Stripe's libraries use it). Any `v1` may match any of our secrets (Stripe sends
//! one per active secret while a secret is rolled; we may hold the old and the new one).
//! Compared in constant time (`Mac::verify_slice`); a timestamp more than the tolerance away
//! from now is refused, so a captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's libraries' default tolerance.
pub const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no Stripe-Signature header")]
    Missing,
    #[error("the Stripe-Signature header has no timestamp or no v1 signature")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Expired,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `header` against `payload` at `now` (Unix seconds) with any of `secrets`.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[String],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => {
                // A signature that is not 64 hex digits cannot match: skip it, keep the others.
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err(SignatureError::Expired);
    }
    for secret in secrets {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(payload);
        if signatures
            .iter()
            .any(|signature| mac.clone().verify_slice(signature).is_ok())
        {
            return Ok(());
        }
    }
    Err(SignatureError::Mismatch)
}

/// The header Stripe would send (for tests and the fake's callers).
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    fn secrets(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_good_signature_passes_and_any_change_fails() {
        let header = sign("whsec_a", NOW, BODY);
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_a"]), NOW),
            Ok(())
        );
        assert_eq!(
            verify(
                Some(&header),
                b"{\"id\":\"evt_2\"}",
                &secrets(&["whsec_a"]),
                NOW
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &secrets(&["whsec_b"]), NOW),
            Err(SignatureError::Mismatch)
        );
        // The timestamp is signed too: moving it breaks the signature.
        let moved = header.replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(
            verify(Some(&moved), BODY, &secrets(&["whsec_a"]), NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn five_minutes_of_tolerance_either_way() {
        let header = sign("whsec_a", NOW, BODY);
        let s = secrets(&["whsec_a"]);
        assert_eq!(verify(Some(&header), BODY, &s, NOW + 300), Ok(()));
        assert_eq!(verify(Some(&header), BODY, &s, NOW - 300), Ok(()));
        assert_eq!(
            verify(Some(&header), BODY, &s, NOW + 301),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            verify(Some(&header), BODY, &s, NOW - 301),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn several_signatures_and_secrets_during_a_roll() {
        // Stripe signs with the old and the new secret: either of ours may match either v1.
        let old = sign("whsec_old", NOW, BODY);
        let new = sign("whsec_new", NOW, BODY);
        let both = format!("{old},{},v0=ignored", new.split_once(',').unwrap().1);
        assert_eq!(
            verify(Some(&both), BODY, &secrets(&["whsec_new"]), NOW),
            Ok(())
        );
        assert_eq!(
            verify(Some(&both), BODY, &secrets(&["whsec_old"]), NOW),
            Ok(())
        );
        assert_eq!(
            verify(Some(&new), BODY, &secrets(&["whsec_old", "whsec_new"]), NOW),
            Ok(())
        );
        assert_eq!(
            verify(Some(&both), BODY, &secrets(&["whsec_other"]), NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let s = secrets(&["whsec_a"]);
        assert_eq!(verify(None, BODY, &s, NOW), Err(SignatureError::Missing));
        for bad in [
            "",
            "t=abc,v1=00",
            "v1=00",
            &format!("t={NOW}"),
            &format!("t={NOW},v0=ab"),
        ] {
            assert_eq!(
                verify(Some(bad), BODY, &s, NOW),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(Some(&format!("t={NOW},v1=zz")), BODY, &s, NOW),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(Some(&format!("t={NOW},v1=00ff")), BODY, &s, NOW),
            Err(SignatureError::Mismatch)
        );
    }
}
