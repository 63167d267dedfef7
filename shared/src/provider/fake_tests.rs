//! The DataCrunch client against the in-memory fake (`infra/fake-datacrunch`): the production
//! code path, pointed at `http://127.0.0.1:PORT/v1`. Each test spawns its own fake.

use super::*;
use crate::money::Micros;
use fake_datacrunch::FakeConfig;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMimiryTestKeyOnlyForTheFakeServer0000 t@m";

struct Fake {
    base: String,
    admin: String,
    http: reqwest::Client,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Fake {
    async fn start(config: FakeConfig) -> Fake {
        let (addr, handle) = fake_datacrunch::spawn(config).await;
        Fake {
            base: format!("http://{addr}/v1"),
            admin: format!("http://{addr}/admin"),
            http: crate::tls::https_client().build().expect("a client builds"),
            handle,
        }
    }

    async fn default() -> Fake {
        Fake::start(FakeConfig::default()).await
    }

    fn client_with(&self, client_secret: &str, timeout: Duration) -> DataCrunchClient {
        DataCrunchClient::new(
            &self.base,
            Credentials::Static {
                client_id: "mimiry-local".into(),
                client_secret: client_secret.into(),
            },
            timeout,
        )
        // Same shape as production, shorter waits.
        .with_retry_policy(RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        })
    }

