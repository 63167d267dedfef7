//! The DataCrunch client against a small scripted server (an axum router in the test), for the
//! behaviours of Verda's published OpenAPI that the fake may not have: paged scripts, 429 with
//! `Retry-After`, deploy 202, delete naming the OS volume, 204 on delete, per-instance action
//! results, "Invalid ssh-key ID".

use super::*;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A canned answer: status, headers, body.
#[derive(Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn canned(status: u16, body: Value) -> Canned {
    Canned {
        status,
        headers: vec![],
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    }
}

fn too_many(retry_after_secs: u64) -> Canned {
    Canned {
        status: 429,
        headers: vec![
            ("retry-after", retry_after_secs.to_string()),
            (
                "ratelimit",
                format!(
                    "\"project\";r=400;t={retry_after_secs}, \"endpoint\";r=0;t={retry_after_secs}"
                ),
            ),
        ],
        body: json!({"code": "rate_limit_exceeded", "message": "Too many requests"}).to_string(),
    }
}

#[derive(Default)]
struct Mock {
    /// (method, path, query, body) of every API request (the token request excluded).
    requests: Vec<(String, String, String, String)>,
    /// "METHOD /path" → answers in order; the last one repeats.
    answers: HashMap<String, VecDeque<Canned>>,
    /// Names of the project's startup scripts, oldest first.
    scripts: Vec<String>,
}

type Shared = Arc<Mutex<Mock>>;

async fn handle(State(mock): State<Shared>, method: Method, uri: Uri, body: String) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    if path == "/v1/oauth2/token" {
        return respond(canned(
            200,
            json!({"access_token": "tok", "token_type": "Bearer", "expires_in": 3600,
                   "refresh_token": "ref", "scope": "cloud-api-v1"}),
        ));
    }
    let mut m = mock.lock().unwrap();
    m.requests
        .push((method.to_string(), path.clone(), query.clone(), body));
    if method == Method::GET && path == "/v1/scripts" {
        return scripts_page(&m.scripts, &query);
    }
    let key = format!("{method} {path}");
    let answer = match m.answers.get_mut(&key) {
        Some(q) if q.len() > 1 => q.pop_front().unwrap(),
        Some(q) if !q.is_empty() => q[0].clone(),
        _ => canned(
            404,
            json!({"code": "not_found", "message": "no such route"}),
        ),
    };
    respond(answer)
}

fn respond(c: Canned) -> Response {
    let mut b = Response::builder().status(StatusCode::from_u16(c.status).unwrap());
    if !c.body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    for (k, v) in c.headers {
        b = b.header(k, v);
    }
    b.body(Body::from(c.body)).unwrap()
}

/// Verda's `GET /v1/scripts`: `page` (1), `pageSize` (10, max 100), partial `name` filter,
/// newest first, totals in headers.
fn scripts_page(scripts: &[String], query: &str) -> Response {
    let q: HashMap<&str, &str> = query.split('&').filter_map(|p| p.split_once('=')).collect();
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let size: usize = q
        .get("pageSize")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let name = q.get("name").copied().unwrap_or("");
    let matching: Vec<(usize, &String)> = scripts
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, n)| n.contains(name))
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .map(|(i, n)| json!({"id": format!("s{i}"), "name": n, "script": "#!/bin/bash"}))
        .collect();
    let mut c = canned(200, Value::Array(items));
    c.headers = vec![
        ("x-page", page.to_string()),
        ("x-page-size", size.to_string()),
        ("x-total-count", matching.len().to_string()),
    ];
    respond(c)
}

struct Server {
    mock: Shared,
    base: String,
    handle: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl Server {
    async fn start() -> Server {
        let mock: Shared = Arc::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(mock.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Server {
            mock,
            base: format!("http://{addr}/v1"),
            handle,
        }
    }

    fn answer(&self, route: &str, answers: Vec<Canned>) {
        self.mock
            .lock()
            .unwrap()
            .answers
            .insert(route.to_string(), answers.into());
    }

    fn client(&self) -> DataCrunchClient {
        DataCrunchClient::new(
            &self.base,
            Credentials::Static {
                client_id: "id".into(),
                client_secret: "secret".into(),
            },
            Duration::from_secs(5),
        )
        .with_retry_policy(RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        })
    }

    /// The requests received on "METHOD /path".
    fn requests(&self, route: &str) -> Vec<(String, String)> {
        self.mock
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p, _, _)| format!("{m} {p}") == route)
            .map(|(_, _, q, b)| (q.clone(), b.clone()))
            .collect()
    }
}

fn deploy_req() -> DeployRequest {
    DeployRequest {
        instance_type: "1V100.6V".into(),
        image: "ubuntu-22.04-cuda-12.0-docker".into(),
        hostname: "mj-x".into(),
        description: "mj-x".into(),
        ssh_key_ids: vec![],
        location_code: "FIN-01".into(),
        startup_script_id: None,
        startup_script: None,
        os_volume_size_gb: 50,
        is_spot: false,
    }
}

