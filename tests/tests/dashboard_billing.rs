//! Buying credits and reading billing in the dashboard (issue 11), over HTTP as a browser
//! does: Add Credits → 303 to the (fake) Stripe's hosted page → Pay → the success page, which
//! says the credits are arriving until the webhook lands and then shows them; duplicated and
//! replayed webhooks add nothing; a refund takes them back and the Billing page and its CSV
//! show every entry; amounts out of range are refused before any session exists; nobody
//! sees another account's ledger or payment.

use mimiry_tests::stripe::FakeStripe;
use mimiry_tests::web::{new_email, Browser, Page};
use mimiry_tests::{Stack, StackOptions};
use serde_json::json;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Env {
    stack: Stack,
    stripe: FakeStripe,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let stripe = FakeStripe::start();
        let mut options = StackOptions {
            name: "dash-billing".into(),
            execute: false,
            ..StackOptions::default()
        };
        options
            .env
            .push(("STRIPE_API_BASE".into(), stripe.url.clone()));
        Env {
            stack: Stack::start(options),
            stripe,
        }
    })
}

/// The tests share one fake Stripe, whose session list they count: one at a time.
async fn setup() -> (&'static Env, tokio::sync::MutexGuard<'static, ()>) {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = LOCK.lock().await;
    let env = env();
    env.stripe.deliver_to(&env.stack).await;
    (env, guard)
}

async fn signed_in(env: &Env, what: &str) -> Browser {
    let b = Browser::new(&env.stack);
    b.sign_up_and_log_in(&new_email(what)).await;
    b
}

async fn header_balance(b: &Browser) -> String {
    b.get("/dashboard")
        .await
        .text_of("header-balance-amount")
        .expect("the balance in the header")
}