    fn client(&self) -> DataCrunchClient {
        self.client_with("local-secret", Duration::from_secs(5))
    }

    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.admin))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            resp.status().is_success(),
            "admin {path}: {}",
            resp.status()
        );
        resp.json().await.unwrap()
    }

    async fn faults(&self, body: Value) {
        self.admin_post("/faults", body).await;
    }

    async fn state(&self) -> Value {
        self.http
            .get(format!("{}/state", self.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn tokens_issued(&self) -> u64 {
        self.state().await["tokens_issued"].as_u64().unwrap()
    }

    /// Requests the fake received on one route, e.g. `"POST /v1/instances"`.
    async fn count(&self, route: &str) -> u64 {
        self.state().await["requests"]["by_route"][route]
            .as_u64()
            .unwrap_or(0)
    }
}

fn deploy_req(hostname: &str, instance_type: &str, location: &str) -> DeployRequest {
    DeployRequest {
        instance_type: instance_type.into(),
        image: "ubuntu-22.04-cuda-12.0-docker".into(),
        hostname: hostname.into(),
        description: hostname.into(),
        ssh_key_ids: vec![],
        location_code: location.into(),
        startup_script_id: None,
        startup_script: None,
        os_volume_size_gb: 50,
        is_spot: false,
    }
}

/// Polls until the instance's status satisfies `done`; returns the statuses seen, in order.
async fn wait_status(
    c: &DataCrunchClient,
    id: &str,
    done: impl Fn(&InstanceStatus) -> bool,
) -> (InstanceInfo, Vec<InstanceStatus>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen: Vec<InstanceStatus> = Vec::new();
    loop {
        let inst = c.get_instance(id).await.unwrap().expect("instance exists");
        if seen.last() != Some(&inst.status) {
            seen.push(inst.status.clone());
        }
        if done(&inst.status) {
            return (inst, seen);
        }
        assert!(Instant::now() < deadline, "timed out; seen {seen:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn provider_token_is_fetched_once_and_cached() {
    let fake = Fake::default().await;
    let c = fake.client();
    c.locations().await.unwrap();
    c.instance_types().await.unwrap();
    c.availability(None).await.unwrap();
    // Concurrent callers on a fresh clone share the cache.
    let clone = c.clone();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = clone.clone();
            tokio::spawn(async move { c.list_instances().await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.tokens_issued().await, 1);
    assert_eq!(fake.count("POST /v1/oauth2/token").await, 1);

    // A second client (another process) gets its own token, once, on first use only.
    let other = fake.client();
    assert_eq!(fake.tokens_issued().await, 1);
    other.locations().await.unwrap();
    assert_eq!(fake.tokens_issued().await, 2);
}

#[tokio::test]
async fn provider_token_renewed_before_expiry_with_refresh_grant() {
    let fake = Fake::start(FakeConfig {
        token_ttl_secs: 2,
        ..FakeConfig::default()
    })
    .await;
    // Default 30 s margin, scaled down to a quarter of the 2 s lifetime: renew at 1.5 s.
    let c = fake.client();
    c.locations().await.unwrap();
    c.locations().await.unwrap();
    assert_eq!(fake.tokens_issued().await, 1);

    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.locations().await.unwrap();
    assert_eq!(fake.tokens_issued().await, 2);

    // Refresh tokens are single use in the fake: the second renewal must use the rotated one.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    c.locations().await.unwrap();
    assert_eq!(fake.tokens_issued().await, 3);
    // Three grants (one client credentials, two refreshes), no rejected grant in between…
    assert_eq!(fake.count("POST /v1/oauth2/token").await, 3);
    // …and no call refused with an expired token (one request per call).
    assert_eq!(fake.count("GET /v1/locations").await, 4);
}

#[tokio::test]
async fn provider_revoked_token_is_renewed_and_call_repeated_once() {
    let fake = Fake::default().await;
    let c = fake.client();
    c.locations().await.unwrap();
    // Revoke every token (counters reset too).
    fake.admin_post("/reset", json!({"tokens": true})).await;
    let locs = c.locations().await.unwrap();
    assert!(!locs.is_empty());
    // 401 on the cached token, then the same call again with a new token.
    assert_eq!(fake.count("GET /v1/locations").await, 2);
    // Refresh grant refused (revoked), then client credentials.
    assert_eq!(fake.count("POST /v1/oauth2/token").await, 2);
    assert_eq!(fake.tokens_issued().await, 1);
}

#[tokio::test]
async fn provider_bad_credentials_are_auth_and_not_retried() {
    let fake = Fake::default().await;
    let c = fake.client_with("wrong-secret", Duration::from_secs(5));
    let err = c.locations().await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth(_)), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.code(), "auth");
    assert!(!err.to_string().contains("wrong-secret"));
    assert_eq!(fake.count("POST /v1/oauth2/token").await, 1);
    assert_eq!(fake.count("GET /v1/locations").await, 0);
    // The same for a create (no token, no request sent).
    let err = c.create_script("x", "echo").await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth(_)), "{err:?}");
    assert_eq!(fake.count("POST /v1/scripts").await, 0);
}

#[tokio::test]
async fn provider_catalog_is_parsed() {
    let fake = Fake::default().await;
    let c = fake.client();
    assert_eq!(c.id(), "datacrunch");
    assert_eq!(c.name(), "DataCrunch (Verda)");

    let types = c.instance_types().await.unwrap();
    assert!(types.len() >= 8, "{types:?}");
    let v100 = types
        .iter()
        .find(|t| t.instance_type == "1V100.6V")
        .unwrap();
    assert_eq!(v100.price_per_hour, Micros(890_000));
    assert_eq!(v100.spot_price, Some(Micros(360_000)));
    // Spot capacity is its own inventory (issue 15): the V100 has some, the CPU types none.
    let spot = c.spot_availability().await.unwrap();
    let with_v100: Vec<&str> = spot
        .iter()
        .filter(|l| l.instance_types.iter().any(|t| t == "1V100.6V"))
        .map(|l| l.location_code.as_str())
        .collect();
    assert!(with_v100.contains(&"FIN-03"), "{spot:?}");
    assert!(
        spot.iter()
            .all(|l| !l.instance_types.iter().any(|t| t.starts_with("CPU"))),
        "{spot:?}"
    );
    assert_eq!(v100.gpu_count, 1);
    assert_eq!(v100.cpu_cores, 6);
    assert_eq!(v100.memory_gb, Some(23));
    assert_eq!(v100.gpu_memory_gb, Some(16));
    assert_eq!(v100.storage_description, "dynamic");
    assert_eq!(v100.storage_gb, None);
    assert!(v100.gpu_description.contains("V100"), "{v100:?}");
    let cpu = types
        .iter()
        .find(|t| t.instance_type == "CPU.4V.16G")
        .unwrap();
    assert_eq!(cpu.gpu_count, 0);
    assert_eq!(cpu.cpu_cores, 4);
    let h8 = types
        .iter()
        .find(|t| t.instance_type == "8H100.80S.176V")
        .unwrap();
    assert_eq!(h8.gpu_count, 8);

    // Serialisable for the catalog cache.
    let json = serde_json::to_string(&types).unwrap();
    let back: Vec<InstanceTypeInfo> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, types);

    let locs = c.locations().await.unwrap();
    let codes: Vec<&str> = locs.iter().map(|l| l.code.as_str()).collect();
    for code in ["FIN-01", "FIN-02", "FIN-03", "ICE-01"] {
        assert!(codes.contains(&code), "{codes:?}");
    }
    let ice = locs.iter().find(|l| l.code == "ICE-01").unwrap();
    assert_eq!(ice.country_code, "IS");
    assert_eq!(ice.name, "Iceland 1");

    let all = c.availability(None).await.unwrap();
    assert_eq!(all.len(), 4);
    let ice = c.availability(Some("ICE-01")).await.unwrap();
    assert_eq!(ice.len(), 1);
    assert_eq!(ice[0].location_code, "ICE-01");
    assert!(ice[0].instance_types.contains(&"1H100.80S.30V".to_string()));
    assert!(!ice[0].instance_types.iter().any(|t| t.contains("V100")));

    let images = c.images(None).await.unwrap();
    assert!(images
        .iter()
        .any(|i| i.image_type == "ubuntu-22.04-cuda-12.0-docker" && !i.id.is_empty()));
    let cpu_images = c.images(Some("CPU.4V.16G")).await.unwrap();
    assert!(!cpu_images.is_empty());
    assert!(
        cpu_images.iter().all(|i| !i.image_type.contains("cuda")),
        "{cpu_images:?}"
    );
    assert!(c.images(Some("NOPE.1")).await.unwrap().is_empty());
}

