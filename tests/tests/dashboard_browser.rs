//! The dashboard walked by a new person in a real browser (issue 10, point 6): sign up → verify
//! → log in → create an API key with two scopes, by keyboard alone → use it with the API (its
//! scopes answer, others are 403 `Insufficient scope`) → revoke it → 401 → add an SSH key →
//! a job submitted by API completes on the Jobs page → a second job is cancelled from the page.
//!
//! Every page is photographed at a laptop and a phone width (`target/screenshots/NN-page.png`,
//! `…-phone.png`) and checked with axe-core: no serious or critical violation. The stack is
//! the usual one (moto, with its Cognito, + the fake provider + the local server); the page
//! contract (ids, forms) is the dashboard's, written down in its templates.

// Shared with jobs.rs; this file uses a part of it.
#[allow(dead_code, unused_imports)]
mod jobs_support;

use fantoccini::key::Key;
use jobs_support::{cheap_job, get_job, submit_ok, wait_terminal, SHORT};
use mimiry_tests::browser::Browser;
use mimiry_tests::{
    call, call_until_refused, record_secret, ssh_public_key, Stack, StackOptions, TEST_ENV,
};
use serde_json::json;
use std::time::{Duration, Instant};

/// The guide's job (§9): its script, on the type and image of its example.
const GUIDE_SCRIPT: &str = "#!/bin/bash\nnvidia-smi\necho \"Hello from Mimiry!\"";
/// Credits a self-service account starts with on this stack, so the walk can run jobs without
/// an operator.
const SIGNUP_CREDIT: &str = "100";
const PASSWORD: &str = "Correct-horse-1";

fn stack() -> Stack {
    let mut env: Vec<(String, String)> = TEST_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("SIGNUP_CREDIT".into(), SIGNUP_CREDIT.into()));
    Stack::start(StackOptions {
        name: "browser".into(),
        env,
        ..StackOptions::default()
    })
}