#[tokio::test]
async fn mock_scripts_are_read_through_every_page() {
    let server = Server::start().await;
    {
        let mut m = server.mock.lock().unwrap();
        // 250 of ours among others: more than two pages of the maximum size.
        for i in 0..250 {
            m.scripts
                .push(format!("mimiry-{:08x}-0000-4000-8000-000000000000.acct", i));
            if i % 50 == 0 {
                m.scripts.push(format!("someone-else-{i}"));
            }
        }
    }
    let scripts = server.client().list_scripts().await.unwrap();
    assert_eq!(scripts.len(), 250, "every page read, nothing twice");
    assert!(scripts.iter().all(|s| s.name.starts_with("mimiry-")));
    let mut ids: Vec<&str> = scripts.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 250);
    let queries: Vec<String> = server
        .requests("GET /v1/scripts")
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    assert_eq!(
        queries,
        [
            "page=1&pageSize=100&name=mimiry-",
            "page=2&pageSize=100&name=mimiry-",
            "page=3&pageSize=100&name=mimiry-"
        ]
    );
}

#[tokio::test]
async fn mock_a_full_last_page_stops_at_the_total() {
    let server = Server::start().await;
    {
        let mut m = server.mock.lock().unwrap();
        for i in 0..200 {
            m.scripts.push(format!("mimiry-{i}"));
        }
    }
    assert_eq!(server.client().list_scripts().await.unwrap().len(), 200);
    assert_eq!(
        server.requests("GET /v1/scripts").len(),
        2,
        "no empty third page"
    );
}

#[tokio::test]
async fn mock_delete_names_the_os_volume_for_permanent_deletion() {
    let server = Server::start().await;
    let id = "7a3e0f52-0000-4000-8000-000000000001";
    server.answer(
        &format!("GET /v1/instances/{id}"),
        vec![canned(
            200,
            json!({"id": id, "status": "running", "hostname": "mj-x", "description": "mj-x",
                   "location": "FIN-01", "ip": "203.0.113.9",
                   "os_volume_id": "5e9e63a9-fc3b-427b-b259-0c77dce61090"}),
        )],
    );
    server.answer(
        "PUT /v1/instances",
        vec![canned(
            202,
            json!([{"id": id, "status": "success", "error": null}]),
        )],
    );
    let c = server.client();
    // Not known: read from the instance first.
    assert_eq!(
        c.delete_instance(id, None).await.unwrap(),
        DeleteOutcome::Accepted
    );
    // Known (the reconciler's list has it): no read.
    assert_eq!(
        c.delete_instance(id, Some("5e9e63a9-fc3b-427b-b259-0c77dce61090"))
            .await
            .unwrap(),
        DeleteOutcome::Accepted
    );
    assert_eq!(server.requests(&format!("GET /v1/instances/{id}")).len(), 1);
    let puts = server.requests("PUT /v1/instances");
    assert_eq!(puts.len(), 2);
    for (_, body) in puts {
        let b: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(b["action"], "delete");
        assert_eq!(b["id"], json!([id]));
        assert_eq!(
            b["volume_ids"],
            json!(["5e9e63a9-fc3b-427b-b259-0c77dce61090"])
        );
        assert_eq!(b["delete_permanently"], true);
    }
}

#[tokio::test]
async fn mock_delete_answers_of_the_real_api() {
    let server = Server::start().await;
    let c = server.client();
    let vol = Some("5e9e63a9-fc3b-427b-b259-0c77dce61090");
    // 204: already in the requested state.
    server.answer("PUT /v1/instances", vec![canned(204, Value::Null)]);
    assert_eq!(
        c.delete_instance("i1", vol).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
    // 207 with per-instance results, `error` a string.
    server.answer(
        "PUT /v1/instances",
        vec![canned(
            207,
            json!([{"id": "i0", "status": "success"},
                   {"id": "i1", "status": "error", "error": "Can't discontinue a provisioning instance"}]),
        )],
    );
    assert_eq!(
        c.delete_instance("i1", vol).await.unwrap(),
        DeleteOutcome::NotYet
    );
    // A single refused instance: 400 or 403 `forbidden_action`, keyed on the code.
    for status in [400, 403] {
        server.answer(
            "PUT /v1/instances",
            vec![canned(
                status,
                json!({"code": "forbidden_action", "message": "Action not allowed now"}),
            )],
        );
        assert_eq!(
            c.delete_instance("i1", vol).await.unwrap(),
            DeleteOutcome::NotYet,
            "{status}"
        );
    }
    // 404: unknown instance.
    server.answer(
        "PUT /v1/instances",
        vec![canned(
            404,
            json!({"code": "not_found", "message": "Instance not found"}),
        )],
    );
    assert_eq!(
        c.delete_instance("i1", vol).await.unwrap(),
        DeleteOutcome::AlreadyGone
    );
}

#[tokio::test]
async fn mock_deploy_202_and_capacity_503() {
    let server = Server::start().await;
    let c = server.client();
    server.answer(
        "POST /v1/instances",
        vec![
            canned(202, json!("0dc16ed0-f7fb-4eec-a5e6-004e082bb1f4")),
            canned(
                503,
                json!({"code": "service_unavailable", "message": "No capacity available"}),
            ),
        ],
    );
    assert_eq!(
        c.deploy(&deploy_req()).await.unwrap(),
        "0dc16ed0-f7fb-4eec-a5e6-004e082bb1f4"
    );
    let err = c.deploy(&deploy_req()).await.unwrap_err();
    assert!(matches!(err, ProviderError::NoCapacity(_)), "{err:?}");
}

#[tokio::test]
async fn mock_429_pauses_the_path_and_later_calls_are_not_sent() {
    let server = Server::start().await;
    let c = server.client();
    server.answer("POST /v1/instances", vec![too_many(30)]);
    server.answer(
        "GET /v1/locations",
        vec![canned(
            200,
            json!([{"code": "FIN-01", "name": "Finland", "country_code": "FI"}]),
        )],
    );
    let err = c.deploy(&deploy_req()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Duration::from_secs(30)
        },
        "a 429 on deploy is a wait, not a deploy error"
    );
    let wait = c.rate_limit_wait(ProviderCall::Deploy).expect("paused");
    assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));
    assert_eq!(c.rate_limit_wait(ProviderCall::DeleteInstance), None);
    // The next deploy is answered without a request.
    let started = Instant::now();
    let err = c.deploy(&deploy_req()).await.unwrap_err();
    assert!(err.retry_after().is_some(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1), "no long sleep");
    assert_eq!(server.requests("POST /v1/instances").len(), 1);
    // Other paths go on.
    assert_eq!(c.locations().await.unwrap().len(), 1);
    // Clones share what was learnt.
    assert!(c.clone().rate_limit_wait(ProviderCall::Deploy).is_some());
}

