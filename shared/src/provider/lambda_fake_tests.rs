//! The Lambda Cloud client against the in-memory fake (`infra/fake-lambda`): the production
//! code path, pointed at `http://127.0.0.1:PORT/api/v1`. Each test spawns its own fake.

use super::*;
use crate::money::Micros;
use fake_lambda::LambdaConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "lambda-test-key";
const PUBLIC_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMimiryTestKeyOnlyForTheFakeServer0000 t@m";
const OTHER_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMimiryTestKeyOnlyForTheFakeServer0001 u@m";

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

/// Short timers; the launch limit off unless a test turns it on.
fn config() -> LambdaConfig {
    LambdaConfig {
        api_key: KEY.into(),
        provision_ms: 150,
        shutdown_ms: 50,
        terminate_ms: 50,
        rate_limits: fake_datacrunch::RateLimits {
            enabled: false,
            ..fake_lambda::default_launch_limit()
        },
        // Requests (the client's too) and answers against Lambda's OpenAPI document, when
        // it is there (`LAMBDA_OPENAPI`; see fake_lambda::conformance).
        conformance: fake_datacrunch::ConformanceMode::Strict,
        ..LambdaConfig::default()
    }
}

impl Fake {
    async fn start(config: LambdaConfig) -> Fake {
        let (addr, handle) = fake_lambda::spawn(config).await;
        Fake {
            base: format!("http://{addr}/api/v1"),
            admin: format!("http://{addr}/admin"),
            http: crate::tls::https_client().build().expect("a client builds"),
            handle,
        }
    }

    fn client_with_key(&self, key: &str) -> LambdaCloudClient {
        LambdaCloudClient::new(
            &self.base,
            ApiKey::Static(key.into()),
            Duration::from_secs(5),
        )
        .with_retry_policy(RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        })
    }

    fn client(&self) -> LambdaCloudClient {
        self.client_with_key(KEY)
    }

    async fn admin_post(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.admin))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
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
}

fn deploy_request(instance_type: &str, region: &str, keys: Vec<String>) -> DeployRequest {
    DeployRequest {
        instance_type: instance_type.into(),
        image: "ignored".into(),
        hostname: "mimiry-job-1-1".into(),
        description: "mimiry-job.acct".into(),
        ssh_key_ids: keys,
        location_code: region.into(),
        startup_script_id: None,
        startup_script: None,
        os_volume_size_gb: 50,
        is_spot: false,
    }
}