#[tokio::test]
async fn a_new_person_walks_the_dashboard_from_sign_up_to_a_cancelled_job() {
    let started = Instant::now();
    let stack = stack();
    let b = Browser::start(&stack.base_url).await;
    // The stack is this test's own (fresh moto), so a plain address of ordinary length.
    let email = "new.person@example.com".to_string();
    println!("stack and browser up in {:?}", started.elapsed());

    // `/` leads to the dashboard, which sends a stranger to the log-in page.
    b.goto("/").await;
    b.wait_for_path("/dashboard/login").await;

    // Sign up (guide §2).
    b.goto("/dashboard/signup").await;
    b.check_page("01-signup").await;
    b.fill("email", &email).await;
    b.fill("password", PASSWORD).await;
    b.click("#signup-submit").await;

    // Verify: locally no email is sent; the page says so, and any code passes moto.
    b.wait_for_path("/dashboard/verify").await;
    b.wait_for("#local-code-hint").await;
    b.check_page("02-verify").await;
    b.fill("code", "123456").await;
    b.click("#verify-submit").await;

    // Log in; a wrong password first, which gets the one generic message.
    b.wait_for_path("/dashboard/login").await;
    b.check_page("03-login").await;
    b.fill("email", &email).await;
    b.fill("password", "Wrong-password-1").await;
    b.click("#login-submit").await;
    let error = b.text("#form-error").await;
    assert_eq!(error, "Incorrect email or password.");
    b.check_page("04-login-failed").await;
    b.fill("email", &email).await;
    b.fill("password", PASSWORD).await;
    b.click("#login-submit").await;

    // Home: the Credit Balance card and the balance in the header, from the sign-up credit.
    b.wait_for_path("/dashboard").await;
    assert_eq!(b.text("#balance-amount").await, "100.00");
    assert_eq!(b.text("#header-balance-amount").await, "100.00");
    assert!(b.text("#header-user").await.contains(&email));
    b.wait_for("a#add-credits").await;
    b.check_page("05-home").await;

    // Developer → API Keys, then the creation flow with the keyboard alone.
    b.click("#nav-api-keys").await;
    b.wait_for_path("/dashboard/api-keys").await;
    b.check_page("06-api-keys-empty").await;
    let enter = Key::Enter.to_string();
    b.tab_to("#create-api-key", 40).await;
    b.press(&enter).await;
    b.wait_for_path("/dashboard/api-keys/new").await;
    b.check_page("07-api-key-new").await;
    b.tab_to("#key-name", 40).await;
    b.press("walk-read-key").await;
    b.tab_to("#scope-jobs-read", 10).await;
    b.press(" ").await;
    b.tab_to("#scope-ssh_keys-read", 10).await;
    b.press(" ").await;
    b.tab_to("#create-key-submit", 10).await;
    b.press(&enter).await;
    let key = b.text("#new-api-key").await;
    assert!(key.starts_with("mky_"), "the new key: {key:?}");
    record_secret(&key);
    b.wait_for("#copy-api-key").await;
    b.wait_for("#key-warning").await;
    b.check_page("08-api-key-created").await;

    // The list shows the key by name, prefix and exactly the two scopes; never the key again.
    b.goto("/dashboard/api-keys").await;
    let row = "tr.api-key-row";
    assert_eq!(b.text(&format!("{row} .key-name")).await, "walk-read-key");
    let scopes = b.text(&format!("{row} .key-scopes")).await;
    assert!(
        scopes.contains("jobs:read")
            && scopes.contains("ssh_keys:read")
            && !scopes.contains("jobs:write"),
        "scopes shown: {scopes}"
    );
    assert!(
        !b.body_text().await.contains(&key),
        "the key is shown only once"
    );
    b.check_page("09-api-keys").await;

    // The key with the API: its two scopes answer, anything else is 403 Insufficient scope.
    for path in ["/jobs", "/ssh-keys"] {
        let answer = call("GET", &stack.url(path), Some(&key), None).await;
        assert_eq!(answer.status, 200, "GET {path}: {answer:?}");
    }
    let job = cheap_job(None, "echo never runs");
    for (method, path, body, scope) in [
        ("POST", "/jobs", Some(&job), "jobs:write"),
        ("GET", "/instances", None, "instances:read"),
    ] {
        let answer = call(method, &stack.url(path), Some(&key), body).await;
        assert_eq!(answer.status, 403, "{method} {path}: {answer:?}");
        assert_eq!(answer.error(), "Insufficient scope");
        assert_eq!(answer.body["details"]["required_scope"], scope);
    }

    // Revoke it from the page (with a confirmation); the API then answers 401.
    b.click(&format!("{row} a.revoke-link")).await;
    b.wait_for("#revoke-confirm").await;
    b.check_page("10-api-key-revoke").await;
    b.click("#revoke-confirm").await;
    b.wait_for_path("/dashboard/api-keys").await;
    let status = b.text(&format!("{row} .key-status")).await;
    assert!(
        status.contains("revoked"),
        "status after revoking: {status}"
    );
    b.check_page("11-api-keys-revoked").await;
    let answer = call_until_refused(&stack.url("/jobs"), &key).await;
    assert_eq!(answer.status, 401, "a revoked key: {answer:?}");

    // Compute → SSH Keys: a bad key gets the API's message, then a real one is added.
    b.click("#nav-ssh-keys").await;
    b.wait_for_path("/dashboard/ssh-keys").await;
    b.check_page("12-ssh-keys-empty").await;
    b.click("#add-ssh-key").await;
    b.wait_for_path("/dashboard/ssh-keys/new").await;
    b.check_page("13-ssh-key-new").await;
    b.fill("ssh-key-name", "my-laptop-key").await;
    b.fill("ssh-public-key", "ssh-ed25519 not-a-key").await;
    b.click("#add-ssh-key-submit").await;
    let error = b.text("#form-error").await;
    assert!(!error.is_empty(), "a bad key is refused with a message");
    b.check_page("14-ssh-key-refused").await;
    b.fill("ssh-key-name", "my-laptop-key").await;
    b.fill("ssh-public-key", &ssh_public_key()).await;
    b.click("#add-ssh-key-submit").await;
    b.wait_for_path("/dashboard/ssh-keys").await;
    assert_eq!(
        b.text("tr.ssh-key-row .ssh-key-name").await,
        "my-laptop-key"
    );
    let ssh_key_id = b.text("tr.ssh-key-row code.ssh-key-id").await;
    b.check_page("15-ssh-keys").await;

    // A key for jobs, made in the dashboard too (the mouse this time): what the guide's §9
    // needs and nothing more.
    b.click("#nav-api-keys").await;
    b.click("#create-api-key").await;
    b.fill("key-name", "walk-jobs-key").await;
    for scope in ["jobs:read", "jobs:write", "ssh_keys:read"] {
        b.check(&format!("scopes={scope}")).await;
    }
    b.click("#create-key-submit").await;
    let jobs_key = b.text("#new-api-key").await;
    record_secret(&jobs_key);

    // The guide's §9 job, submitted by API, watched on its page until it completes (the page
    // reloads itself while the job runs).
    let body = json!({
        "name": "my-first-job",
        "instance_type": "1V100.6V",
        "image": "ubuntu-22.04-cuda-12.0",
        "location": "FIN-01",
        "ssh_key_ids": [ssh_key_id],
        "startup_script": GUIDE_SCRIPT,
        "auto_shutdown": true
    });
    let first = submit_ok(&stack, &jobs_key, &body).await;
    b.click("#nav-jobs").await;
    b.wait_for_path("/dashboard/jobs").await;
    let link = format!("tr.job-row[data-job-id=\"{first}\"] a.job-link");
    b.click(&link).await;
    b.wait_for_path(&format!("/dashboard/jobs/{first}")).await;
    b.check_page("16-job-in-progress").await;
    // The check stopped the page's own reloading; a reload starts it again.
    b.reload().await;
    b.wait_for_within("#job-status[data-status=\"completed\"]", SHORT)
        .await;
    assert!(
        b.text("#job-output").await.contains("Hello from Mimiry!"),
        "the output tail"
    );
    assert_eq!(b.text("#job-exit-code").await, "0");
    // Its cost, split into boot / run / teardown once the instance's deletion is accepted.
    let split_deadline = Instant::now() + SHORT;
    while b
        .client()
        .find(fantoccini::Locator::Css("#job-cost-breakdown"))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < split_deadline,
            "no cost breakdown on the finished job"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.reload().await;
    }
    assert!(b
        .text("tr.cost-part[data-part=run]")
        .await
        .starts_with("run"));
    b.check_page("17-job-completed").await;
    assert_eq!(
        get_job(&stack, &jobs_key, &first).await.body["status"],
        "completed"
    );

    // A second job, long enough to be cancelled from its page.
    let second = submit_ok(&stack, &jobs_key, &cheap_job(None, "sleep 300")).await;
    b.click("#nav-jobs").await;
    b.wait_for_path("/dashboard/jobs").await;
    let status = b
        .text(&format!("tr.job-row[data-job-id=\"{first}\"] .job-status"))
        .await;
    assert_eq!(status, "completed");
    b.check_page("18-jobs").await;
    b.goto(&format!("/dashboard/jobs/{second}")).await;
    // This page reloads itself while the job runs: hold it still for the click.
    b.stop_timers().await;
    b.click("#cancel-job").await;
    b.wait_for("#cancel-job-confirm").await;
    b.check_page("19-job-cancel").await;
    b.click("#cancel-job-confirm").await;
    b.wait_for_path(&format!("/dashboard/jobs/{second}")).await;
    b.wait_for("#flash").await;
    let seen = wait_terminal(&stack, &jobs_key, &second, SHORT).await;
    seen.assert_ended("cancelled", None);
    b.wait_for_within(
        "#job-status[data-status=\"cancelled\"]",
        Duration::from_secs(20),
    )
    .await;
    b.check_page("20-job-cancelled").await;

    // The rest of the signed-in pages, then log out.
    b.goto("/dashboard/jobs?status=completed").await;
    b.wait_for(&format!("tr.job-row[data-job-id=\"{first}\"]"))
        .await;
    assert!(
        !b.body_text().await.contains(&second),
        "the filter hides the cancelled job"
    );
    b.check_page("21-jobs-filtered").await;
    b.goto("/dashboard").await;
    b.wait_for(&format!(
        "table#recent-jobs tr.job-row[data-job-id=\"{first}\"]"
    ))
    .await;
    b.check_page("22-home-with-jobs").await;
    b.click("a#add-credits").await;
    b.wait_for("#buy-credits").await;
    b.check_page("23-credits").await;
    b.click("#nav-support").await;
    b.wait_for_path("/dashboard/support").await;
    b.check_page("24-support").await;
    b.goto("/dashboard/logout").await;
    b.wait_for("#logout-confirm").await;
    b.check_page("25-logout").await;
    b.click("#logout-confirm").await;
    b.wait_for_path("/dashboard/login").await;
    b.goto("/dashboard/api-keys").await;
    b.wait_for_path("/dashboard/login").await;

    // The password pages, signed out.
    b.goto("/dashboard/forgot").await;
    b.check_page("26-forgot").await;
    b.fill("email", &email).await;
    b.click("#forgot-submit").await;
    b.wait_for_path("/dashboard/reset").await;
    b.check_page("27-reset").await;

    b.close().await;
    println!("walk done in {:?}", started.elapsed());
}