/// Reloads the success page (as app.js does) until it shows the credited amount; 10 s at most.
async fn wait_credited(b: &Browser, path: &str) -> Page {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = b.get(path).await;
        assert_eq!(page.status, 200, "{}", page.html);
        if page.text_of("credited-amount").is_some() || Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_balance(b: &Browser, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = header_balance(b).await;
        if seen == want || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts a checkout on the page; answers the session id and the hosted page's URL.
async fn start_checkout(env: &Env, b: &Browser, amount: &str) -> (String, String) {
    let answer = b
        .submit(
            "/dashboard/credits",
            "/dashboard/credits",
            &[("amount", amount)],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.html);
    let url = answer.location().to_string();
    let prefix = format!("{}/checkout/", env.stripe.url);
    let session = url
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{url} is not the fake's checkout page"))
        .to_string();
    assert!(session.starts_with("cs_"), "{session}");
    (session, url)
}

fn csv_rows(body: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(body.as_bytes())
        .records()
        .map(|r| r.expect("a well-formed CSV row"))
        .collect()
}

#[tokio::test]
async fn buying_credits_adds_them_once_and_a_refund_takes_them_back() {
    let (env, _guard) = setup().await;
    let b = signed_in(env, "buyer").await;
    assert_eq!(header_balance(&b).await, "0.00");

    // The page offers the presets and lets its forms go to the checkout page's origin.
    let credits = b.get("/dashboard/credits").await;
    assert_eq!(credits.status, 200);
    for preset in ["10", "25", "50", "100"] {
        assert!(
            credits.contains(&format!("id=\"buy-{preset}\"")),
            "{preset}"
        );
    }
    assert!(credits.contains("id=\"custom-amount\""));
    let csp = credits.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!("form-action 'self' {}", env.stripe.url)),
        "{csp}"
    );
    // Without the CSRF token nothing starts.
    let before = env.stripe.session_count().await;
    let forged = b.post("/dashboard/credits", &[("amount", "25")]).await;
    assert_eq!(forged.status, 403);
    assert_eq!(env.stripe.session_count().await, before);

    let (session, url) = start_checkout(env, &b, "25").await;
    let hosted = reqwest::get(&url).await.unwrap().text().await.unwrap();
    assert!(hosted.contains("25.00 USD"), "{hosted}");

    // Before the payment: nothing added, the success page (if opened) says "arriving".
    let success_path = format!("/dashboard/credits/success?session_id={session}");
    let waiting = b.get(&success_path).await;
    assert_eq!(waiting.status, 200);
    assert!(
        waiting.contains("Payment received — your credits are arriving"),
        "{}",
        waiting.html
    );
    assert!(waiting.contains("data-poll=\"1\""));
    assert_eq!(header_balance(&b).await, "0.00");

    // Pay on the hosted page: back to the dashboard's success page, then the webhook lands.
    let (status, back) = env.stripe.click(&session, "pay").await;
    assert_eq!(status, 303);
    assert_eq!(back, env.stack.url(&success_path));
    let done = wait_credited(&b, &success_path).await;
    assert_eq!(done.text_of("credited-amount").as_deref(), Some("25.00"));
    assert!(!done.contains("data-poll"));
    assert_eq!(header_balance(&b).await, "25.00");

    // Stripe sends the event again, several times: nothing more.
    let completed = env
        .stripe
        .events("checkout.session.completed", &session)
        .await;
    assert_eq!(completed.len(), 1, "{completed:?}");
    let event = completed[0]["id"].as_str().unwrap();
    let payment_intent = completed[0]["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();
    env.stripe
        .admin(
            &format!("/events/{event}/duplicate"),
            json!({ "copies": 3 }),
        )
        .await;
    env.stripe
        .admin(&format!("/events/{event}/replay"), json!({}))
        .await;
    // Reloading the success page adds nothing either.
    b.get(&success_path).await;
    assert_eq!(header_balance(&b).await, "25.00");

    // A refund made at Stripe takes the credits back; Billing shows both, newest first.
    env.stripe
        .admin("/refunds", json!({ "payment_intent": payment_intent }))
        .await;
    assert_eq!(wait_balance(&b, "0.00").await, "0.00");
    let billing = b.get("/dashboard/billing").await;
    assert_eq!(billing.status, 200);
    let kinds: Vec<&str> = billing
        .html
        .match_indices("class=\"ledger-row\" data-kind=\"")
        .map(|(i, m)| {
            let rest = &billing.html[i + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert_eq!(kinds, ["refund", "purchase"], "{}", billing.html);
    assert_eq!(billing.html.matches(&payment_intent).count(), 2);
    assert!(billing.contains("+25.00") && billing.contains("-25.00"));

    // The CSV: a download, one row per entry, Stripe's ids in their columns.
    let csv = b.get("/dashboard/billing.csv").await;
    assert_eq!(csv.status, 200);
    assert_eq!(
        csv.headers["content-type"].to_str().unwrap(),
        "text/csv; charset=utf-8"
    );
    assert!(csv.headers["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    let header = csv::Reader::from_reader(csv.html.as_bytes())
        .headers()
        .unwrap()
        .clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows = csv_rows(&csv.html);
    assert_eq!(rows.len(), 2, "{}", csv.html);
    assert_eq!(&rows[0][col("type")], "refund");
    assert_eq!(&rows[0][col("balance_effect")], "-25.00");
    assert_eq!(&rows[1][col("type")], "purchase");
    assert_eq!(&rows[1][col("amount")], "25.00");
    assert_eq!(&rows[1][col("balance_effect")], "+25.00");
    assert_eq!(&rows[1][col("checkout_session")], session);
    for row in &rows {
        assert_eq!(&row[col("payment_intent")], payment_intent);
    }

    // Another person sees none of it.
    let other = signed_in(env, "stranger").await;
    let theirs = other.get("/dashboard/billing").await;
    assert_eq!(theirs.status, 200);
    assert!(!theirs.contains(&payment_intent));
    assert!(theirs.contains("id=\"no-ledger\""));
    assert_eq!(
        csv_rows(&other.get("/dashboard/billing.csv").await.html).len(),
        0
    );
    assert_eq!(other.get(&success_path).await.status, 404);
    // And a stranger without a session is sent to log in.
    let anonymous = Browser::new(&env.stack);
    for path in [
        "/dashboard/billing",
        "/dashboard/billing.csv",
        &success_path,
    ] {
        let page = anonymous.get(path).await;
        assert_eq!(page.status, 303, "{path}");
        assert_eq!(page.location(), "/dashboard/login", "{path}");
    }
}

#[tokio::test]
async fn amounts_out_of_range_are_refused_before_any_checkout() {
    let (env, _guard) = setup().await;
    let b = signed_in(env, "picky").await;
    let before = env.stripe.session_count().await;
    for bad in ["4.99", "1000.01", "0", "-5", "12.345", "abc", ""] {
        let page = b
            .submit(
                "/dashboard/credits",
                "/dashboard/credits",
                &[("amount", bad)],
            )
            .await;
        assert_eq!(page.status, 400, "{bad}: {}", page.html);
        let error = page.text_of("form-error").expect("an error message");
        assert!(
            error.contains("5.00") && error.contains("1000.00"),
            "{bad}: {error}"
        );
    }
    assert_eq!(
        env.stripe.session_count().await,
        before,
        "no session created"
    );
    // A custom amount in range goes to checkout.
    let (session, _) = start_checkout(env, &b, "12.50").await;
    assert_eq!(env.stripe.session_count().await, before + 1);
    // Cancel on the hosted page: back to Add Credits, told nothing was charged.
    let (status, back) = env.stripe.click(&session, "cancel").await;
    assert_eq!(status, 303);
    assert_eq!(back, env.stack.url("/dashboard/credits?checkout=cancelled"));
    let page = b.get("/dashboard/credits?checkout=cancelled").await;
    assert!(
        page.text_of("flash")
            .is_some_and(|f| f.contains("Payment cancelled")),
        "{}",
        page.html
    );
    assert_eq!(header_balance(&b).await, "0.00");
}
