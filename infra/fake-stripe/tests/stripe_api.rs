//! The fake over HTTP, as the shared Stripe client and Stripe's webhook receiver see it: API
//! shapes and errors, the checkout page, signed deliveries, retries, and the admin controls.

use fake_stripe::{spawn, FakeConfig};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "sk_test_fake_tests";
const SECRET: &str = "whsec_fake_tests";

/// A webhook endpoint that records what it receives and answers the statuses it is told to
/// (then 200).
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(String, Value)>>>,
    fail_first: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn start(fail_first: u32) -> (Receiver, String) {
        let receiver = Receiver::default();
        *receiver.fail_first.lock().unwrap() = fail_first;
        let r = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let r = r.clone();
                async move {
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    r.got
                        .lock()
                        .unwrap()
                        .push((signature.clone(), verified(&signature, &body)));
                    let mut fail = r.fail_first.lock().unwrap();
                    if *fail > 0 {
                        *fail -= 1;
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn events(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, e)| e.clone())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events();
            if events.len() >= n || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The event if `signature` signs `body` with [`SECRET`] (checked here with hmac, not with
/// the fake's own code), else `null`.
fn verified(signature: &str, body: &str) -> Value {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in signature.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1.push(x.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return Value::Null };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    let expected = hex::encode(mac.finalize().into_bytes());
    let age = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - t.parse::<i64>().unwrap();
    if v1.contains(&expected) && age.abs() < 5 {
        serde_json::from_str(body).unwrap()
    } else {
        Value::Null
    }
}

struct Fake {
    base: String,
    http: reqwest::Client,
}

impl Fake {
    async fn start(webhook_url: Option<String>, retry_delays_ms: Vec<u64>) -> Fake {
        let (addr, _) = spawn(FakeConfig {
            api_key: KEY.into(),
            webhook_url,
            webhook_secrets: vec![SECRET.into()],
            retry_delays_ms,
            async_settle_ms: 0,
        })
        .await;
        Fake {
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn post_form(
        &self,
        path: &str,
        key: Option<&str>,
        idempotency: Option<&str>,
        form: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form)
                    .finish(),
            );
        if let Some(k) = key {
            request = request.bearer_auth(k);
        }
        if let Some(i) = idempotency {
            request = request.header("Idempotency-Key", i);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        (status, headers, r.json().await.unwrap_or(Value::Null))
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}/admin{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn session(&self, cents: &str) -> Value {
        let (status, _, body) = self
            .post_form(
                "/v1/checkout/sessions",
                Some(KEY),
                None,
                &session_form(cents),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

fn session_form(cents: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("mode", "payment"),
        ("client_reference_id", "acc-1"),
        ("metadata[account_id]", "acc-1"),
        ("payment_intent_data[metadata][account_id]", "acc-1"),
        ("line_items[0][price_data][currency]", "usd"),
        ("line_items[0][price_data][unit_amount]", cents),
        ("line_items[0][price_data][product_data][name]", "credits"),
        ("line_items[0][quantity]", "1"),
        (
            "success_url",
            "http://127.0.0.1:9/ok?session_id={CHECKOUT_SESSION_ID}",
        ),
        ("cancel_url", "http://127.0.0.1:9/cancelled"),
    ]
}

#[tokio::test]
async fn the_api_wants_the_secret_key_and_answers_stripe_errors() {
    let fake = Fake::start(None, vec![]).await;
    let (status, _, body) = fake
        .post_form("/v1/checkout/sessions", None, None, &session_form("2500"))
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let (status, _, body) = fake
        .post_form(
            "/v1/checkout/sessions",
            Some("sk_test_wrong"),
            None,
            &session_form("2500"),
        )
        .await;
    assert_eq!(status, 401);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Invalid API Key"));

    let form = session_form("2500");
    let without_mode: Vec<_> = form.iter().filter(|(k, _)| *k != "mode").cloned().collect();
    let (status, _, body) = fake
        .post_form("/v1/checkout/sessions", Some(KEY), None, &without_mode)
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "parameter_missing");
    assert_eq!(body["error"]["param"], "mode");

    let mut unknown = form.clone();
    unknown.push(("colour", "blue"));
    let (status, _, body) = fake
        .post_form("/v1/checkout/sessions", Some(KEY), None, &unknown)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("parameter_unknown"))
    );
    assert_eq!(body["error"]["param"], "colour");

    let (status, _, body) = fake
        .post_form(
            "/v1/checkout/sessions",
            Some(KEY),
            None,
            &session_form("49"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("amount_too_small"))
    );

    let missing = fake
        .http
        .get(format!("{}/v1/checkout/sessions/cs_test_nope", fake.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "resource_missing");
}

#[tokio::test]
async fn sessions_are_created_once_per_idempotency_key() {
    let fake = Fake::start(None, vec![]).await;
    let form = session_form("2500");
    let (s1, h1, first) = fake
        .post_form("/v1/checkout/sessions", Some(KEY), Some("k1"), &form)
        .await;
    let (s2, h2, again) = fake
        .post_form("/v1/checkout/sessions", Some(KEY), Some("k1"), &form)
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first["id"], again["id"]);
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(h2["idempotent-replayed"], "true");
    assert!(first["id"].as_str().unwrap().starts_with("cs_test_"));
    assert_eq!(first["object"], "checkout.session");
    assert_eq!(first["amount_total"], 2500);
    assert_eq!(first["payment_status"], "unpaid");
    assert_eq!(first["status"], "open");
    assert_eq!(first["client_reference_id"], "acc-1");
    assert_eq!(first["metadata"]["account_id"], "acc-1");
    let (status, _, body) = fake
        .post_form(
            "/v1/checkout/sessions",
            Some(KEY),
            Some("k1"),
            &session_form("3000"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["type"].as_str()),
        (400, Some("idempotency_error"))
    );
    let other = fake.session("2500").await;
    assert_ne!(other["id"], first["id"]);
}

#[tokio::test]
async fn paying_on_the_page_redirects_and_sends_a_signed_completed_event() {
    let (receiver, url) = Receiver::start(0).await;
    let fake = Fake::start(Some(url), vec![]).await;
    let session = fake.session("2500").await;
    let id = session["id"].as_str().unwrap();
    let page = fake
        .http
        .get(session["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    for button in ["Pay", "Decline", "Cancel", "25.00 USD"] {
        assert!(html.contains(button), "{button} missing: {html}");
    }
    // Decline: a 402 page, the session stays open, no event.
    let declined = fake
        .http
        .post(format!("{}/checkout/{id}/decline", fake.base))
        .send()
        .await
        .unwrap();
    assert_eq!(declined.status().as_u16(), 402);
    assert!(declined.text().await.unwrap().contains("declined"));
    // Cancel: back to cancel_url, still open.
    let cancelled = fake
        .http
        .post(format!("{}/checkout/{id}/cancel", fake.base))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status().as_u16(), 303);
    assert_eq!(
        cancelled.headers()["location"],
        "http://127.0.0.1:9/cancelled"
    );
    assert!(receiver.events().is_empty());

    let paid = fake
        .http
        .post(format!("{}/checkout/{id}/pay", fake.base))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status().as_u16(), 303);
    assert_eq!(
        paid.headers()["location"],
        format!("http://127.0.0.1:9/ok?session_id={id}").as_str()
    );
    let events = receiver.wait_for(1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_ne!(
        event,
        &Value::Null,
        "the delivery's signature did not verify"
    );
    assert_eq!(event["type"], "checkout.session.completed");
    assert_eq!(event["object"], "event");
    let object = &event["data"]["object"];
    assert_eq!(object["id"], id);
    assert_eq!(object["payment_status"], "paid");
    assert_eq!(object["status"], "complete");
    assert!(object["payment_intent"]
        .as_str()
        .unwrap()
        .starts_with("pi_"));
    assert_eq!(object["url"], Value::Null);
    // A completed session cannot be paid again.
    let again = fake
        .http
        .post(format!("{}/checkout/{id}/pay", fake.base))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 400);
}

#[tokio::test]
async fn failed_deliveries_are_retried_a_bounded_number_of_times() {
    // Fails twice, then accepts: three attempts for one delivery.
    let (receiver, url) = Receiver::start(2).await;
    let fake = Fake::start(Some(url), vec![50, 50, 50]).await;
    let session = fake.session("1000").await;
    fake.admin(
        &format!("/sessions/{}/pay", session["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    let events = receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.events().len(), 3, "{events:?}");
    let deliveries: Value = fake
        .http
        .get(format!("{}/admin/deliveries", fake.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<_> = deliveries["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["attempt"].as_u64().unwrap(),
                d["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(1, 500), (2, 500), (3, 200)]);

    // Always failing: the first try and one per retry delay, then given up.
    let (receiver, url) = Receiver::start(u32::MAX).await;
    let fake = Fake::start(Some(url), vec![20, 20]).await;
    let session = fake.session("1000").await;
    fake.admin(
        &format!("/sessions/{}/pay", session["id"].as_str().unwrap()),
        json!({}),
    )
    .await;
    receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.events().len(), 3);
}

#[tokio::test]
async fn refunds_disputes_and_delayed_payments_send_their_events() {
    let (receiver, url) = Receiver::start(0).await;
    let fake = Fake::start(Some(url), vec![]).await;
    let session = fake.session("2500").await;
    let id = session["id"].as_str().unwrap().to_string();
    fake.admin(&format!("/sessions/{id}/pay"), json!({})).await;
    let paid = receiver.wait_for(1).await;
    let pi = paid[0]["data"]["object"]["payment_intent"]
        .as_str()
        .unwrap()
        .to_string();

    let (status, _, refund) = fake
        .post_form(
            "/v1/refunds",
            Some(KEY),
            None,
            &[("payment_intent", &pi), ("amount", "1000")],
        )
        .await;
    assert_eq!(status, 200, "{refund}");
    assert_eq!(refund["object"], "refund");
    assert_eq!(refund["amount"], 1000);
    let (status, _, too_much) = fake
        .post_form(
            "/v1/refunds",
            Some(KEY),
            None,
            &[("payment_intent", &pi), ("amount", "1501")],
        )
        .await;
    assert_eq!(
        (status, too_much["error"]["code"].as_str()),
        (400, Some("amount_too_large"))
    );
    let (status, _, _) = fake
        .post_form("/v1/refunds", Some(KEY), None, &[("payment_intent", &pi)])
        .await;
    assert_eq!(status, 200);
    let (status, _, done) = fake
        .post_form("/v1/refunds", Some(KEY), None, &[("payment_intent", &pi)])
        .await;
    assert_eq!(
        (status, done["error"]["code"].as_str()),
        (400, Some("charge_already_refunded"))
    );
    let events = receiver.wait_for(3).await;
    let refunded: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "charge.refunded")
        .map(|e| e["data"]["object"]["amount_refunded"].as_i64().unwrap())
        .collect();
    assert_eq!(refunded, [1000, 2500], "cumulative amount_refunded");

    let dispute = fake
        .admin("/disputes", json!({ "payment_intent": pi }))
        .await;
    assert_eq!(dispute["object"], "dispute");
    let events = receiver.wait_for(4).await;
    assert_eq!(events[3]["type"], "charge.dispute.created");
    assert_eq!(events[3]["data"]["object"]["payment_intent"], pi.as_str());

    // A delayed payment: completed unpaid, then settles one way or the other.
    for (succeed, kind) in [
        (true, "checkout.session.async_payment_succeeded"),
        (false, "checkout.session.async_payment_failed"),
    ] {
        let before = receiver.events().len();
        let s = fake.session("700").await;
        let sid = s["id"].as_str().unwrap();
        fake.admin(
            &format!("/sessions/{sid}/pay"),
            json!({ "method": "delayed" }),
        )
        .await;
        fake.admin(
            &format!("/sessions/{sid}/settle"),
            json!({ "succeed": succeed }),
        )
        .await;
        let events = receiver.wait_for(before + 2).await;
        let mine: Vec<_> = events[before..]
            .iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_string(),
                    e["data"]["object"]["payment_status"].clone(),
                )
            })
            .collect();
        assert!(
            mine.contains(&("checkout.session.completed".into(), json!("unpaid"))),
            "{mine:?}"
        );
        let settled = mine.iter().find(|(t, _)| t == kind).expect(kind);
        assert_eq!(settled.1, json!(if succeed { "paid" } else { "unpaid" }));
    }
}

#[tokio::test]
async fn held_events_go_out_reversed_duplicated_and_replayed_on_demand() {
    let (receiver, url) = Receiver::start(0).await;
    let fake = Fake::start(Some(url), vec![]).await;
    fake.admin("/webhook", json!({ "paused": true })).await;
    let mut ids = Vec::new();
    for cents in ["1000", "2000", "3000"] {
        let s = fake.session(cents).await;
        fake.admin(
            &format!("/sessions/{}/pay", s["id"].as_str().unwrap()),
            json!({}),
        )
        .await;
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.events().is_empty(), "paused, nothing is sent");
    fake.admin("/webhook/flush", json!({ "order": "reverse" }))
        .await;
    let got: Vec<_> = receiver
        .wait_for(3)
        .await
        .iter()
        .map(|e| e["data"]["object"]["id"].as_str().unwrap().to_string())
        .collect();
    ids.reverse();
    assert_eq!(got, ids);

    let events: Value = fake
        .http
        .get(format!("{}/admin/events", fake.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = events["events"][0]["id"].as_str().unwrap().to_string();
    let dup = fake
        .admin(
            &format!("/events/{first}/duplicate"),
            json!({ "copies": 3 }),
        )
        .await;
    assert_eq!(dup["statuses"], json!([200, 200, 200]));
    let replay = fake
        .admin(&format!("/events/{first}/replay"), json!({}))
        .await;
    assert_eq!(replay["status"], 200);
    let same: Vec<_> = receiver
        .wait_for(7)
        .await
        .into_iter()
        .filter(|e| e["id"] == first.as_str())
        .collect();
    assert_eq!(same.len(), 5, "the original, three copies and a replay");
}
