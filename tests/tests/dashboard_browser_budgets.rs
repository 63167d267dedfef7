//! Budgets in a real browser (issue 11): a person whose account has run two jobs opens
//! Budgets, sees this month's spend, types a limit that is not an amount (refused, the field
//! marked invalid), then sets a 50-credit monthly limit and a low-balance threshold above
//! the balance — saved, shown back, and the notice sent at once (moto's SES keeps it).
//!
//! Each page is photographed at a laptop and a phone width (`target/screenshots/g0N-….png`)
//! and checked with axe-core: no serious or critical violation.

use mimiry_tests::browser::Browser;
use mimiry_tests::{call, record_secret, Stack, StackOptions};
use serde_json::json;

const PASSWORD: &str = "Correct-horse-1";

#[tokio::test]
async fn a_person_sets_a_monthly_limit_and_a_low_balance_email() {
    let stack = Stack::start(StackOptions {
        name: "browser-budgets".into(),
        execute: false,
        ..StackOptions::default()
    });
    let email = "budgeter@example.com";
    // An account with credits and two jobs' holds, which this person's sign-in will open.
    let account = stack.account("100").await;
    stack
        .store()
        .await
        .link_email(&account.account_id, email)
        .await
        .unwrap();
    for _ in 0..2 {
        let job = call(
            "POST",
            &stack.url("/jobs"),
            Some(&account.key),
            Some(
                &json!({ "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04",
                          "location": "FIN-01" }),
            ),
        )
        .await;
        assert_eq!(job.status, 201, "{job:?}");
    }

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

    // Budgets, from the sidebar: this month's spend is the two holds; nothing set yet.
    b.click("#nav-budgets").await;
    b.wait_for_path("/dashboard/budgets").await;
    assert_eq!(b.text("#spent-this-month").await, "0.26");
    assert!(b
        .body_text()
        .await
        .contains("sent to the address you are logged in with"));
    b.check_page("g01-budgets").await;

    // Not an amount: the form again, saying why, the field marked.
    b.fill("monthly_limit", "fifty").await;
    b.click("#save-budgets").await;
    b.wait_for("#form-error").await;
    assert!(b.text("#form-error").await.contains("Monthly spend limit"));
    b.wait_for("#monthly-limit[aria-invalid=true]").await;
    b.check_page("g02-budgets-refused").await;

    // Saved: shown back, and the balance (99.73) is already below the new threshold.
    b.fill("monthly_limit", "50").await;
    b.fill("low_balance_threshold", "99.90").await;
    b.click("#save-budgets").await;
    b.wait_for("#flash").await;
    assert_eq!(b.text("#flash").await, "Budgets saved.");
    assert_eq!(b.text("#current-limit").await, "50.00");
    assert_eq!(b.text("#notice-email").await, email);
    b.wait_for("#notice-sent").await;
    b.check_page("g03-budgets-saved").await;
    let sent: Vec<_> = stack
        .sent_emails()
        .await
        .into_iter()
        .filter(|m| m["destinations"]["ToAddresses"][0] == email)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:#?}");
    b.close().await;
}
