//! Every way a request can fail authentication or authorization, and account isolation, over
//! HTTP against the local stack.

use mimiry_shared::auth::{ApiKey, Scope};
use mimiry_tests::{call, call_until_refused, send, Stack};

const UNAUTHORIZED: &str = "Invalid or missing API key";

#[tokio::test]
async fn missing_or_malformed_credentials_are_refused() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let url = stack.url("/account");
    let client = reqwest::Client::new();
    let cases = [
        ("no header", client.get(&url)),
        (
            "wrong scheme",
            client
                .get(&url)
                .header("Authorization", format!("Basic {}", account.key)),
        ),
        (
            "no scheme",
            client
                .get(&url)
                .header("Authorization", account.key.clone()),
        ),
        (
            "empty bearer",
            client.get(&url).header("Authorization", "Bearer "),
        ),
        (
            "malformed key",
            client
                .get(&url)
                .header("Authorization", "Bearer mky_tooshort"),
        ),
        (
            "other prefix",
            client
                .get(&url)
                .header("Authorization", format!("Bearer sk_{}", &account.key[4..])),
        ),
        (
            "unknown key",
            client.get(&url).header(
                "Authorization",
                format!("Bearer {}", ApiKey::generate().expose()),
            ),
        ),
    ];
    for (what, request) in cases {
        let answer = send(request).await;
        assert_eq!(answer.status, 401, "{what}: {answer:?}");
        assert_eq!(answer.error(), UNAUTHORIZED, "{what}");
        assert_eq!(answer.body["code"], "unauthorized", "{what}");
        let request_id = answer.headers["x-request-id"].to_str().unwrap();
        assert_eq!(
            answer.body["request_id"], request_id,
            "{what}: request id in header and body"
        );
    }
}

#[tokio::test]
async fn revoked_key_is_refused() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let url = stack.url("/account");
    assert_eq!(
        call("GET", &url, Some(&account.key), None).await.status,
        200
    );
    let store = stack.store().await;
    let key_id = store.list_keys(&account.account_id).await.unwrap()[0]
        .key_id
        .clone();
    store
        .revoke_key(&account.account_id, &key_id)
        .await
        .unwrap();
    let answer = call_until_refused(&url, &account.key).await;
    assert_eq!(
        answer.status, 401,
        "still accepted after the key cache's TTL"
    );
    assert_eq!(answer.error(), UNAUTHORIZED);
}

#[tokio::test]
async fn account_shows_balance_and_the_calling_key() {
    let stack = Stack::shared();
    let account = stack.account("25.50").await;
    let answer = call("GET", &stack.url("/account"), Some(&account.key), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["account_id"], account.account_id.as_str());
    assert_eq!(answer.body["balance"], "25.50");
    assert_eq!(answer.body["held_credits"], "0.00");
    assert_eq!(answer.body["key"]["prefix"], &account.key[..8]);
    assert_eq!(
        answer.body["key"]["scopes"].as_array().unwrap().len(),
        Scope::ALL.len()
    );
    assert!(
        !answer.body.to_string().contains(&account.key[8..]),
        "the key itself is never echoed"
    );
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn a_key_without_scopes_may_read_its_account_only() {
    let stack = Stack::shared();
    let account = stack.account("1").await;
    let bare = stack.key(&account.account_id, &[]).await;
    assert_eq!(
        call("GET", &stack.url("/account"), Some(&bare), None)
            .await
            .status,
        200
    );
    for (method, path, scope) in [
        ("GET", "/jobs", "jobs:read"),
        ("GET", "/instances", "instances:read"),
        ("GET", "/ssh-keys", "ssh_keys:read"),
        ("DELETE", "/ssh-keys/x", "ssh_keys:write"),
        ("DELETE", "/jobs/x", "jobs:write"),
    ] {
        let answer = call(method, &stack.url(path), Some(&bare), None).await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert_eq!(answer.error(), "Insufficient scope");
        assert_eq!(answer.body["details"]["required_scope"], scope);
    }
    // A key with one scope reaches that scope's routes and no others.
    let reader = stack.key(&account.account_id, &[Scope::JobsRead]).await;
    assert_eq!(
        call("GET", &stack.url("/ssh-keys"), Some(&reader), None)
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn accounts_do_not_see_each_other() {
    let stack = Stack::shared();
    let a = stack.account("10").await;
    let b = stack.account("20").await;
    let seen_by_a = call("GET", &stack.url("/account"), Some(&a.key), None).await;
    let seen_by_b = call("GET", &stack.url("/account"), Some(&b.key), None).await;
    assert_eq!(seen_by_a.body["account_id"], a.account_id.as_str());
    assert_eq!(seen_by_a.body["balance"], "10.00");
    assert_eq!(seen_by_b.body["account_id"], b.account_id.as_str());
    assert_eq!(seen_by_b.body["balance"], "20.00");
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let answer = call("GET", &stack.url("/nope"), Some(&account.key), None).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["code"], "route_not_found");
    let answer = call("PATCH", &stack.url("/account"), Some(&account.key), None).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn last_use_is_recorded_but_not_on_every_request() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let store = stack.store().await;
    let before = store.list_keys(&account.account_id).await.unwrap()[0].last_used_at;
    assert_eq!(before, None);
    call("GET", &stack.url("/account"), Some(&account.key), None).await;
    let first = store.list_keys(&account.account_id).await.unwrap()[0].last_used_at;
    assert!(first.is_some());
    call("GET", &stack.url("/account"), Some(&account.key), None).await;
    let second = store.list_keys(&account.account_id).await.unwrap()[0].last_used_at;
    assert_eq!(first, second, "a second use within a minute writes nothing");
}

/// Every API-key route, whatever its method, names an unknown query parameter in a 400 (the
/// route table lists what each accepts), after authentication.
#[tokio::test]
async fn every_route_refuses_unknown_query_parameters() {
    use mimiry_shared::routes::api_routes;
    let stack = Stack::shared();
    let account = stack.account("0").await;
    for route in api_routes().filter(|r| r.access.needs_api_key()) {
        let path = route
            .path
            .replace("{id}", &uuid::Uuid::new_v4().to_string());
        let url = stack.url(&format!("{path}?bogus=1"));
        let answer = call(route.method, &url, Some(&account.key), None).await;
        assert_eq!(
            answer.status, 400,
            "{} {}: {answer:?}",
            route.method, route.path
        );
        assert_eq!(
            answer.body["details"]["field"], "bogus",
            "{} {}",
            route.method, route.path
        );
        let unauthenticated = call(route.method, &url, None, None).await;
        assert_eq!(
            unauthenticated.status, 401,
            "{} {}: the key is checked first",
            route.method, route.path
        );
    }
}
