//! # fake-lambda
//!
//! An in-memory stand-in for the Lambda Cloud public REST API (`/api/v1`, API key auth), for
//! Mimiry's tests and local stack: the production client is pointed at
//! `http://127.0.0.1:PORT/api/v1` unchanged. Paths, fields, statuses and error codes follow
//! Lambda's OpenAPI document (v1.4.0, as published in public generated clients) plus
//! `user_data` on launch and the `terminating` status of newer versions.
//!
//! It is built on `fake_datacrunch`'s state rather than beside it: an instance here is a
//! `fake_datacrunch::state::Instance`, driven by the same timers, run by the same execute mode
//! (its `user_data` is the startup script, with the same sandbox and `shutdown` shims), hit by
//! the same fault counters, and listed by the same `GET /admin/state` — so the chaos test counts
//! leaks per provider with one piece of code. Only the provider API differs ([`api`]).
//!
//! In test mode requests and responses are checked against Lambda's OpenAPI document
//! ([`conformance`]).
//!
//! Lambda documents a launch rate limit (one launch per ~10 s per account): the shared rate
//! limiter, asked for launches only, enforces it — on by default at one launch per 10 s;
//! `POST /admin/rate-limits {"window_ms": …}` lowers it for tests.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use axum::{
    middleware,
    routing::{delete, get, post},
    Router,
};
use fake_datacrunch::{state::AppState, ConformanceMode, FakeConfig, RateLimits};

pub mod api;
pub mod catalog;
pub mod conformance;
pub mod error;

/// Settings of one fake server.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The only accepted API key.
    pub api_key: String,
    /// `booting` → `active` after this long.
    pub provision_ms: u64,
    /// Execute mode: run each instance's `user_data` under this work directory.
    pub execute: Option<PathBuf>,
    /// From a self-shutdown to `unhealthy`.
    pub shutdown_ms: u64,
    /// Time an instance spends `terminating`.
    pub terminate_ms: u64,
    /// The launch rate limit (`endpoint` launches per `window_ms`).
    pub rate_limits: RateLimits,
    /// Checks against Lambda's OpenAPI document (see [`conformance`]).
    pub conformance: ConformanceMode,
}

/// One launch per 10 s: the documented limit.
pub fn default_launch_limit() -> RateLimits {
    RateLimits {
        enabled: true,
        project: u32::MAX,
        endpoint: 1,
        list: u32::MAX,
        window_ms: 10_000,
    }
}

impl Default for LambdaConfig {
    fn default() -> Self {
        Self {
            api_key: "mimiry-local-lambda-key".to_string(),
            provision_ms: 2000,
            execute: None,
            shutdown_ms: 200,
            terminate_ms: 100,
            rate_limits: default_launch_limit(),
            conformance: ConformanceMode::Off,
        }
    }
}

/// The handlers' state: the shared instance state and the API key.
#[derive(Clone)]
pub struct LambdaApp {
    pub dc: AppState,
    pub api_key: Arc<str>,
}

fn router(app: LambdaApp) -> Router {
    let v1 = Router::new()
        .route("/api/v1/instance-types", get(api::instance_types))
        .route("/api/v1/instance-operations/launch", post(api::launch))
        .route(
            "/api/v1/instance-operations/terminate",
            post(api::terminate),
        )
        .route("/api/v1/instances", get(api::list_instances))
        .route("/api/v1/instances/{id}", get(api::get_instance))
        .route(
            "/api/v1/ssh-keys",
            get(api::list_ssh_keys).post(api::add_ssh_key),
        )
        .route("/api/v1/ssh-keys/{id}", delete(api::delete_ssh_key))
        .layer(middleware::from_fn_with_state(app.clone(), api::gate))
        .with_state(app.clone());
    let admin = fake_datacrunch::admin_router().with_state(app.dc.clone());
    v1.merge(admin)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Around everything, so what the gate answers (401, 429, faults) is checked too.
        .layer(middleware::from_fn_with_state(
            app.dc.clone(),
            conformance::check,
        ))
}

/// Serves the fake on `listener` until the process ends (execute-mode scripts die with it).
pub async fn serve(listener: tokio::net::TcpListener, config: LambdaConfig) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let shared = FakeConfig {
        provision_ms: config.provision_ms,
        execute: config.execute,
        shutdown_ms: config.shutdown_ms,
        delete_ms: config.terminate_ms,
        rate_limits: config.rate_limits,
        conformance: config.conformance,
        ..FakeConfig::default()
    };
    let app = LambdaApp {
        dc: fake_datacrunch::build_state(addr, shared).await?,
        api_key: config.api_key.into(),
    };
    tracing::info!(%addr, "fake-lambda serving");
    axum::serve(listener, router(app)).await
}

/// Binds `127.0.0.1:0` and serves in a background task: for in-process tests.
pub async fn spawn(config: LambdaConfig) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let handle = tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::error!(error = %e, "fake-lambda stopped");
        }
    });
    (addr, handle)
}
