//! Buying credits end to end (issue 11): the shared Stripe client creates a Checkout Session
//! on the fake Stripe, the test "pays" on its hosted page, and the fake's signed webhook adds
//! the credits — once, however the deliveries are duplicated, replayed, reordered or raced.
//! Refunds and disputes take them back (the balance may go negative, and then jobs are
//! refused); a bad signature is a 400 that changes nothing; `GET /account/ledger` pages.

use mimiry_shared::billing::signature::sign;
use mimiry_shared::billing::{Billing, BillingConfig, PurchaseAmount, StripeClient};
use mimiry_shared::money::Micros;
use mimiry_tests::{call, Stack, StackOptions, TestAccount};
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The stack with a fake Stripe whose webhooks go to it.
struct Env {
    stack: Stack,
    /// The fake Stripe's base URL.
    stripe: String,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let stripe = mimiry_tests::stripe::FakeStripe::start().url;
        let mut options = StackOptions {
            name: "billing".into(),
            execute: false,
            ..StackOptions::default()
        };
        options.env.push(("STRIPE_API_BASE".into(), stripe.clone()));
        // A short hold, so a job outlives its first hold within the test.
        options.env.push(("HOLD_SECONDS".into(), "8".into()));
        Env {
            stack: Stack::start(options),
            stripe,
        }
    })
}

/// The environment, with the fake's webhook endpoint pointing at the stack and not paused,
/// and the lock on it: the tests share one fake Stripe, whose webhook settings (paused, delay)
/// and held events are global, so they run one at a time.
async fn setup() -> (&'static Env, tokio::sync::MutexGuard<'static, ()>) {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let guard = LOCK.lock().await;
    let env = env();
    env.admin(
        "/webhook",
        json!({
            "url": env.stack.url("/billing/stripe-webhook"),
            "paused": false,
            "delay_ms": 0,
        }),
    )
    .await;
    (env, guard)
}

impl Env {
    async fn admin(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/admin{path}", self.stripe))
            .json(&body)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap_or(Value::Null)
    }

    async fn admin_get(&self, path: &str) -> Value {
        reqwest::get(format!("{}/admin{path}", self.stripe))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The shared client the dashboard uses, on this stack's moto and the fake Stripe.
    async fn billing(&self) -> Billing {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.stack.moto_url)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await;
        let config = BillingConfig {
            stripe_secret_id: "mimiry/stripe".into(),
            stripe_api_base: self.stripe.clone(),
            stripe_timeout: Duration::from_secs(5),
            success_url: self
                .stack
                .url("/dashboard?checkout=success&session_id={CHECKOUT_SESSION_ID}"),
            cancel_url: self.stack.url("/dashboard?checkout=cancelled"),
        };
        Billing {
            stripe: StripeClient::new(
                aws_sdk_secretsmanager::Client::new(&sdk),
                config.stripe_secret_id.clone(),
                config.stripe_api_base.clone(),
                config.stripe_timeout,
            ),
            config,
        }
    }

    /// Starts a checkout for `credits` and answers (session id, hosted page URL).
    async fn checkout(&self, account: &TestAccount, credits: &str) -> (String, String) {
        let start = self
            .billing()
            .await
            .start_checkout(&account.account_id, PurchaseAmount::parse(credits).unwrap())
            .await
            .expect("start_checkout");
        (start.session_id, start.url)
    }

