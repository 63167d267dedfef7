//! # fake-stripe
//!
//! An in-memory stand-in for the parts of the Stripe API Mimiry uses, for the local stack and
//! the tests (the shared Stripe client is pointed at it unchanged):
//!
//! - [`api`]: `POST /v1/checkout/sessions`, `GET /v1/checkout/sessions/{id}`,
//!   `POST /v1/refunds`, `GET /v1/events/{id}` — form-encoded parameters, secret-key auth,
//!   `Idempotency-Key`, Stripe's error envelope ([`error`]);
//! - [`checkout`]: the hosted checkout page (`session.url`) with Pay, Pay by bank debit
//!   (settles later), Decline and Cancel, redirecting to the session's success/cancel URLs;
//! - [`webhooks`]: events signed with `Stripe-Signature` and delivered to the configured
//!   endpoint with retries on non-2xx;
//! - [`admin`]: test controls (pause/flush in order or reversed, duplicate, replay, delay,
//!   refund, dispute, settle a delayed payment; lose the answers of API calls; events,
//!   deliveries and sessions listed).
//!
//! Events: `checkout.session.completed`, `checkout.session.async_payment_succeeded`,
//! `checkout.session.async_payment_failed`, `charge.refunded`, `charge.dispute.created`.

use axum::routing::{get, post};
use axum::{middleware, Router};
use std::net::SocketAddr;

pub mod admin;
pub mod api;
pub mod checkout;
pub mod error;
pub mod state;
pub mod webhooks;

pub use state::AppState;

/// The API version the fake's objects follow (shown in events' `api_version`).
pub const API_VERSION: &str = "2024-06-20";

#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The secret key the API accepts.
    pub api_key: String,
    /// Where events are POSTed (settable later with `POST /admin/webhook`).
    pub webhook_url: Option<String>,
    /// Endpoint secrets; every delivery carries one `v1` signature per secret.
    pub webhook_secrets: Vec<String>,
    /// Waits before the retries of a failed delivery (their count bounds the attempts).
    pub retry_delays_ms: Vec<u64>,
    /// A delayed (bank debit) payment settles successfully this long after the session
    /// completes; 0: only when `POST /admin/sessions/{id}/settle` says so.
    pub async_settle_ms: u64,
}

impl Default for FakeConfig {
    fn default() -> Self {
        FakeConfig {
            api_key: "sk_test_mimiry_local".into(),
            webhook_url: None,
            webhook_secrets: vec!["whsec_mimiry_local".into()],
            retry_delays_ms: vec![500, 1000, 2000, 4000, 8000],
            async_settle_ms: 0,
        }
    }
}

fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/v1/checkout/sessions", post(api::create_session))
        .route("/v1/checkout/sessions/{id}", get(api::get_session))
        .route("/v1/refunds", post(api::create_refund))
        .route("/v1/events/{id}", get(api::get_event))
        .layer(middleware::from_fn_with_state(state.clone(), api::auth));
    let page = Router::new()
        .route("/checkout/{id}", get(checkout::show))
        .route("/checkout/{id}/pay", post(checkout::pay))
        .route("/checkout/{id}/pay-delayed", post(checkout::pay_delayed))
        .route("/checkout/{id}/decline", post(checkout::decline))
        .route("/checkout/{id}/cancel", post(checkout::cancel));
    let admin = Router::new()
        .route("/admin/events", get(admin::events))
        .route("/admin/deliveries", get(admin::deliveries))
        .route("/admin/sessions", get(admin::sessions))
        .route("/admin/faults", post(admin::set_faults))
        .route(
            "/admin/webhook",
            get(admin::get_webhook).post(admin::set_webhook),
        )
        .route("/admin/webhook/flush", post(admin::flush))
        .route("/admin/events/{id}/duplicate", post(admin::duplicate))
        .route("/admin/events/{id}/replay", post(admin::replay))
        .route("/admin/sessions/{id}/pay", post(admin::pay))
        .route("/admin/sessions/{id}/settle", post(admin::settle))
        .route("/admin/refunds", post(admin::refund))
        .route("/admin/disputes", post(admin::dispute))
        .route("/admin/disputes/{id}/close", post(admin::close_dispute));
    v1.merge(page)
        .merge(admin)
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(api::not_allowed)
        .with_state(state)
}

/// Serves on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, config: FakeConfig) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = AppState::new(config, format!("http://127.0.0.1:{}", addr.port()));
    tracing::info!(%addr, "fake-stripe serving");
    axum::serve(listener, router(state)).await
}

/// Binds `127.0.0.1:0` and serves in a background task: for in-process tests.
pub async fn spawn(config: FakeConfig) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let handle = tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::error!(error = %e, "fake-stripe stopped");
        }
    });
    (addr, handle)
}
