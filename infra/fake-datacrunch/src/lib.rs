//! # fake-datacrunch
//!
//! An in-memory stand-in for the DataCrunch (Verda) public REST API, used by Mimiry's tests and
//! local stack. The production provider client is pointed at it (base URL
//! `http://127.0.0.1:PORT/v1`) unchanged, so the fake has to speak the same paths, methods,
//! JSON shapes, status codes and error envelopes as the real API (see
//! `docs/providers/datacrunch.md`), including its quirks: ids answered as plain text,
//! one-element arrays from "get" routes, decimal-string prices, `forbidden_action` refusals.
//!
//! What it adds on top, for tests:
//! - an instance lifecycle on timers (`ordered` → `provisioning` → `running`), see
//!   [`lifecycle`](crate::lifecycle);
//! - deterministic fault injection and a state dump under `/admin`, see
//!   [`faults`](crate::faults) and [`admin`](crate::admin);
//! - an *execute mode* that really runs each instance's startup script with bash on this
//!   machine, each in a sandbox of its own when the fake runs as root (own uid, PID and mount
//!   namespaces), with shims so that `shutdown -h now` powers off the fake instance and never
//!   the real machine, see [`execute`](crate::execute).
//!
//! - conformance to the provider's published OpenAPI document
//!   (read at start-up from the steering repository's `shared/docs/providers/`): in test mode every request and response is checked
//!   against it, see [`conformance`];
//! - the provider's rate limits, on by default at the real numbers, see [`ratelimit`].
//!
//! Modules by concern: [`catalog`] (static data), [`state`] (the shared state), [`auth`]
//! (tokens), [`resources`] (catalog routes, SSH keys, paginated scripts, balance),
//! [`instances`] (deploy/get/list/actions), [`volumes`] (OS volumes and trash), [`error`] (the
//! `{"code","message"}` envelope).

use std::{net::SocketAddr, path::PathBuf};

use axum::{
    middleware,
    routing::{get, post},
    Router,
};

pub mod admin;
pub mod auth;
pub mod catalog;
pub mod conformance;
pub mod error;
pub mod execute;
pub mod faults;
pub mod instances;
pub mod lifecycle;
pub mod process;
pub mod ratelimit;
pub mod resources;
pub mod state;
pub mod volumes;

pub use conformance::ConformanceMode;
pub use ratelimit::RateLimits;
use state::AppState;

/// Settings of one fake server.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The only accepted OAuth2 client id.
    pub client_id: String,
    /// The only accepted OAuth2 client secret.
    pub client_secret: String,
    /// Lifetime of issued access tokens (`expires_in`); `POST /admin/faults` can change it for
    /// tokens issued later.
    pub token_ttl_secs: u64,
    /// Provisioning time: `ordered` → `provisioning` at half of it, → `running` at all of it.
    pub provision_ms: u64,
    /// Execute mode: if set, the work directory under which each instance's startup script is
    /// really run when the instance becomes `running`.
    pub execute: Option<PathBuf>,
    /// Time from a shutdown (action or the script's `shutdown -h now`) to `offline`.
    pub shutdown_ms: u64,
    /// Time an instance spends `deleting` before it is `discontinued`.
    pub delete_ms: u64,
    /// Checks against the provider's OpenAPI document (see [`conformance`]).
    pub conformance: ConformanceMode,
    /// Rate limits at start (and after `POST /admin/reset`); see [`ratelimit`].
    pub rate_limits: RateLimits,
    /// Startup scripts a project may hold (the provider's default quota is 100).
    pub script_quota: usize,
    /// Storage quota in GB: attached, detached and trashed volumes count.
    pub storage_quota_gb: u64,
    /// How long a deleted volume stays in trash (the provider keeps it 96 h).
    pub trash_ttl_secs: u64,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            client_id: "mimiry-local".to_string(),
            client_secret: "local-secret".to_string(),
            token_ttl_secs: 3600,
            provision_ms: 2000,
            execute: None,
            shutdown_ms: 200,
            delete_ms: 100,
            conformance: ConformanceMode::Off,
            rate_limits: RateLimits::default(),
            script_quota: 100,
            // Not published; large enough for a day of work, small enough that OS volumes
            // left in trash by a busy client fill it.
            storage_quota_gb: 20_000,
            trash_ttl_secs: 96 * 3600,
        }
    }
}

