//! Webhooks in a real browser (issue 13): a person adds an endpoint from the sidebar (the
//! signing secret shown once), a job's status changes are delivered to a receiver on this
//! machine, the endpoint's page shows the delivery log, and the endpoint is deleted after a
//! confirmation.
//!
//! Each page is photographed at a laptop and a phone width (`target/screenshots/w0N-….png`)
//! and checked with axe-core: no serious or critical violation.

use mimiry_tests::browser::Browser;
use mimiry_tests::{call, record_secret, Stack, StackOptions};
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "Correct-horse-1";

/// A receiver on 127.0.0.1 that accepts everything; answers its URL and a count of requests.
async fn receiver() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, count)
}

#[tokio::test]
async fn a_person_adds_an_endpoint_reads_its_deliveries_and_deletes_it() {
    let stack = Stack::start(StackOptions {
        name: "browser-webhooks".into(),
        ..StackOptions::default()
    });
    let email = "hooked@example.com";
    let account = stack.account("100").await;
    stack
        .store()
        .await
        .link_email(&account.account_id, email)
        .await
        .unwrap();
    let (url, received) = receiver().await;

    let b = Browser::start(&stack.base_url).await;
    record_secret(PASSWORD);
    b.goto("/dashboard/signup").await;
    b.fill("email", email).await;
    b.fill("password", PASSWORD).await;
    b.click("#signup-submit").await;
    b.wait_for_path("/dashboard/verify").await;
    b.fill("code", "123456").await;
    b.click("#verify-submit").await;
    b.wait_for_path("/dashboard/login").await;
    b.fill("email", email).await;
    b.fill("password", PASSWORD).await;
    b.click("#login-submit").await;
    b.wait_for_path("/dashboard").await;

    // Webhooks, from the sidebar: none yet.
    b.click("#nav-webhooks").await;
    b.wait_for_path("/dashboard/webhooks").await;
    b.wait_for("#no-webhooks").await;
    b.check_page("w01-webhooks-empty").await;

    // Add: a private address is refused with the API's reason, then the receiver is added.
    b.click("#add-webhook").await;
    b.wait_for_path("/dashboard/webhooks/new").await;
    b.check_page("w02-webhook-new").await;
    b.fill("url", "https://10.0.0.1/hook").await;
    b.click("#add-webhook-submit").await;
    b.wait_for("#form-error").await;
    assert!(b.text("#form-error").await.contains("private address"));
    b.check_page("w03-webhook-refused").await;
    b.fill("url", &url).await;
    b.fill("description", "my laptop").await;
    b.click("#add-webhook-submit").await;
    b.wait_for("#new-webhook-secret").await;
    let secret = b.text("#new-webhook-secret").await;
    record_secret(&secret);
    assert!(secret.starts_with("whsec_"), "{secret}");
    b.check_page("w04-webhook-created").await;

    // A job runs; its four status changes reach the receiver.
    let job = call(
        "POST",
        &stack.url("/jobs"),
        Some(&account.key),
        Some(
            &json!({ "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04",
                      "startup_script": "echo hi", "auto_shutdown": true }),
        ),
    )
    .await;
    assert_eq!(job.status, 201, "{job:?}");
    let started = Instant::now();
    while received.load(Ordering::SeqCst) < 4 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "only {} deliveries",
            received.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The list, then the endpoint's delivery log.
    b.click("#back-to-webhooks").await;
    b.wait_for_path("/dashboard/webhooks").await;
    assert!(
        !b.body_text().await.contains(&secret[6..]),
        "secret shown again"
    );
    b.check_page("w05-webhooks").await;
    b.click(".webhook-url").await;
    b.wait_for("#deliveries").await;
    let log = b.text("#deliveries").await;
    for event in [
        "job.queued",
        "job.provisioning",
        "job.running",
        "job.completed",
    ] {
        assert!(log.contains(event), "{event} not in the log: {log}");
    }
    assert!(log.contains("delivered") && log.contains("204"), "{log}");
    b.check_page("w06-webhook-deliveries").await;

    // Delete, after a confirmation.
    b.goto("/dashboard/webhooks").await;
    b.click(".delete-link").await;
    b.wait_for("#delete-webhook-confirm").await;
    b.check_page("w07-webhook-delete").await;
    b.click("#delete-webhook-confirm").await;
    b.wait_for_path("/dashboard/webhooks").await;
    b.wait_for("#no-webhooks").await;
    assert!(b.text("#flash").await.contains("Webhook endpoint deleted"));
    b.close().await;
}
