//! End-to-end tests of the fake over HTTP, the way the provider client talks to it.
//! Timers are kept short (provision_ms 200) so the whole file runs in a few seconds.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use fake_datacrunch::{conformance, spawn, ConformanceMode, FakeConfig, RateLimits};
use serde_json::{json, Value};

const PROVISION_MS: u64 = 200;

struct Fake {
    base: String,
    http: reqwest::Client,
    token: String,
}

struct Resp {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_string()
    }
    fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Strict conformance (a request or response outside the provider's OpenAPI document fails
/// loudly); rate limits off except in the tests about them (the tests poll fast).
fn config() -> FakeConfig {
    FakeConfig {
        provision_ms: PROVISION_MS,
        shutdown_ms: 100,
        delete_ms: 50,
        conformance: ConformanceMode::Strict,
        rate_limits: RateLimits {
            enabled: false,
            ..RateLimits::default()
        },
        ..FakeConfig::default()
    }
}

impl Fake {
    async fn start(config: FakeConfig) -> Fake {
        let (addr, _handle) = spawn(config).await;
        Fake::connect(format!("http://{addr}")).await
    }

    /// A client of the fake at `base`, with a token.
    async fn connect(base: String) -> Fake {
        let mut fake = Fake {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                // The provider documents `user-agent` as a required header.
                .user_agent("fake-datacrunch-tests")
                .build()
                .unwrap(),
            token: String::new(),
        };
        let r = fake.token_request(credentials("local-secret")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        fake.token = r.json()["access_token"].as_str().unwrap().to_string();
        fake
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        Resp {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            text: resp.text().await.unwrap(),
        }
    }

    async fn token_request(&self, body: Value) -> Resp {
        self.send(reqwest::Method::POST, "/v1/oauth2/token", None, Some(body))
            .await
    }
    async fn get(&self, path: &str) -> Resp {
        self.send(reqwest::Method::GET, path, Some(&self.token), None)
            .await
    }
    async fn post(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, Some(&self.token), Some(body))
            .await
    }
    async fn put(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::PUT, path, Some(&self.token), Some(body))
            .await
    }
    async fn delete(&self, path: &str, body: Option<Value>) -> Resp {
        self.send(reqwest::Method::DELETE, path, Some(&self.token), body)
            .await
    }
    async fn admin(&self, path: &str, body: Value) -> Resp {
        self.send(reqwest::Method::POST, path, None, Some(body))
            .await
    }
    async fn state(&self) -> Value {
        self.send(reqwest::Method::GET, "/admin/state", None, None)
            .await
            .json()
    }

    async fn deploy(&self, body: Value) -> Resp {
        self.post("/v1/instances", body).await
    }

    /// Deploys and returns the plain-text id.
    async fn deploy_ok(&self, body: Value) -> String {
        let r = self.deploy(body).await;
        assert!((200..300).contains(&r.status), "{} {}", r.status, r.text);
        assert!(!r.text.starts_with('"'), "id is plain text: {}", r.text);
        r.text.trim().to_string()
    }

    async fn instance(&self, id: &str) -> Resp {
        self.get(&format!("/v1/instances/{id}")).await
    }

    async fn action(&self, id: &str, action: &str) -> Resp {
        self.put("/v1/instances", json!({ "id": [id], "action": action }))
            .await
    }

    async fn wait_status(&self, id: &str, status: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.instance(id).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let v = r.json();
            if v["status"] == status {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "instance {id} still {} (wanted {status})",
                v["status"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn credentials(secret: &str) -> Value {
    json!({ "grant_type": "client_credentials", "client_id": "mimiry-local", "client_secret": secret })
}

fn deploy_body(instance_type: &str, location: &str) -> Value {
    json!({
        "instance_type": instance_type,
        "image": "ubuntu-22.04-cuda-12.0-docker",
        "hostname": "mimiry-job-1",
        "description": "mimiry-job-1",
        "ssh_key_ids": [],
        "location_code": location,
        "os_volume": { "name": "os", "size": 50 },
        "is_spot": false,
        "existing_volumes": [],
        "volumes": [],
        "some_future_field": { "ignored": true },
    })
}

// ---- auth ----

#[tokio::test]
async fn token_issuance_and_rejection() {
    let fake = Fake::start(config()).await;

    let bad = fake.token_request(credentials("wrong")).await;
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.json(),
        json!({ "code": "unauthorized_request", "message": "Invalid client credentials" })
    );

    let ok = fake.token_request(credentials("local-secret")).await.json();
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(ok["expires_in"], 3600);
    assert!(ok["refresh_token"].as_str().unwrap().len() >= 32);
    assert!(ok["scope"].is_string());

    // No token, a bogus token, a good one.
    let r = fake
        .send(reqwest::Method::GET, "/v1/balance", None, None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized_request"));
    let r = fake
        .send(reqwest::Method::GET, "/v1/balance", Some("nope"), None)
        .await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized_request"));
    let r = fake.get("/v1/balance").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({ "amount": 50.5, "currency": "usd" }));

    // Refresh grant: rotates, and the old refresh token is spent.
    let refresh = ok["refresh_token"].as_str().unwrap();
    let grant = json!({ "grant_type": "refresh_token", "refresh_token": refresh });
    let r = fake.token_request(grant.clone()).await;
    assert_eq!(r.status, 200);
    let new_access = r.json()["access_token"].as_str().unwrap().to_string();
    let r = fake
        .send(
            reqwest::Method::GET,
            "/v1/locations",
            Some(&new_access),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = fake.token_request(grant).await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized_request"));

    let r = fake
        .token_request(json!({ "grant_type": "password" }))
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));

    assert_eq!(fake.state().await["tokens_issued"], 3);
}

#[tokio::test]
async fn tokens_expire() {
    let fake = Fake::start(FakeConfig {
        token_ttl_secs: 1,
        ..config()
    })
    .await;
    assert_eq!(fake.get("/v1/locations").await.status, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = fake.get("/v1/locations").await;
    assert_eq!((r.status, r.code().as_str()), (401, "unauthorized_request"));

    // The TTL can also be changed at run time for tokens issued later.
    let f = fake
        .admin("/admin/faults", json!({ "token_ttl_secs": 7 }))
        .await;
    assert_eq!(f.json()["token_ttl_secs"], 7);
    let r = fake.token_request(credentials("local-secret")).await;
    assert_eq!(r.json()["expires_in"], 7);
}

// ---- catalog ----

#[tokio::test]
async fn catalog_shapes() {
    let fake = Fake::start(config()).await;
    let types = fake.get("/v1/instance-types?currency=usd").await.json();
    let types = types.as_array().unwrap();
    assert!(types.len() >= 6);
    let names: Vec<&str> = types
        .iter()
        .map(|t| t["instance_type"].as_str().unwrap())
        .collect();
    for want in [
        "1V100.6V",
        "8V100.48V",
        "1A100.80S.22V",
        "8A100.80G",
        "1H100.80S.30V",
        "8H100.80S.176V",
        "CPU.4V.16G",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for t in types {
        // Prices are decimal strings.
        let p = t["price_per_hour"].as_str().expect("price string");
        assert!(p.parse::<f64>().unwrap() > 0.0);
        assert!(t["spot_price"].as_str().unwrap().parse::<f64>().is_ok());
        assert!(t["id"].is_string() && t["description"].is_string());
        assert!(t["cpu"]["number_of_cores"].as_u64().unwrap() > 0);
        assert!(t["gpu"]["number_of_gpus"].is_u64());
        assert!(t["gpu_memory"]["size_in_gigabytes"].is_u64());
        assert!(t["memory"]["size_in_gigabytes"].is_u64());
        assert!(t["storage"]["description"].is_string());
    }
    let h100 = types
        .iter()
        .find(|t| t["instance_type"] == "1H100.80S.30V")
        .unwrap();
    assert_eq!(h100["price_per_hour"], "3.95");
    assert_eq!(h100["gpu"]["description"], "1x H100 SXM5 80GB");
    let cpu = types
        .iter()
        .find(|t| t["instance_type"] == "CPU.4V.16G")
        .unwrap();
    assert_eq!(cpu["gpu"]["number_of_gpus"], 0);

    let locs = fake.get("/v1/locations").await.json();
    let codes: Vec<&str> = locs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["FIN-01", "FIN-02", "FIN-03", "ICE-01"]);
    assert!(locs[0]["name"].is_string() && locs[0]["country_code"].is_string());

    let images = fake.get("/v1/images").await.json();
    let all: Vec<&str> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_type"].as_str().unwrap())
        .collect();
    for want in [
        "ubuntu-22.04-cuda-12.0",
        "ubuntu-22.04-cuda-12.0-docker",
        "ubuntu-24.04-cuda-12.8-open-docker",
        "ubuntu-22.04",
    ] {
        assert!(all.contains(&want), "{want}");
    }
    for i in images.as_array().unwrap() {
        assert!(i["id"].is_string() && i["name"].is_string() && i["details"].is_array());
        assert!(i["is_default"].is_boolean() && i["is_cluster"].is_boolean());
    }
    let cpu_images = fake.get("/v1/images?instance_type=CPU.4V.16G").await.json();
    assert!(!cpu_images.as_array().unwrap().is_empty());
    for i in cpu_images.as_array().unwrap() {
        assert!(!i["image_type"].as_str().unwrap().contains("cuda"), "{i}");
    }
    let v100_images = fake.get("/v1/images?instance_type=1V100.6V").await.json();
    assert!(v100_images
        .as_array()
        .unwrap()
        .iter()
        .all(|i| !i["image_type"].as_str().unwrap().contains("open")));
}

#[tokio::test]
async fn availability_differs_by_location() {
    let fake = Fake::start(config()).await;
    let all = fake.get("/v1/instance-availability").await.json();
    let by_loc = |code: &str| -> Vec<String> {
        all.as_array()
            .unwrap()
            .iter()
            .find(|l| l["location_code"] == code)
            .unwrap_or_else(|| panic!("{code}"))["availabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let has = |code: &str, t: &str| by_loc(code).iter().any(|x| x == t);
    assert!(has("FIN-01", "8H100.80S.176V") && has("ICE-01", "8H100.80S.176V"));
    assert!(!has("FIN-02", "8H100.80S.176V") && !has("FIN-03", "8H100.80S.176V"));
    assert!(has("FIN-01", "1V100.6V") && has("FIN-02", "1V100.6V") && has("FIN-03", "1V100.6V"));
    assert!(!has("ICE-01", "1V100.6V"));

    let one = fake
        .get("/v1/instance-availability?location_code=FIN-02")
        .await
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["location_code"], "FIN-02");

    // Spot inventory is separate (and smaller).
    let spot = fake
        .get("/v1/instance-availability?is_spot=true&location_code=FIN-02")
        .await
        .json();
    assert_eq!(spot[0]["availabilities"], json!([]));

    let yes = fake
        .get("/v1/instance-availability/8H100.80S.176V?location_code=ICE-01")
        .await;
    assert_eq!(yes.json(), json!(true));
    let no = fake
        .get("/v1/instance-availability/8H100.80S.176V?location_code=FIN-02")
        .await;
    assert_eq!(no.json(), json!(false));
    let anywhere = fake.get("/v1/instance-availability/1V100.6V").await;
    assert_eq!(anywhere.json(), json!(true));
}

// ---- SSH keys and scripts ----

#[tokio::test]
async fn ssh_keys_and_scripts() {
    let fake = Fake::start(config()).await;
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test";
    let r = fake
        .post("/v1/sshkeys", json!({ "name": "k", "key": key }))
        .await;
    assert_eq!(r.status, 201);
    let k1 = r.text.clone();
    assert_eq!(k1.len(), 36, "plain-text uuid: {k1}");
    // Names need not be unique; the alias path works too.
    let k2 = fake
        .post("/v1/ssh-keys", json!({ "name": "k", "key": key }))
        .await
        .text;
    let list = fake.get("/v1/sshkeys").await.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let one = fake.get(&format!("/v1/sshkeys/{k1}")).await.json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["key"], key);
    assert_eq!(one[0]["name"], "k");
    let missing = fake.get("/v1/sshkeys/nope").await;
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "not_found")
    );
    let bad = fake
        .post("/v1/sshkeys", json!({ "name": "k", "key": "hello" }))
        .await;
    assert_eq!((bad.status, bad.code().as_str()), (400, "invalid_request"));

    assert_eq!(
        fake.delete(&format!("/v1/sshkeys/{k1}"), None).await.status,
        200
    );
    assert_eq!(
        fake.delete(&format!("/v1/sshkeys/{k1}"), None).await.status,
        200
    );
    let r = fake
        .delete("/v1/ssh-keys", Some(json!({ "keys": [k2, "missing"] })))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.get("/v1/sshkeys").await.json(), json!([]));

    let r = fake
        .post(
            "/v1/scripts",
            json!({ "name": "s", "script": "#!/bin/bash\necho hi\n" }),
        )
        .await;
    assert_eq!(r.status, 201);
    let s1 = r.text.clone();
    let one = fake.get(&format!("/v1/scripts/{s1}")).await.json();
    assert_eq!(one[0]["script"], "#!/bin/bash\necho hi\n");
    assert_eq!(
        fake.get("/v1/scripts")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let r = fake
        .delete("/v1/scripts", Some(json!({ "scripts": [s1, "missing"] })))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.delete("/v1/scripts/missing", None).await.status, 200);
    assert_eq!(fake.get("/v1/scripts").await.json(), json!([]));
    assert_eq!(fake.state().await["scripts"], json!([]));
}