/// The whole application: provider routes under `/v1` behind the gate middleware (counters,
/// injected faults, bearer auth), admin routes under `/admin` without it.
fn router(state: AppState) -> Router {
    use resources as r;
    let v1 = Router::new()
        .route("/v1/oauth2/token", post(auth::token))
        .route("/v1/instance-types", get(r::instance_types))
        .route("/v1/instance-availability", get(r::availability))
        .route(
            "/v1/instance-availability/{instance_type}",
            get(r::availability_of),
        )
        .route("/v1/locations", get(r::locations))
        .route("/v1/images", get(r::images))
        .route("/v1/balance", get(r::balance))
        .route(
            "/v1/instances",
            get(instances::list_instances)
                .post(instances::deploy)
                .put(instances::action),
        )
        .route("/v1/instances/{id}", get(instances::get_instance))
        .route("/v1/volumes", get(volumes::list))
        .route("/v1/volumes/trash", get(volumes::trash))
        .route(
            "/v1/volumes/{id}",
            get(volumes::get).delete(volumes::delete),
        );
    // SSH keys live at `/ssh-keys`; `/sshkeys` is the deprecated alias, still served.
    let v1 = ["/v1/ssh-keys", "/v1/sshkeys"]
        .into_iter()
        .fold(v1, |router, base| {
            router
                .route(
                    base,
                    get(r::list_ssh_keys)
                        .post(r::create_ssh_key)
                        .delete(r::delete_ssh_keys),
                )
                .route(
                    &format!("{base}/{{id}}"),
                    get(r::get_ssh_key).delete(r::delete_ssh_key),
                )
        })
        .route(
            "/v1/scripts",
            get(r::list_scripts)
                .post(r::create_script)
                .delete(r::delete_scripts),
        )
        .route(
            "/v1/scripts/{id}",
            get(r::get_script).delete(r::delete_script),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            faults::v1_gate,
        ));

    v1.merge(admin_router())
        .fallback(error::route_not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        // Around everything (it only looks at `/v1`), so that what the gate answers (faults,
        // 401, 429) and requests to paths the fake does not serve are checked too.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            conformance::check,
        ))
        .with_state(state)
}

/// The admin routes (`/admin/...`, no auth): faults, reset, rate limits, the state dump and
/// forced transitions. Public so that another fake built on this state (`fake-lambda`) serves
/// the same admin surface, which the execute-mode shims and the leak checks rely on.
pub fn admin_router() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/faults",
            post(admin::set_faults).get(admin::get_faults),
        )
        .route("/admin/reset", post(admin::reset))
        .route(
            "/admin/rate-limits",
            post(admin::set_rate_limits).get(admin::get_rate_limits),
        )
        .route("/admin/state", get(admin::dump))
        .route("/admin/instances/{id}/status", post(admin::force_status))
        .route("/admin/instances/{id}/vanish", post(admin::force_vanish))
        .route("/admin/instances/{id}/shutdown", post(admin::shutdown))
}

/// The state of a fake serving on `addr`: execute mode's directory made absolute and its
/// sandbox probed. Public for `fake-lambda`, which keeps its instances in the same state.
pub async fn build_state(addr: SocketAddr, config: FakeConfig) -> std::io::Result<AppState> {
    // The execute-mode shim calls back on loopback even if the fake listens on 0.0.0.0.
    let admin_base = format!("http://127.0.0.1:{}", addr.port());
    let mut config = config;
    if let Some(dir) = config.execute.take() {
        // Absolute, because each script runs with its own directory as cwd and the shims' bin
        // directory goes on PATH.
        std::fs::create_dir_all(&dir)?;
        config.execute = Some(std::fs::canonicalize(&dir)?);
    }
    let sandbox = match config.execute {
        Some(_) => execute::probe_sandbox().await,
        None => None,
    };
    Ok(AppState::new(config, admin_base, sandbox))
}

/// Serves the fake on `listener` until the process ends.
///
/// In execute mode, dropping the server (its runtime shutting down, or the task being aborted
/// along with the timers) kills every script still running and removes the instances'
/// directories: the fake machines go away with the fake provider.
pub async fn serve(listener: tokio::net::TcpListener, config: FakeConfig) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let state = build_state(addr, config).await?;
    tracing::info!(%addr, "fake-datacrunch serving");
    axum::serve(listener, router(state)).await
}

/// Binds `127.0.0.1:0` and serves in a background task: for in-process tests.
///
/// Panics if loopback cannot be bound (a test environment problem).
pub async fn spawn(config: FakeConfig) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let handle = tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::error!(error = %e, "fake-datacrunch stopped");
        }
    });
    (addr, handle)
}