#[tokio::test]
async fn provider_keys_and_scripts() {
    let fake = Fake::default().await;
    let c = fake.client();
    let key = c.create_ssh_key("mimiry-k1", PUBLIC_KEY).await.unwrap();
    assert!(!key.is_empty() && !key.contains('"') && key.trim() == key);
    let script = c
        .create_script("mimiry-s1", "#!/bin/bash\necho hi\n")
        .await
        .unwrap();
    assert!(!script.is_empty() && !script.contains('"'));
    let scripts = c.list_scripts().await.unwrap();
    assert_eq!(
        scripts,
        vec![ScriptInfo {
            id: script.clone(),
            name: "mimiry-s1".into()
        }]
    );

    let err = c.create_ssh_key("bad", "not a key").await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");

    c.delete_ssh_key(&key).await.unwrap();
    c.delete_ssh_key(&key).await.unwrap(); // missing is Ok
    c.delete_script(&script).await.unwrap();
    c.delete_script(&script).await.unwrap();
    c.delete_script("00000000-0000-0000-0000-000000000000")
        .await
        .unwrap();
    assert!(c.list_scripts().await.unwrap().is_empty());
    let state = fake.state().await;
    assert_eq!(state["ssh_keys"], json!([]));
    assert_eq!(state["scripts"], json!([]));
}