#[tokio::test]
async fn mock_short_retry_after_is_waited_in_process_once() {
    let server = Server::start().await;
    let c = server.client();
    server.answer(
        "GET /v1/instances",
        vec![too_many(1), canned(200, json!([]))],
    );
    let started = Instant::now();
    assert!(c.list_instances().await.unwrap().is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    assert_eq!(server.requests("GET /v1/instances").len(), 2);

    // Limited again right after the wait: back to the caller, not a loop.
    server.answer("GET /v1/instances", vec![too_many(1), too_many(1)]);
    let err = c.list_instances().await.unwrap_err();
    assert!(err.retry_after().is_some(), "{err:?}");
    assert_eq!(server.requests("GET /v1/instances").len(), 4);
}

#[tokio::test]
async fn mock_ssh_keys_use_the_current_path_and_an_unknown_key_is_gone() {
    let server = Server::start().await;
    let c = server.client();
    server.answer(
        "POST /v1/ssh-keys",
        vec![canned(201, json!("39479972-f06d-4a94-8027-75a0b42dcf6b"))],
    );
    server.answer(
        "DELETE /v1/ssh-keys/nope",
        vec![canned(
            400,
            json!({"code": "invalid_request", "message": "Invalid ssh-key ID"}),
        )],
    );
    assert_eq!(
        c.create_ssh_key("k", "ssh-ed25519 AAAA t@m").await.unwrap(),
        "39479972-f06d-4a94-8027-75a0b42dcf6b"
    );
    c.delete_ssh_key("nope").await.unwrap();
    assert_eq!(
        server.requests("DELETE /v1/ssh-keys/nope").len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn mock_volumes_are_ours_from_both_lists_and_deleted_past_the_trash() {
    let server = Server::start().await;
    server.answer(
        "GET /v1/volumes",
        vec![canned(
            200,
            json!([
                {"id": "v1", "name": "mimiry-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-1-os",
                 "instance_id": "i1", "status": "attached", "is_os_volume": true},
                {"id": "v2", "name": "OS-NVMe-abcd", "instance_id": "i2", "status": "attached"}
            ]),
        )],
    );
    server.answer(
        "GET /v1/volumes/trash",
        vec![canned(
            200,
            json!([{"id": "v3", "name": "mimiry-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-2-os",
                    "instance_id": null, "status": "deleted", "is_permanently_deleted": false}]),
        )],
    );
    server.answer("DELETE /v1/volumes/v1", vec![canned(202, json!(null))]);
    server.answer(
        "DELETE /v1/volumes/v9",
        vec![canned(
            404,
            json!({"code": "not_found", "message": "Volume not found"}),
        )],
    );
    let c = server.client();
    let volumes = c.list_volumes().await.unwrap();
    assert_eq!(
        volumes,
        vec![
            VolumeInfo {
                id: "v1".into(),
                name: "mimiry-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-1-os".into(),
                instance_id: Some("i1".into()),
                in_trash: false,
            },
            VolumeInfo {
                id: "v3".into(),
                name: "mimiry-0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b-2-os".into(),
                instance_id: None,
                in_trash: true,
            },
        ],
        "not someone else's"
    );
    c.delete_volume("v1").await.unwrap();
    c.delete_volume("v9").await.unwrap(); // already gone
    let deletes = server.requests("DELETE /v1/volumes/v1");
    assert_eq!(deletes.len(), 1);
    let body: Value = serde_json::from_str(&deletes[0].1).unwrap();
    assert_eq!(body, json!({"is_permanent": true}), "past the trash");
}