// ---- instances ----

#[tokio::test]
async fn deploy_lifecycle_and_delete() {
    let fake = Fake::start(config()).await;
    let id = fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;

    let v = fake.instance(&id).await.json();
    assert_eq!(v["status"], "ordered");
    assert_eq!(v["ip"], Value::Null);
    // The OS volume exists from the deploy on (the document makes the field non-null).
    let os_volume = v["os_volume_id"].as_str().unwrap().to_string();
    assert_eq!(v["volume_ids"], json!([os_volume]));
    assert_eq!(v["location"], "FIN-01");
    assert_eq!(v["hostname"], "mimiry-job-1");
    assert_eq!(v["price_per_hour"], 0.89);
    assert_eq!(v["image"], "ubuntu-22.04-cuda-12.0-docker");
    assert_eq!(v["ssh_key_ids"], json!([]));
    assert!(chrono::DateTime::parse_from_rfc3339(v["created_at"].as_str().unwrap()).is_ok());

    // Refused while booting.
    let r = fake.action(&id, "delete").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "forbidden_action");
    assert_eq!(r.message(), "Can't discontinue a provisioning instance");

    fake.wait_status(&id, "provisioning", Duration::from_secs(2))
        .await;
    let r = fake.action(&id, "shutdown").await;
    assert_eq!((r.status, r.code().as_str()), (400, "forbidden_action"));

    let v = fake
        .wait_status(&id, "running", Duration::from_secs(2))
        .await;
    assert!(v["ip"].is_string());
    assert!(v["os_volume_id"].is_string());

    let list = fake.get("/v1/instances").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let running = fake.get("/v1/instances?status=running").await.json();
    assert_eq!(running.as_array().unwrap().len(), 1);
    let offline = fake.get("/v1/instances?status=offline").await.json();
    assert_eq!(offline, json!([]));

    let r = fake.action(&id, "delete").await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(
        r.json(),
        json!([{ "action": "delete", "instanceId": id, "status": "success" }])
    );
    assert_eq!(fake.instance(&id).await.json()["status"], "deleting");
    // Already being deleted: 204, as documented for an action already in the requested state.
    let r = fake.action(&id, "delete").await;
    assert_eq!((r.status, r.text.as_str()), (204, ""));
    fake.wait_status(&id, "discontinued", Duration::from_secs(2))
        .await;
    assert_eq!(fake.get("/v1/instances").await.json(), json!([]));

    let r = fake.instance("00000000-0000-0000-0000-000000000000").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({ "code": "not_found", "message": "Invalid instance id" })
    );
    let r = fake
        .action("00000000-0000-0000-0000-000000000000", "delete")
        .await;
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "Invalid instance id")
    );

    let state = fake.state().await;
    let inst = &state["instances"][0];
    assert_eq!(inst["deleted"], true);
    assert!(inst["deleted_at_ms"].as_i64().unwrap() >= inst["created_at_ms"].as_i64().unwrap());
    assert_eq!(state["requests"]["by_route"]["POST /v1/instances"], 1);
    assert_eq!(state["requests"]["by_route"]["PUT /v1/instances"], 5);
    assert!(
        state["requests"]["by_route"]["GET /v1/instances/{id}"]
            .as_u64()
            .unwrap()
            >= 3
    );
}

