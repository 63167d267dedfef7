//! `fake-stripe` binary. Prints exactly one line to stdout once bound —
//! `fake-stripe listening on http://ADDR` (the real port when `--addr` asks for port 0) — and
//! logs to stderr (`RUST_LOG`, default `info`).

use clap::Parser;
use fake_stripe::FakeConfig;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

#[derive(Debug, Parser)]
#[command(
    name = "fake-stripe",
    about = "A fake Stripe API (Checkout, refunds, webhooks)"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:12111")]
    addr: SocketAddr,
    /// The secret key the API accepts.
    #[arg(long, env = "FAKE_STRIPE_API_KEY", default_value_t = FakeConfig::default().api_key)]
    api_key: String,
    /// Webhook endpoint events are POSTed to.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Webhook signing secret; give it twice to sign with two (a secret roll).
    #[arg(long = "webhook-secret", env = "FAKE_STRIPE_WEBHOOK_SECRET")]
    webhook_secrets: Vec<String>,
    /// Comma-separated waits (ms) before each retry of a failed delivery.
    #[arg(long, value_delimiter = ',', default_values_t = FakeConfig::default().retry_delays_ms)]
    retry_delays_ms: Vec<u64>,
    /// A bank-debit payment settles (succeeds) this many ms after checkout; 0 = only by admin.
    #[arg(long, default_value_t = 3000)]
    async_settle_ms: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let defaults = FakeConfig::default();
    let config = FakeConfig {
        api_key: args.api_key,
        webhook_url: args.webhook_url,
        webhook_secrets: if args.webhook_secrets.is_empty() {
            defaults.webhook_secrets
        } else {
            args.webhook_secrets
        },
        retry_delays_ms: args.retry_delays_ms,
        async_settle_ms: args.async_settle_ms,
    };
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "fake-stripe listening on http://{addr}")?;
        out.flush()?;
    }
    tokio::select! {
        r = fake_stripe::serve(listener, config) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
