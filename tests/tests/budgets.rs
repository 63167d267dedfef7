//! Budgets (issue 11), set on the dashboard's Budgets page and felt on the API: the monthly
//! spend limit refuses submits past it — concurrent ones too — with a clear 402; the
//! low-balance email goes out once per crossing (moto keeps what SES sent) and a purchase
//! re-arms it; a dispute won gives the credits back once, a lost one keeps them taken.

use mimiry_shared::money::Micros;
use mimiry_tests::stripe::FakeStripe;
use mimiry_tests::web::{new_email, Browser};
use mimiry_tests::{call, Answer, Stack, StackOptions, NOTICE_FROM};
use serde_json::{json, Value};
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
            name: "budgets".into(),
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

/// The tests share one fake Stripe, whose webhook settings are global: one at a time.
async fn setup() -> (&'static Env, tokio::sync::MutexGuard<'static, ()>) {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = LOCK.lock().await;
    let env = env();
    env.stripe.deliver_to(&env.stack).await;
    (env, guard)
}

/// A person signed in on the dashboard, their account id and an API key for jobs.
struct Person {
    email: String,
    browser: Browser,
    account_id: String,
    key: String,
}

async fn person(env: &Env, what: &str, credits: &str) -> Person {
    let email = new_email(what);
    let browser = Browser::new(&env.stack);
    browser.sign_up_and_log_in(&email).await;
    let (_, key) = browser
        .create_key("jobs", &["jobs:read", "jobs:write"])
        .await;
    let account_id = account(env, &key).await["account_id"]
        .as_str()
        .unwrap()
        .to_string();
    if credits != "0" {
        env.stack
            .store()
            .await
            .add_credits(
                &account_id,
                Micros::parse_decimal(credits).unwrap(),
                "test credits",
            )
            .await
            .unwrap();
    }
    Person {
        email,
        browser,
        account_id,
        key,
    }
}

async fn account(env: &Env, key: &str) -> Value {
    let answer = call("GET", &env.stack.url("/account"), Some(key), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body
}

/// Saves the Budgets form as a browser does (empty = off).
async fn save_budgets(p: &Person, limit: &str, threshold: &str) {
    let saved = p
        .browser
        .submit(
            "/dashboard/budgets",
            "/dashboard/budgets",
            &[
                ("monthly_limit", limit),
                ("low_balance_threshold", threshold),
            ],
        )
        .await;
    assert_eq!(saved.status, 303, "{}", saved.html);
    assert_eq!(saved.location(), "/dashboard/budgets");
}

async fn submit(env: &Env, key: &str) -> Answer {
    call(
        "POST",
        &env.stack.url("/jobs"),
        Some(key),
        Some(
            &json!({ "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04",
                      "location": "FIN-01", "startup_script": "sleep 600" }),
        ),
    )
    .await
}

fn micros(v: &Value) -> i64 {
    Micros::parse_decimal(v.as_str().unwrap_or_else(|| panic!("{v} is not an amount")))
        .unwrap()
        .0
}

/// Whole cents, rounded down, as the Budgets form takes them.
fn cents(m: i64) -> String {
    Micros(m / 10_000 * 10_000).to_string()
}

/// The hold of one test job: what a first submit adds to the month's spend.
async fn one_hold(env: &Env, p: &Person) -> i64 {
    let first = submit(env, &p.key).await;
    assert_eq!(first.status, 201, "{first:?}");
    let hold = micros(&account(env, &p.key).await["spent_this_month"]);
    assert!(
        hold >= 50_000,
        "a hold big enough to set limits in cents: {hold}"
    );
    hold
}

#[tokio::test]
async fn the_monthly_limit_refuses_submits_past_it_with_a_clear_error() {
    let (env, _one_at_a_time) = setup().await;
    let p = person(env, "limit", "100").await;
    let before = account(env, &p.key).await;
    assert_eq!(before["monthly_spend_limit"], Value::Null, "off by default");
    assert_eq!(before["spent_this_month"], "0.00");

    let hold = one_hold(env, &p).await;
    // Room for one more job's hold, not two.
    let limit = cents(hold * 5 / 2);
    save_budgets(&p, &limit, "").await;
    let page = p.browser.get("/dashboard/budgets").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.text_of("current-limit").as_deref(),
        Some(limit.as_str())
    );

    assert_eq!(submit(env, &p.key).await.status, 201);
    let refused = submit(env, &p.key).await;
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(refused.body["code"], "monthly_spend_limit_reached");
    let message = refused.error();
    assert!(
        message.contains(&limit) && message.contains("Budgets"),
        "the message names the limit and where to raise it: {message}"
    );
    assert_eq!(refused.body["details"]["limit"], limit.as_str());
    assert_eq!(micros(&refused.body["details"]["spent"]), 2 * hold);
    assert_eq!(micros(&refused.body["details"]["required"]), hold);

    let now = account(env, &p.key).await;
    assert_eq!(now["monthly_spend_limit"], limit.as_str());
    assert_eq!(micros(&now["spent_this_month"]), 2 * hold);
    // The balance was not what stopped it.
    assert!(micros(&now["balance"]) > hold);

    // Raised: the same job goes through; removed: no limit at all.
    save_budgets(&p, &cents(hold * 7 / 2), "").await;
    assert_eq!(submit(env, &p.key).await.status, 201);
    save_budgets(&p, "", "").await;
    assert_eq!(submit(env, &p.key).await.status, 201);
    assert_eq!(
        account(env, &p.key).await["monthly_spend_limit"],
        Value::Null
    );
}

