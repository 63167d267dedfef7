//! Authorization as the route/scope table says it, over HTTP against the local stack:
//! - every API route of `ROUTES`, called with no key, an unknown key, a key with no scope, a key
//!   with each single scope and a key with every scope: 2xx, 401 or 403 exactly as its access
//!   (scope, any key, job token) implies; Stripe's webhook, which takes no key, refuses every
//!   one of them with a 400 `invalid_signature` (a forged event crediting the account);
//! - every route with an `{id}` called on another account's resource: 404, indistinguishable
//!   from a resource that does not exist (the job-token route: another job's token is a 401);
//! - after the traffic, no DynamoDB item holds a plaintext API key or report token (keys are
//!   stored as SHA-256 only). The logs are audited after the whole suite (`zz_log_audit`).

use aws_sdk_dynamodb::types::AttributeValue;
use mimiry_shared::auth::{ApiKey, Scope};
use mimiry_shared::routes::{api_routes, Access, Route, RouteName};
use mimiry_tests::{add_ssh_key, call, record_secret, ssh_public_key, Answer, Stack};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const UNAUTHORIZED: &str = "Invalid or missing API key";
/// The cheapest type of the fake's catalog and an image it may boot.
const CHEAP_TYPE: &str = "CPU.4V.16G";
const CHEAP_IMAGE: &str = "ubuntu-22.04";

fn job_body(script: Option<&str>) -> Value {
    json!({ "instance_type": CHEAP_TYPE, "image": CHEAP_IMAGE, "location": "FIN-01", "startup_script": script })
}

async fn submit(stack: &Stack, key: &str, script: Option<&str>) -> String {
    let answer = call(
        "POST",
        &stack.url("/jobs"),
        Some(key),
        Some(&job_body(script)),
    )
    .await;
    assert_eq!(answer.status, 201, "POST /jobs: {answer:?}");
    answer.body["id"].as_str().unwrap().to_string()
}

async fn get_job(stack: &Stack, key: &str, id: &str) -> Value {
    let answer = call("GET", &stack.url(&format!("/jobs/{id}")), Some(key), None).await;
    assert_eq!(answer.status, 200, "GET /jobs/{id}: {answer:?}");
    answer.body
}

