//! `fake-lambda` binary: serves the fake Lambda Cloud API.
//!
//! Prints exactly one line to stdout once bound — `fake-lambda listening on http://ADDR` — so
//! that a parent process can read the address; logs go to stderr (`RUST_LOG`, default `info`).

use std::{net::SocketAddr, path::PathBuf};

use clap::Parser;
use fake_datacrunch::ConformanceMode;
use fake_lambda::{default_launch_limit, LambdaConfig};

#[derive(Debug, Parser)]
#[command(name = "fake-lambda", about = "A fake Lambda Cloud API server")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8083")]
    addr: SocketAddr,
    /// The accepted API key.
    #[arg(
        long,
        env = "FAKE_LAMBDA_API_KEY",
        default_value = "mimiry-local-lambda-key"
    )]
    api_key: String,
    /// Time in ms from launch to `active`.
    #[arg(long, default_value_t = 2000)]
    provision_ms: u64,
    /// Time in ms from a self-shutdown to `unhealthy`.
    #[arg(long, default_value_t = 200)]
    shutdown_ms: u64,
    /// Time in ms an instance spends `terminating`.
    #[arg(long, default_value_t = 100)]
    terminate_ms: u64,
    /// Execute mode: really run `user_data` under this work directory.
    #[arg(long, value_name = "WORK_DIR")]
    execute: Option<PathBuf>,
    /// Turn the launch rate limit off (on by default: one launch per window).
    #[arg(long, env = "FAKE_NO_RATE_LIMITS")]
    no_rate_limits: bool,
    /// Check requests and responses against Lambda's OpenAPI document (`LAMBDA_OPENAPI`):
    /// `report` logs and counts violations, `strict` also refuses them.
    #[arg(long, env = "FAKE_CONFORMANCE", value_enum, default_value_t = ConformanceMode::Off)]
    conformance: ConformanceMode,
    /// The launch rate limit's window in ms (one launch per window).
    #[arg(long, env = "FAKE_LAMBDA_LAUNCH_WINDOW_MS", default_value_t = default_launch_limit().window_ms)]
    launch_window_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    fake_datacrunch::process::init_tracing();
    let args = Args::parse();
    let config = LambdaConfig {
        api_key: args.api_key,
        provision_ms: args.provision_ms,
        execute: args.execute,
        shutdown_ms: args.shutdown_ms,
        terminate_ms: args.terminate_ms,
        rate_limits: fake_datacrunch::RateLimits {
            enabled: !args.no_rate_limits,
            window_ms: args.launch_window_ms.max(1),
            ..default_launch_limit()
        },
        conformance: args.conformance,
    };
    let listener = fake_datacrunch::process::bind_and_announce("fake-lambda", args.addr).await?;
    fake_datacrunch::process::serve_until_stopped(fake_lambda::serve(listener, config)).await
}
