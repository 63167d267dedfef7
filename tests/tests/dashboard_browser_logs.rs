//! A job's page in a real browser (issue 13): its events timeline, and its log followed live.
//! The wrapper really runs (fake DataCrunch in execute mode) and prints a line a second; the
//! page shows the lines as they come without reloading (app.js long-polls
//! `/dashboard/jobs/{id}/logs`), and reloads itself once the job's status changes. The log
//! route answers only the session's own account's jobs.
//!
//! Each page is photographed at a laptop and a phone width (`target/screenshots/l0N-….png`)
//! and checked with axe-core: no serious or critical violation.

use mimiry_tests::browser::Browser;
use mimiry_tests::{call, record_secret, Stack, StackOptions};
use serde_json::json;
use std::time::Duration;

const PASSWORD: &str = "Correct-horse-1";

#[tokio::test]
async fn a_person_watches_a_job_print_on_its_page() {
    let stack = Stack::start(StackOptions {
        name: "browser-logs".into(),
        ..StackOptions::default()
    });
    let email = "watcher@example.com";
    let account = stack.account("100").await;
    stack
        .store()
        .await
        .link_email(&account.account_id, email)
        .await
        .unwrap();
    let script = "#!/bin/bash\necho 'Loading the data set'\n\
                  for i in $(seq 1 25); do echo \"epoch $i/25 loss=0.$((100 - i))\"; sleep 1; done\n\
                  echo 'Training finished' >&2";
    let job = call(
        "POST",
        &stack.url("/jobs"),
        Some(&account.key),
        Some(
            &json!({ "name": "train-model", "instance_type": "CPU.4V.16G",
                       "image": "ubuntu-22.04", "location": "FIN-01",
                       "startup_script": script, "auto_shutdown": true }),
        ),
    )
    .await;
    assert_eq!(job.status, 201, "{job:?}");
    let id = job.body["id"].as_str().unwrap().to_string();
    // Another account's job: its log must not be readable from this session.
    let other = stack.account("100").await;
    let foreign = call(
        "POST",
        &stack.url("/jobs"),
        Some(&other.key),
        Some(
            &json!({ "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04",
                       "location": "FIN-01", "startup_script": "echo not-yours" }),
        ),
    )
    .await;
    assert_eq!(foreign.status, 201, "{foreign:?}");
    let foreign_id = foreign.body["id"].as_str().unwrap().to_string();

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

    b.goto(&format!("/dashboard/jobs/{id}")).await;
    // The page reloads itself when the status changes; once running, mark this page load
    // and see lines arrive on it: appended by the follower, not by a reload.
    b.wait_for_text_within("epoch 2/25", Duration::from_secs(90))
        .await;
    b.wait_for("#job-status[data-status=running]").await;
    b.client()
        .execute("window.mimiryMark = 'same page';", vec![])
        .await
        .unwrap();
    b.wait_for_text_within("epoch 6/25", Duration::from_secs(30))
        .await;
    let mark = b
        .client()
        .execute("return window.mimiryMark || null;", vec![])
        .await
        .unwrap();
    assert_eq!(
        mark,
        json!("same page"),
        "the new lines came without a reload"
    );
    assert!(b.text("#job-log").await.contains("Loading the data set"));
    let events = b.text("#job-events").await;
    for label in ["Submitted", "Deploy requested", "Instance running"] {
        assert!(events.contains(label), "{label} missing from {events}");
    }
    b.check_page("l01-job-log-live").await;

    // The follower's route: same account only (404 for another's job, as the pages do).
    let status = |job: &str| {
        format!("return await fetch('/dashboard/jobs/{job}/logs?wait=0').then(r => r.status);")
    };
    let mine = b.client().execute(&status(&id), vec![]).await.unwrap();
    assert_eq!(mine, json!(200));
    let theirs = b
        .client()
        .execute(&status(&foreign_id), vec![])
        .await
        .unwrap();
    assert_eq!(theirs, json!(404), "another account's job log is not found");

    // The end: the page reloads on completion and shows every event and the whole log.
    b.reload().await;
    b.wait_for_within(
        "#job-status[data-status=completed]",
        Duration::from_secs(90),
    )
    .await;
    let log = b.text("#job-log").await;
    assert!(
        log.contains("epoch 25/25") && log.contains("Training finished"),
        "{log}"
    );
    let events = b.text("#job-events").await;
    for label in [
        "Submitted",
        "Deploy requested",
        "Instance running",
        "Script started",
        "Report received",
        "Finished",
    ] {
        assert!(events.contains(label), "{label} missing from {events}");
    }
    assert!(events.contains("exit code: 0"), "{events}");
    b.check_page("l02-job-log-finished").await;
    b.close().await;
}