#[tokio::test]
async fn shutdown_start_and_multi_id_actions() {
    let fake = Fake::start(config()).await;
    let mut b = deploy_body("CPU.4V.16G", "FIN-01");
    b["image"] = json!("ubuntu-22.04");
    let a = fake.deploy_ok(b).await;
    fake.wait_status(&a, "running", Duration::from_secs(2))
        .await;
    assert_eq!(fake.action(&a, "shutdown").await.status, 202);
    // Still running during shutdown_ms, then offline.
    fake.wait_status(&a, "offline", Duration::from_secs(2))
        .await;
    assert_eq!(fake.action(&a, "start").await.status, 202);
    fake.wait_status(&a, "running", Duration::from_secs(1))
        .await;
    assert_eq!(fake.action(&a, "force_shutdown").await.status, 202);
    assert_eq!(fake.instance(&a).await.json()["status"], "offline");
    let r = fake.action(&a, "explode").await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));

    // A single string id is accepted; several ids with a failure answer 207.
    let r = fake
        .put("/v1/instances", json!({ "id": a, "action": "delete" }))
        .await;
    assert_eq!(r.status, 202);
    let missing = "00000000-0000-4000-8000-000000000000";
    let r = fake
        .put(
            "/v1/instances",
            json!({ "id": [a, missing], "action": "delete" }),
        )
        .await;
    assert_eq!(r.status, 207, "{}", r.text);
    // `a` is already being deleted (success); `missing` is unknown.
    assert_eq!(
        r.json(),
        json!([
            { "action": "delete", "instanceId": a, "status": "success" },
            { "action": "delete", "instanceId": missing, "status": "error",
              "error": "Invalid instance id", "statusCode": 404 },
        ])
    );
}

#[tokio::test]
async fn deploy_validation() {
    let fake = Fake::start(config()).await;
    let mut cases = Vec::new();
    let mut b = deploy_body("1V100.6V", "FIN-01");
    b.as_object_mut().unwrap().remove("hostname");
    cases.push((b, "hostname"));
    cases.push((deploy_body("9Z999.1V", "FIN-01"), "instance type"));
    cases.push((deploy_body("1V100.6V", "MARS-01"), "location"));
    let mut b = deploy_body("1V100.6V", "FIN-01");
    b["image"] = json!("windows-11");
    cases.push((b, "image"));
    let mut b = deploy_body("1V100.6V", "FIN-01");
    b["image"] = json!("ubuntu-24.04-cuda-12.8-open-docker");
    cases.push((b, "not valid for this instance type"));
    let mut b = deploy_body("1V100.6V", "FIN-01");
    b["ssh_key_ids"] = json!(["00000000-0000-4000-8000-000000000000"]);
    cases.push((b, "ssh key"));
    let mut b = deploy_body("1V100.6V", "FIN-01");
    b["startup_script_id"] = json!("nope");
    cases.push((b, "script"));
    for (body, fragment) in cases {
        let r = fake.deploy(body).await;
        assert_eq!(r.status, 400, "{fragment}: {}", r.text);
        assert_eq!(r.code(), "invalid_request");
        assert!(r.message().contains(fragment), "{fragment}: {}", r.text);
    }
    // Malformed JSON is still answered in the provider's envelope.
    let r = fake
        .send(
            reqwest::Method::POST,
            "/v1/instances",
            Some(&fake.token),
            None,
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));
    // An image id works as well as an image_type.
    let mut b = deploy_body("1H100.80S.30V", "FIN-03");
    b["image"] = json!("0888da25-8a8e-4c3f-9a7b-2d6f1c0e0002");
    let id = fake.deploy_ok(b).await;
    assert_eq!(
        fake.instance(&id).await.json()["image"],
        "ubuntu-22.04-cuda-12.0-docker"
    );
    assert!(fake.state().await["instances"].as_array().unwrap().len() == 1);
}

#[tokio::test]
async fn capacity_errors() {
    let fake = Fake::start(config()).await;
    // Not in the location's inventory.
    let r = fake.deploy(deploy_body("1V100.6V", "ICE-01")).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json(),
        json!({
            "code": "service_unavailable",
            "message": "Not enough resources to deploy a 1 GPU instance type 1V100.6V in ICE-01"
        })
    );
    // Spot in a location without spot inventory.
    let mut b = deploy_body("1V100.6V", "FIN-02");
    b["is_spot"] = json!(true);
    assert_eq!(fake.deploy(b).await.status, 503);

    // Injected: the next two deploys fail even where the type is available.
    fake.admin("/admin/faults", json!({ "deploy_capacity_failures": 2 }))
        .await;
    let r = fake.deploy(deploy_body("1V100.6V", "FIN-03")).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.message(),
        "Not enough resources to deploy a 1 GPU instance type 1V100.6V in FIN-03"
    );
    assert_eq!(
        fake.deploy(deploy_body("8V100.48V", "FIN-01")).await.status,
        503
    );
    let id = fake.deploy_ok(deploy_body("1V100.6V", "FIN-03")).await;
    let state = fake.state().await;
    assert_eq!(state["instances"].as_array().unwrap().len(), 1);
    assert_eq!(state["instances"][0]["id"], id);
    assert_eq!(state["faults"]["deploy_capacity_failures"], 0);

    // A spot deploy is billed at the spot price.
    let mut b = deploy_body("1V100.6V", "FIN-01");
    b["is_spot"] = json!(true);
    let spot = fake.deploy_ok(b).await;
    let v = fake.instance(&spot).await.json();
    assert_eq!(
        (v["is_spot"].clone(), v["price_per_hour"].clone()),
        (json!(true), json!(0.36))
    );
}