async fn wait_status(
    c: &LambdaCloudClient,
    id: &str,
    want: InstanceStatus,
    within: Duration,
) -> InstanceInfo {
    let deadline = Instant::now() + within;
    loop {
        let i = c.get_instance(id).await.unwrap().expect("instance exists");
        if i.status == want {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "{id} is {}, wanted {want}",
            i.status
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn catalog_maps_types_regions_and_images() {
    let fake = Fake::start(config()).await;
    let c = fake.client();
    assert_eq!(c.id(), "lambda");
    let types = c.instance_types().await.unwrap();
    let a100 = types
        .iter()
        .find(|t| t.instance_type == "gpu_8x_a100_80gb_sxm4")
        .unwrap();
    assert_eq!(a100.price_per_hour, Micros(15_990_000));
    assert_eq!(a100.gpu_count, 8);
    assert_eq!(a100.gpu_description, "8x A100");
    assert_eq!(a100.gpu_memory_gb, Some(640));
    assert_eq!(a100.cpu_cores, 240);

    let all = c.availability(None).await.unwrap();
    let east = all.iter().find(|a| a.location_code == "us-east-1").unwrap();
    assert!(east.instance_types.contains(&"gpu_1x_a10".to_string()));
    assert!(!east.instance_types.contains(&"gpu_8x_v100".to_string()));
    let one = c.availability(Some("us-south-1")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        one[0].instance_types,
        ["gpu_1x_a100_sxm4", "gpu_8x_a100_80gb_sxm4"]
    );

    let locations = c.locations().await.unwrap();
    let de = locations
        .iter()
        .find(|l| l.code == "europe-central-1")
        .unwrap();
    assert_eq!(de.country_code, "DE");
    assert_eq!(de.name, "Germany");
    let images = c.images(None).await.unwrap();
    assert_eq!(images.len(), 1);
    assert!(images[0].is_default);
}

#[tokio::test]
async fn a_bad_key_is_an_auth_error() {
    let fake = Fake::start(config()).await;
    let err = fake.client_with_key("wrong").instance_types().await;
    assert!(matches!(err, Err(ProviderError::Auth(_))), "{err:?}");
}

#[tokio::test]
async fn deploy_runs_and_terminates_with_the_one_key_rule() {
    let fake = Fake::start(config()).await;
    let c = fake.client();
    let k1 = c.create_ssh_key("user-key-1", PUBLIC_KEY).await.unwrap();
    let k2 = c.create_ssh_key("user-key-2", OTHER_KEY).await.unwrap();
    let keys = c.list_ssh_keys().await.unwrap();
    assert_eq!(keys.len(), 2);

    let script_id = c
        .create_script("mimiry-job.acct", "#!/bin/bash\necho job\n")
        .await
        .unwrap();
    // Nothing at the provider to sweep.
    assert!(c.list_scripts().await.unwrap().is_empty());
    let mut req = deploy_request("gpu_1x_a10", "us-east-1", vec![k1.clone(), k2.clone()]);
    req.startup_script_id = Some(script_id.clone());
    let id = c.deploy(&req).await.unwrap();

    // The fake saw exactly one key named, and the other one in user_data before the script.
    let state = fake.state().await;
    let inst = &state["instances"][0];
    assert_eq!(inst["ssh_key_ids"], json!(["user-key-1"]));
    let listed = c.list_instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].hostname, "mimiry-job-1-1");
    assert_eq!(listed[0].location, "us-east-1");
    assert_eq!(listed[0].instance_type, "gpu_1x_a10");
    assert_eq!(listed[0].price_per_hour, Some(Micros(750_000)));

    let running = wait_status(&c, &id, InstanceStatus::Running, Duration::from_secs(3)).await;
    assert!(running.ip.is_some());
    // A key in use cannot go; after the terminate it can.
    assert!(c.delete_ssh_key(&k1).await.is_err());
    assert_eq!(
        c.delete_instance(&id, None).await.unwrap(),
        DeleteOutcome::Accepted
    );
    wait_status(
        &c,
        &id,
        InstanceStatus::Discontinued,
        Duration::from_secs(2),
    )
    .await;
    assert!(c.list_instances().await.unwrap().is_empty());
    c.delete_ssh_key(&k1).await.unwrap();
    // Already gone: still fine.
    c.delete_ssh_key(&k1).await.unwrap();
    assert_eq!(
        c.delete_instance("no-such-instance", None).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    assert_eq!(c.get_instance("no-such-instance").await.unwrap(), None);
}

#[tokio::test]
async fn a_deploy_without_keys_uses_the_account_key_once() {
    let fake = Fake::start(config()).await;
    let c = fake.client();
    c.deploy(&deploy_request("gpu_1x_a10", "us-east-1", vec![]))
        .await
        .unwrap();
    let mut second = deploy_request("gpu_1x_gh200", "us-east-1", vec![]);
    second.hostname = "mimiry-job-2-1".into();
    c.deploy(&second).await.unwrap();
    let keys = c.list_ssh_keys().await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0].name, lambda::ACCOUNT_KEY_NAME);
    let state = fake.state().await;
    for i in state["instances"].as_array().unwrap() {
        assert_eq!(i["ssh_key_ids"], json!([lambda::ACCOUNT_KEY_NAME]));
    }
}

