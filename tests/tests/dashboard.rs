//! The dashboard over HTTP, as a browser without JavaScript uses it (guide §2, §3, §6, §7, §10,
//! §12): sign-up → verify → log in → API keys used on the API → revoke; SSH keys; jobs; and the
//! security of it all (sessions, CSRF, headers, other people's things, one sign-in message).

use futures_util::future::join_all;
use mimiry_shared::money::Micros;
use mimiry_shared::routes::{Access, ROUTES};
use mimiry_tests::web::{new_email, Browser, Page, PASSWORD};
use mimiry_tests::{call, call_until_refused, record_secret, ssh_public_key, Stack};
use serde_json::json;
use std::time::{Duration, Instant};

const UNAUTHORIZED: &str = "Invalid or missing API key";

fn assert_security_headers(label: &str, page: &Page) {
    let header = |name: &str| {
        page.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{label}: no {name} header"))
            .to_string()
    };
    let csp = header("content-security-policy");
    assert!(csp.contains("frame-ancestors 'none'"), "{label}: {csp}");
    assert!(csp.contains("default-src 'none'"), "{label}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{label}: {csp}");
    assert_eq!(header("x-content-type-options"), "nosniff", "{label}");
    assert!(!header("referrer-policy").is_empty(), "{label}");
    for cookie in page.headers.get_all("set-cookie") {
        let cookie = cookie.to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{label}: {cookie}"
        );
    }
}

/// The account id of a key (`GET /account`).
async fn account_of(stack: &Stack, key: &str) -> String {
    let answer = call("GET", &stack.url("/account"), Some(key), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["account_id"].as_str().unwrap().to_string()
}

/// Guide §2 + §3 with the pages, then the key on the API: allowed inside its scopes, 403
/// outside, revoked → 401. The key is on exactly one page, once.
#[tokio::test]
async fn a_newcomer_signs_up_and_creates_a_key_that_works_on_the_api() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    let email = new_email("newcomer");

    // Before signing in, every page of the account sends you to Log in.
    let home = browser.get("/dashboard").await;
    assert_eq!((home.status, home.location()), (303, "/dashboard/login"));
    let root = browser.get("/").await;
    assert_eq!((root.status, root.location()), (303, "/dashboard"));

    // The verify page says what the local stack does with codes.
    let signup = browser.get("/dashboard/signup").await;
    assert_eq!(signup.status, 200);
    assert!(signup.contains("Create Account"));
    browser.sign_up_and_log_in(&email).await;

    let home = browser.get("/dashboard").await;
    assert_eq!(home.status, 200);
    assert_eq!(home.text_of("balance-amount").as_deref(), Some("0.00"));
    assert_eq!(
        home.text_of("header-balance-amount").as_deref(),
        Some("0.00")
    );
    assert_eq!(home.text_of("header-user").as_deref(), Some(email.as_str()));
    assert!(
        home.contains("id=\"add-credits\""),
        "the Add Credits button"
    );
    assert_eq!(browser.get("/dashboard/credits").await.status, 200);

    let (created, key) = browser
        .create_key("my-first-key", &["jobs:read", "instances:read"])
        .await;
    assert!(key.starts_with("mky_") && key.len() == 47, "{key}");
    assert_eq!(
        created.headers.get("cache-control").unwrap(),
        "no-store",
        "the page with the key is never cached"
    );
    assert!(created.contains("only shown once"));
    assert_eq!(created.html.matches(key.as_str()).count(), 1);

    // Allowed on its scopes, 403 outside them.
    for path in ["/instances", "/jobs"] {
        let answer = call("GET", &stack.url(path), Some(&key), None).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
    }
    let refused = call("GET", &stack.url("/ssh-keys"), Some(&key), None).await;
    assert_eq!(refused.status, 403, "{refused:?}");
    assert_eq!(refused.error(), "Insufficient scope");
    let body = json!({ "name": "x", "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04" });
    let refused = call("POST", &stack.url("/jobs"), Some(&key), Some(&body)).await;
    assert_eq!(refused.status, 403, "{refused:?}");

    // Listed by name, prefix and scopes; never again in full.
    let keys = browser.get("/dashboard/api-keys").await;
    assert_eq!(keys.status, 200);
    assert!(keys.contains("my-first-key"));
    assert!(keys.contains(&key[..8]), "the display prefix");
    assert!(!keys.contains(&key), "the key is shown once only");
    assert!(keys.contains("jobs:read, instances:read"), "{}", keys.html);
    let key_id = keys
        .attribute_after("class=\"api-key-row\"", "data-key-id")
        .unwrap();

    // Revoke, with a confirmation page first.
    let confirm = browser
        .get(&format!("/dashboard/api-keys/{key_id}/revoke"))
        .await;
    assert_eq!(confirm.status, 200);
    let revoked = browser
        .submit(
            &format!("/dashboard/api-keys/{key_id}/revoke"),
            &format!("/dashboard/api-keys/{key_id}/revoke"),
            &[],
        )
        .await;
    assert_eq!(
        (revoked.status, revoked.location()),
        (303, "/dashboard/api-keys")
    );
    let answer = call_until_refused(&stack.url("/instances"), &key).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.error(), UNAUTHORIZED);
    let keys = browser.get("/dashboard/api-keys").await;
    assert!(keys.contains("revoked"), "{}", keys.html);
    assert!(
        keys.text_of("flash").is_some(),
        "a flash after the redirect"
    );

    // Log out: the session is gone, the pages send you to Log in again.
    let out = browser.submit("/dashboard", "/dashboard/logout", &[]).await;
    assert_eq!((out.status, out.location()), (303, "/dashboard/login"));
    let home = browser.get("/dashboard").await;
    assert_eq!((home.status, home.location()), (303, "/dashboard/login"));
}