#[tokio::test]
async fn server_error_burst_and_slowness() {
    let fake = Fake::start(config()).await;
    let f = fake
        .admin(
            "/admin/faults",
            json!({ "server_errors": { "count": 2, "status": 502, "paths": ["/v1/instances"] } }),
        )
        .await;
    assert_eq!(f.status, 200);
    assert_eq!(f.json()["server_errors"]["count"], 2);
    // Other paths are unaffected.
    assert_eq!(fake.get("/v1/balance").await.status, 200);
    for _ in 0..2 {
        let r = fake.get("/v1/instances").await;
        assert_eq!((r.status, r.code().as_str()), (502, "server_error"));
    }
    assert_eq!(fake.get("/v1/instances").await.status, 200);

    // A burst without a path filter hits everything, before auth.
    fake.admin("/admin/faults", json!({ "server_errors": { "count": 1 } }))
        .await;
    let r = fake.token_request(credentials("local-secret")).await;
    assert_eq!(r.status, 500);
    assert_eq!(fake.get("/v1/locations").await.status, 200);

    // Slow: only the next response, delayed after the work is done.
    fake.admin("/admin/faults", json!({ "slow_ms": 300, "slow_count": 1 }))
        .await;
    let t = Instant::now();
    assert_eq!(fake.get("/v1/locations").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    let t = Instant::now();
    assert_eq!(fake.get("/v1/locations").await.status, 200);
    assert!(t.elapsed() < Duration::from_millis(300));

    let state = fake.state().await;
    assert_eq!(state["requests"]["by_route"]["GET /v1/instances"], 3);
    assert_eq!(state["requests"]["by_route"]["POST /v1/oauth2/token"], 2);
    // The token request made by `Fake::start` counts too.
    assert_eq!(state["requests"]["total"], 9);

    // A deploy whose response is slower than the client's timeout still created the instance.
    fake.admin("/admin/faults", json!({ "slow_ms": 1500, "slow_count": 1 }))
        .await;
    let quick = reqwest::Client::builder()
        .user_agent("fake-datacrunch-tests")
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let res = quick
        .post(format!("{}/v1/instances", fake.base))
        .bearer_auth(&fake.token)
        .json(&deploy_body("1V100.6V", "FIN-01"))
        .send()
        .await;
    assert!(res.is_err(), "the client timed out");
    let list = fake.get("/v1/instances").await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["hostname"], "mimiry-job-1");
}

