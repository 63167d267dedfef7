//! `fake-datacrunch` binary: serves the fake DataCrunch (Verda) API.
//!
//! Prints exactly one line to stdout once bound — `fake-datacrunch listening on http://ADDR`,
//! with the real port when `--addr` asks for port 0 — so that a parent process can read the
//! address; all logs go to stderr (`RUST_LOG` to tune, default `info`).

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use fake_datacrunch::{ConformanceMode, FakeConfig, RateLimits};

#[derive(Debug, Parser)]
#[command(
    name = "fake-datacrunch",
    about = "A fake DataCrunch (Verda) API server"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: SocketAddr,
    /// Accepted OAuth2 client id.
    #[arg(long, default_value = "mimiry-local")]
    client_id: String,
    /// Accepted OAuth2 client secret.
    #[arg(long, default_value = "local-secret")]
    client_secret: String,
    /// Access token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    token_ttl_secs: u64,
    /// Provisioning time in ms (ordered → provisioning at half, → running at full).
    #[arg(long, default_value_t = 2000)]
    provision_ms: u64,
    /// Time in ms from a shutdown to `offline`.
    #[arg(long, default_value_t = 200)]
    shutdown_ms: u64,
    /// Execute mode: really run startup scripts under this work directory.
    #[arg(long, value_name = "WORK_DIR")]
    execute: Option<PathBuf>,
    /// Time in ms an instance spends `deleting` before it is `discontinued`.
    #[arg(long, default_value_t = 100)]
    delete_ms: u64,
    /// Check every request and response against the provider's OpenAPI document: `report`
    /// logs and counts violations (`conformance:` ERROR lines, `GET /admin/state`), `strict`
    /// also refuses a violating request (400) and replaces a violating response (500).
    #[arg(long, env = "FAKE_CONFORMANCE", value_enum, default_value_t = ConformanceMode::Off)]
    conformance: ConformanceMode,
    /// Turn the provider's rate limits off (they are on by default, at the real numbers).
    #[arg(long, env = "FAKE_NO_RATE_LIMITS")]
    no_rate_limits: bool,
    /// Requests per window for the whole project.
    #[arg(long, env = "FAKE_RATE_LIMIT_PROJECT", default_value_t = RateLimits::default().project)]
    rate_limit_project: u32,
    /// Requests per window for one (method, path).
    #[arg(long, env = "FAKE_RATE_LIMIT_ENDPOINT", default_value_t = RateLimits::default().endpoint)]
    rate_limit_endpoint: u32,
    /// Requests per window for `GET /v1/instances` and `GET /v1/volumes`.
    #[arg(long, env = "FAKE_RATE_LIMIT_LIST", default_value_t = RateLimits::default().list)]
    rate_limit_list: u32,
    /// Length of a rate-limit window in ms.
    #[arg(long, env = "FAKE_RATE_LIMIT_WINDOW_MS", default_value_t = RateLimits::default().window_ms)]
    rate_limit_window_ms: u64,
    /// Startup scripts a project may hold.
    #[arg(long, default_value_t = FakeConfig::default().script_quota)]
    script_quota: usize,
    /// Storage quota in GB (volumes in trash count).
    #[arg(long, default_value_t = FakeConfig::default().storage_quota_gb)]
    storage_quota_gb: u64,
    /// How long a deleted volume stays in trash, in seconds.
    #[arg(long, default_value_t = FakeConfig::default().trash_ttl_secs)]
    trash_ttl_secs: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    fake_datacrunch::process::init_tracing();
    let args = Args::parse();
    let config = FakeConfig {
        client_id: args.client_id,
        client_secret: args.client_secret,
        token_ttl_secs: args.token_ttl_secs,
        provision_ms: args.provision_ms,
        execute: args.execute,
        shutdown_ms: args.shutdown_ms,
        delete_ms: args.delete_ms,
        conformance: args.conformance,
        rate_limits: RateLimits {
            enabled: !args.no_rate_limits,
            project: args.rate_limit_project,
            endpoint: args.rate_limit_endpoint,
            list: args.rate_limit_list,
            window_ms: args.rate_limit_window_ms.max(1),
        },
        script_quota: args.script_quota,
        storage_quota_gb: args.storage_quota_gb,
        trash_ttl_secs: args.trash_ttl_secs,
    };
    let listener =
        fake_datacrunch::process::bind_and_announce("fake-datacrunch", args.addr).await?;
    fake_datacrunch::process::serve_until_stopped(fake_datacrunch::serve(listener, config)).await
}