/// Guide §6 "Via the Dashboard": the same checks and messages as `POST /ssh-keys`, the same
/// store (the API lists what the page added), and Delete.
#[tokio::test]
async fn ssh_keys_are_added_and_deleted_with_the_apis_own_rules() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    browser.sign_up_and_log_in(&new_email("ssh")).await;
    let (_, key) = browser
        .create_key("ssh", &["ssh_keys:read", "ssh_keys:write"])
        .await;

    // A private key pasted by mistake: the API's message, word for word.
    let private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----";
    let api = call(
        "POST",
        &stack.url("/ssh-keys"),
        Some(&key),
        Some(&json!({ "name": "oops", "public_key": private })),
    )
    .await;
    assert_eq!(api.status, 400, "{api:?}");
    let page = browser
        .submit(
            "/dashboard/ssh-keys/new",
            "/dashboard/ssh-keys",
            &[("name", "oops"), ("public_key", private)],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.html);
    assert_eq!(page.text_of("form-error").as_deref(), Some(api.error()));

    let public_key = ssh_public_key();
    let added = browser
        .submit(
            "/dashboard/ssh-keys/new",
            "/dashboard/ssh-keys",
            &[("name", "my-laptop-key"), ("public_key", &public_key)],
        )
        .await;
    assert_eq!(
        (added.status, added.location()),
        (303, "/dashboard/ssh-keys"),
        "{}",
        added.html
    );
    let listed = call("GET", &stack.url("/ssh-keys"), Some(&key), None).await;
    let keys = listed.body["ssh_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{listed:?}");
    assert_eq!(keys[0]["name"], "my-laptop-key");
    let id = keys[0]["id"].as_str().unwrap().to_string();
    let page = browser.get("/dashboard/ssh-keys").await;
    assert!(page.contains(&id) && page.contains("my-laptop-key"));

    // The same key again: the API's 409 message.
    let again = browser
        .submit(
            "/dashboard/ssh-keys/new",
            "/dashboard/ssh-keys",
            &[("name", "twice"), ("public_key", &public_key)],
        )
        .await;
    assert_eq!(again.status, 409, "{}", again.html);
    assert!(again
        .text_of("form-error")
        .unwrap()
        .starts_with("This SSH key is already in your account"));

    let deleted = browser
        .submit(
            &format!("/dashboard/ssh-keys/{id}/delete"),
            &format!("/dashboard/ssh-keys/{id}/delete"),
            &[],
        )
        .await;
    assert_eq!(
        (deleted.status, deleted.location()),
        (303, "/dashboard/ssh-keys")
    );
    let listed = call("GET", &stack.url("/ssh-keys"), Some(&key), None).await;
    assert_eq!(listed.body["ssh_keys"], json!([]), "{listed:?}");
}

