//! Buying credits in a real browser (issue 11, "Done when"): a new person signs up, opens Add
//! Credits, picks 25, pays on the (fake) Stripe's hosted checkout page by clicking Pay, lands
//! on the success page — which says the credits are arriving until the webhook has landed,
//! then shows them — sees 25.00 in the header, and finds the purchase on the Billing page.
//!
//! Every page on the way, the fake's checkout page included, is photographed at a laptop and
//! a phone width (`target/screenshots/b0N-….png`, `…-phone.png`) and checked with axe-core:
//! no serious or critical violation.

use mimiry_tests::browser::Browser;
use mimiry_tests::stripe::FakeStripe;
use mimiry_tests::{record_secret, Stack, StackOptions};
use serde_json::json;
use std::time::{Duration, Instant};

const PASSWORD: &str = "Correct-horse-1";

#[tokio::test]
async fn a_new_person_buys_25_credits_through_the_checkout_page() {
    let stripe = FakeStripe::start();
    let mut options = StackOptions {
        name: "browser-billing".into(),
        execute: false,
        ..StackOptions::default()
    };
    options
        .env
        .push(("STRIPE_API_BASE".into(), stripe.url.clone()));
    let stack = Stack::start(options);
    stripe.deliver_to(&stack).await;
    let b = Browser::start(&stack.base_url).await;
    record_secret(PASSWORD);
    let email = "buyer@example.com";

    // Sign up, verify (moto takes any code), log in: a new account with no credits.
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
    assert_eq!(b.text("#header-balance-amount").await, "0.00");

    // Add Credits: the presets and a custom amount.
    b.click("#add-credits").await;
    b.wait_for_path("/dashboard/credits").await;
    b.check_page("b01-add-credits").await;

    // Webhooks held for a moment, so the success page is seen before they land.
    stripe.admin("/webhook", json!({ "paused": true })).await;
    b.click("#buy-25").await;
    b.wait_for("#pay").await;
    assert!(b.text("h1").await.contains("25.00 USD"));
    b.check_page("b02-fake-checkout").await;
    b.click("#pay").await;
    b.wait_for_path("/dashboard/credits/success").await;
    b.wait_for("#purchase-pending").await;
    assert!(b
        .body_text()
        .await
        .contains("Payment received — your credits are arriving"));
    assert_eq!(b.text("#header-balance-amount").await, "0.00");
    b.check_page("b03-success-arriving").await;

    // Stripe's webhook lands; the page (reloaded as app.js does) shows the credits.
    stripe.admin("/webhook/flush", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        b.reload().await;
        if b.body_text().await.contains("credits were added") {
            break;
        }
        assert!(Instant::now() < deadline, "the credits never arrived");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(b.text("#credited-amount").await, "25.00");
    assert_eq!(b.text("#header-balance-amount").await, "25.00");
    b.check_page("b04-success-credited").await;

    // Billing: the purchase with its payment id, and the CSV link.
    b.click("#nav-billing").await;
    b.wait_for_path("/dashboard/billing").await;
    b.wait_for("tr.ledger-row[data-kind=purchase]").await;
    assert!(b
        .text("tr.ledger-row[data-kind=purchase] .ledger-amount")
        .await
        .starts_with("+25.00"));
    assert!(b
        .text("tr.ledger-row[data-kind=purchase] .ledger-payment")
        .await
        .starts_with("pi_"));
    b.wait_for("#billing-csv").await;
    b.check_page("b05-billing").await;
    b.close().await;
}