async fn wait_running(stack: &Stack, key: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = get_job(stack, key, id).await;
        if job["status"] == "running" {
            return;
        }
        assert!(
            Instant::now() < deadline && job["status"] != "failed",
            "job {id} never ran: {job:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The report token baked into the job's wrapper, read from the script the fake (execute mode)
/// wrote for its instance. Recorded for the log audit.
async fn report_token(stack: &Stack, job_id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let prefix = format!("mimiry-{job_id}-");
    let dir = loop {
        let state = stack.fake_admin(reqwest::Method::GET, "/state", None).await;
        let work_dir = state["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                i["hostname"]
                    .as_str()
                    .is_some_and(|h| h.starts_with(&prefix))
            })
            .filter_map(|i| i["script_process"]["work_dir"].as_str())
            .next_back()
            .map(str::to_string);
        if let Some(dir) = work_dir {
            break dir;
        }
        assert!(
            Instant::now() < deadline,
            "the script of job {job_id} never started"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let script = std::fs::read_to_string(std::path::Path::new(&dir).join("startup.sh")).unwrap();
    let line = script
        .lines()
        .find(|l| l.contains("Authorization: Bearer "))
        .unwrap_or_else(|| panic!("no report token in the wrapper of job {job_id}"));
    let token = line
        .split("Authorization: Bearer ")
        .nth(1)
        .unwrap()
        .trim_end_matches(['\'', '"', ' ', '\\'])
        .to_string();
    record_secret(&token);
    token
}

/// What a route should answer a caller: allowed (2xx), 401 or 403 naming the scope.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    Unauthorized,
    Forbidden(Scope),
    /// Stripe's webhook: no signature, whatever key comes with it.
    BadSignature,
}

/// The route table's verdict for an API key with `scopes` (`None`: no usable key at all).
fn expected(route: &Route, scopes: Option<&[Scope]>) -> Expect {
    match (route.access, scopes) {
        (Access::StripeSignature, _) => Expect::BadSignature,
        (_, None) | (Access::JobToken, _) => Expect::Unauthorized,
        (Access::AnyKey, Some(_)) => Expect::Allowed,
        (Access::Scope(s), Some(held)) if held.contains(&s) => Expect::Allowed,
        (Access::Scope(s), Some(_)) => Expect::Forbidden(s),
        (Access::Session | Access::Public, _) => {
            unreachable!("dashboard pages take no API key: tests/tests/dashboard.rs")
        }
    }
}

/// The success statuses of each route.
fn success(route: &Route) -> &'static [u16] {
    match route.name {
        RouteName::CreateSshKey
        | RouteName::SubmitJob
        | RouteName::CreateWebhook
        | RouteName::PutSecret => &[201],
        RouteName::CancelJob => &[200, 202],
        _ => &[200],
    }
}

/// Resources the denied calls aim at: if a check were missing they would act on these.
struct Targets {
    ssh_key: String,
    job: String,
    webhook: String,
    /// The name of a secret of the owner's.
    secret: String,
}

/// Stores a secret in the account of `key`; answers its name.
async fn add_secret(stack: &Stack, key: &str) -> String {
    let name = format!("MATRIX_{}", uuid::Uuid::new_v4().simple());
    let answer = call(
        "POST",
        &stack.url("/secrets"),
        Some(key),
        Some(&json!({ "name": name, "value": "matrix-value" })),
    )
    .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    name
}

/// The request for `route`: path and body. A call expected to succeed gets a fresh resource of
/// its own where it consumes one (a key to delete, a job to cancel); a call expected to be
/// refused aims at the shared targets.
async fn request_for(
    stack: &Stack,
    owner: &str,
    owner_account: &str,
    route: &Route,
    allowed: bool,
    targets: &Targets,
) -> (String, Option<Value>) {
    let id = match route.name {
        RouteName::DeleteSshKey if allowed => add_ssh_key(stack, owner).await,
        RouteName::DeleteSshKey => targets.ssh_key.clone(),
        RouteName::CancelJob if allowed => submit(stack, owner, Some("sleep 300")).await,
        RouteName::DeleteWebhook if allowed => add_webhook(stack, owner).await,
        RouteName::GetWebhook | RouteName::DeleteWebhook => targets.webhook.clone(),
        RouteName::GetJob
        | RouteName::CancelJob
        | RouteName::ReportJob
        | RouteName::GetJobLogs
        | RouteName::ShipJobLogs
        | RouteName::GetJobEnv => targets.job.clone(),
        _ => String::new(),
    };
    let name = match route.name {
        RouteName::DeleteSecret if allowed => add_secret(stack, owner).await,
        RouteName::DeleteSecret => targets.secret.clone(),
        _ => String::new(),
    };
    let path = route.path.replace("{id}", &id).replace("{name}", &name);
    let body = match route.name {
        RouteName::CreateSshKey => {
            Some(json!({ "name": "matrix", "public_key": ssh_public_key() }))
        }
        RouteName::SubmitJob => Some(job_body(None)),
        RouteName::CreateWebhook => Some(webhook_body()),
        RouteName::PutSecret => Some(json!({
            "name": format!("MATRIX_{}", uuid::Uuid::new_v4().simple()),
            "value": "matrix-value",
        })),
        RouteName::ReportJob => Some(json!({ "exit_code": 0, "output": "not from the instance" })),
        RouteName::ShipJobLogs => {
            Some(json!({ "seq": 0, "data_base64": "bm90IGZyb20gdGhlIGluc3RhbmNlCg==" }))
        }
        // What a forger would send: the owner's account "paid" 1000 credits.
        RouteName::StripeWebhook => Some(json!({
            "id": format!("evt_forged_{}", uuid::Uuid::new_v4().simple()),
            "object": "event",
            "type": "checkout.session.completed",
            "data": { "object": {
                "id": format!("cs_forged_{}", uuid::Uuid::new_v4().simple()),
                "object": "checkout.session",
                "client_reference_id": owner_account,
                "metadata": { "account_id": owner_account },
                "payment_intent": "pi_forged",
                "payment_status": "paid",
                "amount_total": 100000,
                "currency": "usd",
            }},
        })),
        _ => None,
    };
    (path, body)
}

/// An endpoint nothing listens at (the discard port: deliveries fail and stay on this machine).
fn webhook_body() -> Value {
    json!({ "url": "http://127.0.0.1:9/matrix", "events": ["job.completed"] })
}

async fn add_webhook(stack: &Stack, owner: &str) -> String {
    let answer = call(
        "POST",
        &stack.url("/webhooks"),
        Some(owner),
        Some(&webhook_body()),
    )
    .await;
    assert_eq!(answer.status, 201, "{answer:?}");
    answer.body["id"].as_str().unwrap().to_string()
}

fn check(label: &str, expect: Expect, route: &Route, answer: &Answer) {
    match expect {
        Expect::Allowed => {
            assert!(
                success(route).contains(&answer.status),
                "{label}: expected {:?}, got {answer:?}",
                success(route)
            );
        }
        Expect::Unauthorized => {
            assert_eq!(answer.status, 401, "{label}: {answer:?}");
            assert_eq!(answer.error(), UNAUTHORIZED, "{label}");
            assert_eq!(answer.body["code"], "unauthorized", "{label}");
        }
        Expect::BadSignature => {
            assert_eq!(answer.status, 400, "{label}: {answer:?}");
            assert_eq!(answer.body["code"], "invalid_signature", "{label}");
        }
        Expect::Forbidden(scope) => {
            assert_eq!(answer.status, 403, "{label}: {answer:?}");
            assert_eq!(answer.error(), "Insufficient scope", "{label}");
            assert_eq!(
                answer.body["details"]["required_scope"],
                scope.as_str(),
                "{label}"
            );
        }
    }
    assert!(
        answer.headers.contains_key("x-request-id"),
        "{label}: no x-request-id"
    );
}

#[tokio::test]
async fn every_route_answers_each_key_as_the_scope_table_says() {
    let stack = Stack::shared();
    let owner = stack.account("50").await;
    // The callers: no key, a well-formed key nobody issued, then real keys of the account.
    let mut callers: Vec<(String, Option<String>, Option<Vec<Scope>>)> = vec![
        ("no key".into(), None, None),
        (
            "an unknown key".into(),
            Some(ApiKey::generate().expose().to_string()),
            None,
        ),
    ];
    let mut scope_sets: Vec<(String, Vec<Scope>)> = vec![("no scope".into(), vec![])];
    scope_sets.extend(Scope::ALL.map(|s| (format!("only {s}"), vec![s])));
    scope_sets.push(("all scopes".into(), Scope::ALL.to_vec()));
    for (name, scopes) in scope_sets {
        let key = stack.key(&owner.account_id, &scopes).await;
        callers.push((format!("a key with {name}"), Some(key), Some(scopes)));
    }
    let targets = Targets {
        ssh_key: add_ssh_key(stack, &owner.key).await,
        job: submit(stack, &owner.key, Some("sleep 300")).await,
        webhook: add_webhook(stack, &owner.key).await,
        secret: add_secret(stack, &owner.key).await,
    };

    let mut calls = 0;
    let routes: Vec<&Route> = api_routes().collect();
    for &route in &routes {
        for (who, key, scopes) in &callers {
            let expect = expected(route, scopes.as_deref());
            let (path, body) = request_for(
                stack,
                &owner.key,
                &owner.account_id,
                route,
                expect == Expect::Allowed,
                &targets,
            )
            .await;
            let label = format!("{} {} with {who}", route.method, route.path);
            let answer = call(
                route.method,
                &stack.url(&path),
                key.as_deref(),
                body.as_ref(),
            )
            .await;
            check(&label, expect, route, &answer);
            calls += 1;
        }
    }
    // No key, an unknown key, no scope, each scope alone, all scopes.
    assert_eq!(calls, routes.len() * (4 + Scope::ALL.len()));
    println!(
        "scope matrix: {} routes × {} callers = {calls} calls",
        routes.len(),
        callers.len()
    );

    // The refused calls changed nothing: no forged purchase was credited.
    let account = stack
        .store()
        .await
        .get_account(&owner.account_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        account.added_micros, 50_000_000,
        "a forged webhook added credits: {account:?}"
    );
    let ledger = call(
        "GET",
        &stack.url("/account/ledger?limit=100"),
        Some(&owner.key),
        None,
    )
    .await;
    assert!(
        ledger.body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "purchase"),
        "a forged webhook wrote a purchase: {ledger:?}"
    );
    let keys = call("GET", &stack.url("/ssh-keys"), Some(&owner.key), None).await;
    assert!(
        keys.body["ssh_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == targets.ssh_key.as_str()),
        "a refused DELETE removed the key: {keys:?}"
    );
    let job = get_job(stack, &owner.key, &targets.job).await;
    assert_eq!(
        job["cancel_requested"], false,
        "a refused DELETE cancelled the job: {job:#}"
    );
    assert_eq!(
        job["exit_code"],
        Value::Null,
        "a refused report was recorded: {job:#}"
    );
    let cancel = call(
        "DELETE",
        &stack.url(&format!("/jobs/{}", targets.job)),
        Some(&owner.key),
        None,
    )
    .await;
    assert!([200, 202].contains(&cancel.status), "{cancel:?}");
    // The refused deletes left the owner's secret alone.
    let secrets = call("GET", &stack.url("/secrets"), Some(&owner.key), None).await;
    assert!(
        secrets.body["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == targets.secret.as_str()),
        "a refused DELETE /secrets/{{name}} deleted it: {secrets:?}"
    );

    let keys: Vec<String> = callers.iter().filter_map(|(_, k, _)| k.clone()).collect();
    let issued: Vec<String> = callers
        .iter()
        .filter(|(_, _, s)| s.is_some())
        .filter_map(|(_, k, _)| k.clone())
        .collect();
    assert_table_holds_no_plaintext_secret(stack, &keys, &issued).await;
}

/// Every `{id}` route of the table, called by another account on A's resources: 404 exactly
/// like an id that does not exist, and nothing happens to A's resources.
#[tokio::test]
async fn other_accounts_resources_are_not_found() {
    let stack = Stack::shared();
    let a = stack.account("20").await;
    let b = stack.account("20").await;
    let a_key = add_ssh_key(stack, &a.key).await;
    let a_hook = add_webhook(stack, &a.key).await;
    let a_job = submit(stack, &a.key, Some("sleep 300")).await;
    let a_other_job = submit(stack, &a.key, None).await;
    let b_job = submit(stack, &b.key, Some("sleep 300")).await;
    wait_running(stack, &a.key, &a_job).await;
    wait_running(stack, &b.key, &b_job).await;
    let a_token = report_token(stack, &a_job).await;
    let b_token = report_token(stack, &b_job).await;
    let nobody = uuid::Uuid::now_v7().to_string();

    let id_routes: Vec<&Route> = api_routes().filter(|r| r.path.contains("{id}")).collect();
    assert_eq!(
        id_routes.len(),
        9,
        "a new {{id}} route needs its cross-account case here"
    );
    for route in id_routes {
        let (a_id, body) = match route.name {
            RouteName::DeleteSshKey => (&a_key, None),
            RouteName::GetWebhook | RouteName::DeleteWebhook => (&a_hook, None),
            RouteName::GetJob | RouteName::CancelJob | RouteName::GetJobLogs => (&a_job, None),
            RouteName::GetJobEnv => (&a_job, None),
            RouteName::ReportJob => (&a_job, Some(json!({ "exit_code": 3, "output": "forged" }))),
            RouteName::ShipJobLogs => (
                &a_job,
                Some(json!({ "seq": 0, "data_base64": "Zm9yZ2VkCg==" })),
            ),
            other => panic!("{other:?} has an {{id}} but no cross-account case"),
        };
        let label = format!("{} {} by another account", route.method, route.path);
        let url = |id: &str| stack.url(&route.path.replace("{id}", id));
        if route.access == Access::JobToken {
            // Another job's token, and A's token moved to B's account, are both refused.
            let (_, mac) = a_token.split_once('.').unwrap();
            let moved = format!("{}.{mac}", b.account_id);
            for (what, token) in [
                ("B's job token", &b_token),
                ("A's token under B's account", &moved),
            ] {
                let answer = call(route.method, &url(a_id), Some(token), body.as_ref()).await;
                assert_eq!(answer.status, 401, "{label} with {what}: {answer:?}");
                assert_eq!(answer.error(), UNAUTHORIZED, "{label} with {what}");
            }
            continue;
        }
        let theirs = call(route.method, &url(a_id), Some(&b.key), body.as_ref()).await;
        let missing = call(route.method, &url(&nobody), Some(&b.key), body.as_ref()).await;
        assert_eq!(theirs.status, 404, "{label}: {theirs:?}");
        assert_eq!(
            theirs.body["code"], missing.body["code"],
            "{label}: tells theirs from missing"
        );
        assert_eq!(
            theirs.error(),
            missing.error(),
            "{label}: tells theirs from missing"
        );
    }

    // Nothing happened to A's resources.
    let keys = call("GET", &stack.url("/ssh-keys"), Some(&a.key), None).await;
    assert!(
        keys.body["ssh_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == a_key.as_str()),
        "{keys:?}"
    );
    let hook = call(
        "GET",
        &stack.url(&format!("/webhooks/{a_hook}")),
        Some(&a.key),
        None,
    )
    .await;
    assert_eq!(hook.status, 200, "{hook:?}");
    let job = get_job(stack, &a.key, &a_job).await;
    assert_eq!(job["status"], "running", "{job:#}");
    assert_eq!(job["cancel_requested"], false, "{job:#}");
    assert_eq!(job["exit_code"], Value::Null, "{job:#}");

    // B cannot name A's SSH key in a job, nor see A's things in its lists, even with A's cursor.
    let mut body = job_body(None);
    body["ssh_key_ids"] = json!([a_key]);
    let answer = call("POST", &stack.url("/jobs"), Some(&b.key), Some(&body)).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.error(), "SSH key not found");
    let b_keys = call("GET", &stack.url("/ssh-keys"), Some(&b.key), None).await;
    assert_eq!(b_keys.body["ssh_keys"], json!([]), "{b_keys:?}");
    let a_page = call("GET", &stack.url("/jobs?limit=1"), Some(&a.key), None).await;
    let cursor = a_page.body["next_cursor"]
        .as_str()
        .expect("A has two jobs: a next page")
        .to_string();
    for path in ["/jobs".to_string(), format!("/jobs?cursor={cursor}")] {
        let page = call("GET", &stack.url(&path), Some(&b.key), None).await;
        assert_eq!(page.status, 200, "{path}: {page:?}");
        for job in page.body["jobs"].as_array().unwrap() {
            assert_eq!(
                job["id"],
                b_job.as_str(),
                "B's GET {path} shows another account's job"
            );
        }
    }

    // The forged chunks stored nothing in A's log (A's script prints nothing).
    let a_log = call(
        "GET",
        &stack.url(&format!("/jobs/{a_job}/logs")),
        Some(&a.key),
        None,
    )
    .await;
    assert_eq!(a_log.body["lines"], json!([]), "{a_log:?}");

    // The job's own token works (so the 401s above were about the token), once.
    let report = json!({ "exit_code": 0, "output": "done" });
    let own = call(
        "POST",
        &stack.url(&format!("/jobs/{a_job}/report")),
        Some(&a_token),
        Some(&report),
    )
    .await;
    assert_eq!(own.status, 200, "{own:?}");
    assert_eq!(own.body, json!({ "job_id": a_job, "recorded": true }));
    for id in [&a_other_job, &b_job] {
        let owner = if id == &b_job { &b.key } else { &a.key };
        call(
            "DELETE",
            &stack.url(&format!("/jobs/{id}")),
            Some(owner),
            None,
        )
        .await;
    }

    let issued = [a.key.clone(), b.key.clone()];
    let secrets = [a.key.clone(), b.key.clone(), a_token, b_token];
    assert_table_holds_no_plaintext_secret(stack, &secrets, &issued).await;
}

/// Every string inside an item, recursively.
fn strings_of(value: &AttributeValue, out: &mut Vec<String>) {
    match value {
        AttributeValue::S(s) => out.push(s.clone()),
        AttributeValue::Ss(ss) => out.extend(ss.iter().cloned()),
        AttributeValue::B(b) => out.push(String::from_utf8_lossy(b.as_ref()).into_owned()),
        AttributeValue::L(l) => l.iter().for_each(|v| strings_of(v, out)),
        AttributeValue::M(m) => m.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_of(v, out)
        }),
        _ => {}
    }
}

