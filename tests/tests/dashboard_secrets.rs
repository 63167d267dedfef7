//! The dashboard's Secrets page (issue 15): a person adds a secret (its value never shown
//! again), a bad name is refused with the API's message and the form keeps the name but not
//! the value, the API sees the same secrets, and deleting asks first.

use mimiry_tests::web::{new_email, Browser};
use mimiry_tests::{call, record_secret, Stack};

const VALUE: &str = "dash-s3cr3t-Value-51c0ffee";

#[tokio::test]
async fn secrets_are_added_listed_and_deleted_on_the_page() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    browser.sign_up_and_log_in(&new_email("secrets")).await;
    let (_, key) = browser
        .create_key("secrets", &["secrets:read", "secrets:write"])
        .await;
    record_secret(VALUE);

    let empty = browser.get("/dashboard/secrets").await;
    assert_eq!(empty.status, 200, "{}", empty.html);
    assert!(empty.contains("id=\"no-secrets\""));

    // A name that cannot be a variable: the API's message; the value is not sent back.
    let refused = browser
        .submit(
            "/dashboard/secrets",
            "/dashboard/secrets",
            &[("name", "1-bad"), ("value", VALUE)],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.html);
    let api = call(
        "POST",
        &stack.url("/secrets"),
        Some(&key),
        Some(&serde_json::json!({ "name": "1-bad", "value": VALUE })),
    )
    .await;
    assert_eq!(refused.text_of("form-error").as_deref(), Some(api.error()));
    assert!(refused.contains("value=\"1-bad\""), "the name is kept");
    assert!(!refused.contains(VALUE), "the value is never echoed");

    let added = browser
        .submit(
            "/dashboard/secrets",
            "/dashboard/secrets",
            &[("name", "HF_TOKEN"), ("value", VALUE)],
        )
        .await;
    assert_eq!(
        (added.status, added.location()),
        (303, "/dashboard/secrets"),
        "{}",
        added.html
    );
    let listed = browser.get("/dashboard/secrets").await;
    assert!(
        listed.contains("data-secret=\"HF_TOKEN\""),
        "{}",
        listed.html
    );
    assert!(!listed.contains(VALUE));
    let api = call("GET", &stack.url("/secrets"), Some(&key), None).await;
    assert_eq!(api.body["secrets"][0]["name"], "HF_TOKEN", "{api:?}");

    // Deleting asks first; then it is gone for the API too.
    let confirm = browser.get("/dashboard/secrets/HF_TOKEN/delete").await;
    assert_eq!(confirm.status, 200);
    assert!(confirm.contains("id=\"delete-secret-confirm\""));
    assert_eq!(
        browser.get("/dashboard/secrets/NOPE/delete").await.status,
        404
    );
    let deleted = browser
        .submit(
            "/dashboard/secrets/HF_TOKEN/delete",
            "/dashboard/secrets/HF_TOKEN/delete",
            &[],
        )
        .await;
    assert_eq!(deleted.status, 303, "{}", deleted.html);
    let api = call("GET", &stack.url("/secrets"), Some(&key), None).await;
    assert_eq!(api.body["secrets"], serde_json::json!([]), "{api:?}");
}
