//! A local Lambda runtime API (the part a custom runtime talks to): it notes when the function
//! first asks for an event, hands out the events it is given one at a time and returns each
//! answer to whoever invoked.
//!
//! One emulator serves one function process: `AWS_LAMBDA_RUNTIME_API` = [`RuntimeApi::host`].

use anyhow::{anyhow, bail, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch, Mutex};

struct Invocation {
    id: String,
    payload: Vec<u8>,
}

/// The function's answer: its response, or what it posted to the error endpoint.
type Answer = std::result::Result<Vec<u8>, String>;

struct Shared {
    first_next: watch::Sender<Option<Instant>>,
    init_error: watch::Sender<Option<String>>,
    queue: Mutex<mpsc::Receiver<Invocation>>,
    pending: std::sync::Mutex<HashMap<String, oneshot::Sender<Answer>>>,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    events: mpsc::Sender<Invocation>,
    server: tokio::task::JoinHandle<()>,
    invoked: u64,
}

const BASE: &str = "/2018-06-01/runtime";

impl RuntimeApi {
    pub async fn start() -> Result<RuntimeApi> {
        let (events, queue) = mpsc::channel(16);
        let shared = Arc::new(Shared {
            first_next: watch::channel(None).0,
            init_error: watch::channel(None).0,
            queue: Mutex::new(queue),
            pending: std::sync::Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route(&format!("{BASE}/invocation/next"), get(next))
            .route(
                &format!("{BASE}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{BASE}/invocation/{{id}}/error"), post(error))
            .route(&format!("{BASE}/init/error"), post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(RuntimeApi {
            addr,
            shared,
            events,
            server,
            invoked: 0,
        })
    }

    /// The value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// When the function first asked for an event; an error if it reported an init error or
    /// did not ask within `timeout`.
    pub async fn first_next(&self, timeout: Duration) -> Result<Instant> {
        let mut first = self.shared.first_next.subscribe();
        let mut init = self.shared.init_error.subscribe();
        let wait = async {
            loop {
                if let Some(at) = *first.borrow_and_update() {
                    return Ok(at);
                }
                if let Some(e) = init.borrow_and_update().clone() {
                    return Err(anyhow!("init error: {e}"));
                }
                tokio::select! {
                    r = first.changed() => r?,
                    r = init.changed() => r?,
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| anyhow!("no request for an event within {timeout:?}"))?
    }

    /// Invokes the function with `payload` and waits for its answer.
    pub async fn invoke(&mut self, payload: &[u8], timeout: Duration) -> Result<Vec<u8>> {
        self.invoked += 1;
        let id = format!("bench-{:08}", self.invoked);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().unwrap().insert(id.clone(), tx);
        self.events
            .send(Invocation {
                id: id.clone(),
                payload: payload.to_vec(),
            })
            .await
            .map_err(|_| anyhow!("emulator stopped"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(body))) => Ok(body),
            Ok(Ok(Err(e))) => bail!("invocation {id} failed: {e}"),
            Ok(Err(_)) => bail!("invocation {id}: emulator dropped it"),
            Err(_) => {
                self.shared.pending.lock().unwrap().remove(&id);
                bail!("invocation {id}: no answer within {timeout:?}")
            }
        }
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn epoch_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn next(State(s): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    s.first_next.send_if_modified(|v| {
        if v.is_none() {
            *v = Some(now);
            true
        } else {
            false
        }
    });
    let mut queue = s.queue.lock().await;
    let Some(invocation) = queue.recv().await else {
        return StatusCode::GONE.into_response();
    };
    let headers = [
        ("lambda-runtime-aws-request-id", invocation.id),
        (
            "lambda-runtime-deadline-ms",
            (epoch_ms() + 60_000).to_string(),
        ),
        (
            "lambda-runtime-invoked-function-arn",
            "arn:aws:lambda:us-east-1:123456789012:function:mimiry-bench".to_string(),
        ),
        (
            "lambda-runtime-trace-id",
            "Root=1-00000000-000000000000000000000000;Sampled=0".to_string(),
        ),
        ("content-type", "application/json".to_string()),
    ];
    (headers, invocation.payload).into_response()
}

fn answer(s: &Shared, id: &str, answer: Answer) -> StatusCode {
    match s.pending.lock().unwrap().remove(id) {
        Some(tx) => {
            let _ = tx.send(answer);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&s, &id, Ok(body.to_vec()))
}

async fn error(State(s): State<Arc<Shared>>, Path(id): Path<String>, body: Bytes) -> StatusCode {
    answer(&s, &id, Err(String::from_utf8_lossy(&body).into_owned()))
}

async fn init_error(State(s): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    let message = String::from_utf8_lossy(&body).into_owned();
    s.init_error.send_replace(Some(message));
    StatusCode::ACCEPTED
}
