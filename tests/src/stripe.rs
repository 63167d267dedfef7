//! The fake Stripe for tests (issue 11): started in a runtime of its own (it outlives every
//! test's runtime), with the key and secret `mimiry-admin bootstrap` puts into the Stripe
//! secret by default, plus the admin calls and the hosted page's buttons the tests use.

use crate::Stack;
use serde_json::{json, Value};

pub struct FakeStripe {
    /// Its base URL (`http://127.0.0.1:PORT`): API, hosted checkout pages and admin.
    pub url: String,
}

impl FakeStripe {
    /// Starts one with a short retry schedule, so a refused delivery comes back within
    /// seconds.
    pub fn start() -> FakeStripe {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async move {
                let config = fake_stripe::FakeConfig {
                    retry_delays_ms: vec![300, 600, 1200, 2400],
                    ..fake_stripe::FakeConfig::default()
                };
                let (addr, handle) = fake_stripe::spawn(config).await;
                tx.send(format!("http://{addr}")).unwrap();
                let _ = handle.await;
            });
        });
        FakeStripe {
            url: rx.recv().unwrap(),
        }
    }

    /// Its webhooks go to `stack`'s endpoint at once.
    pub async fn deliver_to(&self, stack: &Stack) {
        self.admin(
            "/webhook",
            json!({
                "url": stack.url("/billing/stripe-webhook"),
                "paused": false,
                "delay_ms": 0,
            }),
        )
        .await;
    }

    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .post(format!("{}/admin{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        response.json().await.unwrap_or(Value::Null)
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        reqwest::get(format!("{}/admin{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Clicks a button of the hosted page (`pay`, `decline`, `cancel`), as a browser posts
    /// its form; answers the status and where it redirects.
    pub async fn click(&self, session: &str, action: &str) -> (u16, String) {
        let response = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/checkout/{session}/{action}", self.url))
            .form(&[("action", action)])
            .send()
            .await
            .unwrap();
        let location = response
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (response.status().as_u16(), location)
    }

    /// The events of one type about a checkout session (by its id or its payment intent).
    pub async fn events(&self, kind: &str, object_id: &str) -> Vec<Value> {
        let events = self.admin_get("/events").await;
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .filter(|e| {
                let o = &e["data"]["object"];
                o["id"] == object_id || o["payment_intent"] == object_id
            })
            .cloned()
            .collect()
    }

    /// Every checkout session the fake has, for counting.
    pub async fn session_count(&self) -> usize {
        self.admin_get("/sessions").await["sessions"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }
}
