//! Token verification: only our pool's, our client's, unexpired tokens of the right use, signed
//! by a key of the pool's JWKS, are accepted.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TEST";
const CLIENT: &str = "our-client";
const KEY_A: &[u8] = include_bytes!("testdata/a.pem");
const KEY_A_PUB: &[u8] = include_bytes!("testdata/a.pub.pem");
const KEY_B: &[u8] = include_bytes!("testdata/b.pem");

fn verifier() -> TokenVerifier {
    let keys = HashMap::from([(
        "k1".to_string(),
        DecodingKey::from_rsa_pem(KEY_A_PUB).unwrap(),
    )]);
    // Nothing listens on port 9: an unknown kid cannot be fetched (and was just "fetched").
    TokenVerifier::new(
        ISSUER.into(),
        CLIENT.into(),
        "http://127.0.0.1:9/jwks.json".into(),
    )
    .with_keys(keys)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn id_claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "person-1",
        "aud": CLIENT,
        "token_use": "id",
        "email": "ada@example.com",
        "email_verified": true,
        "iat": now(),
        "exp": now() + 3600,
    })
}

fn access_claims() -> Value {
    json!({
        "iss": ISSUER,
        "sub": "person-1",
        "client_id": CLIENT,
        "token_use": "access",
        "iat": now(),
        "exp": now() + 3600,
    })
}

fn sign_with(claims: &Value, kid: &str, key: &[u8]) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_string());
    encode(&header, claims, &EncodingKey::from_rsa_pem(key).unwrap()).unwrap()
}

fn sign(claims: &Value) -> String {
    sign_with(claims, "k1", KEY_A)
}

fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

#[tokio::test]
async fn a_good_id_token_names_the_person() {
    let person = verifier()
        .verify_id_token(&sign(&id_claims()))
        .await
        .unwrap();
    assert_eq!(
        person,
        Person {
            sub: "person-1".into(),
            email: "ada@example.com".into()
        }
    );
    // moto's tokens carry no email_verified: absent is accepted, false is not.
    let mut no_flag = id_claims();
    no_flag.as_object_mut().unwrap().remove("email_verified");
    assert!(verifier().verify_id_token(&sign(&no_flag)).await.is_ok());
}

#[tokio::test]
async fn id_tokens_with_a_wrong_claim_are_refused() {
    let v = verifier();
    let cases = [
        (
            "another issuer",
            with(
                id_claims(),
                "iss",
                json!("https://cognito-idp.us-east-1.amazonaws.com/other"),
            ),
        ),
        (
            "another client",
            with(id_claims(), "aud", json!("their-client")),
        ),
        ("expired", with(id_claims(), "exp", json!(now() - 600))),
        (
            "an access token's use",
            with(id_claims(), "token_use", json!("access")),
        ),
        (
            "an unverified email",
            with(id_claims(), "email_verified", json!(false)),
        ),
    ];
    for (what, claims) in cases {
        let result = v.verify_id_token(&sign(&claims)).await;
        assert!(result.is_err(), "{what}: {result:?}");
    }
    assert!(matches!(
        v.verify_id_token(&sign(&with(id_claims(), "token_use", json!("access"))))
            .await,
        Err(TokenError::WrongUse(_))
    ));
}

#[tokio::test]
async fn keys_outside_the_jwks_are_refused() {
    let v = verifier();
    // An unknown kid: not in the cache, and the JWKS cannot vouch for it.
    assert!(matches!(
        v.verify_id_token(&sign_with(&id_claims(), "k2", KEY_B))
            .await,
        Err(TokenError::UnknownKey(_))
    ));
    // A known kid, but signed by another key.
    assert!(matches!(
        v.verify_id_token(&sign_with(&id_claims(), "k1", KEY_B))
            .await,
        Err(TokenError::Invalid(_))
    ));
    // Not RS256 (HS256 with the public key as the secret: the classic confusion).
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let forged = encode(&header, &id_claims(), &EncodingKey::from_secret(KEY_A_PUB)).unwrap();
    assert!(matches!(
        v.verify_id_token(&forged).await,
        Err(TokenError::Malformed(_))
    ));
    assert!(v.verify_id_token("not.a.token").await.is_err());
}

#[tokio::test]
async fn access_tokens_are_checked_for_client_and_use() {
    let v = verifier();
    assert_eq!(
        v.verify_access_token(&sign(&access_claims()))
            .await
            .unwrap(),
        "person-1"
    );
    assert!(matches!(
        v.verify_access_token(&sign(&with(access_claims(), "client_id", json!("theirs"))))
            .await,
        Err(TokenError::WrongClient)
    ));
    // An ID token is no access token.
    assert!(v.verify_access_token(&sign(&id_claims())).await.is_err());
    assert!(v
        .verify_access_token(&sign(&with(access_claims(), "exp", json!(now() - 600))))
        .await
        .is_err());
    assert!(v
        .verify_access_token(&sign(&with(
            access_claims(),
            "iss",
            json!("https://evil.example")
        )))
        .await
        .is_err());
}
