//! What a fake server's binary does around serving: logs to stderr, one line on stdout naming
//! the bound address (parents read it; port 0 picks a free one), and a clean stop on Ctrl-C or
//! SIGTERM. Shared by `fake-datacrunch` and `fake-lambda`.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

/// Logs to stderr (`RUST_LOG`, default `info`), coloured only on a terminal.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Binds `addr` and prints `{name} listening on http://ADDR` (the real port) to stdout.
pub async fn bind_and_announce(
    name: &str,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{name} listening on http://{bound}")?;
    out.flush()?;
    Ok(listener)
}

/// Runs `serve` until it ends or a stop signal arrives. Returning drops every task and with
/// them the state, which kills any execute-mode script still running.
pub async fn serve_until_stopped(
    serve: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::select! {
        r = serve => r,
        () = stop_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