/// Scans the whole table: no attribute holds one of `secrets`, nor anything shaped like an API
/// key (`mky_` and 20+ base62 characters), nor the provider's client secret; and each `issued`
/// API key is there as its SHA-256 (so the scan did see the key records).
async fn assert_table_holds_no_plaintext_secret(
    stack: &Stack,
    secrets: &[String],
    issued: &[String],
) {
    let store = stack.store().await;
    let mut start = None;
    let mut items = 0;
    let mut strings = Vec::new();
    loop {
        let page = store
            .db
            .scan()
            .table_name(&store.table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scanning the table");
        for item in page.items() {
            items += 1;
            item.iter().for_each(|(k, v)| {
                strings.push(k.clone());
                strings_of(v, &mut strings)
            });
        }
        match page.last_evaluated_key() {
            Some(key) => start = Some(key.clone()),
            None => break,
        }
    }
    assert!(items > 0, "the table is empty: nothing was checked");
    for s in &strings {
        for secret in secrets {
            assert!(
                !s.contains(secret.as_str()),
                "the table holds a secret in plaintext: {s}"
            );
        }
        let mut rest = s.as_str();
        while let Some(i) = rest.find("mky_") {
            let tail: String = rest[i + 4..]
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            assert!(tail.len() < 20, "the table holds something key-shaped: {s}");
            rest = &rest[i + 4..];
        }
        assert!(
            !s.contains("local-secret"),
            "the table holds the provider's client secret"
        );
    }
    for key in issued {
        let key = ApiKey::parse(key).expect("an issued key parses");
        let hash = key.hash();
        assert!(
            strings.iter().any(|s| s.contains(&hash)),
            "the key {key:?} is not in the table even as a hash"
        );
    }
    println!(
        "table scan: {items} items, {} strings, {} secrets checked",
        strings.len(),
        secrets.len()
    );
}
