//! End-to-end tests of the fake Lambda Cloud API over HTTP. Timers are short (provision 200 ms)
//! and the launch limit is lowered except in the test about it.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use fake_datacrunch::RateLimits;
use fake_lambda::{default_launch_limit, spawn, LambdaConfig};
use serde_json::{json, Value};

const KEY: &str = "test-lambda-key";
const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGn7nL1Y0Yk0p8wPq9bV0vYb2Qk3yQ0l1x8WmR7l0aBc test";

struct Fake {
    root: String,
    http: reqwest::Client,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Resp {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

fn config() -> LambdaConfig {
    LambdaConfig {
        api_key: KEY.into(),
        provision_ms: 200,
        shutdown_ms: 100,
        terminate_ms: 50,
        rate_limits: RateLimits {
            enabled: false,
            ..default_launch_limit()
        },
        // Requests (the client's too) and answers against Lambda's OpenAPI document, when
        // it is there (`LAMBDA_OPENAPI`; see fake_lambda::conformance).
        conformance: fake_datacrunch::ConformanceMode::Strict,
        ..LambdaConfig::default()
    }
}

impl Fake {
    async fn start(config: LambdaConfig) -> Fake {
        let (addr, _) = spawn(config).await;
        Fake {
            root: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send(
            self.http
                .get(format!("{}/api/v1{path}", self.root))
                .bearer_auth(KEY),
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(
            self.http
                .post(format!("{}/api/v1{path}", self.root))
                .bearer_auth(KEY)
                .json(&body),
        )
        .await
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        self.http
            .post(format!("{}/admin{path}", self.root))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn state(&self) -> Value {
        self.http
            .get(format!("{}/admin/state", self.root))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn add_key(&self, name: &str) -> String {
        let r = self
            .post(
                "/ssh-keys",
                json!({ "name": name, "public_key": PUBLIC_KEY }),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"]["id"].as_str().unwrap().to_string()
    }

    async fn launch(&self, body: Value) -> Resp {
        self.post("/instance-operations/launch", body).await
    }

    async fn launch_ok(&self, body: Value) -> String {
        let r = self.launch(body).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let ids = r.body["data"]["instance_ids"].as_array().unwrap();
        assert_eq!(ids.len(), 1);
        ids[0].as_str().unwrap().to_string()
    }

    async fn status(&self, id: &str) -> String {
        let r = self.get(&format!("/instances/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["data"]["status"].as_str().unwrap().to_string()
    }

    async fn wait_status(&self, id: &str, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status(id).await;
            if s == want {
                return;
            }
            assert!(Instant::now() < deadline, "{id} is {s}, wanted {want}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn launch_body(instance_type: &str, region: &str, key: &str) -> Value {
    json!({
        "region_name": region,
        "instance_type_name": instance_type,
        "ssh_key_names": [key],
        "name": "mimiry-job-1",
        "quantity": 1,
    })
}

#[tokio::test]
async fn auth_accepts_bearer_and_basic_and_refuses_anything_else() {
    let fake = Fake::start(config()).await;
    let url = format!("{}/api/v1/instance-types", fake.root);
    let ok = fake.send(fake.http.get(&url).bearer_auth(KEY)).await;
    assert_eq!(ok.status, 200);
    let basic = fake
        .send(fake.http.get(&url).basic_auth(KEY, Some("")))
        .await;
    assert_eq!(basic.status, 200);
    for bad in [fake.http.get(&url).bearer_auth("nope"), fake.http.get(&url)] {
        let r = fake.send(bad).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.code(), "global/invalid-api-key");
    }
}

#[tokio::test]
async fn catalog_has_prices_specs_and_per_region_capacity() {
    let fake = Fake::start(config()).await;
    let r = fake.get("/instance-types").await;
    let data = r.body["data"].as_object().unwrap();
    let a10 = &data["gpu_1x_a10"];
    assert_eq!(a10["instance_type"]["price_cents_per_hour"], 75);
    assert_eq!(a10["instance_type"]["specs"]["vcpus"], 30);
    let regions: Vec<&str> = a10["regions_with_capacity_available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(regions, ["us-east-1", "us-west-1"]);
    assert_eq!(
        data["gpu_8x_v100"]["regions_with_capacity_available"],
        json!([])
    );
}

#[tokio::test]
async fn launch_boots_to_active_and_terminate_ends_it() {
    let fake = Fake::start(config()).await;
    fake.add_key("k1").await;
    let id = fake
        .launch_ok(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    assert_eq!(fake.status(&id).await, "booting");
    fake.wait_status(&id, "active", Duration::from_secs(3))
        .await;
    let inst = fake.get(&format!("/instances/{id}")).await.body["data"].clone();
    assert_eq!(inst["name"], "mimiry-job-1");
    assert_eq!(inst["region"]["name"], "us-east-1");
    assert_eq!(inst["instance_type"]["name"], "gpu_1x_a10");
    assert_eq!(inst["ssh_key_names"], json!(["k1"]));
    assert!(inst["ip"].is_string());
    let list = fake.get("/instances").await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);

    let t = fake
        .post(
            "/instance-operations/terminate",
            json!({ "instance_ids": [id] }),
        )
        .await;
    assert_eq!(t.status, 200, "{}", t.body);
    assert_eq!(t.body["data"]["terminated_instances"][0]["id"], id.as_str());
    fake.wait_status(&id, "terminated", Duration::from_secs(2))
        .await;
    let list = fake.get("/instances").await;
    assert_eq!(list.body["data"], json!([]));
    // The admin dump (what the leak checks read) has it, deleted.
    let state = fake.state().await;
    assert_eq!(state["instances"][0]["deleted"], true);

    let unknown = fake
        .post(
            "/instance-operations/terminate",
            json!({ "instance_ids": ["nope"] }),
        )
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "global/object-does-not-exist");
    let missing = fake.get("/instances/nope").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn launch_validates_like_the_real_api() {
    let fake = Fake::start(config()).await;
    fake.add_key("k1").await;
    fake.add_key("k2").await;
    let mut two_keys = launch_body("gpu_1x_a10", "us-east-1", "k1");
    two_keys["ssh_key_names"] = json!(["k1", "k2"]);
    let mut no_key = launch_body("gpu_1x_a10", "us-east-1", "k1");
    no_key["ssh_key_names"] = json!([]);
    let mut unknown_field = launch_body("gpu_1x_a10", "us-east-1", "k1");
    unknown_field["image_id"] = json!("x");
    for body in [two_keys, no_key, unknown_field] {
        let r = fake.launch(body).await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.code(), "global/invalid-parameters");
    }
    let r = fake
        .launch(launch_body("gpu_1x_a10", "us-east-1", "ghost"))
        .await;
    assert_eq!(r.code(), "global/object-does-not-exist");
    // No capacity there (the A10 is in us-east-1 and us-west-1 only), and nowhere for the V100.
    for (t, region) in [("gpu_1x_a10", "us-south-1"), ("gpu_8x_v100", "us-east-1")] {
        let r = fake.launch(launch_body(t, region, "k1")).await;
        assert_eq!(r.status, 400);
        assert_eq!(r.code(), "instance-operations/launch/insufficient-capacity");
    }
    assert_eq!(fake.state().await["instances"], json!([]));
}

#[tokio::test]
async fn launches_are_rate_limited_per_account() {
    let fake = Fake::start(LambdaConfig {
        rate_limits: default_launch_limit(),
        ..config()
    })
    .await;
    fake.add_key("k1").await;
    fake.launch_ok(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    let r = fake
        .launch(launch_body("gpu_1x_a10", "us-west-1", "k1"))
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    // Reads are not limited.
    assert_eq!(fake.get("/instances").await.status, 200);
    // Lowered for tests.
    fake.admin("/rate-limits", json!({ "window_ms": 50 })).await;
    tokio::time::sleep(Duration::from_millis(60)).await;
    fake.launch_ok(launch_body("gpu_1x_a10", "us-west-1", "k1"))
        .await;
}

#[tokio::test]
async fn faults_capacity_server_errors_unhealthy_and_vanishing() {
    let fake = Fake::start(config()).await;
    fake.add_key("k1").await;
    fake.admin(
        "/faults",
        json!({
            "deploy_capacity_failures": 1,
            "error_next_instances": 1,
            "server_errors": { "count": 1, "status": 503, "paths": ["/api/v1/instances"] },
        }),
    )
    .await;
    let r = fake
        .launch(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    assert_eq!(r.code(), "instance-operations/launch/insufficient-capacity");
    let bad = fake
        .launch_ok(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    let r = fake.get("/instances").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.code(), "global/unknown");
    fake.wait_status(&bad, "unhealthy", Duration::from_secs(3))
        .await;
    // Never got an address: it never came up.
    assert!(fake.get(&format!("/instances/{bad}")).await.body["data"]["ip"].is_null());

    fake.admin("/faults", json!({ "vanish_next_instances": 1 }))
        .await;
    let gone = fake
        .launch_ok(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while fake.get(&format!("/instances/{gone}")).await.status != 404 {
        assert!(Instant::now() < deadline, "never vanished");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let state = fake.state().await;
    assert_eq!(state["instances"][1]["vanished"], true);
}

#[tokio::test]
async fn ssh_keys_generate_refuse_duplicates_and_in_use_deletes() {
    let fake = Fake::start(config()).await;
    let r = fake.post("/ssh-keys", json!({ "name": "gen" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["data"]["private_key"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));
    let dup = fake.post("/ssh-keys", json!({ "name": "gen" })).await;
    assert_eq!(dup.code(), "global/duplicate");
    let id = fake.add_key("k1").await;
    let inst = fake
        .launch_ok(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    let del = |id: String| {
        let req = fake
            .http
            .delete(format!("{}/api/v1/ssh-keys/{id}", fake.root))
            .bearer_auth(KEY);
        fake.send(req)
    };
    let r = del(id.clone()).await;
    assert_eq!(r.code(), "ssh-keys/key-in-use");
    fake.post(
        "/instance-operations/terminate",
        json!({ "instance_ids": [inst] }),
    )
    .await;
    assert_eq!(del(id.clone()).await.status, 200);
    assert_eq!(del(id).await.status, 404);
    let keys = fake.get("/ssh-keys").await;
    assert_eq!(keys.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn execute_mode_runs_user_data_and_a_self_shutdown_is_unhealthy() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("fake-lambda-exec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fake = Fake::start(LambdaConfig {
        execute: Some(dir.clone()),
        ..config()
    })
    .await;
    fake.add_key("k1").await;
    let mut body = launch_body("gpu_1x_gh200", "us-east-1", "k1");
    body["user_data"] = json!("#!/bin/bash\necho \"hi from $MIMIRY_FAKE_INSTANCE_ID\"\nnvidia-smi -L\nshutdown -h now\nsleep 30\necho never\n");
    let id = fake.launch_ok(body).await;
    fake.wait_status(&id, "active", Duration::from_secs(3))
        .await;
    fake.wait_status(&id, "unhealthy", Duration::from_secs(5))
        .await;
    let log = std::fs::read_to_string(dir.join(&id).join("output.log")).unwrap();
    assert!(log.contains(&format!("hi from {id}")), "{log}");
    assert!(log.contains("GPU 0: NVIDIA GH200 480GB"), "{log}");
    assert!(!log.contains("never"), "{log}");
    // It still has its address: it came up, then went dark.
    assert!(fake.get(&format!("/instances/{id}")).await.body["data"]["ip"].is_string());
    let _ = std::fs::remove_dir_all(&dir);
}

/// With the document present (`LAMBDA_OPENAPI`), a whole session — launch, poll, faults,
/// keys, terminate, refusals — is checked and nothing violates it.
#[tokio::test]
#[ignore = "needs Lambda's OpenAPI document: LAMBDA_OPENAPI or ../shared/docs/providers/lambda-cloud.openapi.yaml"]
async fn a_session_conforms_to_lambdas_openapi_document() {
    assert!(
        fake_lambda::conformance::spec().is_some(),
        "the document is not there"
    );
    let fake = Fake::start(config()).await;
    fake.add_key("k1").await;
    let id = fake
        .launch_ok(launch_body("gpu_1x_a10", "us-east-1", "k1"))
        .await;
    fake.wait_status(&id, "active", Duration::from_secs(3))
        .await;
    fake.get("/instances").await;
    fake.get("/instance-types").await;
    fake.launch(launch_body("gpu_8x_v100", "us-east-1", "k1"))
        .await;
    fake.get("/instances/nope").await;
    fake.post(
        "/instance-operations/terminate",
        json!({ "instance_ids": [id] }),
    )
    .await;
    fake.post("/ssh-keys", json!({ "name": "generated" })).await;
    // A request the real API refuses is refused by the checks (here: two keys).
    let mut two = launch_body("gpu_1x_a10", "us-east-1", "k1");
    two["ssh_key_names"] = json!(["k1", "k1"]);
    let r = fake.launch(two).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("conformance:"),
        "{}",
        r.body
    );
    let state = fake.state().await;
    let c = &state["conformance"];
    assert!(c["responses_checked"].as_u64().unwrap() >= 8, "{c}");
    // Only the deliberate one.
    assert_eq!(c["violations"], 1, "{c}");
}