#[tokio::test]
async fn provider_deploy_and_status_progression() {
    let fake = Fake::start(FakeConfig {
        provision_ms: 600,
        ..FakeConfig::default()
    })
    .await;
    let c = fake.client();
    let key = c.create_ssh_key("k", PUBLIC_KEY).await.unwrap();
    let script = c.create_script("s", "#!/bin/bash\ntrue\n").await.unwrap();
    let mut req = deploy_req("mj-progress-1", "1V100.6V", "FIN-01");
    req.ssh_key_ids = vec![key.clone()];
    req.startup_script_id = Some(script.clone());
    let id = c.deploy(&req).await.unwrap();
    assert!(!id.is_empty() && !id.contains('"'));

    let first = c.get_instance(&id).await.unwrap().unwrap();
    assert!(first.status.is_booting(), "{first:?}");
    assert_eq!(first.ip, None);
    assert_eq!(first.hostname, "mj-progress-1");
    assert_eq!(first.description, "mj-progress-1");
    assert_eq!(first.location, "FIN-01");
    assert_eq!(first.instance_type, "1V100.6V");
    assert_eq!(first.startup_script_id.as_deref(), Some(script.as_str()));
    assert_eq!(first.price_per_hour, Some(Micros(890_000)));
    assert!(first.created_at.is_some());

    let (running, seen) = wait_status(&c, &id, |s| !s.is_booting()).await;
    assert_eq!(running.status, InstanceStatus::Running, "{seen:?}");
    assert!(running.ip.is_some());
    assert!(seen.contains(&InstanceStatus::Provisioning), "{seen:?}");
    assert_eq!(seen.last(), Some(&InstanceStatus::Running));

    // What the fake stored is what the doc asks for.
    let state = fake.state().await;
    let stored = &state["instances"][0];
    assert_eq!(stored["ssh_key_ids"], json!([key]));
    assert_eq!(stored["is_spot"], json!(false));

    let listed = c.list_instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(listed[0].hostname, "mj-progress-1");

    assert_eq!(
        c.get_instance("00000000-0000-0000-0000-000000000000")
            .await
            .unwrap(),
        None
    );

    // An instance whose provisioning fails lands in a failed status.
    fake.faults(json!({"error_next_instances": 1})).await;
    let bad = c
        .deploy(&deploy_req("mj-progress-2", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    let (failed, _) = wait_status(&c, &bad, |s| !s.is_booting()).await;
    assert!(failed.status.is_failed(), "{failed:?}");

    // Invalid image for the type → InvalidRequest.
    let mut wrong = deploy_req("mj-progress-3", "CPU.4V.16G", "FIN-01");
    wrong.image = "ubuntu-22.04-cuda-12.0-docker".into();
    let err = c.deploy(&wrong).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");
}

#[tokio::test]
async fn provider_delete_refused_while_provisioning_then_accepted_then_gone() {
    let fake = Fake::start(FakeConfig {
        provision_ms: 800,
        ..FakeConfig::default()
    })
    .await;
    let c = fake.client();
    let id = c
        .deploy(&deploy_req("mj-del-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    assert_eq!(
        c.delete_instance(&id, None).await.unwrap(),
        DeleteOutcome::NotYet
    );
    wait_status(&c, &id, |s| *s == InstanceStatus::Running).await;
    assert_eq!(
        c.delete_instance(&id, None).await.unwrap(),
        DeleteOutcome::Accepted
    );
    // Accepted means `deleting` for a moment (as Verda documents), then gone.
    let mut after = c.get_instance(&id).await.unwrap();
    for _ in 0..50 {
        match &after {
            Some(i) if i.status == InstanceStatus::Deleting => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                after = c.get_instance(&id).await.unwrap();
            }
            _ => break,
        }
    }
    assert!(
        after.as_ref().is_none_or(|i| i.status.is_gone()),
        "{after:?}"
    );
    assert_eq!(
        c.delete_instance(&id, None).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(
        c.delete_instance("00000000-0000-0000-0000-000000000000", None)
            .await
            .unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert!(c.list_instances().await.unwrap().is_empty());

    // Refused, then accepted; the gone and the unknown instance are read (for their OS volume)
    // and need no PUT at all.
    assert_eq!(fake.count("PUT /v1/instances").await, 2);
    let stored = &fake.state().await["instances"][0];
    assert_eq!(stored["deleted"], json!(true));

    // An injected refusal of a running instance is "not yet" too.
    let id2 = c
        .deploy(&deploy_req("mj-del-2", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    wait_status(&c, &id2, |s| *s == InstanceStatus::Running).await;
    fake.faults(json!({"delete_refusals": 1})).await;
    assert_eq!(
        c.delete_instance(&id2, None).await.unwrap(),
        DeleteOutcome::NotYet
    );
    assert_eq!(
        c.delete_instance(&id2, None).await.unwrap(),
        DeleteOutcome::Accepted
    );

    // A lost instance reads as None and deletes as AlreadyGone.
    let id3 = c
        .deploy(&deploy_req("mj-del-3", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    fake.admin_post(&format!("/instances/{id3}/vanish"), json!({}))
        .await;
    assert_eq!(c.get_instance(&id3).await.unwrap(), None);
    assert_eq!(
        c.delete_instance(&id3, None).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn provider_capacity_is_no_capacity_and_deploy_not_retried() {
    let fake = Fake::default().await;
    let c = fake.client();
    fake.faults(json!({"deploy_capacity_failures": 1})).await;
    let err = c
        .deploy(&deploy_req("mj-cap-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap_err();
    match &err {
        ProviderError::NoCapacity(m) => assert!(m.contains("Not enough resources"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(fake.count("POST /v1/instances").await, 1);
    assert!(fake.state().await["instances"]
        .as_array()
        .unwrap()
        .is_empty());

    // A type the location does not have at all: the same answer.
    let err = c
        .deploy(&deploy_req("mj-cap-2", "1V100.6V", "ICE-01"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::NoCapacity(_)), "{err:?}");
    assert_eq!(fake.count("POST /v1/instances").await, 2);

    // The fault is used up: the next deploy works.
    c.deploy(&deploy_req("mj-cap-3", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    assert_eq!(fake.count("POST /v1/instances").await, 3);
}

#[tokio::test]
async fn provider_get_retried_through_5xx_burst() {
    let fake = Fake::default().await;
    let c = fake.client();
    c.instance_types().await.unwrap(); // token cached
    fake.faults(json!({"server_errors": {"count": 2, "status": 503}}))
        .await;
    let locs = c.locations().await.unwrap();
    assert_eq!(locs.len(), 4);
    assert_eq!(fake.count("GET /v1/locations").await, 3);

    // A burst longer than the retries: the last error comes back, typed and transient.
    fake.faults(json!({"server_errors": {"count": 10, "status": 502}}))
        .await;
    let err = c.locations().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Server { status: 502, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(fake.count("GET /v1/locations").await, 3 + 4);
    fake.faults(json!({"server_errors": {"count": 0}})).await;

    // Deletes are idempotent: retried too. (The OS volume is given, so only the PUT is sent.)
    fake.faults(json!({"server_errors": {"count": 1, "status": 500}}))
        .await;
    assert_eq!(
        c.delete_instance(
            "00000000-0000-0000-0000-000000000000",
            Some("00000000-0000-0000-0000-0000000000f0")
        )
        .await
        .unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(fake.count("PUT /v1/instances").await, 2);

    // A 5xx on the token endpoint is retried as well.
    let fresh = fake.client();
    fake.faults(json!({"server_errors": {"count": 2, "status": 503, "paths": ["/v1/oauth2"]}}))
        .await;
    fresh.locations().await.unwrap();
    assert_eq!(fake.count("POST /v1/oauth2/token").await, 1 + 3);
}

#[tokio::test]
async fn provider_deploy_and_creates_not_retried_on_5xx() {
    let fake = Fake::default().await;
    let c = fake.client();
    c.locations().await.unwrap(); // token cached
    fake.faults(json!({"server_errors": {"count": 1, "status": 500, "paths": ["/v1/instances"]}}))
        .await;
    let err = c
        .deploy(&deploy_req("mj-5xx-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::Server { status: 500, .. }),
        "{err:?}"
    );
    assert_eq!(fake.count("POST /v1/instances").await, 1);

    fake.faults(json!({"server_errors": {"count": 1, "status": 503, "paths": ["/v1/scripts", "/v1/ssh-keys"]}}))
        .await;
    let err = c.create_script("s", "echo").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(fake.count("POST /v1/scripts").await, 1);
    fake.faults(json!({"server_errors": {"count": 1, "status": 503, "paths": ["/v1/ssh-keys"]}}))
        .await;
    let err = c.create_ssh_key("k", PUBLIC_KEY).await.unwrap_err();
    // A 503 outside deploy is a server error, never "no capacity".
    assert!(
        matches!(err, ProviderError::Server { status: 503, .. }),
        "{err:?}"
    );
    assert_eq!(fake.count("POST /v1/ssh-keys").await, 1);
}

#[tokio::test]
async fn provider_slow_response_is_timeout() {
    let fake = Fake::default().await;
    let c = fake
        .client_with("local-secret", Duration::from_millis(300))
        .with_retry_policy(RetryPolicy::none());
    c.locations().await.unwrap(); // token cached
    fake.faults(json!({"slow_ms": 1500, "slow_count": 1})).await;
    let started = Instant::now();
    let err = c.locations().await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
    assert!(err.is_transient());
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );

    // With retries, a single slow answer is survived.
    let r = fake.client_with("local-secret", Duration::from_millis(300));
    r.locations().await.unwrap();
    fake.faults(json!({"slow_ms": 1500, "slow_count": 1})).await;
    let before = fake.count("GET /v1/instance-types").await;
    r.instance_types().await.unwrap();
    assert_eq!(fake.count("GET /v1/instance-types").await, before + 2);

    // A slow deploy times out but the instance exists: it is not retried, and the caller
    // finds it by hostname.
    fake.faults(json!({"slow_ms": 1500, "slow_count": 1})).await;
    let before = fake.count("POST /v1/instances").await;
    let err = r
        .deploy(&deploy_req("mj-slow-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap_err();
    assert_eq!(err, ProviderError::Timeout);
    assert_eq!(fake.count("POST /v1/instances").await, before + 1);
    let found = r.list_instances().await.unwrap();
    assert!(found.iter().any(|i| i.hostname == "mj-slow-1"), "{found:?}");
}

#[tokio::test]
async fn provider_unreachable_is_transport_and_usable_as_trait_object() {
    // Nothing listens on this port (bound then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = DataCrunchClient::new(
        &format!("http://127.0.0.1:{port}/v1/"),
        Credentials::Static {
            client_id: "a".into(),
            client_secret: "b".into(),
        },
        Duration::from_secs(2),
    )
    .with_retry_policy(RetryPolicy::none());
    assert_eq!(c.base_url(), format!("http://127.0.0.1:{port}/v1"));
    let p: Arc<dyn GpuProvider> = Arc::new(c);
    let err = p.locations().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Transport(_) | ProviderError::Timeout),
        "{err:?}"
    );
    assert!(err.is_transient());
}

// ---------------------------------------------------------------------------------------------
// Issue 16: the four differences from the real API, each against the corrected fake. Each test
// fails on the client as it was before (one unpaged script list, `volume_ids: null`,
// `installation_failed` unknown, 429 a deploy error after ~1.4 s of retries).

/// Bug 1: `GET /scripts` answers 10 a page by default; the client reads every page.
#[tokio::test]
async fn issue16_scripts_beyond_the_first_page_are_listed() {
    let fake = Fake::default().await;
    let c = fake.client();
    let mut created = std::collections::BTreeSet::new();
    for i in 0..25 {
        created.insert(
            c.create_script(&format!("mimiry-page-{i:02}"), "#!/bin/bash\ntrue\n")
                .await
                .unwrap(),
        );
    }
    // Someone else's script is not ours to list.
    c.create_script("theirs", "#!/bin/bash\ntrue\n")
        .await
        .unwrap();
    let listed: std::collections::BTreeSet<String> = c
        .list_scripts()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, created, "all 25, not the newest 10");
}

/// Bug 2: a deleted instance's OS volume is deleted for good, not left in the trash — whether
/// the caller knows the volume's id or the client reads it.
#[tokio::test]
async fn issue16_a_deleted_instance_leaves_no_volume_in_the_trash() {
    let fake = Fake::start(FakeConfig {
        provision_ms: 200,
        ..FakeConfig::default()
    })
    .await;
    let c = fake.client();
    let a = c
        .deploy(&deploy_req("mimiry-vol-a", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    let b = c
        .deploy(&deploy_req("mimiry-vol-b", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    let (seen_a, _) = wait_status(&c, &a, |s| *s == InstanceStatus::Running).await;
    wait_status(&c, &b, |s| *s == InstanceStatus::Running).await;
    let volume_a = seen_a
        .os_volume_id
        .expect("a running instance has its OS volume");
    assert_eq!(fake.state().await["leaked_volumes"], 2);

    assert_eq!(
        c.delete_instance(&a, Some(&volume_a)).await.unwrap(),
        DeleteOutcome::Accepted
    );
    assert_eq!(
        c.delete_instance(&b, None).await.unwrap(),
        DeleteOutcome::Accepted
    );
    let state = fake.state().await;
    assert_eq!(state["volumes_in_trash"], 0, "{}", state["volumes"]);
    assert_eq!(state["leaked_volumes"], 0, "{}", state["volumes"]);
    assert_eq!(state["storage_used_gb"], 0);
}

/// The reconciler's half of bug 2: the OS volume of an instance the provider lost is listed
/// (named for Mimiry) and deleted for good; one under a live instance cannot be deleted.
#[tokio::test]
async fn issue16_volumes_of_lost_instances_are_listed_and_deleted_for_good() {
    let fake = Fake::start(FakeConfig {
        provision_ms: 200,
        ..FakeConfig::default()
    })
    .await;
    let c = fake.client();
    let lost = c
        .deploy(&deploy_req("mimiry-lost-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    let live = c
        .deploy(&deploy_req("mimiry-live-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    wait_status(&c, &lost, |s| *s == InstanceStatus::Running).await;
    wait_status(&c, &live, |s| *s == InstanceStatus::Running).await;
    fake.admin_post(&format!("/instances/{lost}/vanish"), json!({}))
        .await;
    assert_eq!(c.get_instance(&lost).await.unwrap(), None);

    let volumes = c.list_volumes().await.unwrap();
    assert_eq!(volumes.len(), 2, "{volumes:?}");
    let of = |id: &str| {
        volumes
            .iter()
            .find(|v| v.instance_id.as_deref() == Some(id))
            .cloned()
            .unwrap_or_else(|| panic!("no volume of {id}: {volumes:?}"))
    };
    let (lost_volume, live_volume) = (of(&lost), of(&live));
    assert_eq!(lost_volume.name, "mimiry-lost-1-os");
    assert!(!lost_volume.in_trash);

    c.delete_volume(&lost_volume.id).await.unwrap();
    c.delete_volume(&lost_volume.id).await.unwrap(); // missing is Ok
    let err = c.delete_volume(&live_volume.id).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidRequest(_)), "{err:?}");
    let state = fake.state().await;
    assert_eq!(
        state["leaked_volumes"], 1,
        "only the live one: {}",
        state["volumes"]
    );
    assert_eq!(state["volumes_in_trash"], 0);

    // A volume in the trash (a delete that did not name it) is listed as such, and purged.
    let resp = fake
        .http
        .put(format!("{}/instances", fake.base))
        .bearer_auth(fake_token(&fake).await)
        .json(&json!({"id": [live], "action": "delete"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let volumes = c.list_volumes().await.unwrap();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert!(volumes[0].in_trash, "{volumes:?}");
    c.delete_volume(&volumes[0].id).await.unwrap();
    assert!(c.list_volumes().await.unwrap().is_empty());
    assert_eq!(fake.state().await["leaked_volumes"], 0);
}

/// A bearer token straight from the fake, for a request the client would never send.
async fn fake_token(fake: &Fake) -> String {
    let v: Value = fake
        .http
        .post(format!("{}/oauth2/token", fake.base))
        .json(
            &json!({"grant_type": "client_credentials", "client_id": "mimiry-local",
            "client_secret": "local-secret"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().expect("a token").to_string()
}

/// Bug 3: `installation_failed` is a failed boot (fail over now), not a slow one.
#[tokio::test]
async fn issue16_installation_failed_is_a_failed_boot() {
    let fake = Fake::start(FakeConfig {
        provision_ms: 200,
        ..FakeConfig::default()
    })
    .await;
    fake.faults(json!({"installation_failed_next_instances": 1}))
        .await;
    let c = fake.client();
    let id = c
        .deploy(&deploy_req("mimiry-inst-1", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    let (info, seen) = wait_status(&c, &id, |s| !s.is_booting()).await;
    assert_eq!(info.status, InstanceStatus::InstallationFailed, "{seen:?}");
    assert!(info.status.is_failed());
    assert_eq!(
        crate::jobs::lifecycle::InstanceState::of(&info),
        crate::jobs::lifecycle::InstanceState::Failed {
            status: "installation_failed".into()
        }
    );
}

/// Bug 4: a deploy refused by the rate limit is `RateLimited` with the provider's
/// `Retry-After` (never a deploy error), later deploys are not even sent while the path is
/// paused, and once the window passes a deploy goes through.
#[tokio::test]
async fn issue16_rate_limited_deploys_wait_for_retry_after() {
    let fake = Fake::start(FakeConfig {
        rate_limits: fake_datacrunch::RateLimits {
            endpoint: 2,
            window_ms: 3_000,
            ..fake_datacrunch::RateLimits::default()
        },
        ..FakeConfig::default()
    })
    .await;
    let c = fake.client();
    for i in 0..2 {
        c.deploy(&deploy_req(&format!("mimiry-rl-{i}"), "1V100.6V", "FIN-01"))
            .await
            .unwrap();
    }
    let err = c
        .deploy(&deploy_req("mimiry-rl-2", "1V100.6V", "FIN-01"))
        .await
        .unwrap_err();
    let wait = err.retry_after().unwrap_or_else(|| panic!("{err:?}"));
    assert!(
        wait > Duration::from_secs(2) && wait <= Duration::from_secs(3),
        "the provider's Retry-After: {wait:?}"
    );
    assert!(err.is_transient(), "not a failed deploy");
    let sent = fake.count("POST /v1/instances").await;
    let again = c
        .deploy(&deploy_req("mimiry-rl-2", "1V100.6V", "FIN-01"))
        .await
        .unwrap_err();
    assert!(again.retry_after().is_some(), "{again:?}");
    assert_eq!(
        fake.count("POST /v1/instances").await,
        sent,
        "a paused path is not called"
    );
    assert_eq!(
        c.rate_limit_wait(ProviderCall::Deploy).map(|w| w <= wait),
        Some(true)
    );
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    c.deploy(&deploy_req("mimiry-rl-2", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    assert_eq!(fake.state().await["instances"].as_array().unwrap().len(), 3);
}

/// A full project quota (100 scripts by default, here 2; the storage quota) is its own error:
/// the worker waits for room instead of failing the job as a refused deploy.
#[tokio::test]
async fn full_quotas_are_quota_exceeded() {
    let fake = Fake::start(FakeConfig {
        script_quota: 2,
        storage_quota_gb: 50,
        ..FakeConfig::default()
    })
    .await;
    let c = fake.client();
    for i in 0..2 {
        c.create_script(&format!("mimiry-q-{i}"), "#!/bin/bash\ntrue\n")
            .await
            .unwrap();
    }
    let err = c
        .create_script("mimiry-q-2", "#!/bin/bash\ntrue\n")
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::QuotaExceeded(_)), "{err:?}");
    c.deploy(&deploy_req("mimiry-q-a", "1V100.6V", "FIN-01"))
        .await
        .unwrap();
    let err = c
        .deploy(&deploy_req("mimiry-q-b", "1V100.6V", "FIN-01"))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::QuotaExceeded(_)), "{err:?}");
}