#[tokio::test]
async fn capacity_rate_limits_and_unhealthy_boots_are_typed() {
    let fake = Fake::start(config()).await;
    let c = fake.client();
    // No capacity for the A10 in us-south-1.
    let err = c
        .deploy(&deploy_request("gpu_1x_a10", "us-south-1", vec![]))
        .await;
    assert!(matches!(err, Err(ProviderError::NoCapacity(_))), "{err:?}");

    // A boot that fails is `error` (it never got an address): fail over.
    fake.admin_post("/faults", json!({ "error_next_instances": 1 }))
        .await;
    let id = c
        .deploy(&deploy_request("gpu_1x_a10", "us-east-1", vec![]))
        .await
        .unwrap();
    let i = wait_status(&c, &id, InstanceStatus::Error, Duration::from_secs(3)).await;
    assert!(i.status.is_failed());

    // The launch limit: the second launch inside the window is refused with a wait, and the
    // client then answers from its pause without sending.
    fake.admin_post(
        "/rate-limits",
        json!({ "enabled": true, "window_ms": 10_000 }),
    )
    .await;
    c.deploy(&deploy_request("gpu_1x_a10", "us-west-1", vec![]))
        .await
        .unwrap();
    let launches_before = fake.state().await["requests"]["by_route"]
        ["POST /api/v1/instance-operations/launch"]
        .as_u64()
        .unwrap();
    let err = c
        .deploy(&deploy_request("gpu_1x_a10", "us-west-1", vec![]))
        .await;
    let wait = err.as_ref().err().and_then(ProviderError::retry_after);
    assert!(wait.is_some_and(|w| w > Duration::from_secs(2)), "{err:?}");
    assert!(c.rate_limit_wait(ProviderCall::Deploy).is_some());
    let again = c
        .deploy(&deploy_request("gpu_1x_a10", "us-west-1", vec![]))
        .await;
    assert!(matches!(again, Err(ProviderError::RateLimited { .. })));
    let launches_after = fake.state().await["requests"]["by_route"]
        ["POST /api/v1/instance-operations/launch"]
        .as_u64()
        .unwrap();
    // One refused launch reached the fake; the paused one did not.
    assert_eq!(launches_after, launches_before + 1);
}

#[tokio::test]
async fn reads_retry_server_errors_and_a_self_shutdown_reads_offline() {
    let dir = std::env::temp_dir().join(format!("lambda-client-exec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let fake = Fake::start(LambdaConfig {
        execute: Some(dir.clone()),
        ..config()
    })
    .await;
    let c = fake.client();
    fake.admin_post(
        "/faults",
        json!({ "server_errors": { "count": 2, "status": 502, "paths": ["/api/v1/instance-types"] } }),
    )
    .await;
    assert!(!c.instance_types().await.unwrap().is_empty());

    let script = c
        .create_script("mimiry-x", "#!/bin/bash\necho done\nshutdown -h now\n")
        .await
        .unwrap();
    let mut req = deploy_request("gpu_1x_a10", "us-east-1", vec![]);
    req.startup_script_id = Some(script);
    let id = c.deploy(&req).await.unwrap();
    let off = wait_status(&c, &id, InstanceStatus::Offline, Duration::from_secs(5)).await;
    assert!(off.ip.is_some());
    let log = std::fs::read_to_string(dir.join(&id).join("output.log")).unwrap();
    assert!(log.contains("done"), "{log}");
    c.delete_instance(&id, None).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_script_from_another_process_is_refused_before_launching() {
    let fake = Fake::start(config()).await;
    let c = fake.client();
    let mut req = deploy_request("gpu_1x_a10", "us-east-1", vec![]);
    req.startup_script_id = Some("user-data-unknown".into());
    let err = c.deploy(&req).await;
    assert!(
        matches!(err, Err(ProviderError::InvalidRequest(_))),
        "{err:?}"
    );
    assert_eq!(fake.state().await["instances"], json!([]));
}
