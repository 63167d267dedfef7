//! The HTTP plumbing every provider client shares: the `reqwest` client, one exchange, and the
//! call loop (rate-limit pauses, retries of idempotent calls). A client supplies only its own
//! single attempt — how it authenticates and how it reads an error body.

use super::ratelimit::Pauses;
use super::retry::RetryPolicy;
use super::ProviderError;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;
use std::future::Future;
use std::time::{Duration, Instant};

/// The longest a call waits in-process for a rate-limit pause to end: an AWS Lambda invocation
/// has 29 s, and a longer wait is better spent as a delayed queue message.
pub const MAX_INLINE_WAIT: Duration = Duration::from_secs(2);

pub(crate) fn build_http(timeout: Duration, connect_timeout: Duration) -> reqwest::Client {
    crate::tls::https_client()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        // Lambda freezes idle containers: do not reuse connections that sat for long.
        .pool_idle_timeout(Duration::from_secs(20))
        .user_agent(concat!("mimiry/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "building the provider HTTP client failed; using defaults");
            crate::tls::https_client()
                .build()
                .expect("a client with only the shared TLS configuration builds")
        })
}

/// A successful exchange: status, headers, body.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

/// Whether a call failed while getting a token (already retried inside), on the call itself,
/// or was refused by the rate limit (with the headers that say for how long).
pub(crate) enum Failure {
    Token(ProviderError),
    Call(ProviderError),
    Limited(HeaderMap),
}

pub(crate) fn reqwest_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    // reqwest's own message is terse; the source chain says what actually happened.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::Transport(message)
}

/// Percent-encodes one path segment (ids are UUIDs, but never trust that).
pub(crate) fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.trim().bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP exchange: status, headers and body text, whatever the status. Never logs headers.
pub(crate) async fn send(
    http: &reqwest::Client,
    timeout: Duration,
    method: Method,
    url: &str,
    query: &[(&str, &str)],
    bearer: Option<&str>,
    body: Option<&Value>,
) -> Result<Reply, ProviderError> {
    let mut rb = http
        .request(method, url)
        .timeout(timeout)
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !query.is_empty() {
        rb = rb.query(query);
    }
    if let Some(token) = bearer {
        rb = rb.bearer_auth(token);
    }
    if let Some(body) = body {
        rb = rb.body(body.to_string());
    }
    let resp = rb.send().await.map_err(reqwest_error)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.map_err(reqwest_error)?;
    Ok(Reply {
        status,
        headers,
        text,
    })
}

/// Runs `attempt` until it succeeds or fails for good:
/// - a call to a path paused by an earlier 429 waits in-process once if the pause ends within
///   [`MAX_INLINE_WAIT`], else fails with [`ProviderError::RateLimited`] without being sent;
/// - a 429 pauses the path (per `Retry-After`) and is handled the same way;
/// - `idempotent` calls are retried on transient failures per `retry`.
pub(crate) async fn with_retries<F, Fut>(
    pauses: &Pauses,
    retry_policy: RetryPolicy,
    method: &Method,
    path: &str,
    idempotent: bool,
    mut attempt: F,
) -> Result<Reply, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Reply, Failure>>,
{
    let mut retry = 0;
    // One in-process wait for a short pause; a second pause goes back to the caller.
    let mut waited = false;
    loop {
        if let Some(wait) = pauses.wait(method.as_str(), path) {
            if waited || wait > MAX_INLINE_WAIT {
                tracing::debug!(%method, path, wait_ms = wait.as_millis() as u64, "provider path paused; not sent");
                return Err(ProviderError::RateLimited { retry_after: wait });
            }
            waited = true;
            tokio::time::sleep(wait).await;
        }
        let started = Instant::now();
        let result = attempt().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(reply) => {
                tracing::debug!(%method, path, status = reply.status, elapsed_ms, "provider call");
                return Ok(reply);
            }
            Err(Failure::Limited(headers)) => {
                let wait = pauses.note(method.as_str(), path, &headers);
                tracing::warn!(%method, path, wait_ms = wait.as_millis() as u64, "provider rate limit (429)");
                if waited || wait > MAX_INLINE_WAIT {
                    return Err(ProviderError::RateLimited { retry_after: wait });
                }
                // Short: the loop waits it out once.
            }
            Err(Failure::Call(e))
                if idempotent
                    && e.is_transient()
                    && e.retry_after().is_none()
                    && retry < retry_policy.max_retries =>
            {
                let wait = retry_policy.backoff(retry);
                tracing::warn!(%method, path, error = %e, elapsed_ms, retry = retry + 1,
                    wait_ms = wait.as_millis() as u64, "retrying provider call");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            Err(Failure::Call(e) | Failure::Token(e)) => {
                // Expected answers (not found, refusals, capacity) are the caller's to log.
                if e.is_transient() || matches!(e, ProviderError::Auth(_)) {
                    tracing::warn!(%method, path, error = %e, code = e.code(), elapsed_ms, "provider call failed");
                } else {
                    tracing::debug!(%method, path, error = %e, code = e.code(), elapsed_ms, "provider call failed");
                }
                return Err(e);
            }
        }
    }
}