#[tokio::test]
async fn concurrent_submits_cannot_pass_the_limit_together() {
    let (env, _one_at_a_time) = setup().await;
    let probe = person(env, "probe", "10").await;
    let hold = one_hold(env, &probe).await;

    let p = person(env, "racer", "1000").await;
    // Room for three holds.
    save_budgets(&p, &cents(hold * 7 / 2), "").await;
    let answers = futures_util::future::join_all((0..8).map(|_| submit(env, &p.key))).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 402).collect();
    assert_eq!(created, 3, "{answers:#?}");
    assert_eq!(refused.len(), 5, "{answers:#?}");
    for r in refused {
        assert_eq!(r.body["code"], "monthly_spend_limit_reached", "{r:?}");
    }
    let spent = micros(&account(env, &p.key).await["spent_this_month"]);
    assert_eq!(spent, 3 * hold);
}

/// Polls moto's SES until `count` emails went to `to` (10 s at most); answers them.
async fn emails_to(env: &Env, to: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sent: Vec<Value> = env
            .stack
            .sent_emails()
            .await
            .into_iter()
            .filter(|m| m["destinations"]["ToAddresses"][0] == to)
            .collect();
        if sent.len() >= count || Instant::now() > deadline {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Buys `amount` credits on the dashboard and pays on the fake's page; answers the payment
/// intent once the webhook credited it.
async fn buy(env: &Env, p: &Person, amount: &str) -> String {
    let before = micros(&account(env, &p.key).await["balance"]);
    let answer = p
        .browser
        .submit(
            "/dashboard/credits",
            "/dashboard/credits",
            &[("amount", amount)],
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.html);
    let session = answer.location().rsplit('/').next().unwrap().to_string();
    let (status, _) = env.stripe.click(&session, "pay").await;
    assert_eq!(status, 303);
    let want = before + Micros::parse_decimal(amount).unwrap().0;
    wait_balance(env, p, want).await;
    env.stripe
        .events("checkout.session.completed", &session)
        .await[0]["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Polls the balance until it is `want` micros (10 s at most), and insists on it.
async fn wait_balance(env: &Env, p: &Person, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = micros(&account(env, &p.key).await["balance"]);
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "balance {} never became {}",
            Micros(seen),
            Micros(want)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_low_balance_email_goes_once_per_crossing_and_a_purchase_rearms_it() {
    let (env, _one_at_a_time) = setup().await;
    let p = person(env, "lowbalance", "10").await;
    // Off by default: a job's hold sends nothing.
    assert_eq!(submit(env, &p.key).await.status, 201);
    let balance = micros(&account(env, &p.key).await["balance"]);
    let threshold = cents(balance - 1_000);
    save_budgets(&p, "", &threshold).await;
    let page = p.browser.get("/dashboard/budgets").await;
    assert_eq!(
        page.text_of("notice-email").as_deref(),
        Some(p.email.as_str())
    );
    assert!(
        emails_to(env, &p.email, 1).await.is_empty(),
        "nothing crossed yet"
    );

    // A hold takes the balance below: one email, to the person, from our sender.
    assert_eq!(submit(env, &p.key).await.status, 201);
    let sent = emails_to(env, &p.email, 1).await;
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["source"], NOTICE_FROM);
    assert_eq!(
        sent[0]["subject"],
        format!("Your Mimiry balance is below {threshold} credits")
    );
    assert!(sent[0]["body"]
        .as_str()
        .unwrap()
        .contains("/dashboard/credits"));
    // Further debits below the threshold send nothing more.
    assert_eq!(submit(env, &p.key).await.status, 201);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emails_to(env, &p.email, 2).await.len(), 1);
    assert!(p
        .browser
        .get("/dashboard/budgets")
        .await
        .text_of("notice-sent")
        .is_some());

    // A purchase takes it back above: re-armed (and no email for going up).
    let pi = buy(env, &p, "5").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while p
        .browser
        .get("/dashboard/budgets")
        .await
        .text_of("notice-sent")
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the purchase did not re-arm the notice"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(emails_to(env, &p.email, 2).await.len(), 1);
    // The purchase refunded: below again, a second email.
    env.stripe
        .admin("/refunds", json!({ "payment_intent": pi }))
        .await;
    let sent = emails_to(env, &p.email, 2).await;
    assert_eq!(sent.len(), 2, "{sent:#?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emails_to(env, &p.email, 3).await.len(), 2);
}

/// Opens a dispute of `amount` cents on the payment; answers its id.
async fn dispute(env: &Env, pi: &str, cents: i64) -> String {
    let d = env
        .stripe
        .admin(
            "/disputes",
            json!({ "payment_intent": pi, "amount": cents }),
        )
        .await;
    d["id"].as_str().expect("a dispute").to_string()
}

async fn ledger_kinds(env: &Env, p: &Person) -> Vec<(String, String)> {
    let answer = call(
        "GET",
        &env.stack.url("/account/ledger?limit=100"),
        Some(&p.key),
        None,
    )
    .await;
    answer.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["amount"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The webhook's answers to `event` so far.
async fn delivered(env: &Env, event: &str) -> Vec<u64> {
    env.stripe.admin_get("/deliveries").await["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event_id"] == event)
        .map(|d| d["status"].as_u64().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_won_dispute_gives_the_credits_back_once_and_a_lost_one_keeps_them() {
    let (env, _one_at_a_time) = setup().await;
    let p = person(env, "disputes", "0").await;

    // Won: 6.00 taken, then given back; a duplicated closing event gives nothing more.
    let pi = buy(env, &p, "10").await;
    let won = dispute(env, &pi, 600).await;
    wait_balance(env, &p, 4_000_000).await;
    env.stripe
        .admin(
            &format!("/disputes/{won}/close"),
            json!({ "status": "won" }),
        )
        .await;
    wait_balance(env, &p, 10_000_000).await;
    let closed = env.stripe.events("charge.dispute.closed", &pi).await;
    assert_eq!(closed.len(), 1);
    let closed_id = closed[0]["id"].as_str().unwrap();
    env.stripe
        .admin(
            &format!("/events/{closed_id}/duplicate"),
            json!({ "copies": 2 }),
        )
        .await;
    env.stripe
        .admin(&format!("/events/{closed_id}/replay"), json!({}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered(env, closed_id).await.len() < 4 {
        assert!(Instant::now() < deadline, "the copies were not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered(env, closed_id).await.iter().all(|s| *s == 200));
    wait_balance(env, &p, 10_000_000).await;
    let kinds = ledger_kinds(env, &p).await;
    let given_back: Vec<_> = kinds.iter().filter(|(k, _)| k == "dispute_won").collect();
    assert_eq!(
        given_back,
        [&("dispute_won".to_string(), "6.00".to_string())]
    );

    // Lost: the 4.00 stays taken.
    let pi = buy(env, &p, "5").await;
    let lost = dispute(env, &pi, 400).await;
    wait_balance(env, &p, 11_000_000).await;
    env.stripe
        .admin(
            &format!("/disputes/{lost}/close"),
            json!({ "status": "lost" }),
        )
        .await;
    let closed = env.stripe.events("charge.dispute.closed", &pi).await;
    let closed_id = closed[0]["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered(env, closed_id).await.is_empty() {
        assert!(Instant::now() < deadline, "the closing was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(delivered(env, closed_id).await, [200]);
    wait_balance(env, &p, 11_000_000).await;

    // Won, with Stripe's events out of order (closed before created): nothing is taken.
    let pi = buy(env, &p, "5").await;
    env.stripe
        .admin("/webhook", json!({ "paused": true }))
        .await;
    let late = dispute(env, &pi, 500).await;
    env.stripe
        .admin(
            &format!("/disputes/{late}/close"),
            json!({ "status": "won" }),
        )
        .await;
    env.stripe
        .admin("/webhook/flush", json!({ "order": "reverse" }))
        .await;
    let created = env.stripe.events("charge.dispute.created", &pi).await;
    let created_id = created[0]["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while delivered(env, created_id).await.is_empty() {
        assert!(Instant::now() < deadline, "the dispute was not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_balance(env, &p, 16_000_000).await;
    let store = env.stack.store().await;
    let acc = store.get_account(&p.account_id).await.unwrap().unwrap();
    assert_eq!(
        acc.added_micros,
        acc.balance_micros + acc.held_micros + acc.charged_micros
    );
}