    /// Clicks Pay on the hosted page, as a browser posts its form; answers the redirect.
    async fn pay(&self, session: &str) -> String {
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/checkout/{session}/pay", self.stripe))
            .form(&[("action", "pay")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 303, "{response:?}");
        response.headers()["location"].to_str().unwrap().to_string()
    }

    /// The fake's events about `session` (or its payment intent), oldest first.
    async fn events_of(&self, session: &str) -> Vec<Value> {
        let events = self.admin_get("/events").await;
        let all = events["events"].as_array().unwrap().clone();
        let pi: Vec<String> = all
            .iter()
            .filter(|e| e["data"]["object"]["id"] == session)
            .filter_map(|e| {
                e["data"]["object"]["payment_intent"]
                    .as_str()
                    .map(String::from)
            })
            .collect();
        all.into_iter()
            .filter(|e| {
                let o = &e["data"]["object"];
                o["id"] == session
                    || o["payment_intent"]
                        .as_str()
                        .is_some_and(|p| pi.iter().any(|x| x == p))
            })
            .collect()
    }

    async fn payment_intent(&self, session: &str) -> String {
        self.events_of(session).await[0]["data"]["object"]["payment_intent"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn refund(&self, payment_intent: &str, cents: Option<i64>) -> Value {
        let mut form = vec![("payment_intent", payment_intent.to_string())];
        if let Some(c) = cents {
            form.push(("amount", c.to_string()));
        }
        let response = reqwest::Client::new()
            .post(format!("{}/v1/refunds", self.stripe))
            .bearer_auth(fake_stripe::FakeConfig::default().api_key)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.unwrap()
    }
}

async fn balance(env: &Env, account: &TestAccount) -> String {
    let answer = call("GET", &env.stack.url("/account"), Some(&account.key), None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["balance"].as_str().unwrap().to_string()
}

/// Polls the balance until it is `want` (10 s at most); answers what it last saw.
async fn wait_balance(env: &Env, account: &TestAccount, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = balance(env, account).await;
        if seen == want || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn ledger(env: &Env, account: &TestAccount) -> Vec<Value> {
    let answer = call(
        "GET",
        &env.stack.url("/account/ledger?limit=100"),
        Some(&account.key),
        None,
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.body["entries"].as_array().unwrap().clone()
}

/// Polls the ledger until it holds an entry of `kind` (10 s at most); answers the ledger.
async fn wait_ledger(env: &Env, account: &TestAccount, kind: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entries = ledger(env, account).await;
        if !kinds(&entries, kind).is_empty() || Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kinds(entries: &[Value], kind: &str) -> Vec<Value> {
    entries
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Every delivery of `event` so far answered 2xx (what the webhook said to Stripe).
async fn delivered_ok(env: &Env, event: &str) -> Vec<u64> {
    env.admin_get("/deliveries").await["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event_id"] == event)
        .map(|d| d["status"].as_u64().unwrap_or(0))
        .collect()
}

/// The newcomer's purchase (issue 11, "Done when"): 25 credits through the fake checkout, seen
/// in the balance; a duplicated and a replayed webhook add nothing more.
#[tokio::test]
async fn buying_credits_adds_them_once_whatever_stripe_resends() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;
    let (session, url) = env.checkout(&account, "25").await;
    // What Stripe received is what Checkout needs: our account, the amount, a way back.
    let created: Value = reqwest::Client::new()
        .get(format!("{}/v1/checkout/sessions/{session}", env.stripe))
        .bearer_auth(fake_stripe::FakeConfig::default().api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["client_reference_id"], account.account_id.as_str());
    assert_eq!(
        created["metadata"]["account_id"],
        account.account_id.as_str()
    );
    assert_eq!(
        (
            created["amount_total"].as_i64(),
            created["currency"].as_str()
        ),
        (Some(2500), Some("usd"))
    );
    assert_eq!(created["mode"], "payment");
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("25.00 USD"));

    // Nothing is added before the payment, nor by the redirect itself.
    assert_eq!(balance(env, &account).await, "0.00");
    let store = env.stack.store().await;
    assert_eq!(store.purchase_of_session(&session).await.unwrap(), None);
    let back = env.pay(&session).await;
    assert_eq!(
        back,
        env.stack
            .url(&format!("/dashboard?checkout=success&session_id={session}"))
    );
    assert_eq!(wait_balance(env, &account, "25.00").await, "25.00");
    // What the success page asks: the session's credits have landed, for this account.
    let landed = store.purchase_of_session(&session).await.unwrap().unwrap();
    assert_eq!(landed.account_id, account.account_id);
    assert_eq!(landed.credited_micros, 25_000_000);
    let completed = env.events_of(&session).await;
    assert_eq!(completed.len(), 1);
    let event = completed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(delivered_ok(env, &event).await, [200]);

    let dup = env
        .admin(
            &format!("/events/{event}/duplicate"),
            json!({ "copies": 3 }),
        )
        .await;
    assert_eq!(dup["statuses"], json!([200, 200, 200]), "{dup}");
    let replay = env
        .admin(&format!("/events/{event}/replay"), json!({}))
        .await;
    assert_eq!(replay["status"], 200);
    assert_eq!(balance(env, &account).await, "25.00");

    let entries = ledger(env, &account).await;
    let purchases = kinds(&entries, "purchase");
    assert_eq!(purchases.len(), 1, "{entries:#?}");
    assert_eq!(purchases[0]["amount"], "25.00");
    assert_eq!(
        purchases[0]["payment"]["checkout_session"],
        session.as_str()
    );
    assert_eq!(purchases[0]["payment"]["event_id"], event.as_str());
    assert!(purchases[0]["payment"]["payment_intent"]
        .as_str()
        .unwrap()
        .starts_with("pi_"));

    // A refund takes them back.
    let pi = env.payment_intent(&session).await;
    env.refund(&pi, None).await;
    assert_eq!(wait_balance(env, &account, "0.00").await, "0.00");
    let refunds = kinds(&ledger(env, &account).await, "refund");
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0]["amount"], "25.00");
    let acc = store
        .get_account(&account.account_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        acc.added_micros,
        acc.balance_micros + acc.held_micros + acc.charged_micros
    );
}

/// When Stripe's answer to the create call is lost, the client's retry carries the same
/// Idempotency-Key and gets the session that was made: one purchase, one session.
#[tokio::test]
async fn a_lost_answer_is_retried_without_a_second_session() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;
    let sessions_of = |all: Value| {
        all["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["client_reference_id"] == account.account_id.as_str())
            .count()
    };
    env.admin("/faults", json!({ "lose_responses": 1 })).await;
    let (session, _) = env.checkout(&account, "5").await;
    assert_eq!(sessions_of(env.admin_get("/sessions").await), 1);
    // Without the key, a lost answer would have left two; a second purchase is a second session.
    let (another, _) = env.checkout(&account, "5").await;
    assert_ne!(session, another);
    assert_eq!(sessions_of(env.admin_get("/sessions").await), 2);
    // Below the minimum or above the maximum, nothing reaches Stripe.
    assert!(PurchaseAmount::parse("4.99").is_err());
    assert!(PurchaseAmount::parse("1000.01").is_err());
}

/// Stripe does not keep order: a delayed payment's success before its `completed`, and a
/// refund before the purchase it refunds (refused with a 409 until the purchase is in, then
/// retried by Stripe) still add once and take back once.
#[tokio::test]
async fn reordered_and_delayed_events_add_once() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;

    // A bank debit: `completed` (unpaid) and `async_payment_succeeded`, delivered newest first.
    env.admin("/webhook", json!({ "paused": true })).await;
    let (session, _) = env.checkout(&account, "12.50").await;
    env.admin(
        &format!("/sessions/{session}/pay"),
        json!({ "method": "delayed" }),
    )
    .await;
    env.admin(
        &format!("/sessions/{session}/settle"),
        json!({ "succeed": true }),
    )
    .await;
    assert_eq!(balance(env, &account).await, "0.00", "held, not delivered");
    let flushed = env
        .admin("/webhook/flush", json!({ "order": "reverse" }))
        .await;
    assert_eq!(
        flushed["delivered"].as_array().unwrap().len(),
        2,
        "{flushed}"
    );
    assert_eq!(wait_balance(env, &account, "12.50").await, "12.50");

    // A card payment and its partial refund, delivered refund first, with a delay.
    env.admin("/webhook", json!({ "paused": true, "delay_ms": 100 }))
        .await;
    let (card, _) = env.checkout(&account, "10").await;
    env.pay(&card).await;
    let pi = env.payment_intent(&card).await;
    env.refund(&pi, Some(400)).await;
    let flushed = env
        .admin("/webhook/flush", json!({ "order": "reverse" }))
        .await;
    let statuses: Vec<_> = flushed["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_u64())
        .collect();
    // The refund came first and was refused (409: no such payment yet); the purchase went in.
    assert_eq!(statuses, [Some(409), Some(200)], "{flushed}");
    assert_eq!(wait_balance(env, &account, "18.50").await, "18.50");
    let refund_event = env
        .events_of(&card)
        .await
        .into_iter()
        .find(|e| e["type"] == "charge.refunded")
        .unwrap();
    let tries = delivered_ok(env, refund_event["id"].as_str().unwrap()).await;
    assert_eq!(tries.first(), Some(&409), "{tries:?}");
    assert_eq!(tries.last(), Some(&200), "{tries:?}");

    let entries = ledger(env, &account).await;
    assert_eq!(kinds(&entries, "purchase").len(), 2, "{entries:#?}");
    assert_eq!(kinds(&entries, "refund").len(), 1, "{entries:#?}");
    assert_eq!(kinds(&entries, "refund")[0]["amount"], "4.00");

    // A failed bank debit adds nothing.
    let (failed, _) = env.checkout(&account, "30").await;
    env.admin(
        &format!("/sessions/{failed}/pay"),
        json!({ "method": "delayed" }),
    )
    .await;
    env.admin(
        &format!("/sessions/{failed}/settle"),
        json!({ "succeed": false }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(balance(env, &account).await, "18.50");
}

/// Refunds follow the charge's cumulative refunded amount, disputes take their amount once,
/// and the balance may go negative: then new jobs are refused with a clear 402, and a running
/// job stops when its hold runs out, as at a zero balance.
#[tokio::test]
async fn refunds_and_disputes_may_leave_a_negative_balance_that_refuses_jobs() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;
    let (session, _) = env.checkout(&account, "10").await;
    env.pay(&session).await;
    assert_eq!(wait_balance(env, &account, "10.00").await, "10.00");

    // Spend some: a job holds credits for its first (8 s) hold.
    let job = call(
        "POST",
        &env.stack.url("/jobs"),
        Some(&account.key),
        Some(
            &json!({ "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04", "location": "FIN-01",
                      "startup_script": "sleep 600" }),
        ),
    )
    .await;
    assert_eq!(job.status, 201, "{job:?}");
    let job_id = job.body["id"].as_str().unwrap().to_string();
    let after_hold = balance(env, &account).await;
    assert_ne!(after_hold, "10.00");

    // The cardholder disputes 6.00; then the rest is refunded. Each once.
    let pi = env.payment_intent(&session).await;
    env.admin("/disputes", json!({ "payment_intent": pi, "amount": 600 }))
        .await;
    // (In this order: a refund processed first would leave the dispute nothing to take.)
    wait_ledger(env, &account, "dispute").await;
    env.refund(&pi, None).await;
    let entries = wait_ledger(env, &account, "refund").await;
    assert_eq!(
        kinds(&entries, "dispute")[0]["amount"],
        "6.00",
        "{entries:#?}"
    );
    // The refund covers what the dispute did not: 10.00 in all, never more.
    assert_eq!(
        kinds(&entries, "refund")[0]["amount"],
        "4.00",
        "{entries:#?}"
    );
    let dispute_event = env
        .events_of(&session)
        .await
        .into_iter()
        .find(|e| e["type"] == "charge.dispute.created")
        .unwrap();
    env.admin(
        &format!(
            "/events/{}/duplicate",
            dispute_event["id"].as_str().unwrap()
        ),
        json!({ "copies": 2 }),
    )
    .await;

    let acc = env
        .stack
        .store()
        .await
        .get_account(&account.account_id)
        .await
        .unwrap()
        .unwrap();
    assert!(
        acc.balance_micros < 0,
        "the spent credits are owed: {acc:?}"
    );
    assert_eq!(
        acc.added_micros,
        acc.balance_micros + acc.held_micros + acc.charged_micros
    );
    assert_eq!(acc.added_micros, 0, "bought 10, 10 taken back");

    let refused = call(
        "POST",
        &env.stack.url("/jobs"),
        Some(&account.key),
        Some(&json!({ "instance_type": "CPU.4V.16G", "image": "ubuntu-22.04", "location": "FIN-01" })),
    )
    .await;
    assert_eq!(refused.status, 402, "{refused:?}");
    assert_eq!(refused.error(), "Insufficient credits");
    assert!(
        refused.body["details"]["available"]
            .as_str()
            .unwrap()
            .starts_with('-'),
        "{refused:?}"
    );

    // The running job keeps its hold and no more: it stops when the hold runs out.
    let deadline = Instant::now() + Duration::from_secs(60);
    let ended = loop {
        let j = call(
            "GET",
            &env.stack.url(&format!("/jobs/{job_id}")),
            Some(&account.key),
            None,
        )
        .await;
        if ["completed", "failed", "cancelled"].contains(&j.body["status"].as_str().unwrap_or(""))
            || Instant::now() > deadline
        {
            break j.body;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(ended["status"], "failed", "{ended:#}");
    assert_eq!(ended["failure_reason"], "insufficient_credits", "{ended:#}");
}

/// A webhook without a valid, fresh signature is a 400 and credits nothing; the same event
/// signed right is credited (so the refusals are the signature's doing).
#[tokio::test]
async fn a_bad_signature_is_a_400_and_changes_nothing() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;
    let secret = &fake_stripe::FakeConfig::default().webhook_secrets[0];
    let event = json!({
        "id": format!("evt_test_{}", uuid::Uuid::new_v4().simple()),
        "object": "event",
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": format!("cs_test_{}", uuid::Uuid::new_v4().simple()),
            "object": "checkout.session",
            "client_reference_id": account.account_id,
            "metadata": { "account_id": account.account_id },
            "payment_intent": format!("pi_{}", uuid::Uuid::new_v4().simple()),
            "payment_status": "paid",
            "amount_total": 5000,
            "currency": "usd",
        }},
    })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let tampered = event.replace("5000", "9000");
    let cases = [
        ("no signature", None, event.clone()),
        (
            "another secret",
            Some(sign("whsec_other", now, event.as_bytes())),
            event.clone(),
        ),
        (
            "ten minutes old",
            Some(sign(secret, now - 600, event.as_bytes())),
            event.clone(),
        ),
        (
            "a changed body",
            Some(sign(secret, now, event.as_bytes())),
            tampered,
        ),
        ("garbage", Some("t=abc,v1=xyz".to_string()), event.clone()),
    ];
    let url = env.stack.url("/billing/stripe-webhook");
    for (what, signature, body) in cases {
        let mut request = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(s) = signature {
            request = request.header("stripe-signature", s);
        }
        let answer = mimiry_tests::send(request).await;
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        assert_eq!(answer.body["code"], "invalid_signature", "{what}");
    }
    assert_eq!(balance(env, &account).await, "0.00");
    assert!(ledger(env, &account).await.is_empty());

    let good = mimiry_tests::send(
        reqwest::Client::new()
            .post(&url)
            .header("stripe-signature", sign(secret, now, event.as_bytes()))
            .body(event.clone()),
    )
    .await;
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(good.body["result"], "credited");
    assert_eq!(balance(env, &account).await, "50.00");
}

/// Twenty deliveries of one event at the same moment, and another event of the same session:
/// one credit.
#[tokio::test]
async fn concurrent_duplicate_deliveries_add_once() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;
    let secret = fake_stripe::FakeConfig::default().webhook_secrets[0].clone();
    let session = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
    let event = |id: &str, kind: &str| {
        json!({
            "id": id, "object": "event", "type": kind,
            "data": { "object": {
                "id": session, "object": "checkout.session",
                "client_reference_id": account.account_id,
                "metadata": { "account_id": account.account_id },
                "payment_intent": format!("pi_for_{session}"),
                "payment_status": "paid", "amount_total": 700, "currency": "usd",
            }},
        })
        .to_string()
    };
    let first = event("evt_race_1", "checkout.session.completed");
    let other = event("evt_race_2", "checkout.session.async_payment_succeeded");
    let url = env.stack.url("/billing/stripe-webhook");
    let now = chrono::Utc::now().timestamp();
    let sends = (0..20).map(|i| {
        let body = if i % 4 == 3 {
            other.clone()
        } else {
            first.clone()
        };
        let request = reqwest::Client::new()
            .post(&url)
            .header("stripe-signature", sign(&secret, now, body.as_bytes()))
            .body(body);
        mimiry_tests::send(request)
    });
    let answers = futures_util::future::join_all(sends).await;
    for a in &answers {
        assert_eq!(a.status, 200, "{a:?}");
    }
    let credited = answers
        .iter()
        .filter(|a| a.body["result"] == "credited")
        .count();
    assert_eq!(credited, 1, "{answers:#?}");
    assert_eq!(balance(env, &account).await, "7.00");
    assert_eq!(kinds(&ledger(env, &account).await, "purchase").len(), 1);
}

/// `GET /account/ledger`: newest first, a page at a time, every entry once; the cursor is the
/// caller's own; the ledger of one account is not another's.
#[tokio::test]
async fn the_ledger_pages_newest_first() {
    let (env, _one_at_a_time) = setup().await;
    let account = env.stack.account("0").await;
    let store = env.stack.store().await;
    for i in 1..=5 {
        store
            .add_credits(
                &account.account_id,
                Micros(i * 1_000_000),
                &format!("grant {i}"),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/account/ledger?limit=2&cursor={c}"),
            None => "/account/ledger?limit=2".to_string(),
        };
        let page = call("GET", &env.stack.url(&path), Some(&account.key), None).await;
        assert_eq!(page.status, 200, "{page:?}");
        pages += 1;
        seen.extend(page.body["entries"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(c) if pages < 10 => cursor = Some(c.to_string()),
            _ => break,
        }
    }
    let notes: Vec<_> = seen.iter().map(|e| e["note"].as_str().unwrap()).collect();
    assert_eq!(
        notes,
        ["grant 5", "grant 4", "grant 3", "grant 2", "grant 1"]
    );
    assert!(pages >= 3);
    assert!(seen
        .iter()
        .all(|e| e["kind"] == "credit" && e["payment"].is_null()));

    for bad in ["limit=0", "limit=101", "cursor=nope", "page=2"] {
        let answer = call(
            "GET",
            &env.stack.url(&format!("/account/ledger?{bad}")),
            Some(&account.key),
            None,
        )
        .await;
        assert_eq!(answer.status, 400, "{bad}: {answer:?}");
    }
    // Another account sees its own (empty) ledger, also with this account's cursor.
    let other = env.stack.account("0").await;
    assert!(ledger(env, &other).await.is_empty());
    let first = call(
        "GET",
        &env.stack.url("/account/ledger?limit=1"),
        Some(&account.key),
        None,
    )
    .await;
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let theirs = call(
        "GET",
        &env.stack.url(&format!("/account/ledger?cursor={cursor}")),
        Some(&other.key),
        None,
    )
    .await;
    assert_eq!(theirs.status, 200);
    assert!(theirs.body["entries"].as_array().unwrap().is_empty());
    let unauthorized = call("GET", &env.stack.url("/account/ledger"), None, None).await;
    assert_eq!(unauthorized.status, 401);
}