async fn submit_job(stack: &Stack, key: &str, name: &str, script: &str) -> String {
    let body = json!({
        "name": name,
        "instance_type": "CPU.4V.16G",
        "image": "ubuntu-22.04",
        "location": "FIN-01",
        "startup_script": script,
    });
    let answer = call("POST", &stack.url("/jobs"), Some(key), Some(&body)).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    answer.body["id"].as_str().unwrap().to_string()
}

/// Guide §10–§11 on the pages: the list (filter), a job's detail to completion with its output,
/// and Cancel for a second job.
#[tokio::test]
async fn jobs_are_followed_and_cancelled_on_the_pages() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    browser.sign_up_and_log_in(&new_email("jobs")).await;
    let (_, key) = browser
        .create_key("jobs", &["jobs:read", "jobs:write"])
        .await;
    let account = account_of(stack, &key).await;
    stack
        .store()
        .await
        .add_credits(
            &account,
            Micros::parse_decimal("50").unwrap(),
            "test credits",
        )
        .await
        .unwrap();
    let header = browser.get("/dashboard").await;
    assert_eq!(
        header.text_of("header-balance-amount").as_deref(),
        Some("50.00")
    );

    let done = submit_job(
        stack,
        &key,
        "hello-job",
        "echo hello-from-the-dashboard-test",
    )
    .await;
    let long = submit_job(stack, &key, "long-job", "sleep 300").await;

    let list = browser.get("/dashboard/jobs").await;
    assert_eq!(list.status, 200);
    assert!(
        list.contains(&done) && list.contains(&long),
        "{}",
        list.html
    );

    // Watch the first one complete on its page.
    let deadline = Instant::now() + Duration::from_secs(90);
    let detail = loop {
        let page = browser.get(&format!("/dashboard/jobs/{done}")).await;
        assert_eq!(page.status, 200);
        let status = page.text_of("job-status").unwrap();
        if status == "completed" || status == "failed" || Instant::now() > deadline {
            break page;
        }
        assert!(
            page.contains("data-poll=\"1\""),
            "a running job's page polls"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        detail.text_of("job-status").as_deref(),
        Some("completed"),
        "{}",
        detail.html
    );
    assert_eq!(detail.text_of("job-exit-code").as_deref(), Some("0"));
    assert!(detail
        .text_of("job-output")
        .unwrap()
        .contains("hello-from-the-dashboard-test"));
    assert!(
        !detail.contains("data-poll"),
        "a finished job's page stops polling"
    );
    assert!(!detail.contains("id=\"cancel-job\""), "nothing to cancel");

    let completed = browser.get("/dashboard/jobs?status=completed").await;
    assert!(completed.contains(&done) && !completed.contains(&long));
    assert_eq!(
        browser.get("/dashboard/jobs?status=nonsense").await.status,
        400
    );

    // Cancel the second from its page.
    let page = browser.get(&format!("/dashboard/jobs/{long}")).await;
    assert!(page.contains("id=\"cancel-job\""));
    let cancelled = browser
        .submit(
            &format!("/dashboard/jobs/{long}/cancel"),
            &format!("/dashboard/jobs/{long}/cancel"),
            &[],
        )
        .await;
    assert_eq!(cancelled.status, 303, "{}", cancelled.html);
    assert_eq!(cancelled.location(), format!("/dashboard/jobs/{long}"));
    let api = call(
        "GET",
        &stack.url(&format!("/jobs/{long}")),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(api.body["cancel_requested"], true, "{api:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = browser.get(&format!("/dashboard/jobs/{long}")).await;
        if page.text_of("job-status").as_deref() == Some("cancelled") {
            break;
        }
        assert!(Instant::now() < deadline, "not cancelled: {}", page.html);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A finished job cannot be cancelled: the API's 409 message.
    let again = browser
        .submit(
            &format!("/dashboard/jobs/{done}"),
            &format!("/dashboard/jobs/{done}/cancel"),
            &[],
        )
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(
        again.text_of("error-message").as_deref(),
        Some("Job is already completed")
    );
}

/// Every page of one person's things is a 404 to another person, and their forms change
/// nothing.
#[tokio::test]
async fn another_persons_things_are_not_found() {
    let stack = Stack::shared();
    let alice = Browser::new(stack);
    alice.sign_up_and_log_in(&new_email("alice")).await;
    let (_, alice_key) = alice
        .create_key(
            "alice",
            &["ssh_keys:write", "ssh_keys:read", "jobs:write", "jobs:read"],
        )
        .await;
    let account = account_of(stack, &alice_key).await;
    stack
        .store()
        .await
        .add_credits(
            &account,
            Micros::parse_decimal("20").unwrap(),
            "test credits",
        )
        .await
        .unwrap();
    let ssh_key = mimiry_tests::add_ssh_key(stack, &alice_key).await;
    let job = submit_job(stack, &alice_key, "alice-job", "sleep 300").await;
    let keys = alice.get("/dashboard/api-keys").await;
    let key_id = keys
        .attribute_after("class=\"api-key-row\"", "data-key-id")
        .unwrap();

    let mallory = Browser::new(stack);
    mallory.sign_up_and_log_in(&new_email("mallory")).await;
    let token = mallory.get("/dashboard").await.csrf();
    for (get, post) in [
        (
            format!("/dashboard/api-keys/{key_id}/revoke"),
            format!("/dashboard/api-keys/{key_id}/revoke"),
        ),
        (
            format!("/dashboard/ssh-keys/{ssh_key}/delete"),
            format!("/dashboard/ssh-keys/{ssh_key}/delete"),
        ),
        (
            format!("/dashboard/jobs/{job}"),
            format!("/dashboard/jobs/{job}/cancel"),
        ),
        (
            format!("/dashboard/jobs/{job}/cancel"),
            format!("/dashboard/jobs/{job}/cancel"),
        ),
    ] {
        let page = mallory.get(&get).await;
        assert_eq!(page.status, 404, "GET {get}: {}", page.html);
        let page = mallory.post(&post, &[("csrf", &token)]).await;
        assert_eq!(page.status, 404, "POST {post}: {}", page.html);
    }
    for path in [
        "/dashboard/jobs",
        "/dashboard",
        "/dashboard/ssh-keys",
        "/dashboard/api-keys",
    ] {
        let page = mallory.get(path).await;
        assert!(
            !page.contains(&job) && !page.contains(&ssh_key) && !page.contains(&key_id),
            "{path}"
        );
    }
    // Nothing of Alice's changed.
    assert_eq!(
        call("GET", &stack.url("/ssh-keys"), Some(&alice_key), None)
            .await
            .status,
        200
    );
    let listed = call("GET", &stack.url("/ssh-keys"), Some(&alice_key), None).await;
    assert_eq!(listed.body["ssh_keys"].as_array().unwrap().len(), 1);
    let api = call(
        "GET",
        &stack.url(&format!("/jobs/{job}")),
        Some(&alice_key),
        None,
    )
    .await;
    assert_eq!(api.body["cancel_requested"], false, "{api:?}");
    let _ = call(
        "DELETE",
        &stack.url(&format!("/jobs/{job}")),
        Some(&alice_key),
        None,
    )
    .await;
}

/// Every state-changing form needs the visitor's own CSRF token: without it, or with another
/// visitor's, the answer is 403 and nothing happens.
#[tokio::test]
async fn forms_without_the_visitors_csrf_token_are_refused() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    let email = new_email("csrf");
    browser.sign_up_and_log_in(&email).await;
    let (_, key) = browser.create_key("kept", &["instances:read"]).await;
    let key_id = browser
        .get("/dashboard/api-keys")
        .await
        .attribute_after("class=\"api-key-row\"", "data-key-id")
        .unwrap();
    let stranger = Browser::new(stack);
    let foreign = stranger.get("/dashboard/login").await.csrf();
    let id = uuid::Uuid::new_v4().to_string();
    let mut posts = 0;
    for route in ROUTES.iter().filter(|r| !r.is_api() && r.method == "POST") {
        let path = route.path.replace(
            "{id}",
            if route.path.contains("api-keys") {
                &key_id
            } else {
                &id
            },
        );
        for (what, fields) in [
            ("no token", vec![("name", "x"), ("scopes", "jobs:read")]),
            (
                "another visitor's token",
                vec![("csrf", foreign.as_str()), ("name", "x")],
            ),
            (
                "a forged token",
                vec![
                    ("csrf", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
                    ("name", "x"),
                ],
            ),
        ] {
            let page = browser.post(&path, &fields).await;
            assert_eq!(page.status, 403, "POST {path} with {what}: {}", page.html);
            assert_security_headers(&path, &page);
        }
        posts += 1;
    }
    assert!(posts >= 10, "every POST page: {posts}");
    // Still signed in, the key still works, and no key was created.
    let answer = call("GET", &stack.url("/instances"), Some(&key), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let keys = browser.get("/dashboard/api-keys").await;
    assert_eq!(keys.html.matches("class=\"api-key-row\"").count(), 1);
}

/// Every page answers with the security headers; signed-in pages redirect to Log in without a
/// session — an API key is no session.
#[tokio::test]
async fn every_page_carries_the_security_headers_and_needs_a_session() {
    let stack = Stack::shared();
    let account = stack.account("0").await;
    let anonymous = Browser::new(stack);
    let signed_in = Browser::new(stack);
    signed_in.sign_up_and_log_in(&new_email("headers")).await;
    let id = uuid::Uuid::new_v4().to_string();
    let mut gets = 0;
    for route in ROUTES.iter().filter(|r| !r.is_api() && r.method == "GET") {
        let path = route
            .path
            .replace("{id}", &id)
            .replace("{file}", "style.css");
        let page = anonymous.get(&path).await;
        assert_security_headers(&path, &page);
        if route.access == Access::Session {
            assert_eq!(
                (page.status, page.location()),
                (303, "/dashboard/login"),
                "{path}"
            );
            let with_key = mimiry_tests::send(
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap()
                    .get(stack.url(&path))
                    .header("Authorization", format!("Bearer {}", account.key)),
            )
            .await;
            assert_eq!(with_key.status, 303, "{path} with an API key");
        }
        let page = signed_in.get(&path).await;
        assert_security_headers(&path, &page);
        assert!(page.status < 500, "{path}: {}", page.status);
        gets += 1;
    }
    assert!(gets >= 15, "{gets}");
    let css = anonymous.get("/dashboard/static/style.css").await;
    assert_eq!(
        css.headers.get("content-type").unwrap(),
        "text/css; charset=utf-8"
    );
    assert_eq!(anonymous.get("/dashboard/static/nope.js").await.status, 404);
}

/// One message for every failed sign-in (no telling which emails have accounts); an unverified
/// person is sent to verify.
#[tokio::test]
async fn sign_in_failures_say_one_generic_thing() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    let email = new_email("generic");
    browser.sign_up_and_log_in(&email).await;
    let out = browser.submit("/dashboard", "/dashboard/logout", &[]).await;
    assert_eq!(out.status, 303);

    let fresh = Browser::new(stack);
    let mut answers = Vec::new();
    for (who, password) in [
        (email.as_str(), "Wrong-password-1"),
        ("nobody-at-all@example.com", "Wrong-password-1"),
        (email.as_str(), ""),
    ] {
        let page = fresh
            .submit(
                "/dashboard/login",
                "/dashboard/login",
                &[("email", who), ("password", password)],
            )
            .await;
        answers.push((page.status, page.text_of("form-error").unwrap_or_default()));
    }
    assert_eq!(
        answers[0], answers[1],
        "known and unknown emails look the same"
    );
    assert_eq!(
        answers[0],
        (401, "Incorrect email or password.".to_string())
    );
    assert_eq!(answers[2].0, 400, "an empty password is a form problem");

    // Signed up, not verified: the right password leads to the verify page.
    let unverified = new_email("unverified");
    let signed_up = fresh
        .submit(
            "/dashboard/signup",
            "/dashboard/signup",
            &[("email", &unverified), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(signed_up.status, 303);
    let page = fresh
        .submit(
            "/dashboard/login",
            "/dashboard/login",
            &[("email", &unverified), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(page.status, 303);
    assert!(
        page.location().starts_with("/dashboard/verify?email="),
        "{}",
        page.location()
    );
    // A weak password is refused with the policy.
    let weak = fresh
        .submit(
            "/dashboard/signup",
            "/dashboard/signup",
            &[("email", &new_email("weak")), ("password", "short")],
        )
        .await;
    assert_eq!(weak.status, 400);
    assert!(weak
        .text_of("form-error")
        .unwrap()
        .contains("at least 8 characters"));
}

/// Forgot password → reset with a code → log in with the new password, not the old one.
#[tokio::test]
async fn a_forgotten_password_is_reset() {
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    let email = new_email("reset");
    browser.sign_up_and_log_in(&email).await;
    browser.submit("/dashboard", "/dashboard/logout", &[]).await;
    let forgot = browser
        .submit(
            "/dashboard/forgot",
            "/dashboard/forgot",
            &[("email", &email)],
        )
        .await;
    assert_eq!(forgot.status, 303);
    let reset_path = forgot.location().to_string();
    let new_password = "Another-horse-2";
    record_secret(new_password);
    let reset = browser
        .submit(
            &reset_path,
            "/dashboard/reset",
            &[
                ("email", &email),
                ("code", "123456"),
                ("password", new_password),
            ],
        )
        .await;
    assert_eq!(
        (reset.status, reset.location()),
        (303, "/dashboard/login"),
        "{}",
        reset.html
    );
    let old = browser
        .submit(
            "/dashboard/login",
            "/dashboard/login",
            &[("email", &email), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(old.status, 401);
    browser.log_in(&email, new_password).await;
}

/// Accounts follow people: concurrent first sign-ins make one account (with one sign-up credit
/// in the ledger); an operator's link opens an existing account.
#[tokio::test]
async fn first_sign_ins_make_one_account_and_links_open_existing_ones() {
    let stack = Stack::shared();
    let store = stack.store().await;
    let sub = uuid::Uuid::new_v4().to_string();
    let credit = Micros::parse_decimal("5").unwrap();
    let accounts =
        join_all((0..8).map(|_| store.account_for_person(&sub, "race@example.com", credit))).await;
    let ids: std::collections::BTreeSet<String> = accounts
        .into_iter()
        .map(|a| a.expect("sign-in").account_id)
        .collect();
    assert_eq!(ids.len(), 1, "one account: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    let account = store.get_account(&id).await.unwrap().unwrap();
    assert_eq!(
        (account.balance_micros, account.added_micros),
        (credit.0, credit.0)
    );
    let ledger = store.ledger(&id).await.unwrap();
    assert_eq!(ledger.len(), 1, "{ledger:?}");
    assert_eq!(
        (ledger[0].kind.as_str(), ledger[0].amount_micros),
        ("credit", credit.0)
    );

    // An admin-made account, linked to an email before its person ever signs in.
    let existing = stack.account("42").await;
    let email = new_email("linked");
    let out = std::process::Command::new(mimiry_tests::bin("mimiry-admin"))
        .args([
            "link-user",
            "--account",
            &existing.account_id,
            "--email",
            &email,
        ])
        .env("AWS_ENDPOINT_URL", &stack.moto_url)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("TABLE_NAME", &stack.table)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let browser = Browser::new(stack);
    browser.sign_up_and_log_in(&email).await;
    let home = browser.get("/dashboard").await;
    assert_eq!(
        home.text_of("header-balance-amount").as_deref(),
        Some("42.00")
    );
    // The admin's key keeps working, and the dashboard sees its account.
    assert_eq!(account_of(stack, &existing.key).await, existing.account_id);
    assert!(browser
        .get("/dashboard/api-keys")
        .await
        .contains("test key"));
}

/// A session lives as long as its access token; then the refresh token renews it — until Log
/// out, whose global sign-out revokes the refresh token at Cognito, so even a copy kept from
/// before is worthless. A session cookie changed by hand is no session.
#[tokio::test]
async fn sessions_are_renewed_until_log_out_revokes_them() {
    use mimiry_dashboard::session::{Session, Signer};
    let stack = Stack::shared();
    let browser = Browser::new(stack);
    browser.sign_up_and_log_in(&new_email("renew")).await;
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&stack.moto_url)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await;
    let key = aws_sdk_secretsmanager::Client::new(&config)
        .get_secret_value()
        .secret_id("mimiry/dashboard-session-key")
        .send()
        .await
        .unwrap()
        .secret_string()
        .unwrap()
        .to_string();
    let signer = Signer::new(key.as_bytes());
    let sealed = browser.cookie("mimiry_session").expect("a session cookie");
    record_secret(&sealed);
    let session: Session = signer.open(&sealed).expect("our own signature");
    let refresh = browser.cookie("mimiry_refresh").expect("a refresh cookie");
    record_secret(&refresh);
    let expired = signer.seal(&Session {
        exp: chrono::Utc::now().timestamp() - 10,
        ..session.clone()
    });

    // Expired: renewed from the refresh token, same person, same account, a later expiry.
    browser.set_cookie("mimiry_session", &expired);
    let home = browser.get("/dashboard").await;
    assert_eq!(home.status, 200, "renewed: {}", home.location());
    let renewed = signer
        .open(&browser.cookie("mimiry_session").unwrap())
        .unwrap();
    assert_eq!(
        (renewed.sub.as_str(), renewed.account_id.as_str()),
        (session.sub.as_str(), session.account_id.as_str())
    );
    assert!(renewed.exp > chrono::Utc::now().timestamp());

    // Tampered: another account id under the old signature is no session at all.
    let (_, tag) = sealed.split_once('.').unwrap();
    let mut other = session.clone();
    other.account_id = uuid::Uuid::new_v4().to_string();
    let payload = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        serde_json::to_vec(&other).unwrap(),
    );
    browser.set_cookie("mimiry_session", &format!("{payload}.{tag}"));
    let page = browser.get("/dashboard").await;
    assert_eq!((page.status, page.location()), (303, "/dashboard/login"));

    // Log out (signed in again first), then replay the old refresh token: revoked.
    browser.set_cookie("mimiry_session", &signer.seal(&renewed));
    assert_eq!(browser.get("/dashboard").await.status, 200);
    let out = browser.submit("/dashboard", "/dashboard/logout", &[]).await;
    assert_eq!(out.status, 303);
    assert!(
        browser.cookie("mimiry_refresh").is_none(),
        "Log out clears it"
    );
    browser.set_cookie("mimiry_session", &expired);
    browser.set_cookie("mimiry_refresh", &refresh);
    let page = browser.get("/dashboard").await;
    assert_eq!(
        (page.status, page.location()),
        (303, "/dashboard/login"),
        "a refresh token from before Log out must not renew a session"
    );
}