#[tokio::test]
async fn error_vanish_and_delete_refusal_faults() {
    let fake = Fake::start(config()).await;
    fake.admin(
        "/admin/faults",
        json!({ "error_next_instances": 1, "vanish_next_instances": 1, "delete_refusals": 1 }),
    )
    .await;
    let failing = fake.deploy_ok(deploy_body("1A100.80S.22V", "FIN-01")).await;
    let vanishing = fake.deploy_ok(deploy_body("1A100.80S.22V", "FIN-02")).await;
    let normal = fake.deploy_ok(deploy_body("1A100.80S.22V", "ICE-01")).await;

    let v = fake
        .wait_status(&failing, "error", Duration::from_secs(2))
        .await;
    assert_eq!(v["ip"], Value::Null);
    fake.wait_status(&normal, "running", Duration::from_secs(2))
        .await;
    let r = fake.instance(&vanishing).await;
    assert_eq!(
        (r.status, r.message().as_str()),
        (404, "Invalid instance id")
    );
    let ids: Vec<Value> = fake
        .get("/v1/instances")
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(ids, [json!(failing), json!(normal)]);

    // An error instance can be deleted; the injected refusal hits the first delete that would
    // have succeeded, then deletes work again.
    let r = fake.action(&normal, "delete").await;
    assert_eq!((r.status, r.code().as_str()), (400, "forbidden_action"));
    assert_eq!(fake.instance(&normal).await.json()["status"], "running");
    assert_eq!(fake.action(&normal, "delete").await.status, 202);
    assert_eq!(fake.action(&failing, "delete").await.status, 202);
    for id in [&normal, &failing] {
        fake.wait_status(id, "discontinued", Duration::from_secs(2))
            .await;
    }

    let state = fake.state().await;
    let by_id = |id: &str| {
        state["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(by_id(&vanishing)["vanished"], true);
    assert_eq!(by_id(&vanishing)["deleted"], false);
    assert_eq!(by_id(&normal)["deleted"], true);
    assert_eq!(by_id(&failing)["status"], "discontinued");

    // Admin forcing and reset.
    let other = fake.deploy_ok(deploy_body("1A100.80S.22V", "FIN-01")).await;
    let r = fake
        .admin(
            &format!("/admin/instances/{other}/status"),
            json!({ "status": "no_capacity" }),
        )
        .await;
    assert_eq!(r.status, 200);
    // The provisioning timer was cancelled by the forced status.
    tokio::time::sleep(Duration::from_millis(PROVISION_MS + 100)).await;
    assert_eq!(fake.instance(&other).await.json()["status"], "no_capacity");
    let r = fake
        .admin(&format!("/admin/instances/{other}/vanish"), json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(fake.instance(&other).await.status, 404);
    let r = fake
        .admin("/admin/instances/x/status", json!({ "status": "bogus" }))
        .await;
    assert_eq!(r.status, 400);

    assert_eq!(fake.admin("/admin/reset", json!({})).await.status, 200);
    let state = fake.state().await;
    assert_eq!(state["instances"], json!([]));
    assert_eq!(state["requests"]["total"], 0);
    assert_eq!(state["faults"]["delete_refusals"], 0);
    // Tokens survive a reset unless asked otherwise.
    assert_eq!(fake.get("/v1/balance").await.status, 200);
    fake.admin("/admin/reset", json!({ "tokens": true })).await;
    assert_eq!(fake.get("/v1/balance").await.status, 401);
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_envelope() {
    // Report mode: in strict mode the conformance check refuses these before routing.
    let fake = Fake::start(FakeConfig {
        conformance: ConformanceMode::Report,
        ..config()
    })
    .await;
    let r = fake.get("/v1/nothing-here").await;
    assert_eq!((r.status, r.code().as_str()), (404, "not_found"));
    let r = fake.delete("/v1/balance", None).await;
    assert_eq!(r.status, 405);
    assert!(r.json()["code"].is_string());
    // Neither operation is in the provider's document.
    if conformance::spec().is_some() {
        assert_eq!(fake.state().await["conformance_violations"], 2);
    }
}

// ---- execute mode ----

/// A fresh execute-mode work directory under `base`.
fn work_dir_in(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(format!(
        "fake-datacrunch-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Under /tmp, which the sandbox mounts over: it has to find the instance's directory first.
fn work_dir(name: &str) -> PathBuf {
    work_dir_in(&std::env::temp_dir(), name)
}

/// Under target/tmp: the directories of other instances stay reachable by path from inside a
/// sandbox, so only their owner and mode keep them out.
fn work_dir_outside_tmp(name: &str) -> PathBuf {
    work_dir_in(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

async fn deploy_with_script(fake: &Fake, instance_type: &str, script: &str) -> String {
    let sid = fake
        .post("/v1/scripts", json!({ "name": "job", "script": script }))
        .await
        .text;
    let mut b = deploy_body(instance_type, "FIN-01");
    b["startup_script_id"] = json!(sid);
    fake.deploy_ok(b).await
}

async fn wait_for<F: Fn() -> bool>(what: &str, within: Duration, f: F) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn execute_mode_runs_the_script_and_shutdown_powers_off() {
    let dir = work_dir("shutdown");
    let fake = Fake::start(FakeConfig {
        execute: Some(dir.clone()),
        ..config()
    })
    .await;
    let script = "#!/bin/bash\n\
        echo \"hello from $MIMIRY_FAKE_INSTANCE_ID\"\n\
        nvidia-smi -L\n\
        nvidia-smi --query-gpu=name,memory.total --format=csv,noheader\n\
        shutdown -h now\n\
        sleep 30\n\
        echo never\n";
    let id = deploy_with_script(&fake, "1H100.80S.30V", script).await;
    fake.wait_status(&id, "running", Duration::from_secs(2))
        .await;
    fake.wait_status(&id, "offline", Duration::from_secs(5))
        .await;

    let log = std::fs::read_to_string(dir.join(&id).join("output.log")).unwrap();
    assert!(log.contains(&format!("hello from {id}")), "{log}");
    assert!(log.contains("GPU 0: NVIDIA H100 80GB HBM3"), "{log}");
    assert!(log.contains("NVIDIA H100 80GB HBM3, 81520 MiB"), "{log}");
    assert!(!log.contains("never"), "{log}");

    let state = fake.state().await;
    let p = &state["instances"][0]["script_process"];
    assert_eq!(p["killed"], true, "{p}");
    let pid = p["pid"].as_u64().unwrap();
    wait_for("the script to be reaped", Duration::from_secs(3), || {
        !PathBuf::from(format!("/proc/{pid}")).exists()
    })
    .await;
    // Deleting the offline instance is fine and does not restart anything.
    assert_eq!(fake.action(&id, "delete").await.status, 202);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A delete while the script runs (in a work directory under /tmp) kills it and its
/// background child.
#[tokio::test]
async fn execute_mode_delete_kills_a_running_script() {
    let dir = work_dir("delete");
    let fake = Fake::start(FakeConfig {
        execute: Some(dir.clone()),
        ..config()
    })
    .await;
    // A background child, and a CPU instance whose nvidia-smi fails.
    let script = "#!/bin/bash\n\
        nvidia-smi || echo \"nvidia-smi exit $?\"\n\
        sleep 60 &\n\
        echo child started\n\
        wait\n";
    let mut b = deploy_body("CPU.4V.16G", "FIN-01");
    b["image"] = json!("ubuntu-22.04");
    let sid = fake
        .post("/v1/scripts", json!({ "name": "job", "script": script }))
        .await
        .text;
    b["startup_script_id"] = json!(sid);
    let id = fake.deploy_ok(b).await;
    fake.wait_status(&id, "running", Duration::from_secs(2))
        .await;
    let uid = sandbox_uid(&fake, &id).await;

    wait_for("the child to start", Duration::from_secs(3), || {
        read_log(&dir, &id).contains("child started")
    })
    .await;
    let log = read_log(&dir, &id);
    assert!(log.contains("nvidia-smi exit 9"), "{log}");
    let names: Vec<String> = processes_of(uid).into_iter().map(|(_, n)| n).collect();
    assert!(names.contains(&"sleep".to_string()), "{names:?}");

    assert_eq!(fake.action(&id, "delete").await.status, 202);
    wait_for(
        "the script and its child to die",
        Duration::from_secs(3),
        || processes_of(uid).is_empty(),
    )
    .await;
    wait_for(
        "the directory to be removed",
        Duration::from_secs(5),
        || !dir.join(&id).exists(),
    )
    .await;
    let p = admin_instance(&fake, &id).await["script_process"].clone();
    assert_eq!(
        (&p["exited"], &p["exit_code"]),
        (&json!(true), &Value::Null),
        "{p}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The instance's entry in `GET /admin/state`.
async fn admin_instance(fake: &Fake, id: &str) -> Value {
    let state = fake.state().await;
    state["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {state}"))
        .clone()
}

/// The sandbox uid of an instance whose script has started. Fails, rather than skips, where the
/// fake cannot sandbox (not root, no unshare/setpriv): these tests are the proof that it does.
async fn sandbox_uid(fake: &Fake, id: &str) -> u32 {
    let mut p = Value::Null;
    for _ in 0..100 {
        p = admin_instance(fake, id).await["script_process"].clone();
        if !p.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let uid = p["uid"].as_u64().unwrap_or_else(|| {
        panic!(
            "instance {id} runs without a sandbox (the fake needs root, unshare and setpriv): {p}"
        )
    });
    u32::try_from(uid).unwrap()
}

/// Live (not zombie) processes whose real uid is `uid`, as `(pid, name)`, seen from this
/// machine's /proc: every process of a sandbox, whatever its session or namespace.
fn processes_of(uid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let real_uid = field("Uid:").split_whitespace().next().map(str::to_string);
        if real_uid == Some(uid.to_string()) && !field("State:").starts_with('Z') {
            found.push((pid, field("Name:")));
        }
    }
    found
}

fn read_log(dir: &Path, id: &str) -> String {
    std::fs::read_to_string(dir.join(id).join("output.log")).unwrap_or_default()
}

/// Job B tries every way to A's secrets: A's directory by path (script with its token, a
/// world-readable file), the temporary directories, and other processes' command lines (where
/// the real wrapper's `curl -H 'Authorization: Bearer …'` shows the token). A does the same on
/// itself to show each way would work.
#[tokio::test]
async fn sandbox_keeps_instances_apart() {
    let dir = work_dir_outside_tmp("apart");
    let fake = Fake::start(FakeConfig {
        execute: Some(dir.clone()),
        ..config()
    })
    .await;
    // The token is built by the shell so that it is in a process's argv but never in a
    // pattern `grep` gets as an argument (grep would find itself).
    let script_a = "#!/bin/bash\n\
        # Authorization: Bearer SECRET-IN-A-SCRIPT\n\
        echo SECRET-IN-A-FILE > secret.txt && chmod 644 secret.txt\n\
        echo SECRET-IN-A-TMP > /tmp/a.txt && chmod 644 /tmp/a.txt\n\
        echo SECRET-IN-A-SHM > /dev/shm/a.txt && chmod 644 /dev/shm/a.txt\n\
        printf '%s\\n' \"SECRET-IN-A-\"\"ARGV\" > pattern\n\
        (exec -a \"SECRET-IN-A-\"\"ARGV\" sleep 60) &\n\
        sleep 0.2\n\
        cat secret.txt /tmp/a.txt /dev/shm/a.txt\n\
        grep -q -F -f pattern /proc/[0-9]*/cmdline && echo 'A sees its own argv'\n\
        echo 'A ready'\n\
        wait\n";
    let a = deploy_with_script(&fake, "1H100.80S.30V", script_a).await;
    fake.wait_status(&a, "running", Duration::from_secs(2))
        .await;
    wait_for("A to be ready", Duration::from_secs(5), || {
        read_log(&dir, &a).contains("A ready")
    })
    .await;
    let log_a = read_log(&dir, &a);
    for own in [
        "SECRET-IN-A-FILE",
        "SECRET-IN-A-TMP",
        "SECRET-IN-A-SHM",
        "A sees its own argv",
    ] {
        assert!(log_a.contains(own), "A: {own} missing: {log_a}");
    }

    let a_dir = dir.join(&a);
    let script_b = format!(
        "#!/bin/bash\n\
         cat '{a}/startup.sh' && echo 'B read: script'\n\
         cat '{a}/secret.txt' && echo 'B read: file'\n\
         ls '{a}' && echo 'B read: listing'\n\
         cat /tmp/a.txt /var/tmp/a.txt && echo 'B read: tmp'\n\
         cat /dev/shm/a.txt && echo 'B read: shm'\n\
         printf '%s\\n' \"SECRET-IN-A-\"\"ARGV\" > pattern\n\
         grep -q -F -f pattern /proc/[0-9]*/cmdline && echo 'B read: argv'\n\
         echo \"B sees $(ls -d /proc/[0-9]* | wc -l) processes\"\n\
         echo 'B done'\n",
        a = a_dir.display()
    );
    let b = deploy_with_script(&fake, "1H100.80S.30V", &script_b).await;
    fake.wait_status(&b, "running", Duration::from_secs(2))
        .await;
    wait_for("B to finish", Duration::from_secs(5), || {
        read_log(&dir, &b).contains("B done")
    })
    .await;
    let log_b = read_log(&dir, &b);
    assert!(!log_b.contains("SECRET"), "B got at A's secrets: {log_b}");
    assert!(!log_b.contains("B read:"), "B got at A's secrets: {log_b}");
    assert!(log_b.contains("Permission denied"), "{log_b}");

    let (uid_a, uid_b) = (sandbox_uid(&fake, &a).await, sandbox_uid(&fake, &b).await);
    assert_ne!(uid_a, uid_b);
    assert_ne!(uid_a, 0);
    // Owned by A's uid, for A's eyes only.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(&a_dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o777),
        (uid_a, 0o700)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Nothing of a deleted instance keeps running, not even a `setsid nohup` child or a
/// double-forked orphan that outlived the script, and its directory is removed.
#[tokio::test]
async fn delete_kills_every_process_of_the_instance_and_removes_its_directory() {
    let dir = work_dir_outside_tmp("sandbox-delete");
    let fake = Fake::start(FakeConfig {
        execute: Some(dir.clone()),
        ..config()
    })
    .await;
    let script = "#!/bin/bash\n\
        setsid nohup sleep 1000 >/dev/null 2>&1 &\n\
        (sleep 1000 &)\n\
        echo started\n";
    let id = deploy_with_script(&fake, "1H100.80S.30V", script).await;
    fake.wait_status(&id, "running", Duration::from_secs(2))
        .await;
    let uid = sandbox_uid(&fake, &id).await;
    // The script ends at once; its children live on, as on a machine.
    let mut script_process = Value::Null;
    for _ in 0..150 {
        script_process = admin_instance(&fake, &id).await["script_process"].clone();
        if script_process["exited"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(script_process["exit_code"], 0, "{script_process}");
    assert!(read_log(&dir, &id).contains("started"));
    let sleeps = || {
        processes_of(uid)
            .into_iter()
            .filter(|(_, name)| name == "sleep")
            .count()
    };
    wait_for("both children", Duration::from_secs(3), || sleeps() == 2).await;
    let init_pid = script_process["pid"].as_u64().unwrap();

    assert_eq!(fake.action(&id, "delete").await.status, 202);
    wait_for(
        "every process of the instance to die",
        Duration::from_secs(3),
        || processes_of(uid).is_empty(),
    )
    .await;
    wait_for("the init to be reaped", Duration::from_secs(3), || {
        !PathBuf::from(format!("/proc/{init_pid}")).exists()
    })
    .await;
    wait_for(
        "the instance's directory to be removed",
        Duration::from_secs(5),
        || !dir.join(&id).exists(),
    )
    .await;
    assert_eq!(
        admin_instance(&fake, &id).await["script_process"]["killed"],
        true
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the binary ----

/// Stopping the fake (SIGTERM, as Ctrl-C in `make run`) stops its machines: every process of
/// every instance dies and their directories are removed.
#[tokio::test]
async fn stopping_the_binary_kills_every_instance_and_removes_their_directories() {
    use std::io::BufRead;
    let dir = work_dir_outside_tmp("binary-stop");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-datacrunch"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--provision-ms",
            "200",
            "--execute",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("fake-datacrunch listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    let fake = Fake::connect(base).await;
    let script = "#!/bin/bash\nsetsid nohup sleep 1000 >/dev/null 2>&1 &\necho started\n";
    let id = deploy_with_script(&fake, "1H100.80S.30V", script).await;
    fake.wait_status(&id, "running", Duration::from_secs(2))
        .await;
    let uid = sandbox_uid(&fake, &id).await;
    wait_for("the child to start", Duration::from_secs(3), || {
        !processes_of(uid).is_empty()
    })
    .await;
    assert!(dir.join(&id).join("startup.sh").exists());

    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the fake did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_for(
        "every process of the instance to die",
        Duration::from_secs(3),
        || processes_of(uid).is_empty(),
    )
    .await;
    // Removed before the fake exited, not eventually.
    assert!(!dir.join(&id).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn binary_prints_its_real_address() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fake-datacrunch"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--client-secret",
            "s3",
            "--token-ttl-secs",
            "60",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim_end()
        .strip_prefix("fake-datacrunch listening on ")
        .unwrap_or_else(|| panic!("{line:?}"))
        .to_string();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/oauth2/token"))
        .json(&json!({ "grant_type": "client_credentials", "client_id": "mimiry-local", "client_secret": "s3" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["expires_in"], 60);
    child.kill().unwrap();
    child.wait().unwrap();
}

// ---- the provider's documented contract (Verda's OpenAPI document) ----

/// The fake's own answers and the requests these tests send all conformed.
async fn assert_no_violations(fake: &Fake) {
    if conformance::spec().is_none() {
        // Checks off without the document (see conformance::NEEDS_DOCUMENT).
        return;
    }
    let state = fake.state().await;
    assert_eq!(
        state["conformance_violations"], 0,
        "{:#}",
        state["conformance"]["recent"]
    );
    assert!(state["conformance"]["responses_checked"].as_u64().unwrap() > 0);
}

async fn create_script(fake: &Fake, name: &str) -> Resp {
    fake.post(
        "/v1/scripts",
        json!({ "name": name, "script": "#!/bin/bash\necho hi" }),
    )
    .await
}

#[tokio::test]
async fn scripts_are_paginated_newest_first_within_a_quota() {
    let fake = Fake::start(config()).await;
    for i in 0..100 {
        let r = create_script(&fake, &format!("s{i:03}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // The project quota (100 by default) is full.
    let r = create_script(&fake, "one-too-many").await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden_action"));
    assert!(r.message().contains("quota"), "{}", r.text);

    // Default page: 10, newest first, totals in headers.
    let r = fake.get("/v1/scripts").await;
    assert_eq!(r.status, 200);
    let names: Vec<String> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (90..100).rev().map(|i| format!("s{i:03}")).collect();
    assert_eq!(names, want);
    assert_eq!(r.header("x-page").as_deref(), Some("1"));
    assert_eq!(r.header("x-page-size").as_deref(), Some("10"));
    assert_eq!(r.header("x-total-count").as_deref(), Some("100"));
    assert!(r.json()[0]["created_at"].is_string());

    // Paging through with the maximum page size sees everything exactly once.
    let page = fake.get("/v1/scripts?page=1&pageSize=100").await.json();
    assert_eq!(page.as_array().unwrap().len(), 100);
    let r = fake.get("/v1/scripts?page=3&pageSize=40").await;
    assert_eq!(r.json().as_array().unwrap().len(), 20);
    assert_eq!(r.json()[19]["name"], "s000");
    assert_eq!(r.header("x-page").as_deref(), Some("3"));
    let r = fake.get("/v1/scripts?pageSize=101").await;
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));
    let asc = fake
        .get("/v1/scripts?orderBy=created_at&orderDirection=asc&pageSize=2")
        .await
        .json();
    assert_eq!(
        (asc[0]["name"].as_str(), asc[1]["name"].as_str()),
        (Some("s000"), Some("s001"))
    );
    let r = fake.get("/v1/scripts?name=s05").await;
    assert_eq!(r.header("x-total-count").as_deref(), Some("10"));

    // Deleting frees the quota.
    let id = asc[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        fake.delete(&format!("/v1/scripts/{id}"), None).await.status,
        200
    );
    assert_eq!(create_script(&fake, "fits again").await.status, 201);
    assert_eq!(fake.state().await["scripts_count"], 100);
    assert_no_violations(&fake).await;
}

async fn running_instance(fake: &Fake) -> (String, String) {
    let id = fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;
    let v = fake
        .wait_status(&id, "running", Duration::from_secs(2))
        .await;
    (id, v["os_volume_id"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn os_volumes_go_to_trash_unless_named_and_deleted_permanently() {
    let fake = Fake::start(config()).await;
    let (a, vol_a) = running_instance(&fake).await;
    let (b, vol_b) = running_instance(&fake).await;
    let (c, vol_c) = running_instance(&fake).await;
    let vols = fake.get("/v1/volumes").await.json();
    assert_eq!(vols.as_array().unwrap().len(), 3);
    let v = fake.get(&format!("/v1/volumes/{vol_a}")).await.json();
    assert_eq!(
        (v["status"].as_str(), v["instance_id"].as_str()),
        (Some("attached"), Some(a.as_str()))
    );
    assert_eq!(v["is_os_volume"], true);

    // No volume_ids: the OS volume goes to trash (and keeps counting).
    assert_eq!(fake.action(&a, "delete").await.status, 202);
    let trash = fake.get("/v1/volumes/trash").await.json();
    assert_eq!(trash.as_array().unwrap().len(), 1);
    assert_eq!(trash[0]["id"], vol_a.as_str());
    assert_eq!(trash[0]["status"], "deleted");
    assert_eq!(trash[0]["is_permanently_deleted"], false);
    // Named, with delete_permanently: gone.
    let r = fake
        .put(
            "/v1/instances",
            json!({ "id": [b], "action": "delete", "volume_ids": [vol_b], "delete_permanently": true }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(fake.get(&format!("/v1/volumes/{vol_b}")).await.status, 404);
    // An empty list deletes no volume: the OS volume is detached and kept.
    let r = fake
        .put(
            "/v1/instances",
            json!({ "id": c, "action": "delete", "volume_ids": [] }),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let v = fake.get(&format!("/v1/volumes/{vol_c}")).await.json();
    assert_eq!(v["status"], "detached");

    let state = fake.state().await;
    assert_eq!(state["leaked_volumes"], 2, "{:#}", state["volumes"]);
    assert_eq!(state["volumes_in_trash"], 1);
    assert_eq!(state["storage_used_gb"], 100);
    assert_no_violations(&fake).await;
}

#[tokio::test]
async fn a_volume_is_deleted_into_trash_or_for_good_but_not_under_a_live_instance() {
    let fake = Fake::start(config()).await;
    let (a, vol_a) = running_instance(&fake).await;
    let (_b, vol_b) = running_instance(&fake).await;
    // Under a running instance: refused (it must be shut down first).
    let r = fake
        .delete(
            &format!("/v1/volumes/{vol_a}"),
            Some(json!({"is_permanent": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (400, "forbidden_action"),
        "{}",
        r.text
    );
    // Its instance lost by the provider: deletable. Without `is_permanent`: into trash.
    fake.admin(&format!("/admin/instances/{a}/vanish"), json!({}))
        .await;
    let r = fake.delete(&format!("/v1/volumes/{vol_a}"), None).await;
    assert_eq!(r.status, 202, "{}", r.text);
    let trash = fake.get("/v1/volumes/trash").await.json();
    assert_eq!(trash[0]["id"], vol_a.as_str(), "{trash}");
    // From the trash, for good.
    let r = fake
        .delete(
            &format!("/v1/volumes/{vol_a}"),
            Some(json!({"is_permanent": true})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    assert_eq!(fake.get(&format!("/v1/volumes/{vol_a}")).await.status, 404);
    let r = fake
        .delete(
            &format!("/v1/volumes/{vol_a}"),
            Some(json!({"is_permanent": true})),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (404, "not_found"),
        "{}",
        r.text
    );
    let state = fake.state().await;
    assert_eq!(state["leaked_volumes"], 1, "{:#}", state["volumes"]);
    assert_eq!(state["volumes"][0]["id"], vol_b.as_str());
    assert_eq!(state["volumes_in_trash"], 0);
}

#[tokio::test]
async fn trash_counts_against_the_storage_quota_until_it_expires() {
    let fake = Fake::start(FakeConfig {
        storage_quota_gb: 100,
        trash_ttl_secs: 1,
        ..config()
    })
    .await;
    let (a, _) = running_instance(&fake).await;
    running_instance(&fake).await;
    let r = fake.deploy(deploy_body("1V100.6V", "FIN-01")).await;
    assert_eq!((r.status, r.code().as_str()), (403, "forbidden_action"));
    assert!(r.message().contains("quota"), "{}", r.text);
    // Deleted into trash: still counted.
    assert_eq!(fake.action(&a, "delete").await.status, 202);
    assert_eq!(
        fake.deploy(deploy_body("1V100.6V", "FIN-01")).await.status,
        403
    );
    // The trash is emptied after its lifetime.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(fake.state().await["volumes_in_trash"], 0);
    fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;
    assert_no_violations(&fake).await;
}

#[tokio::test]
async fn installation_failed_is_a_real_status() {
    let fake = Fake::start(config()).await;
    fake.admin(
        "/admin/faults",
        json!({ "installation_failed_next_instances": 1 }),
    )
    .await;
    let id = fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;
    fake.wait_status(&id, "installation_failed", Duration::from_secs(2))
        .await;
    let listed = fake
        .get("/v1/instances?status=installation_failed")
        .await
        .json();
    assert_eq!(listed[0]["id"], id.as_str());
    // A failed instance can be deleted at once; it is `deleting`, then `discontinued`.
    assert_eq!(fake.action(&id, "delete").await.status, 202);
    assert_eq!(fake.instance(&id).await.json()["status"], "deleting");
    fake.wait_status(&id, "discontinued", Duration::from_secs(2))
        .await;
    // The next deploy runs normally.
    let next = fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;
    fake.wait_status(&next, "running", Duration::from_secs(2))
        .await;
    assert_no_violations(&fake).await;
}

#[tokio::test]
async fn ssh_keys_at_the_current_path_and_the_deprecated_alias() {
    let fake = Fake::start(config()).await;
    let key = json!({ "name": "k", "key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG user@host" });
    let r = fake.post("/v1/ssh-keys", key.clone()).await;
    assert_eq!(r.status, 201);
    let current = r.text.trim().to_string();
    let old = fake.post("/v1/sshkeys", key).await.text.trim().to_string();
    for base in ["/v1/ssh-keys", "/v1/sshkeys"] {
        assert_eq!(fake.get(base).await.json().as_array().unwrap().len(), 2);
        for id in [&current, &old] {
            let k = fake.get(&format!("{base}/{id}")).await.json();
            assert_eq!(k[0]["id"], id.as_str());
            assert!(k[0].as_object().unwrap().contains_key("fingerprint"));
        }
    }
    assert_eq!(
        fake.delete(&format!("/v1/ssh-keys/{old}"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        fake.get("/v1/sshkeys")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The alias works but its use is counted as deprecated.
    if conformance::spec().is_none() {
        return;
    }
    let deprecated = &fake.state().await["conformance"]["deprecated_calls"];
    let calls = |op: &str| deprecated[op].as_u64().unwrap_or(0);
    assert_eq!(
        calls("GET /v1/sshkeys (DeprecatedSshkeysController_getKeys)"),
        2,
        "{deprecated:#}"
    );
    assert_eq!(
        calls("POST /v1/sshkeys (DeprecatedSshkeysController_addKey)"),
        1
    );
    assert_eq!(
        calls("GET /v1/sshkeys/{sshKeyId} (DeprecatedSshkeysController_getKey)"),
        2
    );
    assert!(deprecated
        .as_object()
        .unwrap()
        .keys()
        .all(|k| k.contains("/v1/sshkeys")));
    assert_no_violations(&fake).await;
}

#[tokio::test]
async fn rate_limits_are_on_by_default_at_the_real_numbers() {
    let config = FakeConfig::default();
    assert_eq!(
        config.rate_limits,
        RateLimits {
            enabled: true,
            project: 500,
            endpoint: 60,
            list: 120,
            window_ms: 60_000
        }
    );
    let fake = Fake::start(FakeConfig {
        conformance: ConformanceMode::Strict,
        ..config
    })
    .await;
    for i in 0..60 {
        let r = fake.get("/v1/balance").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
    }
    let r = fake.get("/v1/balance").await;
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limit_exceeded"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // The endpoint limit is per (method, path); the instance listing has its own, larger one.
    for _ in 0..120 {
        assert_eq!(fake.get("/v1/instances").await.status, 200);
    }
    assert_eq!(fake.get("/v1/instances").await.status, 429);
    let r = fake.get("/v1/locations").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("ratelimit-policy").as_deref(),
        Some("\"project\";q=500;w=60, \"endpoint\";q=60;w=60")
    );
    assert_no_violations(&fake).await;
}

#[tokio::test]
async fn rate_limits_are_adjustable_and_every_deploy_shares_one_budget() {
    let fake = Fake::start(config()).await;
    let r = fake
        .admin(
            "/admin/rate-limits",
            json!({ "enabled": true, "endpoint": 2, "project": 4, "window_ms": 600 }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;
    fake.deploy_ok(deploy_body("1V100.6V", "FIN-03")).await;
    let r = fake.deploy(deploy_body("1V100.6V", "FIN-01")).await;
    assert_eq!((r.status, r.code().as_str()), (429, "rate_limit_exceeded"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Other paths still have room until the project budget (4) is spent.
    assert_eq!(fake.get("/v1/balance").await.status, 200);
    assert_eq!(fake.get("/v1/locations").await.status, 200);
    assert_eq!(fake.get("/v1/images").await.status, 429);
    // The window ends.
    tokio::time::sleep(Duration::from_millis(650)).await;
    fake.deploy_ok(deploy_body("1V100.6V", "FIN-01")).await;
    let state = fake.state().await;
    assert_eq!(state["rate_limited"], 2);
    // Off again.
    fake.admin("/admin/rate-limits", json!({ "enabled": false }))
        .await;
    for _ in 0..10 {
        assert_eq!(fake.get("/v1/balance").await.status, 200);
    }
    assert_no_violations(&fake).await;
}

/// What the real API would refuse is refused (strict) or reported (report), never silently
/// accepted.
#[tokio::test]
#[ignore = "needs Verda's OpenAPI document in ../shared/docs/providers/verda.openapi.json"]
async fn conformance_violations_fail_loudly() {
    for mode in [ConformanceMode::Strict, ConformanceMode::Report] {
        let fake = Fake::start(FakeConfig {
            conformance: mode,
            ..config()
        })
        .await;
        let (id, _) = running_instance(&fake).await;
        // `volume_ids: null` is not an array: the document's schema refuses it.
        let r = fake
            .put(
                "/v1/instances",
                json!({ "id": [id], "action": "delete", "volume_ids": null, "delete_permanently": true }),
            )
            .await;
        let undocumented_query = fake.get("/v1/instances?limit=5").await;
        let unknown_operation = fake.get("/v1/instances/types/extra").await;
        let state = fake.state().await;
        assert_eq!(
            state["conformance_violations"], 3,
            "{mode}: {:#}",
            state["conformance"]
        );
        let recent = &state["conformance"]["recent"];
        assert_eq!(recent[0]["direction"], "request");
        assert_eq!(recent[0]["operation"], "InstancesController_performActions");
        assert!(
            recent[0]["errors"][0]
                .as_str()
                .unwrap()
                .contains("volume_ids"),
            "{recent:#}"
        );
        if mode == ConformanceMode::Strict {
            assert_eq!((r.status, r.code().as_str()), (400, "invalid_request"));
            assert!(r.message().starts_with("conformance: "), "{}", r.text);
            assert!(r.message().contains("volume_ids"), "{}", r.text);
            assert_eq!(undocumented_query.status, 400);
            assert_eq!(fake.instance(&id).await.json()["status"], "running");
        } else {
            assert_eq!(r.status, 202, "{}", r.text);
            assert_eq!(undocumented_query.status, 200);
            assert_eq!(unknown_operation.status, 404);
        }
    }
}

/// A refused token request is reported without the values it carried (the secret).
#[tokio::test]
#[ignore = "needs Verda's OpenAPI document in ../shared/docs/providers/verda.openapi.json"]
async fn conformance_reports_never_echo_request_values() {
    let fake = Fake::start(config()).await;
    let r = fake
        .token_request(json!({ "grant_type": "client_credentials", "client_id": "mimiry-local", "client_secret": 42 }))
        .await;
    assert_eq!(r.status, 400);
    let r = fake
        .token_request(json!({ "grant_type": "password", "client_id": "mimiry-local", "client_secret": "local-secret" }))
        .await;
    assert_eq!(r.status, 400);
    assert!(!r.text.contains("local-secret"), "{}", r.text);
    let state = fake.state().await;
    assert_eq!(state["conformance_violations"], 2);
    assert!(!state["conformance"].to_string().contains("local-secret"));
}
